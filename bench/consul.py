"""Consul benchmark: the real ``xds-server --consul`` against the Consul HTTP API emulator
(``tests.consul_emulator``, its own process): startup, idle cost, health flip → proxies.

    python -m bench.consul --services 2000 --instances 5 --proxies 1000 --mode both --flips 5

For each mode (SotW, delta) it starts a fresh emulator pre-populated with ``--services``
services ``svc-0000`` … of ``--instances`` instances each (127.0.0.1:20000+, passing TTL
checks ``service:svc-0000-0`` …, blocking queries with Consul's wait/16 jitter), then:

1. emulator throughput (reference): the catalog plus every service's health read by this
   process, 32 concurrent non-blocking GETs — what the source's first sync could take at
   best when not paced by ``--consul-watch-rate``;
2. startup: ``xds-server --consul --consul-address <emulator>`` (default settings:
   ``--consul-wait`` 60s, ``--consul-watch-rate`` 500/s, debounce 100 ms / 1 s) from
   process start to ``/readyz`` 200; ``/debug/sources`` must then say ``synced`` with every
   service. Also the server log's "consul: synced" line (the first full state published)
   and the first ``/debug/snapshot?type=cds`` holding every service's cluster (polled
   from ready on, so an upper bound);
3. idle, no proxies: with the 2,000 + 1 blocking queries open and nothing changing, the
   server's CPU seconds (psutil: utime + stime) and RSS over ``--idle-window`` s
   (default 64: every watch's wait of 60 s plus up to 3.75 s jitter ends once in it, so
   each blocking query returns and is re-sent once; the first 30 s are reported too —
   usually no query returns in them), normalised to CPU per minute; the emulator's CPU
   in the same window;
4. ramp: ``--proxies`` simulated proxies (``bench.sim``) connect at ``--ramp-rate``/s
   until all have their full configuration; then the same idle window with them
   connected (pushes during it would be a bug: a Consul answer that changes nothing is
   not a change);
5. flips: ``--flips`` health flips, alternating ``PUT /v1/agent/check/fail/<id>`` and
   ``…/pass/<id>`` of one instance of a different service per pair; latency =
   ``time.time()`` just before the PUT → each proxy's ACK of the ClusterLoadAssignment
   carrying the new health (matched by content: the emulator's health answer after the
   PUT, mapped by ``sources.consul_mapping`` and the translators, fingerprinted with
   ``fixtures.cla_marker``). The figure includes the blocking query's return, mapping,
   the debouncer (quiet 100 ms), translation, the push and the ACK. Reported: the
   *per-proxy* latency (pooled over flips x proxies: p50/p99/max) and *PUT → last proxy
   ACKed* (per flip: median and max over the flips), and the server's CPU per flip from
   just before the PUT to when the benchmark saw the last ACK (psutil; the waits between
   flips and the /metrics scrapes are outside it). The server's own
   ``xds_push_latency_seconds`` / ``xds_convergence_latency_seconds`` for the flips, and
   its full (generation 2) garbage collections during each, come from ``/metrics``.

Prints a table with the machine facts; ``--json [PATH]`` also writes the figures. Every
wait has a timeout; the emulator, the server and the workers are stopped on exit, on
error and on Ctrl-C. Only 127.0.0.1 is used. No thresholds are enforced.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import selectors
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import aiohttp
import psutil

from bench import changes, common, fixtures
from bench.common import MB, ROOT, fmt, log_time, ramp, wait_until
from sources.consul_mapping import to_entry
from tests.harness.server_proc import stop_process
from translators.services import service_load_assignments

SOURCE = "consul"  # the Consul source's name in the catalog
FIRST_WINDOW = 30.0  # the idle sub-window the issue asks for


@dataclass
class Options(common.RunOptions):
    services: int
    instances: int
    flips: int
    flip_interval: float
    idle_window: float
    consul_wait: str | None


def service_name(i: int) -> str:
    """The emulator's ``populate`` names."""
    return f"svc-{i:04d}"


# -- the emulator ---------------------------------------------------------------------


