"""The real `xds-server` as a user runs it: a subprocess on free loopback ports.

The one way tests and benchmarks start the server: with flags, on free ports, waiting
until `/readyz` says ready (or failing at once, with the exit code and the log's tail,
if the process dies first), reading its admin API, running `xdsctl` against it, and
stopping it (SIGTERM, then kill). `run_xdsctl` is the one way to run the `xdsctl` CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.harness.lifecycle import stop_process
from tests.harness.ports import free_port
from tests.harness.waiting import GiveUp, wait_for

ROOT = Path(__file__).resolve().parent.parent.parent


def script(name: str) -> str:
    """A console script of this venv (next to the running interpreter)."""
    for d in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        if (d / name).exists():
            return str(d / name)
    raise FileNotFoundError(f"{name} is not installed next to {sys.executable} (pip install -e .)")


def run_xdsctl(
    *args: str,
    server: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`xdsctl [--server URL] ARGS` with XDSCTL_SERVER unset unless `env` sets it."""
    environ = {k: v for k, v in os.environ.items() if k != "XDSCTL_SERVER"}
    cmd = [script("xdsctl"), *(["--server", server] if server else []), *args]
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=30, env={**environ, **(env or {})}
    )
    if check and res.returncode != 0:
        raise AssertionError(f"xdsctl {' '.join(args)} exited {res.returncode}: {res.stderr}")
    return res


def snapshot_endpoints(doc: Mapping[str, Any]) -> dict[str, list[tuple[str, int]]]:
    """Each ClusterLoadAssignment of a snapshot document (`xdsctl snapshot -o json`,
    ``/debug/snapshot``): cluster name → its endpoints' sorted (address, port)."""
    out: dict[str, list[tuple[str, int]]] = {}
    for r in doc["resources"]:
        if r.get("type", "endpoints") != "endpoints":
            continue
        addresses = [
            lb["endpoint"]["address"]["socket_address"]
            for locality in r["resource"].get("endpoints", [])
            for lb in locality.get("lb_endpoints", [])
        ]
        out[r["name"]] = sorted((a["address"], int(a["port_value"])) for a in addresses)
    return out


class ServerExited(GiveUp):
    """The server process ended while something waited for it."""


class XdsServerProcess:
    """``xds-server ARGS`` in a child process with its output in `log_path`.

    Unless ``addresses=False`` the xDS and admin addresses are set to free loopback ports
    (given ones, or new ones) ahead of ``args``, so a later flag in ``args`` still wins.
    ``new_session`` puts it in its own process group (benchmarks handle Ctrl-C themselves).
    ``insecure`` (the default) adds ``--xds-insecure``: a plaintext xDS port; TLS tests
    pass False and their own ``--xds-tls-*`` flags.
    """

    def __init__(
        self,
        *args: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        xds_port: int = 0,
        admin_port: int = 0,
        addresses: bool = True,
        new_session: bool = False,
        insecure: bool = True,
    ):
        self.xds_port = xds_port or free_port()
        self.admin_port = admin_port or free_port()
        own = [
            *("--xds-address", f"127.0.0.1:{self.xds_port}"),
            *("--admin-address", f"127.0.0.1:{self.admin_port}"),
        ]
        self.args = [*(own if addresses else []), *(["--xds-insecure"] if insecure else []), *args]
        self.log_path = Path(log_path)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.new_session = new_session
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self, timeout: float = 20.0, wait_ready: bool = True) -> XdsServerProcess:
        """Start the process; unless told otherwise, wait until /readyz says ready."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [script("xds-server"), *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=ROOT,
                start_new_session=self.new_session,
            )
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        wait_for(self.ready, timeout=timeout, message=lambda: f"xds-server ready\n{self.tail()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the log, for failure messages."""
        return "\n".join(self.log().splitlines()[-lines:])

    def check_running(self) -> None:
        """Raise ServerExited (ends any wait at once) if the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerExited(
                f"xds-server exited with code {self.proc.returncode}; log tail:\n{self.tail()}"
            )

    def ready(self) -> bool:
        self.check_running()
        try:
            with urllib.request.urlopen(self.admin_url + "/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait(self, timeout: float = 20.0) -> int:
        """Wait for the process to exit by itself; its exit code."""
        assert self.proc is not None, "not started"
        return self.proc.wait(timeout)

    def endpoint_counts(self) -> dict[str, int]:
        """Endpoints per cluster in the default group's snapshot: what a proxy gets."""
        doc = self.get("/debug/snapshot?type=endpoints")
        return {name: len(eps) for name, eps in snapshot_endpoints(doc).items()}

    def cluster_names(self) -> list[str]:
        return [r["name"] for r in self.get("/debug/snapshot?type=clusters")["resources"]]

    def get_text(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """GET an admin path: (status, body), also for error statuses."""
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=timeout) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def get(self, path: str) -> Any:
        """GET an admin path that must answer 200 with JSON."""
        with urllib.request.urlopen(self.admin_url + path, timeout=5) as r:
            return json.loads(r.read())

    def metrics(self) -> dict[str, float]:
        """/metrics as {'name{labels}': value} (Prometheus text format)."""
        status, text = self.get_text("/metrics")
        assert status == 200, f"/metrics answered {status}"
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def xdsctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_xdsctl(*args, server=self.admin_url, check=check)

    def stop(self, timeout: float = 10.0) -> int | None:
        return None if self.proc is None else stop_process(self.proc, timeout)
