"""Proxyless gRPC with mesh security for tests: xDS-managed gRPC servers (gRFC A36) in
their own processes, and bootstraps carrying a workload identity, a ``file_watcher``
certificate provider (gRFC A29) and, for servers, the listener name template.

* :func:`mesh_bootstrap`: a client or server bootstrap reading the files
  ``xds-server ca issue --out DIR`` writes (cert-chain.pem, key.pem, root-cert.pem);
* :class:`GrpcXdsServer`: ``grpc_server_main.py`` as a subprocess;
* :func:`replies`: the JSON replies (name, caller SPIFFE ID, caller serial) a
  ``GrpcXdsClient`` got from such servers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Self

from translators.grpc_server import GRPC_TEMPLATE
from xds_server.identity.cli import CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE

from .grpc_client_main import XDS_CREDENTIALS_ENV
from .grpc_xds import GrpcXdsClient, grpc_bootstrap, process_env, spawn
from .lifecycle import Leftovers, StartStop, stop_process

SERVER_MAIN = Path(__file__).with_name("grpc_server_main.py")
# Clients dialled with grpc.xds_channel_credentials (fallback insecure).
XDS_CREDENTIALS = {XDS_CREDENTIALS_ENV: "1"}


def file_watcher(certs: Path, refresh: str = "1s") -> dict[str, Any]:
    """A ``file_watcher`` certificate provider config over an ``issue --out`` directory."""
    return {
        "plugin_name": "file_watcher",
        "config": {
            "certificate_file": str(certs / CERT_CHAIN_FILE),
            "private_key_file": str(certs / KEY_FILE),
            "ca_certificate_file": str(certs / ROOT_CERT_FILE),
            "refresh_interval": refresh,
        },
    }


def mesh_bootstrap(
    xds_port: int,
    node_id: str,
    namespace: str,
    service_account: str,
    certs: Path,
    *,
    xds_tls: bool = True,
    instance_ips: str | None = None,
    template: str = GRPC_TEMPLATE,
) -> dict[str, Any]:
    """A gRPC bootstrap for identity ``namespace``/``service_account`` whose files are in
    ``certs``: instance ``default`` of the certificate providers; the xDS channel over
    mutual TLS with the same files when ``xds_tls``; a server's ``INSTANCE_IPS`` and
    listener name template when ``instance_ips``."""
    metadata: dict[str, Any] = {"NAMESPACE": namespace, "SERVICE_ACCOUNT": service_account}
    if instance_ips is not None:
        metadata["INSTANCE_IPS"] = instance_ips
    boot = grpc_bootstrap(xds_port, node_id, metadata=metadata)
    if xds_tls:
        tls = file_watcher(certs)["config"]
        boot["xds_servers"][0]["server_uri"] = f"localhost:{xds_port}"
        boot["xds_servers"][0]["channel_creds"] = [{"type": "tls", "config": tls}]
    boot["certificate_providers"] = {"default": file_watcher(certs)}
    if instance_ips is not None:
        boot["server_listener_resource_name_template"] = template
    return boot


def server_bootstrap(
    xds_port: int, account: str, certs: Path, *, ip: str = "127.0.0.1", xds_tls: bool = False
) -> dict[str, Any]:
    """`mesh_bootstrap` of an xDS-managed server ``<account>-1`` in namespace default at
    ``ip`` (a plaintext xDS channel unless ``xds_tls``)."""
    node_id = f"{account}-1"
    return mesh_bootstrap(
        xds_port, node_id, "default", account, certs, xds_tls=xds_tls, instance_ips=ip
    )


def replies(client: GrpcXdsClient, since: int = 0) -> list[dict[str, str]]:
    """The successful replies of ``grpc_server_main`` servers since ``since``."""
    out = []
    for result in client.results_since(since):
        if result.get("ok"):
            try:
                out.append(json.loads(result["body"]))
            except ValueError:
                out.append({"name": result["body"], "peer": "", "serial": ""})
    return out


_LIVE = Leftovers()


class GrpcXdsServer(StartStop):
    """``grpc_server_main.py NAME PORT`` with ``bootstrap`` as its GRPC_XDS_BOOTSTRAP;
    stderr (gRPC's logs; ``trace`` turns on gRPC tracing) goes to ``log_path``."""

    def __init__(
        self,
        name: str,
        port: int,
        bootstrap: dict[str, Any],
        log_path: Path,
        *,
        trace: str | None = None,
        max_connection_age_ms: int | None = None,
    ) -> None:
        self.name, self.port, self.bootstrap = name, port, bootstrap
        self.max_connection_age_ms = max_connection_age_ms
        self.log_path = log_path
        self.trace = trace
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_fh: IO[bytes] | None = None
        self._started = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self) -> Self:
        if self.proc is not None:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = process_env(self.bootstrap, self.log_path, self.trace)
        self._log_fh = self.log_path.open("ab")
        age = [str(self.max_connection_age_ms)] if self.max_connection_age_ms else []
        cmd = [sys.executable, str(SERVER_MAIN), self.name, str(self.port), *age]
        self.proc = spawn(cmd, env, self._log_fh)
        _LIVE.add(self)
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        if not self._started.wait(20):
            self.stop()
            raise AssertionError(f"gRPC server {self.name} did not start:\n{self.log_tail()}")
        return self

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            if b'"started"' in raw:
                self._started.set()

    def stop(self, timeout: float = 5.0) -> int | None:
        _LIVE.discard(self)
        proc, self.proc = self.proc, None
        rc = stop_process(proc, timeout) if proc is not None else None
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        return rc

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError as exc:
            return f"<cannot read {self.log_path}: {exc}>"


def nacks(proxies: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Per node id, the errors of every type it NACKed (``/debug/proxies`` documents)."""
    out: dict[str, list[str]] = {}
    for proxy in proxies:
        for name, status in proxy["types"].items():
            if status["nacks"]:
                out.setdefault(proxy["node_id"], []).append(f"{name}: {status['last_error']}")
    return out
