"""Policy from several registries: each object shows its source, and one registry owns
a service per kind of rule (routing, destination), the service's own registry first,
then kubernetes, consul, file; the others are SHADOWED and say by what and why."""

from __future__ import annotations

import textwrap
from dataclasses import replace

from sources.policy_file import parse_policy_file
from tests.consul_entries import compiled, defaults, resolver, splitter, versions
from translators.policy_owners import REGISTRY_ORDER, service_registries
from translators.policy_resolve import Resolution, resolve_policies
from xds_server import metrics
from xds_server.cache import SnapshotCache
from xds_server.catalog import Catalog
from xds_server.controller import Controller
from xds_server.model import (
    PolicyKey,
    PolicyObject,
    Port,
    Service,
    ServiceEntry,
    ServiceKey,
)

HTTP = Port("http", 80)
REGISTRIES = {"consul": "consul", "kubernetes": "kubernetes", "file": "file"}


def catalog(**sources: str) -> dict[ServiceKey, ServiceEntry]:
    """Services of namespace default, each published by the source named."""
    services = [Service(name, "default", (HTTP,), source=src) for name, src in sources.items()]
    return {s.key: ServiceEntry(s) for s in services}


def istio(source: str, *docs: str) -> list[PolicyObject]:
    text = "---\n".join(textwrap.dedent(d) for d in docs)
    return [replace(o, source=source) for o in parse_policy_file(text, f"{source}.yaml")]


def vs(name: str, *hosts: str, to: str = "web") -> str:
    return f"""\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: {name}, namespace: default}}
        spec:
          hosts: {list(hosts)}
          http: [{{route: [{{destination: {{host: {to}}}}}]}}]
        """


def dr(name: str, host: str) -> str:
    return f"""\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {{name: {name}, namespace: default}}
        spec:
          host: {host}
          trafficPolicy: {{loadBalancer: {{simple: RANDOM}}}}
        """


def http_route(name: str, parent: str) -> str:
    return f"""\
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {{name: {name}, namespace: default}}
        spec:
          parentRefs: [{{group: "", kind: Service, name: {parent}}}]
          rules: [{{backendRefs: [{{name: {parent}, port: 80}}]}}]
        """


def consul_chain(name: str) -> list[PolicyObject]:
    """The compiled discovery chain (and resolver) of a 50/50 splitter on `name`."""
    result = compiled(
        defaults(name),
        resolver(name, Subsets=versions("v1", "v2")),
        splitter(name, {"Weight": 50, "ServiceSubset": "v1"},
                 {"Weight": 50, "ServiceSubset": "v2"}),
    )  # fmt: skip
    return [replace(o, source="consul") for o in result.policies]


def resolve(cat: dict[ServiceKey, ServiceEntry], *objects: PolicyObject) -> Resolution:
    return resolve_policies(cat, objects, {}, REGISTRIES)


def status(res: Resolution, kind: str, name: str) -> tuple[str, str, str, list[str]]:
    [found] = [s for s in res.statuses if s.key == PolicyKey(kind, "default", name)]
    return found.state, found.source, " | ".join(found.reasons), [str(s) for s in found.services]


WEB = ServiceKey("default", "web")


def test_a_consul_service_takes_its_routing_from_consul_and_the_file_one_is_shadowed() -> None:
    res = resolve(catalog(web="consul"), *istio("file", vs("web", "web")), *consul_chain("web"))
    routing = res.services[WEB].routing
    assert routing is not None and routing.key.kind == "discovery-chain", routing
    state, source, reasons, services = status(res, "VirtualService", "web")
    assert (state, source, services) == ("SHADOWED", "file", []), reasons
    assert reasons == (
        "shadowed by discovery-chain default/web from consul: web.default's own registry "
        "(consul) comes first"
    )
    assert status(res, "discovery-chain", "web")[:2] == ("ACCEPTED", "consul")


def test_a_file_service_takes_its_routing_from_the_file() -> None:
    res = resolve(catalog(web="file"), *istio("file", vs("web", "web")), *consul_chain("web"))
    routing = res.services[WEB].routing
    assert routing is not None and routing.key == PolicyKey("VirtualService", "default", "web")
    state, _, reasons, _ = status(res, "discovery-chain", "web")
    assert state == "SHADOWED", reasons
    assert (
        "shadowed by VirtualService default/web from file: web.default's own registry "
        "(file) comes first" in reasons
    )


def test_a_kubernetes_service_prefers_kubernetes_objects_of_either_dialect() -> None:
    cat = catalog(web="kubernetes")
    res = resolve(cat, *istio("kubernetes", http_route("web", "web")), *consul_chain("web"))
    assert status(res, "HTTPRoute", "web")[0] == "ACCEPTED"
    state, _, reasons, _ = status(res, "discovery-chain", "web")
    assert state == "SHADOWED"
    assert "shadowed by HTTPRoute default/web from kubernetes" in reasons, reasons


