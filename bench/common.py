"""What the benchmarks share: the simulated-proxy workers and the ramp, one mode's run
(`ServerRun`: the server log, the children, their CPU and the machine's), the real
``xds-server`` process (`RealServer`, the test harness's `XdsServerProcess` with psutil
figures, labelled /metrics and log timestamps), statistics, machine facts, the command
line and the printed table.

Waiting and the server process come from ``tests.harness`` (importable from the
repository root, where ``python -m bench.…`` runs), so benchmarks and tests start and
stop the server the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import IO, Any, TypeVar

import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench import sim
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for

MB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T", bound="RunOptions")
# The packages whose changes make a figure "not the committed code".
SERVER_CODE = ("xds_server", "translators", "sources")


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

    def wait_started(self, timeout: float = 60.0) -> None:
        """Every worker has said hello (its interpreter and gRPC are up)."""
        if not self.pump_until(lambda: len(self.hello) == len(self.procs), timeout):
            raise BenchError(f"simulator workers did not start within {timeout:g} s")

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

    def close(self) -> float:
        """Stop the workers; their CPU seconds (as they reported them)."""
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
        return sum(self.data.client_cpu.values())


def ramp(
    w: Workers, o: RunOptions, require_all: bool = True
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``o.proxies`` simulated proxies connect at ``o.ramp_rate``/s (0: all at once) until
    each has its full configuration or has failed: those that got it, and the figures."""
    ids = [f"proxy-{i:05d}" for i in range(o.proxies)]
    t0 = time.time()
    interval = o.workers / o.ramp_rate if o.ramp_rate > 0 else 0.0
    for i in range(o.workers):
        w.send(i, ("start", ids[i :: o.workers], interval))
    ok = w.pump_until(lambda: len(w.data.results) >= o.proxies, o.timeout)
    results = list(w.data.results.values())
    done = [r for r in results if r["full"] is not None]
    firsts = [r["first_response"] for r in results if r["first_response"] is not None]
    everyone = len(done) == o.proxies
    figures = {
        "proxies": o.proxies,
        "full_config": len(done),
        "failed": o.proxies - len(done),
        "timed_out": not ok,
        "errors": Counter(r["error"] for r in results if r["error"]).most_common(5),
        "all_connected_s": round(max(firsts) - t0, 3) if len(firsts) == o.proxies else None,
        "all_full_config_s": round(max(r["full"] for r in done) - t0, 3) if everyone else None,
        "full_config_ms": dist_ms([r["full"] - r["start"] for r in done]),
    }
    if require_all and not everyone:
        raise BenchError(f"only {len(done)} of {o.proxies} proxies got their full config")
    return done, figures


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

    def git(*args: str) -> str:
        cmd = ["git", "-C", str(ROOT), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True).stdout

    rev = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = git("rev-parse", "--short", "HEAD").strip()
        if git("status", "--porcelain", "--", *SERVER_CODE).strip():
            rev += f" ({'/'.join(SERVER_CODE)} modified in the work tree)"
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


@contextlib.contextmanager
def server_log(keep: bool, mode: str, prefix: str = "bench-server") -> Iterator[IO[bytes]]:
    f = tempfile.NamedTemporaryFile(prefix=f"{prefix}-{mode}-", suffix=".log", delete=False)
    try:
        yield f
    finally:
        f.close()
        if keep:
            print(f"server log: {f.name}", file=sys.stderr)
        else:
            with contextlib.suppress(OSError):
                os.unlink(f.name)


def tail(path: str, lines: int = 30) -> str:
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])
    return ""


def fmt(v: Any, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        if unit == " s":
            return f"{v:,.2f}{unit}"
        return f"{v:,.1f}{unit}" if abs(v) < 1e5 else f"{v:,.0f}{unit}"
    return f"{v}{unit}"


def print_rows(
    heading: str,
    o: Any,
    info: dict[str, Any],
    modes: Sequence[str],
    rows: Sequence[tuple[str, list[str]]],
) -> None:
    """The table: `heading` with the client setup of options `o` and the machine, then
    one column per mode and one line per row."""
    width = max(len(label) for label, _ in rows) + 2
    cols = [max(len(m), *(len(c[i]) for _, c in rows)) + 2 for i, m in enumerate(modes)]
    print()
    print(f"{heading}, {o.workers} client workers, {o.streams_per_channel} streams/channel")
    print(
        f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['ram_gb']} GB RAM, "
        f"Python {info['python']}, grpcio {info['grpcio']}, protobuf {info['protobuf']}, "
        f"code {info['git']}"
    )
    print("".ljust(width) + "".join(m.rjust(w) for m, w in zip(modes, cols, strict=True)))
    for label, cells in rows:
        print(label.ljust(width) + "".join(c.rjust(w) for c, w in zip(cells, cols, strict=True)))


