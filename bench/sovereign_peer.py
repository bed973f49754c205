"""sovereign (PyPI ``sovereign``) as the side-by-side benchmark runs it: its
configuration, its Python templates, its process, and the Envoy bootstrap that polls it.

sovereign lives in its own virtualenv (``make bench-sovereign`` creates
``.bench/sovereign-venv``; its dependencies are not ours). It is set up for its best case
as a file-registry control plane:

* a ``file`` source reading the services file (a list of the same service entries
  xds-server's registry file holds under ``services:``, JSON or YAML) every ``refresh``
  s (1 s), node matching off (every node gets every service);
* Python templates (``python://`` stubs in the work directory calling
  `bench.sovereign_templates`, found through ``PYTHONPATH``) for clusters (endpoints
  inline), listeners and routes;
* one gunicorn worker (``SOVEREIGN_WORKERS``; its default of 2 x CPUs + 1 would poll the
  file once per worker) and no access log;
* Envoy polls it over REST (``api_type: REST``, ``refresh_delay`` = ``refresh``) for
  CDS, LDS and RDS.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

import psutil

from bench import sovereign_templates as templates
from tests.harness.envoy import XDS_CLUSTER
from tests.harness.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = ROOT / ".bench" / "sovereign-venv"
TEMPLATE_TYPES = ("clusters", "listeners", "routes")
# A Python template is a module with `call(**context)`; sovereign also parses its source
# as Jinja, so the stubs stay free of braces.
STUB = """from bench import sovereign_templates as t


def call(instances, discovery_request, **_):
{body}
"""
BODIES = {
    "clusters": "    return t.clusters(instances)",
    "listeners": (
        "    port = int(discovery_request.node.metadata['http_listener_port'])\n"
        "    return t.listeners(port, '{cluster}', {refresh})"
    ),
    "routes": (
        "    port = int(discovery_request.node.metadata['http_listener_port'])\n"
        "    return t.routes(instances, port)"
    ),
}


class PeerError(RuntimeError):
    pass


def sovereign_script(venv: Path) -> Path:
    """The ``sovereign`` console script of `venv`, or PeerError saying how to get it."""
    script = Path(venv) / "bin" / "sovereign"
    if not os.access(script, os.X_OK):
        raise PeerError(
            f"sovereign is not installed in {venv}: run `make bench-sovereign` (or "
            f"python3 -m venv {venv} && {venv}/bin/pip install 'sovereign==0.32.*')"
        )
    return script


def write_config(workdir: Path, source: Path, refresh: float, serialization: str = "json") -> Path:
    """sovereign's configuration and template stubs in `workdir`; the config's path."""
    specs = {}
    for kind in TEMPLATE_TYPES:
        body = BODIES[kind].format(cluster=XDS_CLUSTER, refresh=refresh)
        stub = workdir / f"sovereign_{kind}.py"
        stub.write_text(STUB.format(body=body))
        specs[kind] = {"protocol": "python", "path": str(stub)}
    config = {
        "sources": [{"type": "file", "config": {"path": f"file+{serialization}://{source}"}}],
        # sovereign's refresh rate is an integer number of seconds.
        "source_config": {"refresh_rate": max(1, round(refresh))},
        "matching": {"enabled": False},
        "templates": {"default": [{"type": k, "spec": v} for k, v in specs.items()]},
    }
    path = workdir / "sovereign.yaml"
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    return path


def bootstrap(
    sovereign_port: int, admin_port: int, listener_port: int, refresh: float
) -> dict[str, Any]:
    """An Envoy polling sovereign on `sovereign_port` over REST for CDS and LDS."""
    source = templates.rest_source(XDS_CLUSTER, refresh)
    return {
        "node": {
            "id": "side-by-side",
            "cluster": "bench",
            "metadata": {"http_listener_port": listener_port},
        },
        "dynamic_resources": {"cds_config": source, "lds_config": json.loads(json.dumps(source))},
        "static_resources": {
            "clusters": [
                {
                    "name": XDS_CLUSTER,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": sovereign_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
    }


def tree_cpu(ps: psutil.Process) -> float:
    """CPU seconds (user + system) of a process and its live descendants."""
    total = 0.0
    for p in [ps, *ps.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def tree_rss(ps: psutil.Process) -> float:
    """RSS bytes of a process and its live descendants, summed (a forked worker's
    shared pages count twice: an upper bound)."""
    total = 0.0
    for p in [ps, *ps.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class Sovereign:
    """``sovereign`` serving the services file `source`, in its own process group."""

    def __init__(
        self,
        venv: Path,
        workdir: Path,
        source: Path,
        refresh: float = 1.0,
        workers: int = 1,
        serialization: str = "json",
    ) -> None:
        self.script = sovereign_script(venv)
        self.workdir = Path(workdir)
        self.config = write_config(self.workdir, source, refresh, serialization)
        self.port = free_port()
        self.workers = workers
        self.log_path = self.workdir / "sovereign.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> Sovereign:
        env = {
            **os.environ,
            "SOVEREIGN_CONFIG": f"file://{self.config}",
            "SOVEREIGN_HOST": "127.0.0.1",
            "SOVEREIGN_PORT": str(self.port),
            "SOVEREIGN_WORKERS": str(self.workers),
            "SOVEREIGN_ENABLE_ACCESS_LOGS": "false",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(self.script)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
            start_new_session=True,
        )
        self.ps = psutil.Process(self.proc.pid)
        return self

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def ready(self) -> bool:
        """Whether it renders every template (``/deepcheck``); PeerError if it exited."""
        if self.proc is None or self.proc.poll() is not None:
            raise PeerError(f"sovereign exited; log tail:\n{self.tail()}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/healthcheck", timeout=2
            ) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float) -> float:
        """Seconds from now until it answers; PeerError on timeout or exit."""
        t0 = time.monotonic()
        while not self.ready():
            if time.monotonic() - t0 > timeout:
                raise PeerError(f"sovereign not answering after {timeout:g} s:\n{self.tail()}")
            time.sleep(0.05)
        return time.monotonic() - t0

    def cpu(self) -> float:
        assert self.ps is not None, "not started"
        return tree_cpu(self.ps)

    def rss(self) -> float:
        assert self.ps is not None, "not started"
        return tree_rss(self.ps)

    def close(self) -> float | None:
        """Stop the whole process group (gunicorn's quick shutdown, SIGINT; then
        SIGKILL); its CPU seconds just before."""
        cpu = None
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(psutil.Error):
                    cpu = self.cpu()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
            # The group outlives its leader if a worker does: end them all.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return cpu
