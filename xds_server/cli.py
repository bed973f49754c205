"""`xds-server` entry point: flags, logging, signal handling and the serve loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from xds_server import __version__
from xds_server.cache import SnapshotCache
from xds_server.grpc_server import ServerOptions, XdsServer
from xds_server.resource_file import ResourceFileError, load

log = logging.getLogger("xds_server")

# Static resources are one configuration for every proxy.
STATIC_GROUP = "static"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xds-server", description="Envoy xDS control plane (SotW and delta ADS)."
    )
    p.add_argument("--version", action="version", version=f"xds-server {__version__}")
    p.add_argument("--xds-address", default="0.0.0.0:18000", help="gRPC listen address")
    p.add_argument(
        "--resources",
        type=Path,
        help="YAML/JSON file of Envoy resources (clusters/endpoints/listeners/routes) "
        "served to every proxy; reloaded when it changes",
    )
    p.add_argument("--reload-interval", type=float, default=1.0, help="seconds between file checks")
    p.add_argument("--keepalive-time", type=float, default=30.0)
    p.add_argument(
        "--max-connection-age",
        type=float,
        default=None,
        help="seconds before a proxy is asked to reconnect (rebalancing)",
    )
    p.add_argument("--new-streams-per-second", type=float, default=200.0)
    p.add_argument("--shutdown-grace", type=float, default=5.0)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


async def _watch_file(cache: SnapshotCache, path: Path, interval: float) -> None:
    last: tuple[float, int] | None = None
    while True:
        try:
            st = await asyncio.to_thread(path.stat)
            stamp = (st.st_mtime, st.st_size)
        except OSError as exc:
            stamp = None
            if last is not None:
                log.error("%s: %s; keeping the last good resources", path, exc.strerror)
                last = None
        if stamp is not None and stamp != last:
            last = stamp
            try:
                resources = await asyncio.to_thread(load, path)
                if cache.set_snapshot(STATIC_GROUP, resources):
                    log.info(
                        "loaded %s: %s",
                        path,
                        ", ".join(f"{len(v)} {k.rsplit('.', 1)[-1]}" for k, v in resources.items()),
                    )
            except (ResourceFileError, ValueError) as exc:
                log.error("%s; keeping the last good resources", exc)
        await asyncio.sleep(interval)


async def serve(args: argparse.Namespace) -> int:
    cache = SnapshotCache(group_of=lambda _node: STATIC_GROUP)
    if args.resources is not None:
        try:
            cache.set_snapshot(STATIC_GROUP, load(args.resources))
        except (ResourceFileError, ValueError) as exc:
            print(f"xds-server: {exc}", file=sys.stderr)
            return 2
    server = XdsServer(
        cache,
        options=ServerOptions(
            address=args.xds_address,
            keepalive_time=args.keepalive_time,
            max_connection_age=args.max_connection_age,
            new_streams_per_second=args.new_streams_per_second,
            shutdown_grace=args.shutdown_grace,
        ),
    )
    try:
        await server.start()
    except (OSError, RuntimeError) as exc:
        print(f"xds-server: cannot listen on {args.xds_address}: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = None
    if args.resources is not None:
        watcher = asyncio.create_task(_watch_file(cache, args.resources, args.reload_interval))
    await stop.wait()
    log.info("shutting down: ending %d streams with UNAVAILABLE", server.stream_count)
    if watcher is not None:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