class Table:
    """The printed table: one column per mode (a result), one line per row."""

    def __init__(self, results: Sequence[dict[str, Any]]):
        self.results = results
        self.rows: list[tuple[str, list[str]]] = []

    def row(self, label: str, fn: Callable[[dict[str, Any]], Any], unit: str = "") -> None:
        """A row of `fn(result)` per mode: a string as it is, a number with `fmt`."""
        cells = [v if isinstance(v := fn(r), str) else fmt(v, unit) for r in self.results]
        self.rows.append((label, cells))

    def connect_rows(self) -> None:
        """The rows of `connect_all`'s figures: startup, ramp, idle."""
        self.row("startup: process → /readyz 200", lambda r: r["startup"]["ready_s"], " s")
        self.row("startup: server RSS at ready", lambda r: r["startup"]["rss_ready_mb"], " MB")
        self.row(
            "ramp: proxies with full config",
            lambda r: f"{r['ramp']['full_config']} in {fmt(r['ramp']['all_full_config_s'], ' s')}",
        )
        self.row("idle: server RSS, all connected", lambda r: r["idle"]["rss_connected_mb"], " MB")
        self.row("idle: server CPU per second", lambda r: r["idle"]["server_cpu_s_per_s"], " s")
        self.row("unexpected: updates while idle", lambda r: r["idle"]["updates_while_idle"])

    def whole_run(self) -> None:
        """The CPU rows every benchmark ends with: its processes', and the machine's."""
        self.row("server CPU: whole run", lambda r: r.get("server_process_cpu_s"), " s")
        self.row("clients CPU: whole run", lambda r: r.get("client_cpu_s"), " s")
        self.row(
            "machine: busy CPU / capacity, whole run",
            lambda r: (
                f"{fmt(r['machine']['busy_cpu_s'])} / {fmt(r['machine']['capacity_cpu_s'])} s"
            ),
        )
        self.row(
            "machine: CPU not the benchmark's (others)",
            lambda r: r["machine"]["other_processes_cpu_s"],
            " s",
        )

    def print(self, heading: str, o: Any, info: dict[str, Any]) -> None:
        print_rows(heading, o, info, [r["mode"] for r in self.results], self.rows)


# -- the real server ---------------------------------------------------------------------


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """The harness's `wait_for`, failing as a benchmark does (BenchError, no traceback)."""
    try:
        return wait_for(check, timeout=timeout, interval=interval, message=what)
    except AssertionError as exc:  # a timeout, or ServerExited: the server died meanwhile
        raise BenchError(str(exc)) from None


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class RealServer(XdsServerProcess):
    """The harness's ``xds-server`` process, as a benchmark watches it: its CPU and memory
    (psutil), its /metrics with labels parsed, and what its log says when.

    Its own process group (Ctrl-C is the benchmark's to handle; it stops it in order),
    ``--shutdown-grace 1`` so that stopping it does not wait for the streams.
    """

    def __init__(self, source_args: Sequence[str], log_path: str | Path):
        super().__init__(
            *source_args, "--shutdown-grace", "1", log_path=Path(log_path), new_session=True
        )
        self.log_offset = 0
        self.started = 0.0

    def start(self, timeout: float = 20.0, wait_ready: bool = False) -> RealServer:
        self.started = time.time()
        super().start(timeout, wait_ready)
        self.ps = psutil.Process(self.pid)
        return self

    def wait_ready(self, timeout: float = 20.0) -> float:
        """Seconds from process start to /readyz answering 200."""
        wait_until("xds-server ready", self.ready, timeout, interval=0.05)
        return time.time() - self.started

    def samples(self) -> Samples:
        """/metrics as {(name, labels): value}."""
        status, text = self.get_text("/metrics", timeout=10.0)
        if status != 200:
            raise BenchError(f"/metrics answered {status}")
        return {
            (s.name, frozenset(s.labels.items())): float(s.value)
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }

    def cpu(self) -> float:
        """CPU seconds (user + system) of the server process so far."""
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def stats(self) -> dict[str, float]:
        """RSS, peak RSS (VmHWM) and CPU seconds of the server process."""
        peak = 0
        with open(f"/proc/{self.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
        return {
            "rss": float(self.ps.memory_info().rss),
            "peak_rss": float(peak),
            "cpu": self.cpu(),
            "time": time.time(),
        }

    def published_since(self, since: float, logger: str = "sources.file") -> float | None:
        """When the source `logger` (by default the file source) last logged "published …"
        at or after `since` (the log's clock has millisecond resolution), reading the log
        from where it stopped."""
        found = None
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset)
            chunk = f.read()
        complete = chunk.rfind(b"\n") + 1
        self.log_offset += complete
        for line in chunk[:complete].decode(errors="replace").splitlines():
            if f"{logger}:" not in line or ": published " not in line:
                continue
            at = log_time(line)
            if at is not None and at >= since - 0.001 and found is None:
                found = at
        return found

    def close(self) -> float | None:
        """Stop the server (SIGTERM, then SIGKILL); its CPU seconds just before."""
        cpu = None
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(psutil.Error, AttributeError):  # AttributeError: no ps
                cpu = self.cpu()
            self.stop()
        return cpu


