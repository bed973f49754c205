"""Proxyless gRPC through the whole server: a file registry → xds:///<name> → a gRPC backend.

The server is the real `xds-server` subprocess; the client is grpcio with
GRPC_XDS_BOOTSTRAP. The target names a client may dial (`<name>`, `<name>:<port>`,
`<name>.<namespace>`, registry hostnames) each get an api_listener.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.harness.backends import GrpcBackend
from tests.harness.grpc_xds import GrpcXdsClient, grpc_bootstrap
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for

pytest_plugins = ["tests.harness.fixtures"]
pytestmark = pytest.mark.timeout(90)

BackendFactory = Callable[..., GrpcBackend]


def registry(*backends: GrpcBackend, health: str = "healthy") -> str:
    return yaml.safe_dump(
        {
            "services": [
                {
                    "name": "echo",
                    "ports": [{"name": "grpc", "port": 50051, "protocol": "grpc"}],
                    "hostnames": ["echo.example.com"],
                    "endpoints": [
                        {"address": "127.0.0.1", "port": b.port, "health": health} for b in backends
                    ],
                }
            ]
        }
    )


Connect = Callable[[str, str, str], tuple[XdsServerProcess, GrpcXdsClient]]


@pytest.fixture
def connect(
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    grpc_xds_client_factory: Callable[..., GrpcXdsClient],
) -> Connect:
    """``connect(registry_text, node, target)``: an xds-server on that registry file, and a
    proxyless client (node ``node``) of it calling ``target``."""

    def start(text: str, node: str, target: str) -> tuple[XdsServerProcess, GrpcXdsClient]:
        path = tmp_path / "registry.yaml"
        path.write_text(text)
        srv = xds_server_factory("--file", str(path), "--file-interval", "0.1")
        boot = grpc_bootstrap(srv.xds_port, node)
        return srv, grpc_xds_client_factory(boot, target, interval=0.05)

    return start


@pytest.mark.parametrize("target", ["echo", "echo:50051", "echo.default", "echo.example.com"])
def test_grpc_client_reaches_the_service_by_every_name(
    target: str, grpc_backend_factory: BackendFactory, connect: Connect
) -> None:
    _, client = connect(registry(grpc_backend_factory("g1")), f"grpc-{target}", f"xds:///{target}")
    first = client.wait_for_body("g1", timeout=30)
    client.wait_for_calls(5, timeout=10)
    assert client.errors_since(first) == []


def test_registry_edit_moves_grpc_traffic_and_xdsctl_shows_the_client(
    tmp_path: Path, grpc_backend_factory: BackendFactory, connect: Connect
) -> None:
    g1, g2 = grpc_backend_factory("g1"), grpc_backend_factory("g2")
    srv, client = connect(registry(g1), "grpc-edit", "xds:///echo")
    first = client.wait_for_body("g1", timeout=30)
    (tmp_path / "registry.yaml").write_text(registry(g2))
    moved = client.wait_for_body("g2", timeout=15, since=first)
    client.wait_for_calls(5, timeout=10)
    # g1 kept running, so any failure would be the control plane's doing.
    assert client.errors_since(first) == []
    assert set(client.bodies_since(moved + 1)) == {"g2"}

    def synced() -> str:
        out = srv.xdsctl("proxies").stdout
        row = next((line for line in out.splitlines() if line.startswith("grpc-edit")), "")
        return row if row.count("SYNCED") == 4 else ""

    row = wait_for(synced, timeout=10, message="gRPC client SYNCED in xdsctl proxies")
    assert " grpc " in f" {row} "  # the proxyless group
    # The edit's journey was measured: registry change seen → pushed → ACKed.
    metrics = srv.metrics()
    for name in ("xds_push_latency_seconds", "xds_convergence_latency_seconds"):
        assert metrics[f'{name}_count{{type="endpoints"}}'] >= 1, name
    snap = srv.xdsctl("snapshot", "--node", "grpc-edit", "--type", "listeners", "-o", "json")
    names = {r["name"] for r in yaml.safe_load(snap.stdout)["resources"]}
    assert {"echo", "echo:50051", "echo.default", "echo.example.com"} <= names


def test_grpc_client_reaches_a_service_by_its_external_name(
    grpc_backend_factory: BackendFactory, connect: Connect
) -> None:
    # A LOGICAL_DNS cluster (gRFC A37) on `localhost`: loopback only.
    g1 = grpc_backend_factory("outside")
    ext = {
        "name": "ext",
        "ports": [{"name": "grpc", "port": g1.port, "protocol": "grpc"}],
        "external_name": "localhost",
    }
    _, client = connect(yaml.safe_dump({"services": [ext]}), "grpc-ext", "xds:///ext")
    first = client.wait_for_body("outside", timeout=30)
    client.wait_for_calls(5, timeout=10)
    assert client.errors_since(first) == []
