"""The xDS server under test, in its own process, driven over stdin/stdout.

Runs ``XdsServer`` + ``SnapshotCache`` on 127.0.0.1 with the benchmark snapshot for
group ``bench`` (``group_of`` = ``node.cluster``; the simulated proxies use cluster
``bench``). The stream rate limit is raised so a ramp of thousands of streams is not
throttled.

Control protocol: one JSON object per line on stdin, one JSON reply per line on stdout
(logs go to stderr). On start it prints ``{"event": "ready", "port": …, "pid": …}``.

``--reuseport`` listens with SO_REUSEPORT so that several of these processes share one
``--port`` (the kernel spreads new connections across them); the ready event and every
change reply carry ``versions``, the content-hash versions served (per type and the whole
snapshot), which must be identical across such processes.

* ``{"cmd": "stats"}`` → RSS, peak RSS, open streams, CPU seconds, garbage-collector
  pauses (total, longest, collections per generation), wall time.
* ``{"cmd": "change", "cluster": i, "generation": g}`` → replaces service i's
  ClusterLoadAssignment with ``fixtures.changed_load_assignment(i, E, g)`` via
  ``set_snapshot`` (unchanged CLAs are passed as the cache's existing ``Resource``
  objects, as a translator that caches by input would) and replies with
  ``applied_at`` = ``time.time()`` taken just before ``set_snapshot`` (so the figure
  includes the cache update and the fan-out of wake-ups), and ``done_at`` after it.
* ``{"cmd": "gc_mark"}`` → starts a phase for the longest garbage-collector pause
  (``gc_pause_max_since_mark_s`` in the stats); replies with the stats.
* ``{"cmd": "trim"}`` → runs ``gc.collect()`` and glibc ``malloc_trim(0)`` and replies
  with the stats after it: RSS that remains is live memory, not freed memory the
  allocator kept (a diagnostic; the benchmark calls it only at the very end).
* ``{"cmd": "quit"}`` → replies with the final stats, stops the server and exits.
  EOF on stdin does the same, so the server never outlives the benchmark.

``--cprofile PATH`` profiles the whole run with cProfile (written at exit). The garbage
collector is set up as ``xds-server`` sets it up after its first build
(`xds_server.gc_tuning`) unless ``--default-gc``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import ctypes
import ctypes.util
import gc
import json
import logging
import os
import sys
import time
from typing import Any

from bench import fixtures
from xds_server import gc_tuning, types
from xds_server.cache import SnapshotCache, group_by_cluster
from xds_server.grpc_server import ServerOptions, XdsServer
from xds_server.snapshot import Resource

log = logging.getLogger("bench.server")


class GcTimer:
    """Time spent in garbage collections (``gc.callbacks``), total and longest pause."""

    def __init__(self) -> None:
        self.total = 0.0
        self.longest = 0.0
        self.collections = [0, 0, 0]
        self.longest_by_generation = [0.0, 0.0, 0.0]
        self.longest_since_mark = 0.0
        self._start = 0.0
        gc.callbacks.append(self._on_gc)

    def mark(self) -> None:
        """Start a new phase: `longest_since_mark` counts from here."""
        self.longest_since_mark = 0.0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            pause = time.perf_counter() - self._start
            self.total += pause
            self.longest = max(self.longest, pause)
            self.longest_since_mark = max(self.longest_since_mark, pause)
            gen = int(info.get("generation", 0))
            self.collections[gen] += 1
            self.longest_by_generation[gen] = max(self.longest_by_generation[gen], pause)


def proc_status() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of this process, in bytes."""
    out: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


