"""Proxyless gRPC xDS clients for tests, each in its own subprocess.

gRPC reads the xDS bootstrap when the first ``xds:`` channel is created and
caches it for the life of the process, so two clients with different node ids
(or two servers) cannot share a process. ``GrpcXdsClient`` runs
``grpc_client_main.py`` with ``sys.executable`` and collects its JSON lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Self

from .lifecycle import Leftovers, StartStop, stop_process

CLIENT_MAIN = Path(__file__).with_name("grpc_client_main.py")


def grpc_bootstrap(
    xds_port: int,
    node_id: str,
    node_cluster: str = "grpc",
    *,
    locality: dict[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
    server_features: tuple[str, ...] = ("xds_v3",),
) -> dict[str, Any]:
    """gRPC xDS bootstrap (gRFC A27) pointing at 127.0.0.1:``xds_port``, insecure."""
    node: dict[str, Any] = {
        "id": node_id,
        "cluster": node_cluster,
        "locality": dict(locality or {"region": "local", "zone": "z1", "sub_zone": ""}),
    }
    if metadata:
        node["metadata"] = dict(metadata)
    return {
        "xds_servers": [
            {
                "server_uri": f"127.0.0.1:{xds_port}",
                "channel_creds": [{"type": "insecure"}],
                "server_features": list(server_features),
            }
        ],
        "node": node,
    }


def process_env(bootstrap: dict[str, Any], log_path: Path, trace: str | None) -> dict[str, str]:
    """The environment of a gRPC xDS process: ``bootstrap`` written beside ``log_path``
    as its only GRPC_XDS_BOOTSTRAP, unbuffered output, gRPC tracing if ``trace``."""
    bootstrap_path = log_path.with_name(log_path.stem + ".bootstrap.json")
    bootstrap_path.write_text(json.dumps(bootstrap, indent=1))
    env = dict(os.environ)
    env.pop("GRPC_XDS_BOOTSTRAP_CONFIG", None)  # only our file applies
    env["GRPC_XDS_BOOTSTRAP"] = str(bootstrap_path)
    env["PYTHONUNBUFFERED"] = "1"
    if trace:
        env["GRPC_TRACE"] = trace
        env["GRPC_VERBOSITY"] = "DEBUG"
    return env


def spawn(cmd: Sequence[str], env: dict[str, str], stderr: IO[bytes]) -> subprocess.Popen[bytes]:
    """A child in its own session, JSON lines on a stdout pipe, stderr to ``stderr``."""
    return subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        start_new_session=True,
    )


_LIVE = Leftovers()


class GrpcXdsClient(StartStop):
    """A subprocess calling ``/xdstest.Echo/Whoami`` on ``target`` (e.g. ``xds:///web``).

    Every call's outcome is kept as a dict (``ok``, ``body`` or ``code``/``error``,
    ``t``, ``dt`` its duration). Use ``mark()`` then ``bodies_since(mark)`` /
    ``errors_since(mark)`` / ``codes_since(mark)`` to look at a window,
    ``wait_for_body(name, timeout)`` to wait for traffic to reach a backend.
    ``metadata``: request metadata sets the calls send in turn (each result names its
    set as ``md``). ``log_tail()`` shows the client's stderr (set
    ``trace="xds_client,xds_resolver"`` for gRPC's own xDS tracing).
    """

    def __init__(
        self,
        bootstrap: dict[str, Any],
        target: str,
        *,
        log_path: Path | None = None,
        interval: float = 0.05,
        timeout: float = 2.0,
        trace: str | None = None,
        env: dict[str, str] | None = None,
        metadata: Sequence[Mapping[str, str]] = (),
    ) -> None:
        self.bootstrap = bootstrap
        self.target = target
        self.interval = interval
        self.timeout = timeout
        self.trace = trace
        self.extra_env = dict(env or {})
        self.metadata = [dict(m) for m in metadata]
        self._own_dir: tempfile.TemporaryDirectory[str] | None = None
        self.log_path = Path(log_path) if log_path is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_fh: IO[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._results: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._eof = False

    # ---- lifecycle

    def start(self) -> Self:
        if self.proc is not None:
            return self
        if self.log_path is None:
            self._own_dir = tempfile.TemporaryDirectory(prefix="grpc-xds-client-")
            self.log_path = Path(self._own_dir.name) / "client.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = process_env(self.bootstrap, self.log_path, self.trace)
        env.update(self.extra_env)
        self._log_fh = self.log_path.open("ab")
        cmd = [
            sys.executable,
            str(CLIENT_MAIN),
            self.target,
            str(self.interval),
            str(self.timeout),
            *([json.dumps(self.metadata)] if self.metadata else []),
        ]
        self.proc = spawn(cmd, env, self._log_fh)
        _LIVE.add(self)
        self._reader = threading.Thread(
            target=self._read, args=(self.proc,), name="grpc-xds-client-reader", daemon=True
        )
        self._reader.start()
        return self

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                item = json.loads(raw)
            except ValueError:
                item = {"ok": False, "code": "BADLINE", "error": raw.decode("utf-8", "replace")}
            if not isinstance(item, dict) or item.get("started"):
                continue
            with self._cond:
                self._results.append(item)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` s. Idempotent."""
        _LIVE.discard(self)
        proc, self.proc = self.proc, None
        rc: int | None = None
        if proc is not None:
            rc = stop_process(proc, timeout)
            if self._reader is not None:
                self._reader.join(timeout)
                self._reader = None
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        return rc

    def close(self) -> None:
        """``stop()`` and delete the temporary log directory, if one was made."""
        self.stop()
        if self._own_dir is not None:
            self._own_dir.cleanup()
            self._own_dir = None

    def __exit__(self, *exc: object) -> None:
        self.close()  # also removes the temporary log directory

    # ---- results

    def mark(self) -> int:
        with self._cond:
            return len(self._results)

    def results_since(self, mark: int = 0) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._results[mark:])

    def bodies_since(self, mark: int = 0) -> Counter[str]:
        """Counter of successful replies (backend names) since ``mark``."""
        return Counter(r["body"] for r in self.results_since(mark) if r.get("ok"))

    def errors_since(self, mark: int = 0) -> list[dict[str, Any]]:
        return [r for r in self.results_since(mark) if not r.get("ok")]

    def codes_since(self, mark: int = 0) -> Counter[str]:
        """Counter of outcomes since ``mark``: ``OK`` or the gRPC status code's name."""
        return Counter("OK" if r.get("ok") else str(r["code"]) for r in self.results_since(mark))

    def wait_for_body(self, name: str, timeout: float, since: int = 0) -> int:
        """Wait for a successful reply from backend ``name``; return its index."""
        return self._wait(
            lambda r: bool(r.get("ok")) and r.get("body") == name,
            timeout,
            since,
            f"gRPC client {self.target} never reached backend {name!r}",
        )

    def wait_for_calls(self, n: int, timeout: float) -> None:
        """Wait until ``n`` more calls have finished (any outcome)."""
        target = self.mark() + n
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._results) < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    raise AssertionError(
                        f"gRPC client made {len(self._results)} of {target} calls; "
                        f"log tail:\n{self.log_tail(20)}"
                    )
                self._cond.wait(min(remaining, 0.2))

    def _wait(self, match: Any, timeout: float, since: int, message: str) -> int:
        deadline = time.monotonic() + timeout
        index = since
        with self._cond:
            while True:
                while index < len(self._results):
                    if match(self._results[index]):
                        return index
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    last = self._results[-3:]
                    break
                self._cond.wait(min(remaining, 0.2))
        why = "client exited" if self._eof else f"timed out after {timeout:.1f}s"
        raise AssertionError(
            f"{message} ({why}); last results: {last}; log tail:\n{self.log_tail(20)}"
        )

    def log_tail(self, n: int = 50) -> str:
        if self.log_path is None:
            return "<no log>"
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"<cannot read {self.log_path}: {exc}>"
        return "\n".join(lines[-n:])

    def __repr__(self) -> str:
        return f"GrpcXdsClient({self.target!r}, pid={self.pid})"
