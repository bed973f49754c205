"""What the benchmarks share: the simulated-proxy workers, the real ``xds-server`` process
(`RealServer`), statistics, machine facts, the server log, signal handling and the
printed table."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
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

MB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent
# The packages whose changes make a figure "not the committed code".
T = TypeVar("T", bound="RunOptions")
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


# -- the real server ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def xds_server_exe() -> str:
    exe = Path(sys.executable).with_name("xds-server")
    found = str(exe) if exe.exists() else shutil.which("xds-server")
    if not found:
        raise BenchError("xds-server not found (pip install -e . in the venv)")
    return found


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class RealServer:
    """``xds-server <source_args>`` in a child process, on free 127.0.0.1 ports, watched
    with psutil and its admin API."""

    def __init__(self, source_args: Sequence[str], log: IO[bytes]):
        self.xds_port = free_port()
        self.admin = f"http://127.0.0.1:{free_port()}"
        cmd = [
            xds_server_exe(),
            *source_args,
            "--xds-address",
            f"127.0.0.1:{self.xds_port}",
            "--admin-address",
            self.admin.removeprefix("http://"),
            "--shutdown-grace",
            "1",
        ]
        self.log_path = log.name
        self.log_offset = 0
        self.started = time.time()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # Ctrl-C is ours to handle; we stop it in order
            cwd=str(ROOT),
        )
        self.ps = psutil.Process(self.proc.pid)

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.admin + path, timeout=timeout) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def wait_ready(self, timeout: float) -> float:
        """Seconds from process start to /readyz answering 200."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise BenchError(f"xds-server exited with {self.proc.returncode}")
            with contextlib.suppress(OSError):
                if self.get("/readyz", timeout=2.0)[0] == 200:
                    return time.time() - self.started
            time.sleep(0.05)
        raise BenchError(f"xds-server not ready within {timeout} s")

    def metrics(self) -> Samples:
        status, text = self.get("/metrics")
        if status != 200:
            raise BenchError(f"/metrics answered {status}")
        return {
            (s.name, frozenset(s.labels.items())): float(s.value)
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }

    def stats(self) -> dict[str, float]:
        """RSS, peak RSS (VmHWM) and CPU seconds of the server process."""
        t = self.ps.cpu_times()
        peak = 0
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
        return {
            "rss": float(self.ps.memory_info().rss),
            "peak_rss": float(peak),
            "cpu": t.user + t.system,
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
            with contextlib.suppress(ValueError):
                at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                if at >= since - 0.001 and found is None:
                    found = at
        return found

    def close(self) -> float | None:
        """Stop the server (SIGTERM, then SIGKILL); its CPU seconds just before."""
        cpu = None
        if self.proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                cpu = self.stats()["cpu"]
            stop_process(self.proc)
        return cpu


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


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