class Emulator:
    """``python -m tests.consul_emulator`` in a child process, pre-populated."""

    def __init__(self, services: int, instances: int, timeout: float):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.consul_emulator",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--services",
                str(services),
                "--instances",
                str(instances),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(ROOT),
        )
        self.ps = psutil.Process(self.proc.pid)
        self.url = self._wait_listening(timeout)
        self.ready_s = time.monotonic() - self.started

    def _wait_listening(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        end = time.monotonic() + timeout
        seen = b""
        try:
            while (left := end - time.monotonic()) > 0:
                if not sel.select(min(left, 0.5)):
                    if self.proc.poll() is not None:
                        break
                    continue
                line = self.proc.stdout.readline()
                if not line:
                    break
                seen += line
                if line.startswith(b"listening on "):
                    url = line.split()[-1].decode()
                    if not url.startswith("http://127.0.0.1:"):
                        raise common.BenchError(f"emulator listens on {url}, not 127.0.0.1")
                    return url
        finally:
            sel.close()
        raise common.BenchError(
            f"emulator not listening within {timeout} s: {seen.decode(errors='replace')[-500:]}"
        )

    def request(self, method: str, path: str, timeout: float = 10.0) -> bytes:
        req = urllib.request.Request(self.url + path, method=method)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bytes(resp.read())

    def health(self, name: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(self.request("GET", f"/v1/health/service/{name}"))
        return data

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def throughput(self, services: int, concurrency: int = 32, timeout: float = 120.0) -> float:
        """Seconds to read the catalog and every service's health (no blocking)."""

        async def run() -> None:
            todo = iter(range(services))
            tmo = aiohttp.ClientTimeout(total=timeout)
            async with aiohttp.ClientSession(timeout=tmo) as session:
                async with session.get(self.url + "/v1/catalog/services") as resp:
                    await resp.read()

                async def reader() -> None:
                    for i in todo:
                        async with session.get(
                            f"{self.url}/v1/health/service/{service_name(i)}"
                        ) as resp:
                            if resp.status != 200:
                                raise common.BenchError(f"emulator answered {resp.status}")
                            await resp.read()

                await asyncio.gather(*(reader() for _ in range(concurrency)))

        t0 = time.perf_counter()
        asyncio.run(asyncio.wait_for(run(), timeout))
        return time.perf_counter() - t0

    def close(self) -> float | None:
        """Stop the emulator; its CPU seconds just before."""
        cpu = None
        with contextlib.suppress(psutil.Error):
            cpu = self.cpu()
        stop_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return cpu


def cla_markers(emu: Emulator, name: str) -> list[str]:
    """The markers of what the server must send for service `name` now, built from the
    emulator's health answer with the server's own mapping and translators."""
    entry = to_entry(name, emu.health(name), source=SOURCE)
    if entry is None:
        raise common.BenchError(f"service {name} maps to nothing")
    return [fixtures.cla_marker(cla) for cla in service_load_assignments(entry)]


# -- one mode -------------------------------------------------------------------------


def _sources(server: common.RealServer) -> dict[str, Any]:
    for src in server.get("/debug/sources"):
        if src.get("name") == SOURCE:
            return dict(src)
    raise common.BenchError("/debug/sources has no consul source")


def _snapshot_clusters(server: common.RealServer) -> int:
    status, body = server.get_text("/debug/snapshot?type=cds", timeout=30.0)
    if status != 200:
        return -1
    return sum(1 for r in json.loads(body)["resources"] if r["type"] == "clusters")


def _synced_at(server: common.RealServer) -> float | None:
    """When the server logged "consul: synced …" (the first full state published)."""
    for line in server.log().splitlines():
        if "sources.consul:" in line and "consul: synced " in line:
            return log_time(line)
    return None


def _idle(
    server: common.RealServer, emu: Emulator, w: common.Workers | None, window: float
) -> dict[str, Any]:
    """Server CPU and RSS over `window` s of nothing changing (and over its first 30 s)."""
    updates0 = len(w.data.updates) if w is not None else 0
    m0 = server.samples()
    s0, e0 = server.stats(), emu.cpu()
    marks: list[tuple[float, dict[str, float], float]] = []
    first = min(FIRST_WINDOW, window)
    for length in sorted({first, window}):
        left = s0["time"] + length - time.time()
        if w is not None:
            w.pump_for(max(0.0, left))
        else:
            time.sleep(max(0.0, left))
        marks.append((length, server.stats(), emu.cpu()))
    m1 = server.samples()
    out: dict[str, Any] = {"window_s": window, "rss_start_mb": round(s0["rss"] / MB, 1)}
    for length, st, ecpu in marks:
        wall = st["time"] - s0["time"]
        key = "first" if length == first and length != window else "whole"
        out[key] = {
            "wall_s": round(wall, 1),
            "server_cpu_s": round(st["cpu"] - s0["cpu"], 3),
            "server_cpu_s_per_min": round((st["cpu"] - s0["cpu"]) / wall * 60.0, 3),
            "emulator_cpu_s": round(ecpu - e0, 3),
        }
    st_end = marks[-1][1]
    out["rss_end_mb"] = round(st_end["rss"] / MB, 1)
    out["peak_rss_mb"] = round(st_end["peak_rss"] / MB, 1)
    br = changes.server_breakdown(m1, m0)
    out["server_responses"] = sum(br["responses"].values())
    out["debounce_pushes"] = sum(br["debounce_pushes"].values())
    out["proxy_updates"] = (len(w.data.updates) - updates0) if w is not None else None
    return out


def run_mode(mode: str, o: Options) -> dict[str, Any]:
    with common.ServerRun(mode, o, "bench-consul") as run:
        emu = Emulator(o.services, o.instances, o.timeout)
        run.adopt("emulator_cpu_s", emu.close)
        run.out["emulator"] = {
            "populate_and_listen_s": round(emu.ready_s, 2),
            "read_all_s": round(emu.throughput(o.services, timeout=o.timeout), 2),
        }
        args = ["--consul", "--consul-address", emu.url]
        if o.consul_wait:
            args += ["--consul-wait", o.consul_wait]
        server = run.start_server(args)
        run.out.update(_measure(o, emu, server, run))
    return run.out


def _measure(
    o: Options, emu: Emulator, server: common.RealServer, run: common.ServerRun
) -> dict[str, Any]:
    res: dict[str, Any] = {}
    mode = run.mode
    # 1. startup
    ready_s = server.wait_ready(o.timeout)
    src = _sources(server)
    if not src.get("synced") or src.get("services") != o.services:
        raise common.BenchError(f"ready, but /debug/sources says {src}")
    st_ready = server.stats()
    n_clusters = _snapshot_clusters(server)
    if n_clusters != o.services:
        wait_until(
            f"{o.services} clusters in /debug/snapshot",
            lambda: _snapshot_clusters(server) == o.services,
            o.timeout,
        )
    snapshot_s = time.time() - server.started
    synced_at = _synced_at(server)
    res["startup"] = {
        "ready_s": round(ready_s, 2),
        "synced_logged_s": round(synced_at - server.started, 2) if synced_at else None,
        "full_snapshot_s": round(snapshot_s, 2),
        "full_snapshot_at_ready": n_clusters == o.services,
        "rss_ready_mb": round(st_ready["rss"] / MB, 1),
        "cpu_to_ready_s": round(st_ready["cpu"], 2),
        "watches": int(
            server.samples().get(("xds_consul_watches", frozenset({("source", SOURCE)})), 0)
        ),
    }
    print(f"  {mode}: ready in {ready_s:.2f} s; idle {o.idle_window:g} s …", file=sys.stderr)

    # 2. idle, no proxies
    res["idle_no_proxies"] = _idle(server, emu, None, o.idle_window)

    # 3. ramp
    w = run.start_workers(server.xds_port)
    res["ramp"] = ramp(w, o)[1]
    w.pump_for(o.settle)
    print(f"  {mode}: {o.proxies} proxies connected; idle {o.idle_window:g} s …", file=sys.stderr)

    # 4. idle, proxies connected
    res["idle_proxies"] = _idle(server, emu, w, o.idle_window)

    # 5. flips
    tr = changes.Tracker(w, server)
    rng = random.Random(o.seed)
    pairs = math.ceil(o.flips / 2)
    targets = rng.sample(range(o.services), min(pairs, o.services))
    chosen = [rng.randrange(o.instances) for _ in targets]  # the instance flipped in each
    flips: list[dict[str, Any]] = []
    for k in range(o.flips):
        pair = (k // 2) % len(targets)
        name = service_name(targets[pair])
        action = "fail" if k % 2 == 0 else "pass"
        check = f"service:{name}-{chosen[pair]}"

        def act(name: str = name, action: str = action, check: str = check) -> changes.Edit:
            at = time.time()
            emu.request("PUT", f"/v1/agent/check/{action}/{check}")
            return changes.Edit(action, f"{action} {check}", cla_markers(emu, name), [], at)

        flips.append(tr.measure(act, o.timeout, o.flip_interval))
    return {**res, **tr.finish(flips, "flips")}


# -- reporting ------------------------------------------------------------------------


def print_table(results: list[dict[str, Any]], o: Options, info: dict[str, Any]) -> None:
    t = common.Table(results)
    row = t.row
    row("emulator: populate + listen", lambda r: r["emulator"]["populate_and_listen_s"], " s")
    row(
        "emulator: catalog + all health, 32 parallel",
        lambda r: r["emulator"]["read_all_s"],
        " s",
    )
    row("startup: process → /readyz 200", lambda r: r["startup"]["ready_s"], " s")
    row(
        "startup: process → 'consul: synced' logged",
        lambda r: r["startup"]["synced_logged_s"],
        " s",
    )
    row(
        "startup: all clusters in /debug/snapshot",
        lambda r: (
            fmt(r["startup"]["full_snapshot_s"], " s")
            + (" (at ready)" if r["startup"]["full_snapshot_at_ready"] else "")
        ),
    )
    row("startup: server CPU to ready", lambda r: r["startup"]["cpu_to_ready_s"], " s")
    row("startup: server RSS at ready", lambda r: r["startup"]["rss_ready_mb"], " MB")
    row("startup: blocking-query watches", lambda r: r["startup"]["watches"])
    for key, label in (("idle_no_proxies", "idle, no proxies"), ("idle_proxies", "idle, proxies")):
        row(
            f"{label}: server CPU, first 30 s",
            lambda r, key=key: (
                fmt(r[key]["first"]["server_cpu_s"], " s") if "first" in r[key] else "—"
            ),
        )
        row(
            f"{label}: server CPU, whole window",
            lambda r, key=key: (
                f"{fmt(r[key]['whole']['server_cpu_s'], ' s')} in "
                f"{fmt(r[key]['whole']['wall_s'], ' s')} = "
                f"{r[key]['whole']['server_cpu_s_per_min']:.2f} s/min"
            ),
        )
        row(
            f"{label}: emulator CPU, whole window",
            lambda r, key=key: r[key]["whole"]["emulator_cpu_s"],
            " s",
        )
        row(
            f"{label}: server RSS start / end",
            lambda r, key=key: f"{fmt(r[key]['rss_start_mb'])} / {fmt(r[key]['rss_end_mb'])} MB",
        )
        row(
            f"{label}: pushes (server responses)",
            lambda r, key=key: r[key]["server_responses"],
        )
    row(
        "ramp: proxies with full config",
        lambda r: f"{r['ramp']['full_config']} in {fmt(r['ramp']['all_full_config_s'], ' s')}",
    )
    changes.per_change_rows(t, "flips", "flip", "PUT")
    changes.change_rows(t, "flips", "PUT", "flips", lambda r: r["flips_summary"])
    row(
        "flips: PUT→last proxy ACKed, each flip",
        lambda r: ", ".join(fmt(f["last_ack_ms"]) for f in r["flips"]) + " ms",
    )
    row("server: full GCs, each flip", lambda r: ",".join(str(f["full_gcs"]) for f in r["flips"]))
    row("flips: proxy ACKs missing", lambda r: sum(f["missing"] for f in r["flips"]))
    row(
        "server: debounce triggers",
        lambda r: ",".join(
            f"{k}={v}" for k, v in sorted(r["flips_total"]["debounce_pushes"].items())
        ),
    )
    row(
        "server: translate per flip (mean)",
        lambda r: r["flips_total"]["translate"]["mean_ms"],
        " ms",
    )
    row(
        "server: push latency, endpoints",
        lambda r: changes.hist_cell(r["flips_total"]["push"].get("endpoints")),
    )
    row(
        "server: convergence, endpoints",
        lambda r: changes.hist_cell(r["flips_total"]["convergence"].get("endpoints")),
    )
    row(
        "server: responses, all flips",
        lambda r: ", ".join(f"{t} {v}" for t, v in sorted(r["flips_total"]["responses"].items())),
    )
    row(
        "server: RSS end / peak",
        lambda r: f"{fmt(r['server']['rss_end_mb'])} / {fmt(r['server']['peak_rss_mb'])} MB",
    )
    row("unexpected: streams ended", lambda r: r["server"]["streams_ended"])
    row("emulator CPU: whole run", lambda r: r.get("emulator_cpu_s"), " s")
    heading = (
        f"xds-server Consul source: {o.services} services x {o.instances} instances "
        f"(emulator), {o.proxies} proxies, consul-wait {o.consul_wait or '60s (default)'}, "
        f"idle window {o.idle_window:g} s, default debounce (quiet 100 ms, max 1 s)"
    )
    changes.print_table(t, heading, o, info, "flips", "flip")


def main(argv: list[str] | None = None) -> int:
    def arguments(p: argparse.ArgumentParser) -> None:
        common.int_options(p, services=2000, instances=5)
        p.add_argument("--flips", type=int, default=5, help="health flips (fail, pass, fail, …)")
        p.add_argument(
            "--flip-interval", type=float, default=2.0, help="seconds from one flip to the next"
        )
        p.add_argument(
            "--idle-window",
            type=float,
            default=64.0,
            help="idle measurement window, seconds (default 64: one blocking-query round)",
        )
        p.add_argument(
            "--consul-wait", default=None, help="xds-server --consul-wait (default: the server's)"
        )

    def check(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
        if a.services < 1 or a.instances < 1 or a.services > 10000:
            p.error("--services 1…10000 (the emulator's names are svc-0000…), --instances ≥ 1")

    prog = "python -m bench.consul"
    return common.cli(prog, __doc__, Options, arguments, run_mode, print_table, argv, check=check)


if __name__ == "__main__":
    sys.exit(main())
