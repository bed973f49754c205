"""The real `xds-server` as a user runs it: a subprocess on free loopback ports.

Used by the end-to-end tests of the registries, `xdsctl` and the demo: start it with
flags, wait until `/readyz` says ready, read its admin API, run `xdsctl` against it,
and stop it (SIGTERM, then kill) at teardown.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.harness.ports import free_port
from tests.harness.waiting import wait_for


def script(name: str) -> str:
    """A console script of this venv (next to the running interpreter)."""
    for d in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        if (d / name).exists():
            return str(d / name)
    raise FileNotFoundError(f"{name} is not installed next to {sys.executable}")


class XdsServerProcess:
    def __init__(
        self,
        *args: str,
        log_path: Path,
        env: dict[str, str] | None = None,
        xds_port: int = 0,
        admin_port: int = 0,
    ):
        self.xds_port = xds_port or free_port()
        self.admin_port = admin_port or free_port()
        self.args = [
            "--xds-address",
            f"127.0.0.1:{self.xds_port}",
            "--admin-address",
            f"127.0.0.1:{self.admin_port}",
            *args,
        ]
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, timeout: float = 20.0, wait_ready: bool = True) -> XdsServerProcess:
        """Start the process; unless told otherwise, wait until /readyz says ready."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [script("xds-server"), *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        if wait_ready:
            wait_for(self.ready, timeout=timeout, message=lambda: f"xds-server ready\n{self.log()}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"xds-server exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(self.admin_url + "/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def endpoint_counts(self) -> dict[str, int]:
        """Endpoints per cluster in the default group's snapshot: what a proxy gets."""
        doc = self.get("/debug/snapshot?type=endpoints")
        return {
            r["name"]: sum(
                len(loc.get("lb_endpoints", [])) for loc in r["resource"].get("endpoints", [])
            )
            for r in doc["resources"]
        }

    def cluster_names(self) -> list[str]:
        return [r["name"] for r in self.get("/debug/snapshot?type=clusters")["resources"]]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.admin_url + path, timeout=5) as r:
            return json.loads(r.read())

    def metrics(self) -> dict[str, float]:
        """/metrics as {'name{labels}': value} (Prometheus text format)."""
        with urllib.request.urlopen(self.admin_url + "/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def xdsctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [script("xdsctl"), "--server", self.admin_url, *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"xdsctl {' '.join(args)} failed: {res.stderr}")
        return res

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode
