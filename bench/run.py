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

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import IO, Any, ClassVar

from bench import sim

MB = 1024 * 1024

TARGET_CHANGE_P99_MS = 500.0
TARGET_LATE_MS = 250.0
TARGET_RSS_MB = 300.0


class BenchError(Exception):
    pass


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]


def dist_ms(values_s: Sequence[float]) -> dict[str, float]:
    ms = [v * 1000.0 for v in values_s]
    return {
        "n": len(ms),
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else math.nan,
    }


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


@dataclass
class Collected:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    updates: list[dict[str, Any]] = field(default_factory=list)
    ended: list[dict[str, Any]] = field(default_factory=list)
    client_cpu: dict[int, float] = field(default_factory=dict)


class Workers:
    """``bench.sim`` worker processes and their pipes."""

    def __init__(self, count: int, port: int, delta: bool, streams_per_channel: int):
        ctx = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[BaseProcess] = []
        self.data = Collected()
        for i in range(count):
            parent, child = ctx.Pipe()
            p = ctx.Process(
                target=sim.worker_main,
                args=(child, port, delta, streams_per_channel),
                name=f"sim-{i}",
                daemon=True,
            )
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)
        self.hello: set[int] = set()
        self.open = set(range(count))

    def _handle(self, i: int, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "hello":
            self.hello.add(i)
        elif kind == "full":
            for r in msg[1]:
                self.data.results[r["node_id"]] = r
        elif kind == "update":
            self.data.updates.extend(msg[1])
        elif kind == "ended":
            self.data.ended.extend(msg[1])
        elif kind == "bye":
            self.data.client_cpu[i] = float(msg[1])

    def pump(self, timeout: float) -> None:
        """Drain whatever the workers sent, waiting up to `timeout` for something."""
        live = [self.conns[i] for i in self.open]
        if not live:
            time.sleep(timeout)
            return
        for conn in wait(live, timeout):
            assert isinstance(conn, Connection)
            i = self.conns.index(conn)
            try:
                while conn.poll():
                    self._handle(i, conn.recv())
            except (EOFError, OSError):
                self.open.discard(i)

    def pump_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.pump(min(left, 0.1))

    def pump_until(self, done: Any, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not done():
            left = end - time.monotonic()
            if left <= 0:
                return False
            self.pump(min(left, 0.1))
        return True

    def send(self, i: int, msg: tuple[Any, ...]) -> None:
        self.conns[i].send(msg)

    def close(self) -> None:
        for i in list(self.open):
            with contextlib.suppress(Exception):
                self.conns[i].send(("stop",))
        with contextlib.suppress(Exception):
            self.pump_until(lambda: len(self.data.client_cpu) >= len(self.procs), 15.0)
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        for c in self.conns:
            c.close()


# -- one benchmark run ----------------------------------------------------------------


@dataclass
class Options:
    proxies: int
    clusters: int
    endpoints: int
    changes: int
    workers: int
    streams_per_channel: int
    ramp_rate: float
    late: int
    change_interval: float
    settle: float
    timeout: float
    seed: int
    server_cprofile: str | None
    py_spy: str | None
    py_spy_phase: str
    py_spy_format: str
    py_spy_native: bool
    keep_logs: bool


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / hz, total / hz


def machine_info() -> dict[str, Any]:
    """What the figures were measured on (for docs/benchmarks.md)."""
    from importlib.metadata import PackageNotFoundError, version

    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as f:
        mem_kb = int(f.readline().split()[1])
    root = Path(__file__).resolve().parent.parent
    rev = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "xds_server", "translators"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        if dirty:
            rev += " (xds_server/translators modified in the work tree)"
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "grpcio": pkg("grpcio"),
        "protobuf": pkg("protobuf"),
        "kernel": platform.release(),
        "git": rev,
    }


def _cpu(stats: dict[str, Any]) -> float:
    return float(stats["cpu_user"]) + float(stats["cpu_system"])


@contextlib.contextmanager
def _server_log(keep: bool, mode: str) -> Iterator[IO[bytes]]:
    f = tempfile.NamedTemporaryFile(prefix=f"bench-server-{mode}-", suffix=".log", delete=False)
    try:
        yield f
    finally:
        f.close()
        if keep:
            print(f"server log: {f.name}", file=sys.stderr)
        else:
            with contextlib.suppress(OSError):
                os.unlink(f.name)


def _tail(path: str, lines: int = 30) -> str:
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])
    return ""


