"""`xdsctl explain --target` for a real proxyless grpcio client: a header-matched rule
sends ``end-user: jason`` to subset v2 and everyone else to v1; explain, asked about the
same call (its node, target and method path, the same header), names the rule, the
subset and the endpoint whose backend answered the client's calls."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness.backends import GrpcBackend
from tests.harness.e2e import WAIT
from tests.harness.grpc_xds import GrpcXdsClient, grpc_bootstrap
from tests.harness.policy_mesh import (
    PolicyMesh,
    destination_rule,
    key_of,
    start_policy_mesh,
    virtual_service,
)
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for

pytest_plugins = ["tests.harness.fixtures"]
pytestmark = pytest.mark.timeout(90)

REACH = 20.0  # gRPC's xDS start-up, generous
PORT = 50051
METHOD = "/xdstest.Echo/Whoami"  # what tests/harness/grpc_client_main.py calls
VERSIONS = {"v1": {"version": "v1"}, "v2": {"version": "v2"}}
POLICIES = [
    destination_rule("echo", "echo", VERSIONS),
    virtual_service("users", ["users"], [
        {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": [{"destination": {"host": "echo", "subset": "v2"}}]},
        {"name": "rest", "route": [{"destination": {"host": "echo", "subset": "v1"}}]},
    ]),
]  # fmt: skip


def grpc_service(name: str, *backends: tuple[GrpcBackend, dict[str, str]]) -> dict[str, Any]:
    return {
        "name": name,
        "ports": [{"name": "grpc", "port": PORT, "protocol": "grpc"}],
        "endpoints": [
            {"address": "127.0.0.1", "port": b.port, "labels": labels} for b, labels in backends
        ],
    }


@pytest.fixture
def world(
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    grpc_backend_factory: Callable[..., GrpcBackend],
) -> tuple[PolicyMesh, dict[str, GrpcBackend]]:
    backends = {n: grpc_backend_factory(n) for n in ("echo-v1", "echo-v2", "users-own")}
    v1, v2 = (backends["echo-v1"], VERSIONS["v1"]), (backends["echo-v2"], VERSIONS["v2"])
    services = [grpc_service("echo", v1, v2), grpc_service("users", (backends["users-own"], {}))]
    mesh = start_policy_mesh(xds_server_factory, tmp_path, services, POLICIES)
    mesh.wait_policies(map(key_of, POLICIES))
    return mesh, backends


@pytest.mark.parametrize(
    ("user", "rule", "subset"),
    [
        ("jason", "VirtualService default/users http[0] (jason)", "v2"),
        ("maria", "VirtualService default/users http[1] (rest)", "v1"),
    ],
)
def test_explained_target_route_is_where_grpc_calls_go(
    world: tuple[PolicyMesh, dict[str, GrpcBackend]],
    grpc_xds_client_factory: Callable[..., GrpcXdsClient],
    user: str,
    rule: str,
    subset: str,
) -> None:
    mesh, backends = world
    node = f"grpc-explain-{user}"
    boot = grpc_bootstrap(mesh.server.xds_port, node)
    client = grpc_xds_client_factory(boot, "xds:///users", metadata=[{"end-user": user}])
    first = client.wait_for_body(f"echo-{subset}", REACH)
    args = ["explain", "--node", node, "--target", "xds:///users", "--path", METHOD]
    args += ["--header", f"end-user={user}", "-o", "json"]

    def synced() -> dict[str, Any] | None:
        doc: dict[str, Any] = json.loads(mesh.server.xdsctl(*args).stdout)
        return doc if {s["state"] for s in doc["sync"].values()} == {"SYNCED"} else None

    doc = wait_for(synced, WAIT, message=f"{node} never SYNCED")
    assert doc["request"]["client"] == "grpc"
    assert doc["listener"]["kind"] == "api" and doc["listener"]["name"] == "users"
    assert doc["route"]["policy"]["rule"] == rule
    (cluster,) = doc["clusters"]
    assert (cluster["name"], cluster["subset"]) == (f"echo.default:{PORT}|{subset}", subset)
    (endpoint,) = cluster["endpoints"]
    (explained,) = [n for n, b in backends.items() if f"127.0.0.1:{b.port}" == endpoint["address"]]
    assert explained == f"echo-{subset}"
    client.wait_for_calls(10, timeout=WAIT)
    assert set(client.bodies_since(first)) == {explained}
