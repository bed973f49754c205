"""Resolving policy objects against the catalog: hosts, references, conflicts, last good."""

from __future__ import annotations

from translators.names import cluster_name, subset_cluster_name
from translators.policy_common import RouteTarget
from translators.policy_resolve import HostIndex, resolve_policies
from xds_server.model import (
    Destination,
    DestinationPolicy,
    HashOn,
    HttpRule,
    LoadBalancer,
    PolicyKey,
    PolicyObject,
    Port,
    PortTrafficPolicy,
    RoutePolicy,
    Service,
    ServiceEntry,
    ServiceKey,
    Subset,
    TcpRule,
    TrafficPolicy,
    WeightedDestination,
    labels,
)


def svc(name: str, ns: str = "default", *ports: Port, hostnames: tuple[str, ...] = ()) -> Service:
    return Service(name, ns, ports or (Port("http", 80),), hostnames)


def catalog(*services: Service) -> dict[ServiceKey, ServiceEntry]:
    return {s.key: ServiceEntry(s) for s in services}


def vs(name: str, hosts: tuple[str, ...], *rules: HttpRule, ns: str = "default",
       tcp: tuple[TcpRule, ...] = ()) -> RoutePolicy:  # fmt: skip
    return RoutePolicy(PolicyKey("VirtualService", ns, name), hosts, rules, tcp, f"{name}.yaml:1")


def dr(name: str, host: str, *subsets: str, ns: str = "default", **kw: object) -> DestinationPolicy:
    subs = tuple(Subset(s, labels({"version": s})) for s in subsets)
    return DestinationPolicy(
        PolicyKey("DestinationRule", ns, name), host, subsets=subs, origin=f"{name}.yaml:1", **kw
    )  # type: ignore[arg-type]


def to(host: str, subset: str = "", weight: int = 100, port: int | None = None,
       ns: str = "default") -> WeightedDestination:  # fmt: skip
    return WeightedDestination(Destination(host, ns, port, subset), weight)


def obj(policy: RoutePolicy | DestinationPolicy) -> PolicyObject:
    return PolicyObject(policy.key, policy.origin, policy)


WEB = svc("web")
API = svc("api", "shop", Port("http", 8080), Port("grpc", 9090, "grpc"), Port("db", 5432, "tcp"))
CAT = catalog(WEB, API)


def test_host_forms_resolve_as_istio_does() -> None:
    index = HostIndex([WEB, API, svc("ext", hostnames=("ext.example.com",))])
    assert index.find("web", "default") == WEB.key
    assert index.find("web", "shop") is None  # a short name is in the object's namespace
    assert index.find("api.shop", "default") == API.key
    assert index.find("api.shop.svc.cluster.local", "default") == API.key
    assert index.find("API.shop.svc.cluster.local.", "x") == API.key
    assert index.find("ext.example.com", "other") == ServiceKey("default", "ext")
    assert index.find("nope.example.com", "default") is None


def test_canary_split_resolves_subset_clusters_and_builds_only_referenced_subsets() -> None:
    rule = HttpRule(destinations=(to("web", "v1", 90), to("web", "v2", 10)))
    objects = [obj(vs("web", ("web",), rule)), obj(dr("web", "web", "v1", "v2", "v3"))]
    res = resolve_policies(CAT, objects, {})
    assert [s.state for s in res.statuses] == ["ACCEPTED", "ACCEPTED"]
    sp = res.services[WEB.key]
    assert sp.subsets == ((80, "v1"), (80, "v2"))  # v3 is defined but nothing routes to it
    base = cluster_name(WEB, WEB.ports[0])
    assert sp.target(Destination("web", "default", None, "v2"), 80) == RouteTarget(
        subset_cluster_name(base, "v2")
    )
    assert sp.depends == ()


def test_an_unknown_subset_rejects_the_virtual_service_naming_the_subset() -> None:
    rule = HttpRule(destinations=(to("web", "v2"),))
    res = resolve_policies(CAT, [obj(vs("web", ("web",), rule)), obj(dr("web", "web", "v1"))], {})
    by = {s.key.kind: s for s in res.statuses}
    assert by["VirtualService"].state == "REJECTED"
    assert by["VirtualService"].reasons == (
        "web.yaml:1: VirtualService default/web: spec.http[0].route: subset 'v2' of service "
        "web.default is not defined by a DestinationRule (DestinationRule default/web)",
    )
    assert res.services[WEB.key].routing is None  # nothing routes to a cluster that is not there


def test_a_rejected_object_keeps_its_last_valid_version() -> None:
    good = vs("web", ("web",), HttpRule(destinations=(to("web", "v1"),)))
    bad = vs("web", ("web",), HttpRule(destinations=(to("web", "v9"),)))
    d = obj(dr("web", "web", "v1"))
    first = resolve_policies(CAT, [obj(good), d], {})
    second = resolve_policies(CAT, [obj(bad), d], first.accepted)
    status = next(s for s in second.statuses if s.key == good.key)
    assert status.state == "REJECTED"
    assert status.reasons[0].startswith(
        "web.yaml:1: VirtualService default/web: spec.http[0].route: subset 'v9'"
    )
    assert status.reasons[-1] == "serving its last valid version (web.yaml:1)"
    assert second.services[WEB.key].routing == good
    # A parse error (no policy at all) falls back the same way.
    refused = PolicyObject(good.key, "web.yaml:3", error="web.yaml:3:5: bad regex")
    third = resolve_policies(CAT, [refused, d], first.accepted)
    assert third.services[WEB.key].routing == good
    assert next(s for s in third.statuses if s.key == good.key).reasons[0] == (
        "web.yaml:3:5: bad regex"
    )