def log_time(line: str) -> float | None:
    """The timestamp that starts a server log line (millisecond resolution), if any."""
    try:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


class MachineMeter:
    """Busy CPU of the whole machine over a run, and how much of it was not ours."""

    def __init__(self) -> None:
        self.busy0, self.total0 = machine_cpu()
        self.own0 = os.times()

    def result(self, children_cpu_s: float) -> dict[str, Any]:
        """`children_cpu_s`: CPU seconds of the benchmark's child processes."""
        busy1, total1 = machine_cpu()
        own1 = os.times()
        ours = children_cpu_s + (own1.user + own1.system - self.own0.user - self.own0.system)
        return {
            "busy_cpu_s": round(busy1 - self.busy0, 2),
            "capacity_cpu_s": round(total1 - self.total0, 2),
            # Busy CPU not accounted to the server, the workers or this process: other
            # processes on the (shared) machine, plus kernel work not charged to a process.
            "other_processes_cpu_s": round(max(0.0, busy1 - self.busy0 - ours), 2),
            "loadavg_end": os.getloadavg()[0],
        }


def connect_all(server: RealServer, w: Workers, o: RunOptions, ready_s: float) -> dict[str, Any]:
    """From a ready server: its startup figures, the `ramp`, ``o.settle`` s idle and the
    idle figures (server CPU per second over the settle time, updates nobody caused)."""
    st_ready = server.stats()
    res: dict[str, Any] = {
        "startup": {
            "ready_s": round(ready_s, 2),
            "rss_ready_mb": round(st_ready["rss"] / MB, 1),
            "cpu_s": round(st_ready["cpu"], 2),
        }
    }
    res["ramp"] = ramp(w, o)[1]
    st_ramp = server.stats()
    res["ramp"]["server_cpu_s"] = round(st_ramp["cpu"] - st_ready["cpu"], 2)
    w.pump_for(o.settle)
    st_idle = server.stats()
    res["idle"] = {
        "rss_connected_mb": round(st_idle["rss"] / MB, 1),
        "peak_rss_mb": round(st_idle["peak_rss"] / MB, 1),
        "server_cpu_s_per_s": round(
            (st_idle["cpu"] - st_ramp["cpu"]) / max(1e-9, st_idle["time"] - st_ramp["time"]), 3
        ),
        "updates_while_idle": len(w.data.updates),
    }
    return res


def server_end(server: RealServer, w: Workers) -> dict[str, Any]:
    """The server's memory at the end, and the streams that ended on the way."""
    st = server.stats()
    return {
        "rss_end_mb": round(st["rss"] / MB, 1),
        "peak_rss_mb": round(st["peak_rss"] / MB, 1),
        "streams_ended": len(w.data.ended),
    }


class ServerRun:
    """One mode of a benchmark: the server log, the server, the simulated proxies and
    whatever else it adopts, stopped in reverse order on exit (also on error and Ctrl-C),
    leaving in `out` the CPU seconds of each child and the machine's CPU over the run.

    On a BenchError it prints the tail of the server log first.
    """

    def __init__(self, mode: str, o: RunOptions, prefix: str):
        self.mode = mode
        self.o = o
        self.prefix = prefix
        self.out: dict[str, Any] = {"mode": mode}
        self.stack = contextlib.ExitStack()
        self.children_cpu = 0.0

    def __enter__(self) -> ServerRun:
        self.meter = MachineMeter()
        self.log = self.stack.enter_context(server_log(self.o.keep_logs, self.mode, self.prefix))
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, BenchError):
            print(tail(self.log.name), file=sys.stderr)
        self.stack.close()
        self.out["machine"] = self.meter.result(self.children_cpu)

    def adopt(self, key: str, close: Callable[[], float | None]) -> None:
        """Call `close` on exit (it returns the child's CPU seconds, for ``out[key]``)."""

        def stop() -> None:
            cpu = close()
            self.out[key] = round(cpu, 2) if cpu is not None else None
            self.children_cpu += cpu or 0.0

        self.stack.callback(stop)

    def start_server(self, args: Sequence[str]) -> RealServer:
        """``xds-server ARGS``, started (not yet ready: see `RealServer.wait_ready`)."""
        server = RealServer(args, self.log.name)
        self.adopt("server_process_cpu_s", server.close)
        return server.start()

    def start_workers(self, xds_port: int) -> Workers:
        """The simulated proxies' worker processes, up and waiting for "start"."""
        o = self.o
        w = Workers(o.workers, xds_port, self.mode == "delta", o.streams_per_channel)
        self.adopt("client_cpu_s", w.close)
        w.wait_started()
        return w


