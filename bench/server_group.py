"""The benchmark's server: ``bench.server_proc`` in one child process (`ServerProc`), or
in several that share one listening port with SO_REUSEPORT (`ServerGroup`).

A group is what "several serving processes, each serving a share of the proxies" would
cost and give: every process builds the same snapshot (their content-hash versions are
compared at start and after every change: a difference is a `BenchError`), every
command goes to all of them at once (a change is written to every process before any
reply is read, so they apply it at the same moment), and the replies are merged into
one: CPU, RSS, streams and GC time summed, the longest GC pause the longest of any.
The kernel spreads accepted connections across the listening sockets; ``streams_each``
in the stats says how the proxies' streams fell.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import psutil

from bench import common
from tests.harness.server_proc import stop_process

# Stats summed over the processes of a group (bytes, seconds, streams); the others are
# the longest of any (pauses, wall time) or merged as below.
_SUMMED = ("rss", "peak_rss", "streams", "cpu_user", "cpu_system", "gc_pause_total_s")
_LONGEST = ("gc_pause_max_s", "gc_pause_max_since_mark_s", "time")


class ServerProc:
    """``bench.server_proc`` in a child process, driven by JSON lines over its stdin."""

    def __init__(
        self,
        clusters: int,
        endpoints: int,
        log: IO[bytes],
        cprofile: str | None = None,
        default_gc: bool = False,
        port: int = 0,
        reuseport: bool = False,
    ):
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
        if default_gc:
            cmd.append("--default-gc")
        if port:
            cmd += ["--port", str(port)]
        if reuseport:
            cmd.append("--reuseport")
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
        self.ps = psutil.Process(self.pid)
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
            raise common.BenchError(f"server did not answer within {timeout} s") from None
        if line is None:
            raise common.BenchError(f"server exited (code {self.proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise common.BenchError(f"server: {reply['error']}")
        return reply

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        ready = self._next(timeout)
        self.port = int(ready["port"])
        return ready

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def request(self, cmd: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        self.send(cmd)
        return self._next(timeout)

    def cpu(self) -> float:
        """CPU seconds (user + system) of the server process so far, read from outside
        (a "stats" request would itself be work on the server's event loop)."""
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def close(self) -> float | None:
        """Stop the server; its CPU seconds as it reported them on the way out."""
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.final_stats = self.request({"cmd": "quit"}, timeout=5.0)
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                stop_process(self.proc, timeout=5)
        return _cpu(self.final_stats) if self.final_stats is not None else None


def _cpu(stats: dict[str, Any]) -> float:
    return float(stats["cpu_user"]) + float(stats["cpu_system"])


def merge(replies: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One reply from the replies of a group's processes to the same command.

    Stats are summed or taken at their longest (`_SUMMED`, `_LONGEST`); GC collections
    per generation summed, the longest pause per generation the longest; a change's
    ``applied_at`` is the earliest, ``done_at`` the latest. ``versions`` and a change's
    ``marker`` must be the same in every reply.
    """
    first = replies[0]
    out = dict(first)
    if len(replies) == 1:
        out["streams_each"] = [first.get("streams")]
        return out
    for key in ("versions", "marker", "changed", "port"):
        values = [r.get(key) for r in replies]
        if any(v != values[0] for v in values):
            raise common.BenchError(f"server processes differ in {key}: {values}")
    for key in _SUMMED:
        if key in first:
            out[key] = sum(r[key] for r in replies)
    for key in _LONGEST:
        if key in first:
            out[key] = max(r[key] for r in replies)
    if "gc_collections" in first:
        out["gc_collections"] = [
            sum(c) for c in zip(*(r["gc_collections"] for r in replies), strict=True)
        ]
        out["gc_pause_max_by_generation_ms"] = [
            max(c) for c in zip(*(r["gc_pause_max_by_generation_ms"] for r in replies), strict=True)
        ]
    if "applied_at" in first:
        out["applied_at"] = min(r["applied_at"] for r in replies)
        out["done_at"] = max(r["done_at"] for r in replies)
    if "streams" in first:
        out["streams_each"] = [r["streams"] for r in replies]
    out["pids"] = [r.get("pid") for r in replies]
    return out


class ServerGroup:
    """`count` server processes on one port (SO_REUSEPORT when more than one), driven
    as one: the same interface as `ServerProc` (``request``, ``cpu``, ``close``,
    ``port``; ``pid`` is the first process's, for py-spy).

    The first process picks the port; the others are started on it once it is ready
    (`wait_ready`), so `close` stops only what was started.
    """

    def __init__(
        self,
        count: int,
        clusters: int,
        endpoints: int,
        log: IO[bytes],
        cprofile: str | None = None,
        default_gc: bool = False,
    ):
        self.count = max(1, count)
        self.args = (clusters, endpoints, log)
        self.cprofile = cprofile
        self.default_gc = default_gc
        self.procs = [self._start(0, 0)]
        self.pid = self.procs[0].pid
        self.port = 0

    def _start(self, index: int, port: int) -> ServerProc:
        prof = f"{self.cprofile}.{index}" if self.cprofile and index else self.cprofile
        reuse = self.count > 1
        return ServerProc(*self.args, prof, self.default_gc, port=port, reuseport=reuse)

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """The first process ready, then the others started on its port and ready: their
        merged ready events (a `BenchError` if their versions differ)."""
        readies = [self.procs[0].wait_ready(timeout)]
        self.port = self.procs[0].port
        self.procs += [self._start(i, self.port) for i in range(1, self.count)]
        readies += [p.wait_ready(timeout) for p in self.procs[1:]]
        return merge(readies)

    def request(self, cmd: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """`cmd` written to every process before any reply is read; the merged reply."""
        for p in self.procs:
            p.send(cmd)
        return merge([p._next(timeout) for p in self.procs])

    def cpu(self) -> float:
        return sum(self.cpu_each())

    def cpu_each(self) -> list[float]:
        """CPU seconds of each process so far (read from outside, as `ServerProc.cpu`)."""
        return [p.cpu() for p in self.procs]

    def close(self) -> float | None:
        """Stop every process; their CPU seconds summed (None if any did not say)."""
        cpus = [p.close() for p in self.procs]
        return None if any(c is None for c in cpus) else sum(c for c in cpus if c is not None)
