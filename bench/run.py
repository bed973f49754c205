"""Serving-core benchmark: many simulated Envoys on one xds-server, SotW and delta ADS.

    python -m bench.run --proxies 1000 --clusters 1000 --endpoints 10 --mode both --changes 5

For each mode it starts the server (``bench.server_proc``) and the simulated proxies
(``bench.sim`` worker processes), then measures:

1. ramp: all proxies connect at once (or at ``--ramp-rate``/s); time until every proxy
   has had a response and has its full configuration, and the per-proxy full-config
   latency (stream start → ACK of CDS+EDS+LDS+RDS);
2. late proxies: after everything is connected and idle, ``--late`` proxies connect one
   at a time, each as a new Envoy would: a new gRPC channel (TCP connection, HTTP/2
   handshake) and its stream; full-config latency counted from just before the channel
   is created is the "newly connecting proxy" figure;
3. endpoint changes: ``--changes`` changes (one ClusterLoadAssignment each), started
   ``--change-interval`` s apart, each followed until every proxy ACKed it. Reported:
   the *per-proxy* latency (the cache update → one proxy's ACK of the response carrying
   it, pooled over changes x proxies: p50/p99/max), and *change → last proxy ACKed*
   (per change, until every proxy had it: median and max over the changes); the server's
   CPU per change over that window only (psutil, from just before the change to when the
   benchmark saw the last ACK), not the waits between changes, and in the same window
   each server process's CPU, the simulated proxies' CPU and the machine's busy cores
   (who had the cores while the change was in flight);
4. server RSS (current and peak) and CPU seconds per phase, client CPU seconds.

``--server-processes N`` runs N server processes sharing the port with SO_REUSEPORT
(`bench.server_group`): every figure above is for all of them together (CPU and RSS
summed), the streams each got are shown, and ``--py-spy`` records the first one only.

Prints a table; ``--json [PATH]`` also writes the figures as JSON (``-`` = stdout).
Every wait has a timeout, and every child process is stopped on exit or Ctrl-C.
No thresholds are enforced: the targets are printed with met/missed.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import psutil

from bench import changes, common
from bench.common import MB, fmt, machine_cpu, percentile, ramp
from bench.server_group import ServerGroup

TARGET_CHANGE_P99_MS = 500.0
TARGET_LATE_MS = 250.0
TARGET_RSS_MB = 300.0


# -- the server process ---------------------------------------------------------------


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
            raise common.BenchError("py-spy not found (pip install py-spy)")
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
                raise common.BenchError(f"py-spy exited with {self.proc.returncode}: {self.cmd}")
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
class Options(common.RunOptions):
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
    default_gc: bool
    server_processes: int


def _cpu(stats: dict[str, Any]) -> float:
    return float(stats["cpu_user"]) + float(stats["cpu_system"])


def run_mode(mode: str, o: Options) -> dict[str, Any]:
    with common.ServerRun(mode, o, "bench-server") as run:
        prof = f"{o.server_cprofile}-{mode}.prof" if o.server_cprofile else None
        server = ServerGroup(
            o.server_processes, o.clusters, o.endpoints, run.log, prof, o.default_gc
        )
        run.adopt("server_process_cpu_s", server.close)
        ready = server.wait_ready(60.0)
        spy: PySpy | None = None
        if o.py_spy:
            spy = PySpy(
                server.pid, o.py_spy, mode, o.py_spy_phase, o.py_spy_format, o.py_spy_native
            )
            run.stack.callback(spy.close)
        w = run.start_workers(server.port)
        run.out.update(_measure(o, server, w, ready, spy.enter if spy else lambda _p: None))
    return run.out


def _measure(
    o: Options,
    server: ServerGroup,
    w: common.Workers,
    ready: dict[str, Any],
    phase: Callable[[str], None],
) -> dict[str, Any]:
    data = w.data
    res: dict[str, Any] = {}

    # 1. ramp
    phase("ramp")
    st_before = server.request({"cmd": "stats"})
    done, res["ramp"] = ramp(w, o, require_all=False)
    st_ramp = server.request({"cmd": "stats"})
    init_counts: Counter[str] = Counter()
    for r in done:
        for t, c in r["initial_responses"].items():
            init_counts[t] = max(init_counts[t], c)
    res["ramp"]["max_initial_responses_per_type"] = dict(init_counts)
    res["ramp"]["server_cpu_s"] = round(_cpu(st_ramp) - _cpu(st_before), 2)

    # 2. settle, then late proxies one at a time, each on a new connection
    phase("settle")
    w.pump_for(o.settle)
    st_idle = server.request({"cmd": "stats"})
    idle_rate = (_cpu(st_idle) - _cpu(st_ramp)) / max(1e-9, st_idle["time"] - st_ramp["time"])
    res["idle"] = {
        "streams": st_idle["streams"],
        "streams_each": st_idle["streams_each"],
        "server_cpu_s_per_s": round(idle_rate, 3),
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

    # 3. endpoint changes, one at a time: each followed until every proxy ACKed it
    rng = random.Random(o.seed)
    targets = rng.sample(range(o.clusters), min(o.changes, o.clusters))
    tr = changes.Tracker(w)
    apply_cost_ms: list[float] = []
    changes_start = len(data.updates)
    st_mark = server.request({"cmd": "gc_mark"})
    phase("changes")
    mbusy0, mtotal0 = machine_cpu()
    t0 = time.monotonic()
    records: list[dict[str, Any]] = []
    for k, cluster in enumerate(targets):
        w.pump_for(max(0.0, t0 + k * o.change_interval - time.monotonic()))

        def act(k: int = k, cluster: int = cluster) -> changes.Edit:
            reply = server.request({"cmd": "change", "cluster": cluster, "generation": k + 1})
            if not reply.get("changed"):
                raise common.BenchError(f"change {k} did not change the snapshot")
            apply_cost_ms.append((reply["done_at"] - reply["applied_at"]) * 1000.0)
            what = f"cluster {cluster}"
            return changes.Edit("change", what, [reply["marker"]], [], reply["applied_at"])

        # Who used the two cores inside this change's window: the server processes
        # (each), the simulated proxies' workers, the machine as a whole.
        m0, s0, c0 = machine_cpu(), server.cpu_each(), _clients_cpu(w)
        rec = tr.record(tr.follow(server, act, o.timeout))
        m1, s1, c1 = machine_cpu(), server.cpu_each(), _clients_cpu(w)
        rec["server_cpu_each_s"] = [round(b - a, 3) for a, b in zip(s0, s1, strict=True)]
        rec["clients_cpu_s"] = round(c1 - c0, 3)
        rec["machine_busy_cores"] = round(
            (m1[0] - m0[0]) / max(1e-9, m1[1] - m0[1]) * len(os.sched_getaffinity(0)), 2
        )
        records.append(rec)
    w.pump_for(1.0)  # catch anything that follows the changes (resends)
    st_after = server.request({"cmd": "stats"})
    mbusy1, mtotal1 = machine_cpu()
    phase("end")
    st_trim = server.request({"cmd": "trim"})
    res["changes"] = {
        **changes.summary(records),
        "proxies": len(tr.live),
        "apply_ms": [round(x, 2) for x in apply_cost_ms],
        "machine_busy_fraction": round((mbusy1 - mbusy0) / max(1e-9, mtotal1 - mtotal0), 3),
        "in_windows": _window_means(records),
    }
    changes.drop_raw(records)
    res["changes"]["each"] = records

    # 4. anything a proxy received after its full config that no change explains
    expected = set(tr.by_marker)
    by_type: Counter[str] = Counter()
    extra_eds = 0
    for u in data.updates[changes_start:]:
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
        "processes": len(st_after["streams_each"]),
        "streams_each": st_after["streams_each"],
        "versions_identical": True,  # merge() raised otherwise
        "cpu_total_s": round(_cpu(st_after) - _cpu(ready), 2),
        "gc_pause_total_s": st_after["gc_pause_total_s"],
        "gc_pause_max_ms": round(st_after["gc_pause_max_s"] * 1000.0, 1),
        "gc_collections": st_after["gc_collections"],
        "gc_pause_max_by_generation_ms": st_after["gc_pause_max_by_generation_ms"],
        "gc_pause_max_changes_ms": round(st_after["gc_pause_max_since_mark_s"] * 1000.0, 1),
        "gc_collections_changes": [
            a - b
            for a, b in zip(st_after["gc_collections"], st_mark["gc_collections"], strict=True)
        ],
    }
    return res


def _clients_cpu(w: common.Workers) -> float:
    """CPU seconds of the simulated proxies' worker processes so far (from outside)."""
    total = 0.0
    for p in w.procs:
        with contextlib.suppress(psutil.Error, TypeError):
            t = psutil.Process(p.pid).cpu_times()
            total += t.user + t.system
    return total