class BenchServer:
    def __init__(
        self,
        clusters: int,
        endpoints: int,
        port: int,
        default_gc: bool = False,
        reuseport: bool = False,
    ):
        self.default_gc = default_gc
        self.clusters = clusters
        self.endpoints = endpoints
        self.gc = GcTimer()
        self.cache = SnapshotCache(group_of=group_by_cluster)
        self.server = XdsServer(
            self.cache,
            options=ServerOptions(
                address=f"127.0.0.1:{port}",
                new_streams_per_second=1_000_000.0,
                new_streams_burst=1_000_000,
                shutdown_grace=1.0,
                so_reuseport=reuseport,
            ),
        )

    async def start(self) -> int:
        t0 = time.perf_counter()
        self.cache.set_snapshot(
            fixtures.GROUP, fixtures.snapshot_resources(self.clusters, self.endpoints)
        )
        log.info("snapshot built in %.3f s", time.perf_counter() - t0)
        if not self.default_gc:
            gc_tuning.tune_for_serving()  # as xds-server does after its first build
        return await self.server.start()

    def versions(self) -> dict[str, str]:
        """The content-hash version of each type of the served snapshot, and of the whole."""
        snap = self.cache.get(fixtures.GROUP)
        out = {types.short_name(t): snap.get(t).version for t in snap.types}
        out["snapshot"] = snap.version
        return out

    def stats(self) -> dict[str, Any]:
        t = os.times()
        st = proc_status()
        return {
            "rss": st.get("VmRSS", 0),
            "peak_rss": st.get("VmHWM", 0),
            "streams": self.server.stream_count,
            "cpu_user": t.user,
            "cpu_system": t.system,
            "gc_pause_total_s": round(self.gc.total, 4),
            "gc_pause_max_s": round(self.gc.longest, 4),
            "gc_pause_max_since_mark_s": round(self.gc.longest_since_mark, 4),
            "gc_collections": list(self.gc.collections),
            "gc_pause_max_by_generation_ms": [
                round(p * 1000.0, 1) for p in self.gc.longest_by_generation
            ],
            "time": time.time(),
        }

    def trim(self) -> dict[str, Any]:
        gc.collect()
        libc_name = ctypes.util.find_library("c")
        trimmed = False
        if libc_name:
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL(libc_name).malloc_trim(0)
                trimmed = True
        return {**self.stats(), "malloc_trim": trimmed}

    def change(self, cluster: int, generation: int) -> dict[str, Any]:
        cla = fixtures.changed_load_assignment(cluster, self.endpoints, generation)
        name = fixtures.service_name(cluster)
        current = self.cache.get(fixtures.GROUP).get(types.ENDPOINT).resources
        items: list[Resource | Any] = [cla if n == name else res for n, res in current.items()]
        applied_at = time.time()
        changed = self.cache.set_snapshot(fixtures.GROUP, {types.ENDPOINT: items})
        done_at = time.time()
        return {
            "applied_at": applied_at,
            "done_at": done_at,
            "changed": changed,
            "marker": fixtures.cla_marker(cla),
            "versions": self.versions(),
        }

    async def stop(self) -> None:
        await self.server.stop(grace=1.0)


def _reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def serve(args: argparse.Namespace) -> None:
    bench = BenchServer(args.clusters, args.endpoints, args.port, args.default_gc, args.reuseport)
    port = await bench.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    ready = {"event": "ready", "port": port, "pid": os.getpid(), "versions": bench.versions()}
    _reply({**ready, **bench.stats()})
    try:
        while True:
            line = await reader.readline()
            if not line:
                break  # the benchmark went away
            try:
                cmd = json.loads(line)
                op = cmd.get("cmd")
                if op == "stats":
                    _reply(bench.stats())
                elif op == "gc_mark":
                    bench.gc.mark()
                    _reply(bench.stats())
                elif op == "trim":
                    _reply(bench.trim())
                elif op == "change":
                    _reply(bench.change(int(cmd["cluster"]), int(cmd["generation"])))
                elif op == "quit":
                    _reply({"ok": True, **bench.stats()})
                    break
                else:
                    _reply({"error": f"unknown command {op!r}"})
            except Exception as exc:
                log.exception("control command failed")
                _reply({"error": repr(exc)})
    finally:
        await bench.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--endpoints", type=int, default=10)
    p.add_argument("--cprofile", default=None, help="write a cProfile of the run here")
    p.add_argument("--log-level", default="WARNING")
    p.add_argument(
        "--reuseport",
        action="store_true",
        help="listen with SO_REUSEPORT (several server processes share --port)",
    )
    p.add_argument(
        "--default-gc", action="store_true", help="leave Python's garbage collector as it is"
    )
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="server %(levelname)s %(message)s"
    )
    prof = cProfile.Profile() if args.cprofile else None
    if prof is not None:
        prof.enable()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args))
    finally:
        if prof is not None:
            prof.disable()
            prof.dump_stats(args.cprofile)


if __name__ == "__main__":
    main()