@dataclass
class RunOptions:
    """The options every benchmark has (see `add_run_arguments`)."""

    proxies: int
    workers: int
    streams_per_channel: int
    ramp_rate: float
    settle: float
    timeout: float
    seed: int
    keep_logs: bool


def options_from(cls: type[T], a: argparse.Namespace) -> T:
    """An options dataclass filled from the parsed arguments of the same names."""
    a.workers = max(1, a.workers)
    return cls(**{f.name: getattr(a, f.name) for f in fields(cls)})


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """A parser described by the first line of the benchmark's docstring."""
    return argparse.ArgumentParser(prog=prog, description=(doc or "").splitlines()[0])


def add_run_arguments(p: argparse.ArgumentParser, ramp_rate: float, ramp_help: str) -> None:
    """The options every benchmark has: modes, client workers, ramp, waits, output."""
    p.add_argument("--proxies", type=int, default=1000)
    p.add_argument("--mode", choices=("sotw", "delta", "both"), default="both")
    p.add_argument("--workers", type=int, default=3, help="client worker processes")
    p.add_argument("--streams-per-channel", type=int, default=50)
    p.add_argument("--ramp-rate", type=float, default=ramp_rate, help=ramp_help)
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
    p.add_argument("--keep-logs", action="store_true", help="keep the server's stderr log")


def file_edit_options(p: argparse.ArgumentParser) -> None:
    """``--edit-interval`` and ``--file-interval``: the options of a benchmark that edits
    a file the server polls."""
    p.add_argument("--edit-interval", type=float, default=2.0, help="seconds between edits")
    p.add_argument(
        "--file-interval",
        type=float,
        default=0.1,
        help="xds-server --file-interval, seconds (default 0.1; the server's own is 1)",
    )


def int_options(p: argparse.ArgumentParser, **defaults: int) -> None:
    """``--name N`` options (``_`` in a name becomes ``-``) with their defaults."""
    for name, default in defaults.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)


def cli(
    prog: str,
    doc: str | None,
    options: type[T],
    arguments: Callable[[argparse.ArgumentParser], None],
    run_mode: Callable[[str, T], dict[str, Any]],
    print_table: Callable[[list[dict[str, Any]], T, dict[str, Any]], None],
    argv: list[str] | None = None,
    ramp_rate: float = 150.0,
    ramp_help: str = "new proxies per second (the server admits 200/s after a burst of 400)",
    check: Callable[[argparse.ArgumentParser, argparse.Namespace], None] | None = None,
) -> int:
    """A benchmark's command line: the options every benchmark has, then its own
    (`arguments`, which may also change their defaults), `check` on what was parsed,
    then `run_and_report`."""
    p = parser(prog, doc)
    add_run_arguments(p, ramp_rate, ramp_help)
    arguments(p)
    a = p.parse_args(argv)
    if check is not None:
        check(p, a)
    o = options_from(options, a)
    return run_and_report(a, o, lambda mode: run_mode(mode, o), print_table)


def _on_sigterm(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_and_report(
    a: argparse.Namespace,
    options: Any,
    run_mode: Callable[[str], dict[str, Any]],
    print_table: Callable[[list[dict[str, Any]], Any, dict[str, Any]], None],
) -> int:
    """Run each mode of ``--mode`` (SIGTERM and Ctrl-C stop the children cleanly), then
    print the table and write ``--json``. The exit code: 0, 1 failed, 130 interrupted."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    results = []
    try:
        for mode in ["sotw", "delta"] if a.mode == "both" else [a.mode]:
            print(f"running {mode} …", file=sys.stderr, flush=True)
            results.append(run_mode(mode))
    except KeyboardInterrupt:
        print("interrupted; child processes stopped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    info = machine_info()
    doc = {"argv": sys.argv, "options": vars(options), "machine": info, "results": results}
    text = json.dumps(doc, indent=2, default=str)
    if a.json and a.json != "-":
        Path(a.json).write_text(text + "\n")
    print_table(results, options, info)
    if a.json == "-":
        print(text)
    return 0