def run_mode(mode: str, o: Options) -> dict[str, Any]:
    delta = mode == "delta"
    out: dict[str, Any] = {"mode": mode}
    busy0, total0 = machine_cpu()
    own0 = os.times()
    with _server_log(o.keep_logs, mode) as log:
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
            if not w.pump_until(lambda: len(w.hello) == o.workers, 60.0):
                raise BenchError("simulator workers did not start within 60 s")
            out.update(_measure(o, server, w, ready, spy.enter if spy else lambda _p: None))
        except BenchError:
            print(_tail(log.name), file=sys.stderr)
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
    busy1, total1 = machine_cpu()
    own1 = os.times()
    ours = (
        out.get("server_process_cpu_s", 0.0)
        + out.get("client_cpu_s", 0.0)
        + (own1.user + own1.system - own0.user - own0.system)
    )
    out["machine"] = {
        "busy_cpu_s": round(busy1 - busy0, 2),
        "capacity_cpu_s": round(total1 - total0, 2),
        # Busy CPU not accounted to the server, the workers or this process: other
        # processes on the (shared) machine, plus kernel work not charged to a process.
        "other_processes_cpu_s": round(max(0.0, busy1 - busy0 - ours), 2),
        "loadavg_end": os.getloadavg()[0],
    }
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


def _fmt(v: Any, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        if unit == " s":
            return f"{v:,.2f}{unit}"
        return f"{v:,.1f}{unit}" if abs(v) < 1e5 else f"{v:,.0f}{unit}"
    return f"{v}{unit}"


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
        rows.append((label, [_fmt(fn(r), unit) for r in results]))

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
            cells.append(f"{'met' if t['met'] else 'MISSED'} ({_fmt(t['value'], unit)})")
        rows.append((label, cells))

    width = max(len(label) for label, _ in rows) + 2
    cols = [max(len(m), *(len(c[i]) for _, c in rows)) + 2 for i, m in enumerate(modes)]
    print()
    print(
        f"xds-server serving core: {o.proxies} proxies x {o.clusters} clusters x "
        f"{o.endpoints} endpoints, {o.workers} client workers, "
        f"{o.streams_per_channel} streams/channel"
    )
    print(
        f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['ram_gb']} GB RAM, "
        f"Python {info['python']}, grpcio {info['grpcio']}, protobuf {info['protobuf']}, "
        f"code {info['git']}"
    )
    print("".ljust(width) + "".join(m.rjust(w) for m, w in zip(modes, cols, strict=True)))
    for label, cells in rows:
        print(label.ljust(width) + "".join(c.rjust(w) for c, w in zip(cells, cols, strict=True)))
    for r in results:
        errs = r["ramp"]["errors"] or r["unexpected"]["ended_errors"]
        if errs:
            print(f"{r['mode']} stream errors: {errs}")


def _on_sigterm(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description=(__doc__ or "").splitlines()[0]
    )
    p.add_argument("--proxies", type=int, default=1000)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--endpoints", type=int, default=10)
    p.add_argument("--mode", choices=("sotw", "delta", "both"), default="both")
    p.add_argument("--changes", type=int, default=5)
    p.add_argument("--change-interval", type=float, default=1.0, help="seconds between changes")
    p.add_argument("--late", type=int, default=5, help="late proxies, one at a time")
    p.add_argument("--workers", type=int, default=3, help="client worker processes")
    p.add_argument("--streams-per-channel", type=int, default=50)
    p.add_argument(
        "--ramp-rate",
        type=float,
        default=0.0,
        help="new proxies per second during the ramp (0 = all at once)",
    )
    p.add_argument("--settle", type=float, default=3.0, help="idle seconds after the ramp")
    p.add_argument("--timeout", type=float, default=180.0, help="limit for each phase (s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="also write the figures as JSON to PATH (default stdout)",
    )
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
    p.add_argument("--keep-logs", action="store_true", help="keep the server's stderr log")
    a = p.parse_args(argv)
    o = Options(
        proxies=a.proxies,
        clusters=a.clusters,
        endpoints=a.endpoints,
        changes=a.changes,
        workers=max(1, a.workers),
        streams_per_channel=a.streams_per_channel,
        ramp_rate=a.ramp_rate,
        late=a.late,
        change_interval=a.change_interval,
        settle=a.settle,
        timeout=a.timeout,
        seed=a.seed,
        server_cprofile=a.server_cprofile,
        py_spy=a.py_spy,
        py_spy_phase=a.py_spy_phase,
        py_spy_format=a.py_spy_format,
        py_spy_native=a.py_spy_native,
        keep_logs=a.keep_logs,
    )
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    modes = ["sotw", "delta"] if a.mode == "both" else [a.mode]
    results = []
    try:
        for mode in modes:
            print(f"running {mode} …", file=sys.stderr, flush=True)
            r = run_mode(mode, o)
            r["targets"] = targets(r)
            results.append(r)
    except KeyboardInterrupt:
        print("interrupted; child processes stopped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    info = machine_info()
    doc = {"argv": sys.argv, "options": vars(o), "machine": info, "results": results}
    text = json.dumps(doc, indent=2, default=str)
    if a.json and a.json != "-":
        Path(a.json).write_text(text + "\n")
    print_table(results, o, info)
    if a.json == "-":
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