def test_second_virtual_service_for_a_host_is_rejected_naming_the_winner() -> None:
    a = vs("a", ("web",), HttpRule(destinations=(to("web"),)))
    b = vs("b", ("web.default.svc.cluster.local",), HttpRule(destinations=(to("web"),)))
    res = resolve_policies(CAT, [obj(b), obj(a)], {})
    by = {s.key.name: s for s in res.statuses}
    assert by["a"].state == "ACCEPTED"
    assert by["b"].state == "REJECTED"
    assert "VirtualService default/a" in by["b"].reasons[0]
    assert res.services[WEB.key].routing == a


def test_unknown_host_is_a_warning_and_applies_when_the_service_appears() -> None:
    v = vs("later", ("later",), HttpRule(destinations=(to("later"),)))
    res = resolve_policies(CAT, [obj(v)], {})
    assert res.statuses[0].state == "WARNING"
    assert "names no service yet" in res.statuses[0].reasons[0]
    later = svc("later")
    res = resolve_policies({**CAT, **catalog(later)}, [obj(v)], {})
    assert res.statuses[0].state == "ACCEPTED"
    assert res.services[later.key].routing == v


def test_destination_port_must_exist_and_match_the_protocol() -> None:
    rule = HttpRule(destinations=(to("api.shop", port=5432),))
    res = resolve_policies(CAT, [obj(vs("web", ("web",), rule))], {})
    assert res.statuses[0].reasons == (
        "web.yaml:1: VirtualService default/web: spec.http[0].route: port 5432 of service "
        "api.shop is not HTTP",
    )
    rule = HttpRule(destinations=(to("api.shop", port=1),))
    res = resolve_policies(CAT, [obj(vs("web", ("web",), rule))], {})
    assert res.statuses[0].reasons[0].endswith(": service api.shop has no port 1")


def test_routing_to_another_service_makes_it_a_dependency_on_the_route_port() -> None:
    rule = HttpRule(destinations=(to("api.shop"),))
    res = resolve_policies(CAT, [obj(vs("web", ("web",), rule))], {})
    sp = res.services[WEB.key]
    assert sp.depends == (API.key,)
    # No port named, web's route port 80 is not an api port: api's first HTTP port.
    assert sp.target(Destination("api.shop", "default"), 80).cluster == "api.shop:8080"


def test_hash_key_of_the_destination_rule_reaches_the_target() -> None:
    hashing = TrafficPolicy(LoadBalancer(hash=HashOn(header="x-user")))
    d = dr("web", "web", policy=hashing)
    v = vs("web", ("web",), HttpRule(destinations=(to("web"),)))
    res = resolve_policies(CAT, [obj(v), obj(d)], {})
    target = res.services[WEB.key].target(Destination("web", "default"), 80)
    assert target.hash_on == HashOn(header="x-user")


def test_port_level_settings_for_a_port_the_service_lacks_reject_the_rule() -> None:
    d = dr("web", "web", ports=(PortTrafficPolicy(81, TrafficPolicy()),))
    res = resolve_policies(CAT, [obj(d)], {})
    assert res.statuses[0].state == "REJECTED"
    assert res.statuses[0].reasons == (
        "web.yaml:1: DestinationRule default/web: spec.trafficPolicy.portLevelSettings: "
        "service web.default has no port 81",
    )


def test_tcp_rules_resolve_on_tcp_ports_only() -> None:
    v = vs("db", ("api.shop",), tcp=(TcpRule((to("api.shop", "a", 50), to("api.shop", "b", 50))),))
    d = dr("api", "api.shop", "a", "b")
    res = resolve_policies(CAT, [obj(v), obj(d)], {})
    assert [s.state for s in res.statuses] == ["ACCEPTED", "ACCEPTED"]
    sp = res.services[API.key]
    assert sp.subsets == ((5432, "a"), (5432, "b"))


def test_one_destination_with_and_without_a_port_resolves() -> None:
    # Destination orders by its fields; a port of None beside a number must not break the
    # ordering of the targets (it used to raise TypeError and stop the server).
    rules = (HttpRule(destinations=(to("web"),)), HttpRule(destinations=(to("web", port=80),)))
    res = resolve_policies(CAT, [obj(vs("web", ("web",), *rules))], {})
    assert [s.state for s in res.statuses] == ["ACCEPTED"]
    targets = res.services[WEB.key].targets
    assert [key for key, _ in targets] == [
        (Destination("web", "default"), 80),
        (Destination("web", "default", 80), 80),
    ]
    assert {t.cluster for _, t in targets} == {cluster_name(WEB, WEB.ports[0])}


def test_an_unexpected_error_rejects_that_object_only() -> None:
    """A bug met while resolving one object costs that object, not every rebuild."""

    good = vs("api", ("api.shop",), HttpRule(destinations=(to("api.shop"),)))
    # A value no parser would produce (a host that is not a string) stands for the bug.
    odd = WeightedDestination(Destination(None, "default"))  # type: ignore[arg-type]
    broken = vs("web", ("web",), HttpRule(destinations=(odd,)))
    res = resolve_policies(CAT, [obj(broken), obj(good)], {})
    by = {s.key.name: s for s in res.statuses}
    assert by["web"].state == "REJECTED"
    assert by["web"].reasons == (
        "web.yaml:1: VirtualService default/web: internal error: AttributeError: "
        "'NoneType' object has no attribute 'lower'",
    )
    assert by["api"].state == "ACCEPTED" and res.services[API.key].routing == good
