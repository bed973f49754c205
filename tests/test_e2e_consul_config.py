"""End-to-end: Consul config entries written to the emulator (as `consul config write`
does, `PUT /v1/config`), picked up by `xds-server --consul` (a real subprocess) and
applied by a real Envoy: service-defaults protocol, a canary split between subsets, a
router, a failover, and a chain Consul would refuse, shown by the real `xdsctl`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from tests.consul_entries import defaults, resolver, router, splitter, versions
from tests.harness import e2e
from tests.harness.backends import WHOAMI_METHOD, GrpcBackend, http_get
from tests.harness.e2e import WAIT
from tests.harness.waiting import wait_for
from tests.test_e2e_consul import ConsulMesh, consul_mesh, emulator

pytest_plugins = ["tests.harness.fixtures"]
__all__ = ["consul_mesh", "emulator"]  # the fixtures, shared with the Consul e2e tests

pytestmark = pytest.mark.timeout(120)


def body(mesh: ConsulMesh, host: str, path: str = "/") -> str:
    try:
        status, text = http_get(mesh.url.rstrip("/") + path, host)
    except OSError as exc:
        return f"error: {exc}"
    return text if status == 200 else f"{status}: {text[:60]}"


def grpc_via_envoy(mesh: ConsulMesh, authority: str) -> str:
    """One gRPC call through Envoy's HTTP listener to `authority`: its answer, or the
    status code when it fails."""
    options = [("grpc.default_authority", authority)]
    with grpc.insecure_channel(f"127.0.0.1:{mesh.listener_port}", options=options) as channel:
        try:
            reply: bytes = channel.unary_unary(WHOAMI_METHOD)(b"", timeout=2.0)
        except grpc.RpcError as exc:
            return str(exc.code())  # type: ignore[attr-defined]
    return reply.decode()


def http2_options(env: Any, service: str) -> bool:
    """Whether Envoy's cluster of `service` speaks HTTP/2 to its endpoints."""
    dump = env.config_dump("dynamic_active_clusters")
    for item in dump.get("configs", []):  # one DynamicCluster each
        cluster = item["cluster"]
        if cluster["name"].startswith(f"{service}.default:"):
            options = cluster.get("typed_extension_protocol_options", {})
            return "http2_protocol_options" in str(options)
    raise AssertionError(f"no cluster of {service} in Envoy")


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_service_defaults_http2_reaches_an_h2c_backend(
    delta: bool, consul_mesh: Callable[..., ConsulMesh], envoy_factory: Any
) -> None:
    api = GrpcBackend("api").start()  # speaks HTTP/2 without TLS only
    try:
        mesh = consul_mesh()
        mesh.agent.agent.service.register("api", service_id="api-1", address="127.0.0.1",
                                          port=api.port)  # fmt: skip
        mesh.wait_endpoints("api", 1)
        env = mesh.envoy(envoy_factory, delta)
        # No protocol set: http, so Envoy speaks HTTP/1.1 to a backend that cannot.
        assert not http2_options(env, "api")
        assert grpc_via_envoy(mesh, "api") != "api"
        mesh.emu.config_write(defaults("api", "http2"))
        wait_for(lambda: http2_options(env, "api"), WAIT, message="http2 cluster in Envoy")
        wait_for(lambda: grpc_via_envoy(mesh, "api") == "api", WAIT, message="h2c traffic")
    finally:
        api.stop()


def test_canary_split_by_meta_version_and_a_router_for_admin(
    consul_mesh: Callable[..., ConsulMesh], envoy_factory: Any, http_backend_factory: Any
) -> None:
    v1, v2, admin = e2e.backends(http_backend_factory, "web-v1", "web-v2", "admin")
    mesh = consul_mesh()
    mesh.register("web", v1, meta={"version": "v1"})
    mesh.register("web", v2, meta={"version": "v2"})
    mesh.register("admin", admin)
    mesh.wait_endpoints("web", 2)
    mesh.envoy(envoy_factory)
    for entry in (
        defaults("web"),
        defaults("admin"),
        resolver("web", DefaultSubset="v1", Subsets=versions("v1", "v2")),
        splitter("web", {"Weight": 90, "ServiceSubset": "v1"},
                 {"Weight": 10, "ServiceSubset": "v2"}),
        router("web", {"Match": {"HTTP": {"PathPrefix": "/admin"}},
                       "Destination": {"Service": "admin"}}),
    ):  # fmt: skip
        assert mesh.emu.config_write(entry) is True
    wait_for(lambda: body(mesh, "web", "/admin/x") == "admin", WAIT, message="router applied")
    seen = Counter(body(mesh, "web") for _ in range(300))
    assert set(seen) == {"web-v1", "web-v2"}, seen
    # 90/10: 30 expected for v2; the bounds are > 5 standard deviations wide.
    assert 10 <= seen["web-v2"] <= 60, seen


def test_failover_to_another_service_when_every_instance_is_critical(
    consul_mesh: Callable[..., ConsulMesh], envoy_factory: Any, http_backend_factory: Any
) -> None:
    web, backup = e2e.backends(http_backend_factory, "web", "backup")
    mesh = consul_mesh()
    sid = mesh.register("web", web)
    mesh.register("backup", backup)
    mesh.wait_endpoints("web", 1)
    mesh.envoy(envoy_factory)
    mesh.emu.config_write(resolver("web", Failover={"*": {"Targets": [{"Service": "backup"}]}}))
    wait_for(lambda: mesh.server.xdsctl("policies").stdout.count("ACCEPTED") >= 2, WAIT,
             message="failover chain accepted")  # fmt: skip
    assert body(mesh, "web") == "web"
    mesh.agent.agent.check.ttl_fail(f"service:{sid}")
    wait_for(lambda: body(mesh, "web") == "backup", WAIT, message="backup takes over")
    mesh.agent.agent.check.ttl_pass(f"service:{sid}")
    wait_for(lambda: body(mesh, "web") == "web", WAIT, message="web again")


def test_circular_redirect_is_rejected_with_its_reason_and_the_last_good_chain_stays(
    consul_mesh: Callable[..., ConsulMesh], envoy_factory: Any, http_backend_factory: Any
) -> None:
    web, admin = e2e.backends(http_backend_factory, "web", "admin")
    mesh = consul_mesh()
    mesh.register("web", web)
    mesh.register("admin", admin)
    mesh.wait_endpoints("admin", 1)
    mesh.envoy(envoy_factory)
    mesh.emu.config_write(resolver("web", Redirect={"Service": "admin"}))
    wait_for(lambda: body(mesh, "web") == "admin", WAIT, message="redirect applied")
    mesh.emu.config_write(resolver("admin", Redirect={"Service": "web"}))

    def rejected() -> str | None:
        table = mesh.server.xdsctl("policies").stdout
        return table if "detected circular resolver redirect" in table else None

    table = wait_for(rejected, WAIT, message="circular redirect reported")
    line = next(x for x in table.splitlines() if x.startswith("discovery-chain ") and "/web" in x)
    assert "REJECTED" in line, table
    assert "web -> admin -> web" in table, table
    assert "serving its last valid version" in table, table
    # Each config entry is listed too, with its origin naming Consul.
    assert "consul config entry service-resolver/admin" in table, table
    assert Counter(body(mesh, "web") for _ in range(20)) == {"admin": 20}