def _window_means(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the changes' windows (change → last ACK seen): CPU seconds of each
    server process, of the clients, and the machine's busy cores."""
    if not records:
        return {}
    n = len(records)
    each = [sum(c) / n for c in zip(*(r["server_cpu_each_s"] for r in records), strict=True)]
    return {
        "server_cpu_each_s": [round(c, 3) for c in each],
        "clients_cpu_s": round(sum(r["clients_cpu_s"] for r in records) / n, 3),
        "machine_busy_cores": round(sum(r["machine_busy_cores"] for r in records) / n, 2),
        "window_s": round(sum(r["cpu_window_s"] for r in records) / n, 3),
    }


# -- reporting ------------------------------------------------------------------------


def targets(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    ch = r["changes"]
    # A change some proxy never ACKed misses both change targets.
    p99 = ch["per_proxy_ack_ms"]["p99"] if not ch["missing"] else math.inf
    last = ch["last_ack_ms"]["max"]
    late = r["late"]["max_ms"] if not r["late"]["failed"] else math.inf
    rss = r["server"]["peak_rss_mb"]

    def verdict(value: float | None, limit: float) -> dict[str, Any]:
        value = math.inf if value is None else value
        met = value <= limit
        return {"value": value, "limit": limit, "met": met, "margin": limit - value}

    return {
        "change_ack_p99_ms": verdict(p99, TARGET_CHANGE_P99_MS),
        "change_last_ack_max_ms": verdict(last, TARGET_CHANGE_P99_MS),
        "late_full_config_max_ms": verdict(late, TARGET_LATE_MS),
        "peak_rss_mb": verdict(rss, TARGET_RSS_MB),
    }


def _cpu_per_proxy_ms(r: dict[str, Any]) -> float | None:
    """Server CPU per change (all processes), divided by the proxies that ACKed it."""
    mean = r["changes"]["server_cpu_s"]["mean"]
    return None if mean is None else mean * 1000.0 / max(1, r["changes"]["proxies"])


def _window_cell(r: dict[str, Any]) -> str:
    w = r["changes"]["in_windows"]
    each = " + ".join(fmt(c * 1000.0) for c in w["server_cpu_each_s"])
    return f"{each} / {fmt(w['clients_cpu_s'] * 1000.0)} ms"


def print_table(results: list[dict[str, Any]], o: Options, info: dict[str, Any]) -> None:
    t = common.Table(results)
    row = t.row
    row(
        "server processes: streams each (SO_REUSEPORT split)",
        lambda r: " + ".join(str(n) for n in r["server"]["streams_each"]),
    )
    row("ramp: proxies with full config", lambda r: r["ramp"]["full_config"])
    row("ramp: all streams answered", lambda r: r["ramp"]["all_connected_s"], " s")
    row("ramp: all proxies full config", lambda r: r["ramp"]["all_full_config_s"], " s")
    for q in ("p50", "p90", "p99", "max"):
        row(f"ramp: full-config latency {q}", lambda r, q=q: r["ramp"]["full_config_ms"][q], " ms")
    row("ramp: server CPU", lambda r: r["ramp"]["server_cpu_s"], " s")
    row("idle: server CPU per second", lambda r: r["idle"]["server_cpu_s_per_s"], " s")
    row("late proxy, new connection: full config p50", lambda r: r["late"]["p50_ms"], " ms")
    row("late proxy, new connection: full config max", lambda r: r["late"]["max_ms"], " ms")
    row(
        "changes: proxy ACKs / missing",
        lambda r: f"{r['changes']['acks']} / {r['changes']['missing']}",
    )
    changes.change_rows(t, "changes", "set_snapshot", "changes", lambda r: r["changes"])
    row(
        "changes: set_snapshot→received per proxy, p50/p99",
        lambda r: (
            " / ".join(fmt(r["changes"]["per_proxy_recv_ms"][q]) for q in ("p50", "p99")) + " ms"
        ),
    )
    row("changes: server CPU per proxy per change (mean)", _cpu_per_proxy_ms, " ms")
    row("changes window: server CPU each process / clients CPU (mean)", _window_cell)
    row(
        "changes window: machine busy cores (mean)",
        lambda r: r["changes"]["in_windows"]["machine_busy_cores"],
    )
    row("changes: set_snapshot cost (max)", lambda r: max(r["changes"]["apply_ms"] or [0.0]), " ms")
    row("server RSS: ready (no proxies)", lambda r: r["server"]["rss_ready_mb"], " MB")
    row("server RSS: all connected", lambda r: r["server"]["rss_connected_mb"], " MB")
    row("server RSS: after changes", lambda r: r["server"]["rss_after_changes_mb"], " MB")
    row("server RSS: peak", lambda r: r["server"]["peak_rss_mb"], " MB")
    row("server RSS: after gc + malloc_trim", lambda r: r["server"]["rss_after_trim_mb"], " MB")
    row("server GC: total pause", lambda r: r["server"]["gc_pause_total_s"], " s")
    row("server GC: longest pause", lambda r: r["server"]["gc_pause_max_ms"], " ms")
    row(
        "server GC: longest pause by generation (0/1/2)",
        lambda r: " / ".join(fmt(v) for v in r["server"]["gc_pause_max_by_generation_ms"]) + " ms",
    )
    row(
        "server GC: longest pause during changes",
        lambda r: r["server"]["gc_pause_max_changes_ms"],
        " ms",
    )
    row(
        "server GC: collections during changes (gen 0/1/2)",
        lambda r: "/".join(str(n) for n in r["server"]["gc_collections_changes"]),
    )
    t.whole_run()
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
    limit = f"{TARGET_CHANGE_P99_MS:.0f} ms"
    for label, key, unit in (
        (f"TARGET per-proxy change→ACK p99 ≤ {limit}", "change_ack_p99_ms", " ms"),
        (f"TARGET change→all proxies ACKed, max ≤ {limit}", "change_last_ack_max_ms", " ms"),
        (f"TARGET late proxy ≤ {TARGET_LATE_MS:.0f} ms", "late_full_config_max_ms", " ms"),
        (f"TARGET peak RSS ≤ {TARGET_RSS_MB:.0f} MB", "peak_rss_mb", " MB"),
    ):

        def verdict(r: dict[str, Any], key: str = key, unit: str = unit) -> str:
            v = r["targets"][key]
            return f"{'met' if v['met'] else 'MISSED'} ({fmt(v['value'], unit)})"

        row(label, verdict)
    heading = (
        f"xds-server serving core: {o.proxies} proxies x {o.clusters} clusters x "
        f"{o.endpoints} endpoints"
    )
    t.print(heading, o, info)
    for r in results:
        errs = r["ramp"]["errors"] or r["unexpected"]["ended_errors"]
        if errs:
            print(f"{r['mode']} stream errors: {errs}")


def main(argv: list[str] | None = None) -> int:
    def arguments(p: argparse.ArgumentParser) -> None:
        common.int_options(p, clusters=1000, endpoints=10, changes=5)
        p.add_argument("--change-interval", type=float, default=1.0, help="seconds between changes")
        p.add_argument("--late", type=int, default=5, help="late proxies, one at a time")
        p.add_argument(
            "--server-cprofile",
            metavar="PREFIX",
            help="cProfile the server into PREFIX-<mode>.prof",
        )
        p.add_argument(
            "--py-spy",
            metavar="PREFIX",
            help="py-spy record the server into PREFIX-<mode>-<phase>.*",
        )
        p.add_argument("--py-spy-phase", choices=("all", "ramp", "changes"), default="all")
        p.add_argument(
            "--py-spy-format",
            choices=tuple(PySpy.SUFFIX),
            default="flamegraph",
            help="py-spy format",
        )
        p.add_argument("--py-spy-native", action="store_true", help="include native (C) frames")
        p.add_argument(
            "--server-processes",
            type=int,
            default=1,
            metavar="N",
            help="N server processes sharing the port with SO_REUSEPORT (bench.server_group)",
        )
        p.add_argument(
            "--default-gc",
            action="store_true",
            help="leave the server's garbage collector as Python sets it (no gc_tuning)",
        )

    def one(mode: str, o: Options) -> dict[str, Any]:
        r = run_mode(mode, o)
        r["targets"] = targets(r)
        return r

    ramp_help = "new proxies per second during the ramp (0 = all at once)"
    prog = "python -m bench.run"
    return common.cli(prog, __doc__, Options, arguments, one, print_table, argv, 0.0, ramp_help)


if __name__ == "__main__":
    sys.exit(main())
