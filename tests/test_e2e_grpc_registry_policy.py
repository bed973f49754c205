"""Proxyless gRPC applies policy from the registries' dialects: a Gateway API GRPCRoute
method match (from a `--policy` file) and a Consul service-splitter (config entries in the
Consul emulator) each steer the calls of a grpcio client dialing ``xds:///<service>``.

Real `xds-server` subprocesses, real grpcio clients (their own processes), real gRPC
backends that answer with their name."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.consul_entries import defaults, resolver, splitter, versions
from tests.harness.backends import GrpcBackend
from tests.harness.e2e import WAIT
from tests.harness.grpc_xds import GrpcXdsClient, grpc_bootstrap
from tests.harness.policy_mesh import start_policy_mesh
from tests.harness.server_proc import XdsServerProcess
from tests.test_e2e_consul import ConsulMesh, consul_mesh, emulator
from tests.test_e2e_policy_grpc import GRPC_PORT, grpc_service

pytest_plugins = ["tests.harness.fixtures"]
__all__ = ["consul_mesh", "emulator"]  # the Consul e2e tests' fixtures
pytestmark = pytest.mark.timeout(120)

REACH = 20.0  # gRPC's xDS start-up, generous


def only(client: GrpcXdsClient, name: str, calls: int = 30) -> None:
    """Wait until `calls` calls in a row are all answered OK by `name` (a change takes a
    push and an ACK to reach the client: the calls before it may go elsewhere)."""
    deadline = time.monotonic() + REACH
    while True:
        mark = client.mark()
        client.wait_for_calls(calls, WAIT)
        seen = client.codes_since(mark), client.bodies_since(mark)
        if set(seen[1]) == {name} and set(seen[0]) == {"OK"}:
            return
        assert time.monotonic() < deadline, f"never only {name}: last {calls} calls {seen}"


def grpc_route(method: str) -> dict[str, Any]:
    """A GRPCRoute on Service echo: calls of `xdstest.Echo/<method>` to echo-v2, the
    others to echo-v1."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": {"name": "echo", "namespace": "default"},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "echo"}],
            "rules": [
                {
                    "matches": [{"method": {"service": "xdstest.Echo", "method": method}}],
                    "backendRefs": [{"name": "echo-v2", "port": GRPC_PORT}],
                },
                {"backendRefs": [{"name": "echo-v1", "port": GRPC_PORT}]},
            ],
        },
    }


def test_a_grpc_route_method_match_steers_a_proxyless_client(
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    grpc_xds_client_factory: Callable[..., GrpcXdsClient],
    grpc_backend_factory: Callable[..., GrpcBackend],
) -> None:
    names = ("echo", "echo-v1", "echo-v2")
    services = [grpc_service(n, (grpc_backend_factory(n), {})) for n in names]
    mesh = start_policy_mesh(xds_server_factory, tmp_path, services)
    client = grpc_xds_client_factory(
        grpc_bootstrap(mesh.server.xds_port, "grpc-route"), "xds:///echo", interval=0.02
    )
    only(client, "echo")  # no route yet: the Service's own endpoints
    mesh.write_policies(grpc_route("Whoami"))  # the method the client calls
    only(client, "echo-v2")
    mesh.write_policies(grpc_route("Other"))  # a method it never calls
    only(client, "echo-v1")


def test_a_consul_splitter_steers_a_proxyless_client(
    consul_mesh: Callable[..., ConsulMesh],
    grpc_xds_client_factory: Callable[..., GrpcXdsClient],
    grpc_backend_factory: Callable[..., GrpcBackend],
) -> None:
    v1, v2 = grpc_backend_factory("web-v1"), grpc_backend_factory("web-v2")
    mesh = consul_mesh()
    mesh.register("web", v1, meta={"version": "v1"})  # type: ignore[arg-type]
    mesh.register("web", v2, meta={"version": "v2"})  # type: ignore[arg-type]
    mesh.wait_endpoints("web", 2)
    for entry in (
        defaults("web", "grpc"),
        resolver("web", DefaultSubset="v1", Subsets=versions("v1", "v2")),
    ):
        assert mesh.emu.config_write(entry) is True
    client = grpc_xds_client_factory(
        grpc_bootstrap(mesh.server.xds_port, "grpc-splitter"), "xds:///web", interval=0.02
    )
    only(client, "web-v1")  # the resolver's DefaultSubset
    mesh.emu.config_write(splitter("web", {"Weight": 100, "ServiceSubset": "v2"}))
    only(client, "web-v2")
    split: dict[str, Any] = {"Weight": 50, "ServiceSubset": "v1"}
    mesh.emu.config_write(splitter("web", split, {**split, "ServiceSubset": "v2"}))
    mark = client.wait_for_body("web-v1", REACH, since=client.mark())
    client.wait_for_calls(200, WAIT)
    seen = client.bodies_since(mark + 1)
    # 50/50 over 200 calls: each > 60 is over 5 standard deviations from failing.
    assert seen["web-v1"] > 60 and seen["web-v2"] > 60, seen
