"""Compiled chains carrying traffic through real proxies: a service-resolver `Failover`
rendered as an aggregate cluster (the resolver routes the service's traffic to it and
brings the targets' clusters into the proxy's scope; Envoy and a proxyless grpcio client
use the failover service once every instance of the primary is critical, the primary
while it is healthy), and a 90/10 split between subsets by `Service.Meta.version` with
a router sending /admin to another service."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from tests.consul_entries import (
    catalog,
    compiled,
    defaults,
    instance,
    key,
    resolver,
    router,
    splitter,
    static_translation,
    versions,
)
from tests.harness.backends import GrpcBackend, HttpBackend, http_get
from tests.harness.grpc_xds import GrpcXdsClient, grpc_bootstrap
from tests.harness.ports import free_port
from tests.harness.waiting import wait_for
from tests.harness.xds import XdsServerThread
from translators import ProxyGroup, translate
from translators.policy_resolve import resolve_policies
from xds_server import types
from xds_server.model import DestinationPolicy

pytest_plugins = ["tests.harness.fixtures"]

CATALOG = catalog(
    web=[instance("web", "10.0.0.1", meta={"version": "v1"})],
    backup=[instance("backup", "10.0.1.1", meta={"version": "v1"})],
    other=[instance("other", "10.0.2.1")],
)


def test_failover_routes_to_an_aggregate_of_the_service_then_its_targets() -> None:
    result = compiled(
        defaults("web"),
        defaults("backup"),
        resolver("web", Failover={"*": {"Targets": [{"Service": "backup", "ServiceSubset": "v1"},
                                                   {"Service": "missing"}]}}),
        resolver("backup", Subsets=versions("v1")),
        meta={"missing": "http"},  # of web's protocol, and not in the catalog
    )  # fmt: skip
    services = resolve_policies(CATALOG, result.policies, {}).services
    web = services[key("web")]
    assert web.failovers == (
        (8080, "", ("web.default:8080", "backup.default:8080|v1")),  # "missing" left out
    )
    (target,) = {t.cluster for _, t in web.targets}
    assert target == "web.default:8080/failover"
    assert key("backup") in web.depends
    assert (8080, "v1") in services[key("backup")].subsets
    # A proxy that needs only web gets the failover target's clusters too.
    group = ProxyGroup(dependencies=frozenset({"web"}))
    names = {c.name for c in translate(CATALOG, group, policies=services).resources[types.CLUSTER]}
    assert names == {
        "web.default:8080",
        "web.default:8080/failover",
        "backup.default:8080",
        "backup.default:8080|v1",
    }


def test_a_failover_subset_no_resolver_defines_rejects_the_chain_using_it() -> None:
    # Written without the compiler's own check: the resolver's is what is tested here.
    result = compiled(
        defaults("web"), defaults("backup"), resolver("web", Failover={"*": {"Service": "backup"}})
    )
    (policy,) = [o for o in result.policies if o.key.kind == "discovery-chain-resolver"]
    compiled_policy = policy.policy
    assert isinstance(compiled_policy, DestinationPolicy) and compiled_policy.failover
    broken = compiled_policy.failover[0]
    bad_target = replace(broken.targets[0], subset="v9")
    failover = (replace(broken, targets=(bad_target,)),)
    bad = replace(policy, policy=replace(compiled_policy, failover=failover))
    objects = [o if o is not policy else bad for o in result.policies]
    statuses = resolve_policies(CATALOG, objects, {}).statuses
    (chain,) = [s for s in statuses if s.key.kind == "discovery-chain"]
    assert chain.state == "REJECTED"
    assert "failover subset 'v9' of service backup.default is not defined" in chain.reasons[0]


@pytest.mark.timeout(60)
def test_envoy_fails_over_to_another_service_when_every_instance_is_critical(
    envoy_factory: Callable[..., Any], http_backend_factory: Callable[..., HttpBackend]
) -> None:
    primary, backup = http_backend_factory("web"), http_backend_factory("backup")
    result = compiled(
        defaults("web"), defaults("backup"), resolver("web", Failover={"*": {"Service": "backup"}})
    )

    def answers(web_status: str) -> str:
        services = catalog(
            web=[instance("web", "127.0.0.1", primary.port, status=web_status)],
            backup=[instance("backup", "127.0.0.1", backup.port)],
        )
        listener = free_port()
        static = static_translation(services, result, ProxyGroup(http_listener_port=listener))
        admin = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}}}
        boot = {
            "node": {"id": "failover", "cluster": "t"},
            "static_resources": static,
            "admin": admin,
        }
        envoy = envoy_factory(boot, name=f"envoy-{web_status}", wait="ready")
        url = f"http://127.0.0.1:{listener}/"
        wait_for(lambda: http_get(url, host="web.service.consul")[0] == 200, timeout=10)
        bodies = {http_get(url, host="web.service.consul")[1] for _ in range(10)}
        envoy.stop()
        (body,) = bodies
        return body

    assert answers("critical") == "backup"
    assert answers("passing") == "web"


@pytest.mark.timeout(60)
def test_proxyless_grpc_fails_over_through_the_aggregate_cluster(
    grpc_backend_factory: Callable[..., GrpcBackend],
    grpc_xds_client_factory: Callable[..., GrpcXdsClient],
) -> None:
    """A real grpcio client ACKs the aggregate cluster (gRFC A37) and its calls reach
    the failover service while every instance of web is critical."""
    g1, g2 = grpc_backend_factory("web"), grpc_backend_factory("backup")
    services = catalog(
        web=[instance("web", "127.0.0.1", g1.port, meta={"protocol": "grpc"}, status="critical")],
        backup=[instance("backup", "127.0.0.1", g2.port, meta={"protocol": "grpc"})],
    )
    result = compiled(
        defaults("web", "grpc"),
        defaults("backup", "grpc"),
        resolver("web", Failover={"*": {"Service": "backup"}}),
    )
    policies = resolve_policies(services, result.policies, {}).services
    group = ProxyGroup(kind="grpc", dependencies=frozenset({"web"}))
    translation = translate(services, group, policies=policies)
    assert "web.default:" + str(g1.port) + "/failover" in {
        c.name for c in translation.resources[types.CLUSTER]
    }
    with XdsServerThread() as xds:
        xds.set_snapshot(group.key, translation.resources)
        node_id = "consul-failover-grpc"
        client = grpc_xds_client_factory(
            grpc_bootstrap(xds.port, node_id, node_cluster=group.key),
            "xds:///web",
            interval=0.02,
            timeout=2.0,
        )
        first = client.wait_for_body("backup", timeout=15)
        client.wait_for_calls(10, timeout=10)
        assert client.errors_since(first) == [], client.log_tail(30)
        assert set(client.bodies_since(first)) == {"backup"}
        (proxy,) = [p for p in xds.proxies() if p["node_id"] == node_id]
        assert all(t["nacks"] == 0 for t in proxy["types"].values()), proxy


@pytest.mark.timeout(60)
def test_envoy_splits_90_10_by_meta_version_and_routes_admin_elsewhere(
    envoy_factory: Callable[..., Any], http_backend_factory: Callable[..., HttpBackend]
) -> None:
    v1, v2, admin = (http_backend_factory(n) for n in ("web-v1", "web-v2", "admin"))
    services = catalog(
        web=[
            instance("web", "127.0.0.1", v1.port, meta={"version": "v1"}),
            instance("web", "127.0.0.1", v2.port, meta={"version": "v2"}),
        ],
        admin=[instance("admin", "127.0.0.1", admin.port)],
    )
    result = compiled(
        defaults("web"),
        defaults("admin"),
        resolver("web", Subsets=versions("v1", "v2")),
        splitter("web", {"Weight": 90, "ServiceSubset": "v1"},
                 {"Weight": 10, "ServiceSubset": "v2"}),
        router("web", {"Match": {"HTTP": {"PathPrefix": "/admin"}},
                       "Destination": {"Service": "admin"}}),
    )  # fmt: skip
    listener = free_port()
    static = static_translation(services, result, ProxyGroup(http_listener_port=listener))
    admin_port = {
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}}
    }
    boot = {
        "node": {"id": "split", "cluster": "t"},
        "static_resources": static,
        "admin": admin_port,
    }
    envoy_factory(boot, name="envoy-split", wait="ready")
    base = f"http://127.0.0.1:{listener}"
    wait_for(lambda: http_get(base + "/", host="web.service.consul")[0] == 200, timeout=10)
    assert {http_get(base + "/admin/x", host="web.service.consul")[1] for _ in range(5)} == {
        "admin"
    }
    bodies = Counter(http_get(base + "/", host="web.service.consul")[1] for _ in range(400))
    assert set(bodies) == {"web-v1", "web-v2"}, bodies
    assert 15 <= bodies["web-v2"] <= 80, bodies  # 10 %: 40 expected, 6 standard deviations
