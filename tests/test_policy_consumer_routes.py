"""Gateway API consumer routes (written in another namespace than their Service's) apply
to callers in their namespace only, and for them replace the producer routing
(GEP-1426); proxies say their namespace in node metadata NAMESPACE (Istio's key)."""

from __future__ import annotations

import textwrap
from dataclasses import replace

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import struct_pb2

from sources.policy_file import parse_policy_file
from translators.group import ProxyGroup
from translators.names import cluster_name
from translators.policy_resolve import Resolution, resolve_policies
from translators.policy_status import grpc_not_applied
from xds_server import types
from xds_server.cache import SnapshotCache
from xds_server.catalog import Catalog
from xds_server.controller import Controller
from xds_server.model import (
    Endpoint,
    PolicyKey,
    PolicyObject,
    Port,
    RoutePolicy,
    Service,
    ServiceEntry,
    ServiceKey,
)

HTTP = Port("http", 80)
SERVICES = [Service(n, "shop", (HTTP,), source="file") for n in ("web", "web-v1", "web-v2")]
CAT = {s.key: ServiceEntry(s, (Endpoint("10.0.0.1", 80, "http"),)) for s in SERVICES}
WEB = ServiceKey("shop", "web")
V1, V2 = (cluster_name(s, HTTP) for s in SERVICES[1:])


def route(name: str, ns: str, *backends: str, kind: str = "HTTPRoute") -> str:
    refs = ", ".join(f"{{name: {b}, namespace: shop, port: 80}}" for b in backends)
    return textwrap.dedent(f"""\
        apiVersion: gateway.networking.k8s.io/v1
        kind: {kind}
        metadata: {{name: {name}, namespace: {ns}}}
        spec:
          parentRefs: [{{group: "", kind: Service, name: web, namespace: shop}}]
          rules: [{{backendRefs: [{refs}]}}]
        """)


VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http: [{route: [{destination: {host: web-v1}}]}]
"""
PRODUCER = route("split", "shop", "web-v1", "web-v2")
CONSUMER = route("mine", "client", "web-v2")


def objects(*docs: str, source: str = "file") -> list[PolicyObject]:
    found = parse_policy_file("---\n".join(docs), f"{source}.yaml")
    return [replace(o, source=source) for o in found]


def resolve(*objs: PolicyObject) -> Resolution:
    return resolve_policies(CAT, objs, {}, {"file": "file"})


def backends(policy: RoutePolicy | None) -> set[str]:
    assert policy is not None
    return {d.destination.host for rule in policy.http for d in rule.destinations}


def test_a_consumer_route_replaces_the_producer_routes_for_its_namespace_only() -> None:
    res = resolve(*objects(PRODUCER, CONSUMER))
    assert backends(res.services[WEB].routing) == {"web-v1", "web-v2"}
    assert set(res.consumers) == {"client"}
    assert backends(res.policies_for("client")[WEB].routing) == {"web-v2"}
    for elsewhere in ("shop", "other", None):
        assert res.policies_for(elsewhere) is res.services, elsewhere
    [mine] = [s for s in res.statuses if s.key.name == "mine"]
    assert mine.state == "ACCEPTED" and mine.services == (WEB,), mine


def test_a_consumer_route_takes_the_place_of_a_virtual_service_for_its_callers() -> None:
    res = resolve(*objects(VS, CONSUMER))
    routing = res.services[WEB].routing
    assert routing is not None and routing.key == PolicyKey("VirtualService", "shop", "web")
    assert backends(res.policies_for("client")[WEB].routing) == {"web-v2"}


def test_consumer_routes_of_two_registries_for_one_namespace_have_one_owner() -> None:
    """web is a file service: the file's consumer route owns the client namespace's
    routing of web; a Kubernetes one there is SHADOWED; producer routing is not involved."""
    theirs = route("theirs", "client", "web-v1")
    res = resolve(*objects(PRODUCER, CONSUMER), *objects(theirs, source="kubernetes"))
    assert backends(res.policies_for("client")[WEB].routing) == {"web-v2"}
    [status] = [s for s in res.statuses if s.key.name == "theirs"]
    assert status.state == "SHADOWED", status
    assert "shadowed by HTTPRoute client/mine from file" in status.reasons[0]
    assert backends(res.services[WEB].routing) == {"web-v1", "web-v2"}


def node(namespace: object = None, agent: str = "envoy") -> base_pb2.Node:
    md = struct_pb2.Struct()
    if namespace is not None:
        md.update({"NAMESPACE": namespace})
    return base_pb2.Node(id="n", user_agent_name=agent, metadata=md)


def test_the_group_of_a_proxy_holds_its_namespace() -> None:
    group, warnings = ProxyGroup.parse(node("client"))
    assert (group.key, warnings) == ("envoy;ns=client", [])
    assert ProxyGroup.from_key(group.key) == group
    assert ProxyGroup.parse(node("client", "gRPC Python"))[0].key == "grpc;ns=client"
    assert ProxyGroup.parse(node())[0].key == "envoy"
    group, warnings = ProxyGroup.parse(node(7))
    assert group.key == "envoy" and "NAMESPACE=7" in warnings[0], warnings
    with pytest.raises(ValueError, match="namespace"):
        ProxyGroup.from_key("envoy;ns=a/b")


@pytest.fixture
def controller() -> tuple[Catalog, SnapshotCache, Controller]:
    catalog = Catalog()
    catalog.register("f", "file")
    catalog.register("p", "policy")
    catalog.replace("f", CAT.values())
    cache = SnapshotCache()
    ctl = Controller(catalog, cache)
    cache.group_of = ctl.group_of
    return catalog, cache, ctl


def route_refs(cache: SnapshotCache, group: str) -> set[str]:
    """The clusters the routes of web's virtual host send to, in `group`'s snapshot."""
    body = cache.get(group).get(types.ROUTE).resources["http_10000"].body
    config = route_pb2.RouteConfiguration.FromString(body)
    [vhost] = [v for v in config.virtual_hosts if "web.shop" in v.domains]
    out = {r.route.cluster for r in vhost.routes}
    for r in vhost.routes:
        out.update(c.name for c in r.route.weighted_clusters.clusters)
    return out - {""}


async def test_only_proxies_of_the_consumer_namespace_get_its_route(
    controller: tuple[Catalog, SnapshotCache, Controller],
) -> None:
    catalog, cache, ctl = controller
    client, other, bare = (cache.group_of(node(ns)) for ns in ("client", "other", None))
    catalog.replace_policies("p", objects(PRODUCER))
    await ctl.rebuild()
    for group in (client, other, bare):
        assert {V1, V2} <= route_refs(cache, group), group
    catalog.replace_policies("p", objects(PRODUCER, CONSUMER))
    await ctl.rebuild()
    assert V1 not in route_refs(cache, client) and V2 in route_refs(cache, client)
    for group in (other, bare):
        assert {V1, V2} <= route_refs(cache, group), group
    # Its routes are named after it, and explain finds who wrote them.
    consumer = ctl.policy.consumers["client"][WEB].routing
    assert consumer is not None
    assert str(consumer.key) == "Service shop/web (callers in client)"
    assert ctl.rule_writer(str(consumer.key), 0) == ("HTTPRoute", "client", "mine")
    assert ctl.rule_writer("Service shop/web", 0) == ("HTTPRoute", "shop", "split")
    # Gone again: the client namespace's proxies are back to the producer routes.
    catalog.replace_policies("p", objects(PRODUCER))
    await ctl.rebuild()
    assert {V1, V2} <= route_refs(cache, client)


async def test_groups_differing_only_by_a_namespace_without_consumer_routes_share_work(
    controller: tuple[Catalog, SnapshotCache, Controller],
) -> None:
    catalog, cache, ctl = controller
    groups = [cache.group_of(node(f"ns{i}")) for i in range(3)]
    catalog.replace_policies("p", objects(PRODUCER))
    await ctl.rebuild()
    for type_url in (types.CLUSTER, types.ENDPOINT, types.LISTENER, types.ROUTE):
        built = [cache.get(g).get(type_url) for g in groups]
        assert built[0] is built[1] is built[2], type_url  # built once for the three
    catalog.replace("f", [*CAT.values(), ServiceEntry(Service("new", "shop", (HTTP,)))])
    await ctl.rebuild()
    for g in groups:
        assert "new.shop:80" in cache.get(g).get(types.CLUSTER).resources, g


def test_what_grpc_clients_cannot_apply_of_a_consumer_route_is_reported() -> None:
    mirrored = CONSUMER.replace(
        "rules: [{backendRefs:",
        "rules: [{filters: [{type: RequestMirror, requestMirror: {backendRef: "
        "{name: web-v1, namespace: shop, port: 80}}}], backendRefs:",
    )
    res = resolve(*objects(PRODUCER, mirrored))
    [mine] = [s for s in grpc_not_applied(res, CAT) if s.key.name == "mine"]
    assert mine.state == "WARNING", mine
    assert any("not applied to gRPC clients" in r and "mirror" in r for r in mine.reasons), mine
