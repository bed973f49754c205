"""Serving-core benchmark: many simulated Envoys on one xds-server, SotW and delta ADS.

    python -m bench.run --proxies 1000 --clusters 1000 --endpoints 10 --mode both --changes 5

For each mode it starts the server (``bench.server_proc``) and the simulated proxies
(``bench.sim`` worker processes), then measures:

1. ramp: all proxies connect at once (or at ``--ramp-rate``/s); time until every proxy
   has had a response and has its full configuration, and the per-proxy full-config
   latency (stream start → ACK of CDS+EDS+LDS+RDS);
2. late proxies: after everything is connected and idle, ``--late`` proxies connect one
   at a time; their full-config latency is the "newly connecting proxy" figure;
3. endpoint changes: ``--changes`` changes (one ClusterLoadAssignment each), spaced
   ``--change-interval`` s apart; for each, the time from the cache update to each
   proxy's ACK of the response carrying it;
4. server RSS (current and peak) and CPU seconds per phase, client CPU seconds.

Prints a table; ``--json [PATH]`` also writes the figures as JSON (``-`` = stdout).
Every wait has a timeout, and every child process is stopped on exit or Ctrl-C.
No thresholds are enforced: the targets are printed with met/missed.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

from bench.common import (
    MB,
    BenchError,
    MachineMeter,
    RunOptions,
    Workers,
    add_run_arguments,
    dist_ms,
    fmt,
    machine_cpu,
    options_from,
    parser,
    percentile,
    print_rows,
    run_and_report,
    server_log,
    tail,
)

TARGET_CHANGE_P99_MS = 500.0
TARGET_LATE_MS = 250.0
TARGET_RSS_MB = 300.0


# -- the server process ---------------------------------------------------------------


class ServerProc:
    """``bench.server_proc`` in a child process, driven by JSON lines over its stdin."""

    def __init__(self, clusters: int, endpoints: int, log: IO[bytes], cprofile: str | None = None):
        cmd = [
            sys.executable,
            "-m",
            "bench.server_proc",
            "--clusters",
            str(clusters),
            "--endpoints",
            str(endpoints),
        ]
        if cprofile:
            cmd += ["--cprofile", cprofile]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,  # Ctrl-C is ours to handle; we stop it in order
            cwd=str(Path(__file__).resolve().parent.parent),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.pid = self.proc.pid
        self.port = 0
        self.final_stats: dict[str, Any] | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode())
        self.lines.put(None)

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"server did not answer within {timeout} s") from None
        if line is None:
            raise BenchError(f"server exited (code {self.proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise BenchError(f"server: {reply['error']}")
        return reply

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        ready = self._next(timeout)
        self.port = int(ready["port"])
        return ready

    def request(self, cmd: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        return self._next(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.final_stats = self.request({"cmd": "quit"}, timeout=5.0)
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)


class PySpy:
    """Optional ``py-spy record`` of the server during one phase of the run.

    ``phase`` is ``all``, ``ramp`` or ``changes``; ``fmt`` is a py-spy output format
    (``flamegraph`` → .svg, ``raw`` → collapsed stacks .txt, ``speedscope`` → .json).
    Recording stops with SIGINT, which makes py-spy write its output.
    """

    SUFFIX: ClassVar[dict[str, str]] = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}

    def __init__(self, pid: int, prefix: str, mode: str, phase: str, fmt: str, native: bool):
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(exe).exists():
            raise BenchError("py-spy not found (pip install py-spy)")
        self.cmd = [exe, "record", "--pid", str(pid), "--rate", "250", "--format", fmt]
        self.cmd += ["-o", f"{prefix}-{mode}-{phase}.{self.SUFFIX[fmt]}"]
        # --native must pause the process to unwind C stacks; otherwise sample without.
        self.cmd.append("--native" if native else "--nonblocking")
        self.phase = phase
        self.proc: subprocess.Popen[bytes] | None = None

    def enter(self, phase: str) -> None:
        """Called at each phase boundary: ramp, settle, late, changes, end."""
        if self.proc is None and phase == ("ramp" if self.phase == "all" else self.phase):
            self.proc = subprocess.Popen(
                self.cmd, stdout=subprocess.DEVNULL, start_new_session=True
            )
            time.sleep(0.5)  # attach before the phase starts
            if self.proc.poll() is not None:
                raise BenchError(f"py-spy exited with {self.proc.returncode}: {self.cmd}")
        elif self.proc is not None and self.phase != "all" and phase != self.phase:
            self.close()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


# -- the simulated proxies ------------------------------------------------------------


# -- one benchmark run ----------------------------------------------------------------


@dataclass
class Options(RunOptions):
    clusters: int
    endpoints: int
    changes: int
    late: int
    change_interval: float
    server_cprofile: str | None
    py_spy: str | None
    py_spy_phase: str
    py_spy_format: str
    py_spy_native: bool


def _cpu(stats: dict[str, Any]) -> float:
    return float(stats["cpu_user"]) + float(stats["cpu_system"])


def run_mode(mode: str, o: Options) -> dict[str, Any]:
    delta = mode == "delta"
    out: dict[str, Any] = {"mode": mode}
    meter = MachineMeter()
    with server_log(o.keep_logs, mode) as log:
        server: ServerProc | None = None
        workers: Workers | None = None
        spy: PySpy | None = None
        try:
            prof = f"{o.server_cprofile}-{mode}.prof" if o.server_cprofile else None
            server = ServerProc(o.clusters, o.endpoints, log, prof)
            ready = server.wait_ready(60.0)
            if o.py_spy:
                spy = PySpy(
                    server.pid, o.py_spy, mode, o.py_spy_phase, o.py_spy_format, o.py_spy_native
                )
            workers = Workers(o.workers, server.port, delta, o.streams_per_channel)
            w = workers
            w.wait_started()
            out.update(_measure(o, server, w, ready, spy.enter if spy else lambda _p: None))
        except BenchError:
            print(tail(log.name), file=sys.stderr)
            raise
        finally:
            if workers is not None:
                workers.close()
            if spy is not None:
                spy.close()
            if server is not None:
                server.close()
        if workers is not None:
            out["client_cpu_s"] = round(sum(workers.data.client_cpu.values()), 2)
        if server is not None and server.final_stats is not None:
            out["server_process_cpu_s"] = round(_cpu(server.final_stats), 2)
    out["machine"] = meter.result(
        out.get("server_process_cpu_s", 0.0) + out.get("client_cpu_s", 0.0)
    )
    return out


def _measure(
    o: Options,
    server: ServerProc,
    w: Workers,
    ready: dict[str, Any],
    phase: Callable[[str], None],
) -> dict[str, Any]:
    data = w.data
    res: dict[str, Any] = {}
    n = o.proxies
    ids = [f"proxy-{i:05d}" for i in range(n)]

    # 1. ramp
    phase("ramp")
    st_before = server.request({"cmd": "stats"})
    t_ramp = time.time()
    interval = o.workers / o.ramp_rate if o.ramp_rate > 0 else 0.0
    for i in range(o.workers):
        w.send(i, ("start", ids[i :: o.workers], interval))
    ok = w.pump_until(
        lambda: sum(1 for r in data.results.values() if not r["late"]) >= n, o.timeout
    )
    ramp_rs = [r for r in data.results.values() if not r["late"]]
    done = [r for r in ramp_rs if r["full"] is not None]
    firsts = [r["first_response"] for r in ramp_rs if r["first_response"] is not None]
    st_ramp = server.request({"cmd": "stats"})
    init_counts: Counter[str] = Counter()
    for r in done:
        for t, c in r["initial_responses"].items():
            init_counts[t] = max(init_counts[t], c)
    res["ramp"] = {
        "proxies": n,
        "full_config": len(done),
        "failed": n - len(done),
        "timed_out": not ok,
        "errors": Counter(r["error"] for r in ramp_rs if r["error"]).most_common(5),
        "all_connected_s": (max(firsts) - t_ramp) if len(firsts) == n else None,
        "all_full_config_s": (max(r["full"] for r in done) - t_ramp) if len(done) == n else None,
        "full_config_ms": dist_ms([r["full"] - r["start"] for r in done]),
        "max_initial_responses_per_type": dict(init_counts),
        "server_cpu_s": round(_cpu(st_ramp) - _cpu(st_before), 2),
    }

    # 2. settle, then late proxies one at a time
    phase("settle")
    w.pump_for(o.settle)
    st_idle = server.request({"cmd": "stats"})
    res["idle"] = {
        "streams": st_idle["streams"],
        "server_cpu_s_per_s": round(
            (_cpu(st_idle) - _cpu(st_ramp)) / max(1e-9, st_idle["time"] - st_ramp["time"]), 3
        ),
    }
    phase("late")
    late_ms: list[float] = []
    late_failed = 0
    for k in range(o.late):
        node_id = f"late-{k:03d}"
        w.send(k % o.workers, ("late", node_id))
        if not w.pump_until(lambda nid=node_id: nid in data.results, 30.0):
            late_failed += 1
            continue
        r = data.results[node_id]
        if r["full"] is None:
            late_failed += 1
        else:
            late_ms.append((r["full"] - r["start"]) * 1000.0)
        w.pump_for(0.5)
    res["late"] = {
        "count": o.late,
        "failed": late_failed,
        "full_config_ms": [round(x, 1) for x in late_ms],
        "p50_ms": percentile(late_ms, 50),
        "max_ms": max(late_ms) if late_ms else math.nan,
    }
    st_connected = server.request({"cmd": "stats"})
    # Post-full-config responses before any change: nothing changed, so none expected.
    unexpected_before_changes = len(data.updates)

    # 3. endpoint changes
    rng = random.Random(o.seed)
    targets = rng.sample(range(o.clusters), min(o.changes, o.clusters))
    applied: dict[str, tuple[int, float]] = {}
    apply_cost_ms: list[float] = []
    first_update = changes_start = len(data.updates)
    phase("changes")
    mbusy0, mtotal0 = machine_cpu()
    t0 = time.monotonic()
    st_changes_start = server.request({"cmd": "stats"})
    for k, cluster in enumerate(targets):
        w.pump_for(max(0.0, t0 + k * o.change_interval - time.monotonic()))
        reply = server.request({"cmd": "change", "cluster": cluster, "generation": k + 1})
        if not reply.get("changed"):
            raise BenchError(f"change {k} did not change the snapshot")
        applied[reply["marker"]] = (k, reply["applied_at"])
        apply_cost_ms.append((reply["done_at"] - reply["applied_at"]) * 1000.0)
    live = {nid for nid, r in data.results.items() if r["full"] is not None}
    live -= {e["node_id"] for e in data.ended}
    acks: dict[tuple[str, int], float] = {}
    recvs: dict[tuple[str, int], float] = {}

    def absorb() -> bool:
        nonlocal first_update
        for u in data.updates[first_update:]:
            for m in u["markers"]:
                hit = applied.get(m)
                if hit is not None:
                    key = (u["node_id"], hit[0])
                    lat = u["ack_at"] - hit[1]
                    if key not in acks or lat < acks[key]:
                        acks[key] = lat
                        recvs[key] = u["recv_at"] - hit[1]
        first_update = len(data.updates)
        return len(acks) >= len(live) * len(applied)

    all_acked = w.pump_until(absorb, o.timeout)
    w.pump_for(1.0)  # catch anything that follows the changes (resends)
    absorb()
    st_after = server.request({"cmd": "stats"})
    mbusy1, mtotal1 = machine_cpu()
    phase("end")
    st_trim = server.request({"cmd": "trim"})
    per_change_all: list[float | None] = []  # None: some proxy never ACKed that change
    for k in range(len(targets)):
        lats = [v for (nid, kk), v in acks.items() if kk == k]
        per_change_all.append(round(max(lats) * 1000.0, 1) if len(lats) == len(live) else None)
    change_updates = data.updates[changes_start:]
    res["changes"] = {
        "count": len(targets),
        "proxies": len(live),
        "acks": len(acks),
        "missing": len(live) * len(applied) - len(acks),
        "all_acked": all_acked,
        "ack_ms": dist_ms(list(acks.values())),
        "recv_ms": dist_ms(list(recvs.values())),
        "all_proxies_acked_ms": per_change_all,
        "apply_ms": [round(x, 2) for x in apply_cost_ms],
        "server_cpu_s": round(_cpu(st_after) - _cpu(st_changes_start), 2),
        "machine_busy_fraction": round((mbusy1 - mbusy0) / max(1e-9, mtotal1 - mtotal0), 3),
    }

    # 4. anything a proxy received after its full config that no change explains
    expected = set(applied)
    by_type: Counter[str] = Counter()
    extra_eds = 0
    for u in change_updates:
        if u["type"] != "eds":
            by_type[u["type"]] += 1
        else:
            extra = [m for m in u["markers"] if m not in expected]
            extra_eds += len(extra)
            if not u["markers"] or u["removed"]:
                by_type["eds-empty-or-removal"] += 1
    res["unexpected"] = {
        "updates_while_idle": unexpected_before_changes,
        "non_eds_updates": dict(by_type),
        "unchanged_clas_resent": extra_eds,
        "streams_ended": len(data.ended),
        "ended_errors": Counter(e["error"] for e in data.ended).most_common(3),
    }
    res["server"] = {
        "rss_ready_mb": round(ready["rss"] / MB, 1),
        "rss_connected_mb": round(st_connected["rss"] / MB, 1),
        "rss_after_changes_mb": round(st_after["rss"] / MB, 1),
        "peak_rss_mb": round(st_after["peak_rss"] / MB, 1),
        "rss_after_trim_mb": round(st_trim["rss"] / MB, 1),
        "streams": st_after["streams"],
        "cpu_total_s": round(_cpu(st_after) - _cpu(ready), 2),
        "gc_pause_total_s": st_after["gc_pause_total_s"],
        "gc_pause_max_ms": round(st_after["gc_pause_max_s"] * 1000.0, 1),
        "gc_collections": st_after["gc_collections"],
    }
    return res


# -- reporting ------------------------------------------------------------------------


def _median_or_none(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return percentile([v for v in values if v is not None], 50)


def _max_or_none(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return max(v for v in values if v is not None)


def targets(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    p99 = r["changes"]["ack_ms"]["p99"]
    if r["changes"]["missing"]:
        p99 = math.inf
    late = r["late"]["max_ms"] if not r["late"]["failed"] else math.inf
    rss = r["server"]["peak_rss_mb"]

    def verdict(value: float, limit: float) -> dict[str, Any]:
        met = value <= limit
        return {"value": value, "limit": limit, "met": met, "margin": limit - value}

    return {
        "change_ack_p99_ms": verdict(p99, TARGET_CHANGE_P99_MS),
        "late_full_config_max_ms": verdict(late, TARGET_LATE_MS),
        "peak_rss_mb": verdict(rss, TARGET_RSS_MB),
    }


def print_table(results: list[dict[str, Any]], o: Options, info: dict[str, Any]) -> None:
    modes = [r["mode"] for r in results]
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, fn: Any, unit: str = "") -> None:
        rows.append((label, [fmt(fn(r), unit) for r in results]))

    row("ramp: proxies with full config", lambda r: r["ramp"]["full_config"])
    row("ramp: all streams answered", lambda r: r["ramp"]["all_connected_s"], " s")
    row("ramp: all proxies full config", lambda r: r["ramp"]["all_full_config_s"], " s")
    for q in ("p50", "p90", "p99", "max"):
        row(f"ramp: full-config latency {q}", lambda r, q=q: r["ramp"]["full_config_ms"][q], " ms")
    row("ramp: server CPU", lambda r: r["ramp"]["server_cpu_s"], " s")
    row("idle: server CPU per second", lambda r: r["idle"]["server_cpu_s_per_s"], " s")
    row("late proxy: full config p50", lambda r: r["late"]["p50_ms"], " ms")
    row("late proxy: full config max", lambda r: r["late"]["max_ms"], " ms")
    row(
        "changes: proxy ACKs / missing",
        lambda r: f"{r['changes']['acks']} / {r['changes']['missing']}",
    )
    for q in ("p50", "p90", "p99", "max"):
        row(f"changes: apply→ACK {q}", lambda r, q=q: r["changes"]["ack_ms"][q], " ms")
    for q in ("p50", "p99"):
        row(f"changes: apply→proxy received {q}", lambda r, q=q: r["changes"]["recv_ms"][q], " ms")
    row(
        "changes: all proxies ACKed, per change p50",
        lambda r: _median_or_none(r["changes"]["all_proxies_acked_ms"]),
        " ms",
    )
    row(
        "changes: all proxies ACKed, per change max",
        lambda r: _max_or_none(r["changes"]["all_proxies_acked_ms"]),
        " ms",
    )
    row("changes: set_snapshot cost (max)", lambda r: max(r["changes"]["apply_ms"] or [0.0]), " ms")
    row("changes: server CPU", lambda r: r["changes"]["server_cpu_s"], " s")
    row("server RSS: ready (no proxies)", lambda r: r["server"]["rss_ready_mb"], " MB")
    row("server RSS: all connected", lambda r: r["server"]["rss_connected_mb"], " MB")
    row("server RSS: after changes", lambda r: r["server"]["rss_after_changes_mb"], " MB")
    row("server RSS: peak", lambda r: r["server"]["peak_rss_mb"], " MB")
    row("server RSS: after gc + malloc_trim", lambda r: r["server"]["rss_after_trim_mb"], " MB")
    row("server CPU: whole run", lambda r: r["server"]["cpu_total_s"], " s")
    row("server GC: total pause", lambda r: r["server"]["gc_pause_total_s"], " s")
    row("server GC: longest pause", lambda r: r["server"]["gc_pause_max_ms"], " ms")
    row("clients CPU: whole run", lambda r: r.get("client_cpu_s"), " s")
    row("machine: busy CPU, whole run", lambda r: r["machine"]["busy_cpu_s"], " s")
    row(
        "machine: of which not the benchmark's",
        lambda r: r["machine"]["other_processes_cpu_s"],
        " s",
    )
    row("machine: busy during changes", lambda r: 100 * r["changes"]["machine_busy_fraction"], " %")
    row("unexpected: updates while idle", lambda r: r["unexpected"]["updates_while_idle"])
    row("unexpected: non-EDS updates", lambda r: r["unexpected"]["non_eds_updates"] or 0)
    row("unexpected: unchanged CLAs resent", lambda r: r["unexpected"]["unchanged_clas_resent"])
    row("unexpected: streams ended", lambda r: r["unexpected"]["streams_ended"])
    row(
        "initial responses per type (max)",
        lambda r: ",".join(
            f"{k}={v}" for k, v in sorted(r["ramp"]["max_initial_responses_per_type"].items())
        ),
    )
    for label, key, unit in (
        (f"TARGET change ACK p99 ≤ {TARGET_CHANGE_P99_MS:.0f} ms", "change_ack_p99_ms", " ms"),
        (f"TARGET late proxy ≤ {TARGET_LATE_MS:.0f} ms", "late_full_config_max_ms", " ms"),
        (f"TARGET peak RSS ≤ {TARGET_RSS_MB:.0f} MB", "peak_rss_mb", " MB"),
    ):
        cells = []
        for r in results:
            t = r["targets"][key]
            cells.append(f"{'met' if t['met'] else 'MISSED'} ({fmt(t['value'], unit)})")
        rows.append((label, cells))

    heading = (
        f"xds-server serving core: {o.proxies} proxies x {o.clusters} clusters x "
        f"{o.endpoints} endpoints"
    )
    print_rows(heading, o, info, modes, rows)
    for r in results:
        errs = r["ramp"]["errors"] or r["unexpected"]["ended_errors"]
        if errs:
            print(f"{r['mode']} stream errors: {errs}")


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m bench.run", __doc__)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--endpoints", type=int, default=10)
    p.add_argument("--changes", type=int, default=5)
    p.add_argument("--change-interval", type=float, default=1.0, help="seconds between changes")
    p.add_argument("--late", type=int, default=5, help="late proxies, one at a time")
    add_run_arguments(p, 0.0, "new proxies per second during the ramp (0 = all at once)")
    p.add_argument(
        "--server-cprofile", metavar="PREFIX", help="cProfile the server into PREFIX-<mode>.prof"
    )
    p.add_argument(
        "--py-spy", metavar="PREFIX", help="py-spy record the server into PREFIX-<mode>-<phase>.*"
    )
    p.add_argument("--py-spy-phase", choices=("all", "ramp", "changes"), default="all")
    p.add_argument(
        "--py-spy-format", choices=tuple(PySpy.SUFFIX), default="flamegraph", help="py-spy format"
    )
    p.add_argument("--py-spy-native", action="store_true", help="include native (C) frames")
    a = p.parse_args(argv)
    o = options_from(Options, a)

    def one(mode: str) -> dict[str, Any]:
        r = run_mode(mode, o)
        r["targets"] = targets(r)
        return r

    return run_and_report(a, o, one, print_table)


if __name__ == "__main__":
    sys.exit(main())
