"""The examples/xds-mtls bootstraps against a mutual-TLS xDS port, with the files
`xds-server ca init` and `ca issue` write (real subprocesses): a real Envoy (file-based SDS
for its xDS certificate) gets SYNCED, and one with another identity or another CA gets
nothing; a proxyless grpcio client (channel_creds ``tls``) reaches a gRPC backend.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.backends import GrpcBackend
from tests.harness.e2e import wait_synced
from tests.harness.envoy import EnvoyProcess
from tests.harness.grpc_xds import GrpcXdsClient
from tests.harness.ports import free_port
from tests.harness.server_proc import ROOT, XdsServerProcess, script
from tests.harness.waiting import wait_for
from tests.harness.xds_tls import server_args

pytest_plugins = ["tests.harness.fixtures"]
pytestmark = pytest.mark.timeout(120)

EXAMPLES = ROOT / "examples" / "xds-mtls"
REGISTRY = ROOT / "examples" / "registry.yaml"
Start = Callable[..., XdsServerProcess]


def ca(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [script("xds-server"), "ca", *args],
        capture_output=True, text=True, timeout=30, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


class Pki:
    """``ca init`` in ``directory/ca``; ``ca issue`` for the server and for clients."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_dir = directory / "ca"
        ca("init", "--dir", str(self.ca_dir))
        self.server = self.issue("xds-system", "xds-server", "--host", "localhost",
                                 "--host", "127.0.0.1")  # fmt: skip

    def issue(self, namespace: str, sa: str, *more: str) -> Path:
        out = self.directory / f"{namespace}.{sa}"
        ca("issue", "--ca-dir", str(self.ca_dir), "--namespace", namespace,
           "--service-account", sa, "--out", str(out), *more)  # fmt: skip
        return out

    def server_args(self) -> list[str]:
        return server_args(self.server)


def example(name: str, certs: Path, sds: Path, xds_port: int, admin_port: int = 9901) -> str:
    """An example file with its paths and ports made this test's."""
    text = (EXAMPLES / name).read_text()
    return (
        text.replace("/etc/xds-certs", str(certs))
        .replace("/etc/envoy/xds-sds", str(sds))
        .replace("port_value: 18000", f"port_value: {xds_port}")
        .replace("localhost:18000", f"localhost:{xds_port}")
        .replace("port_value: 9901", f"port_value: {admin_port}")
    )


def envoy_bootstrap(certs: Path, work: Path, xds_port: int) -> dict[str, Any]:
    """examples/xds-mtls/envoy-bootstrap.yaml and its SDS files, pointed at ``certs``."""
    sds = work / "sds"
    sds.mkdir(parents=True)
    for f in (EXAMPLES / "sds").iterdir():
        (sds / f.name).write_text(example(f"sds/{f.name}", certs, sds, xds_port))
    boot = yaml.safe_load(example("envoy-bootstrap.yaml", certs, sds, xds_port, free_port()))
    assert isinstance(boot, dict)
    return boot


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def server(pki: Pki, xds_server_factory: Start) -> XdsServerProcess:
    return xds_server_factory("--file", str(REGISTRY), *pki.server_args(), insecure=False)


def test_envoy_example_bootstrap_syncs_over_mutual_tls(
    pki: Pki, server: XdsServerProcess, envoy_factory: Callable[..., EnvoyProcess], tmp_path: Path
) -> None:
    certs = pki.issue("default", "envoy")
    envoy = envoy_factory(envoy_bootstrap(certs, tmp_path / "good", server.xds_port))
    wait_synced(lambda: server.get("/debug/proxies"), "envoy-1", timeout=30)
    assert envoy.stat("control_plane.connected_state") == 1
    assert envoy.cluster_names(dynamic_only=True)


def test_envoy_with_another_identity_or_ca_gets_nothing(
    pki: Pki,
    server: XdsServerProcess,
    envoy_factory: Callable[..., EnvoyProcess],
    tmp_path: Path,
) -> None:
    # A valid certificate for sa/web, while the example's node claims sa/envoy.
    web = pki.issue("default", "web")
    liar = envoy_factory(envoy_bootstrap(web, tmp_path / "liar", server.xds_port), name="liar")
    other = Pki(tmp_path / "other")  # another root, same names
    stranger = envoy_factory(
        envoy_bootstrap(other.issue("default", "envoy"), tmp_path / "stranger", server.xds_port),
        name="stranger",
    )
    wait_for(
        lambda: server.metrics().get('xds_streams_rejected_total{reason="identity"}', 0) >= 2,
        timeout=30,
        message="the lying Envoy's streams refused (identity)",
    )
    wait_for(
        lambda: (
            (stranger.stat("cluster.xds_cluster.ssl.connection_error") or 0) >= 1
            or (stranger.stat("cluster.xds_cluster.upstream_cx_connect_fail") or 0) >= 1
        ),
        timeout=30,
        message="the stranger's handshakes fail",
    )
    for envoy in (liar, stranger):
        assert envoy.cluster_names(dynamic_only=True) == []
        assert envoy.stat("control_plane.connected_state") == 0
    assert not [p for p in server.get("/debug/proxies") if p["node_id"] == "envoy-1"]
    log = server.log()
    assert "spiffe://cluster.local/ns/default/sa/web" in log and "PERMISSION_DENIED" in log


def grpc_registry(backend: GrpcBackend) -> str:
    echo = {
        "name": "echo",
        "ports": [{"name": "grpc", "port": 50051, "protocol": "grpc"}],
        "endpoints": [{"address": "127.0.0.1", "port": backend.port}],
    }
    return yaml.safe_dump({"services": [echo]})


def test_grpc_example_bootstrap_reaches_a_backend_over_mutual_tls(
    pki: Pki,
    tmp_path: Path,
    xds_server_factory: Start,
    grpc_backend_factory: Callable[..., GrpcBackend],
    grpc_xds_client_factory: Callable[..., GrpcXdsClient],
) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(grpc_registry(grpc_backend_factory("g1")))
    server = xds_server_factory("--file", str(registry), *pki.server_args(), insecure=False)
    certs = pki.issue("default", "grpc-client")
    boot = json.loads(example("grpc-bootstrap.json", certs, tmp_path, server.xds_port))
    client = grpc_xds_client_factory(boot, "xds:///echo", interval=0.05)
    first = client.wait_for_body("g1", timeout=30)
    client.wait_for_calls(5, timeout=10)
    assert client.errors_since(first) == []
    # Served over the mutual-TLS stream as the identity its certificate names.
    proxies = {p["node_id"]: p for p in server.get("/debug/proxies")}
    assert "grpc-client-1" in proxies