def test_without_its_own_registry_the_fixed_order_decides() -> None:
    assert REGISTRY_ORDER == ("kubernetes", "consul", "file")
    cat = catalog(web="file")
    res = resolve(cat, *istio("kubernetes", vs("k", "web")), *consul_chain("web"))
    routing = res.services[WEB].routing
    assert routing is not None and routing.key.name == "k"
    state, _, reasons, _ = status(res, "discovery-chain", "web")
    assert state == "SHADOWED"
    assert reasons.startswith(
        "shadowed by VirtualService default/k from kubernetes: "
        "web.default's own registry (file) configures none"
    ), reasons


def test_destination_policy_has_its_own_owner() -> None:
    """Consul owns web's destination (its resolver) while the file's DestinationRule
    is shadowed; routing is a separate kind: the file VirtualService of `api` stays."""
    cat = catalog(web="consul", api="file")
    objects = [*istio("file", dr("web", "web"), vs("api", "api")), *consul_chain("web")]
    res = resolve(cat, *objects)
    destination = res.services[WEB].destination
    assert destination is not None and destination.key.kind == "discovery-chain-resolver"
    state, _, reasons, _ = status(res, "DestinationRule", "web")
    assert state == "SHADOWED", reasons
    assert "from consul" in reasons
    assert status(res, "VirtualService", "api")[0] == "ACCEPTED"


def test_an_object_shadowed_on_one_host_applies_to_its_others() -> None:
    cat = catalog(web="consul", api="file")
    res = resolve(cat, *istio("file", vs("both", "web", "api", to="api")), *consul_chain("web"))
    state, _, reasons, services = status(res, "VirtualService", "both")
    assert (state, services) == ("WARNING", ["api.default"]), reasons
    assert "shadowed by discovery-chain default/web from consul" in reasons
    routing = res.services[ServiceKey("default", "api")].routing
    assert routing is not None and routing.key.name == "both"


def test_one_registry_alone_is_never_shadowed_and_keeps_its_own_rules() -> None:
    """Two VirtualServices of one registry: the first by namespace/name wins as before."""
    res = resolve(catalog(web="consul"), *istio("file", vs("a", "web"), vs("b", "web")))
    assert status(res, "VirtualService", "a")[0] == "ACCEPTED"
    state, _, reasons, _ = status(res, "VirtualService", "b")
    assert state == "REJECTED" and "already has a VirtualService" in reasons


def test_a_service_in_two_registries_has_both_as_its_own_in_the_fixed_order() -> None:
    service = Service("web", source="file+kubernetes")
    assert service_registries(service, REGISTRIES) == ("kubernetes", "file")
    res = resolve(catalog(web="file+consul"), *istio("file", vs("web", "web")),
                  *consul_chain("web"))  # fmt: skip
    state, _, reasons, _ = status(res, "VirtualService", "web")
    assert state == "SHADOWED" and "own registry (consul) comes first" in reasons, reasons


def test_the_catalog_marks_each_object_with_its_registry_and_keeps_it() -> None:
    cat = Catalog()
    cat.register("policy", "policy")
    cat.register("consul-config", "consul")
    files = istio("", vs("web", "web"))
    cat.replace_policies("policy", files)
    cat.replace_policies("consul-config", consul_chain("web"))
    first = cat.take_policies()
    assert first is not None
    assert {(o.key.kind, o.source) for o in first} == {
        ("VirtualService", "file"),
        ("discovery-chain", "consul"),
        ("discovery-chain-resolver", "consul"),
    }
    assert cat.registries() == {"policy": "file", "consul-config": "consul"}
    cat.replace_policies("policy", [*files, *istio("", dr("web", "web"))])
    second = cat.take_policies()
    assert second is not None and second[0] is first[0]  # republished: the same object


def test_status_documents_carry_the_source() -> None:
    res = resolve(catalog(web="consul"), *istio("file", vs("web", "web")))
    [doc] = [s.as_dict() for s in res.statuses]
    assert doc["source"] == "file" and doc["state"] == "ACCEPTED"


async def test_the_server_shows_and_counts_shadowed_objects_with_their_source() -> None:
    """Through the catalog and the controller (what /debug/policies serves): web is
    published by a file-registry source named "registry", so the policy file owns its
    routing and Consul's chain for it is SHADOWED, with source consul, and counted in
    xds_policy_objects{kind,state}."""
    cat = Catalog()
    cat.register("registry", "file")
    cat.register("consul-config", "consul")
    cat.register("policy", "policy")
    cat.replace("registry", catalog(web="").values())
    cat.replace_policies("policy", istio("", vs("web", "web")))
    cat.replace_policies("consul-config", consul_chain("web"))
    controller = Controller(cat, SnapshotCache())
    await controller.rebuild()
    docs = {(d["kind"], d["name"]): d for d in controller.policy_statuses()}
    shadowed = docs[("discovery-chain", "web")]
    assert (shadowed["state"], shadowed["source"]) == ("SHADOWED", "consul"), shadowed
    assert (
        docs[("VirtualService", "web")]["state"],
        docs[("VirtualService", "web")]["source"],
    ) == ("ACCEPTED", "file")
    gauge = metrics.POLICY_OBJECTS.labels("discovery-chain", "SHADOWED")
    assert gauge._value.get() == 1  # type: ignore[attr-defined]
