"""Gateway API routes from policy files resolved against the catalog: grouping by parent
Service, merging in precedence, missing parents and backends, the last valid version,
and the conflicts with VirtualServices and between route kinds."""

from __future__ import annotations

import textwrap

from sources.policy_file import parse_policy_file
from translators.names import cluster_name
from translators.policy_resolve import Resolution, resolve_policies
from translators.policy_status import grpc_not_applied
from xds_server.model import (
    Policy,
    PolicyKey,
    PolicyObject,
    Port,
    Service,
    ServiceEntry,
    ServiceKey,
)

HTTP = Port("http", 80)
GRPC = Port("grpc", 9090, "grpc")
SERVICES = [Service(n, "shop", (HTTP, GRPC)) for n in ("web", "web-v1", "web-v2", "api")]
CAT = {s.key: ServiceEntry(s) for s in SERVICES}
WEB = ServiceKey("shop", "web")


def route(name: str, body: str, kind: str = "HTTPRoute", ns: str = "shop",
          parent: str = "{name: web, port: 80}") -> str:  # fmt: skip
    head = f"""\
        apiVersion: gateway.networking.k8s.io/v1
        kind: {kind}
        metadata: {{name: {name}, namespace: {ns}}}
        spec:
          parentRefs: [{{group: "", kind: Service, {parent[1:]}]
          rules:
        """
    return textwrap.dedent(head) + textwrap.indent(textwrap.dedent(body), "  ")


SPLIT = """\
- backendRefs:
  - {name: web-v1, port: 80, weight: 90}
  - {name: web-v2, port: 80, weight: 10}
"""
API = """\
- matches: [{path: {type: PathPrefix, value: /api}}]
  backendRefs: [{name: api, port: 80}]
"""


def objects(*docs: str) -> list[PolicyObject]:
    return parse_policy_file("---\n".join(docs), "routes.yaml")


def resolve(*docs: str, before: dict[PolicyKey, Policy] | None = None) -> Resolution:
    return resolve_policies(CAT, objects(*docs), before or {})


def status(res: Resolution, name: str, kind: str = "HTTPRoute") -> tuple[str, str, tuple[str, ...]]:
    [found] = [s for s in res.statuses if s.key == PolicyKey(kind, "shop", name)]
    return found.state, " | ".join(found.reasons), tuple(str(s) for s in found.services)


def weights(res: Resolution) -> list[tuple[str, int]]:
    """The (backend, weight) pairs of the last rule of web's routing (the catch-all)."""
    routing = res.services[WEB].routing
    assert routing is not None
    return [(d.destination.host, d.weight) for d in routing.http[-1].destinations]


def test_routes_of_one_service_merge_in_precedence_and_resolve_their_backends() -> None:
    res = resolve(route("split", SPLIT), route("api", API))
    routing = res.services[WEB].routing
    assert routing is not None
    # /api is more specific than the catch-all: first, whatever the order of the objects.
    assert [r.route for r in routing.http] == [
        PolicyKey("HTTPRoute", "shop", "api"),
        PolicyKey("HTTPRoute", "shop", "split"),
    ]
    assert weights(res) == [("web-v1", 90), ("web-v2", 10)]
    clusters = {t.cluster for _, t in res.services[WEB].targets}
    assert clusters == {cluster_name(s, HTTP) for s in SERVICES if s.name != "web"}
    assert set(res.services[WEB].depends) == {s.key for s in SERVICES if s.name != "web"}
    assert status(res, "split") == ("ACCEPTED", "", ("web.shop",))
    assert status(res, "api") == ("ACCEPTED", "", ("web.shop",))


def test_a_missing_parent_service_is_not_applied_with_its_reason() -> None:
    res = resolve(route("orphan", SPLIT, parent="{name: nosuch}"), route("api", API))
    state, reasons, services = status(res, "orphan")
    assert state == "WARNING" and services == ()
    assert "parentRef Service shop/nosuch not found (NoMatchingParent)" in reasons
    assert status(res, "api")[0] == "ACCEPTED"
    assert set(res.services) == {WEB}


def test_a_parent_port_the_service_lacks_is_no_matching_parent() -> None:
    res = resolve(route("split", SPLIT, parent="{name: web, port: 81}"))
    state, reasons, _ = status(res, "split")
    assert state == "WARNING"
    assert "parentRef Service shop/web has no port 81 (NoMatchingParent)" in reasons
    assert WEB not in res.services


def test_a_parent_port_that_is_not_http_is_not_applied_there() -> None:
    db = Service("db", "shop", (HTTP, Port("db", 5432, "tcp")))
    catalog = {**CAT, db.key: ServiceEntry(db)}
    res = resolve_policies(
        catalog, objects(route("split", SPLIT, parent="{name: db, port: 5432}")), {}
    )
    state, reasons, services = status(res, "split")
    assert (state, services) == ("WARNING", ())
    assert "parentRef Service shop/db port 5432 is not an HTTP port: not applied there" in reasons
    assert res.services == {}


def test_a_missing_backend_rejects_the_route_and_changes_nothing_else() -> None:
    bad = SPLIT.replace("web-v2", "web-v3")
    res = resolve(route("split", bad), route("api", API))
    state, reasons, services = status(res, "split")
    assert state == "REJECTED" and services == ()
    assert reasons == (
        "routes.yaml:8:5: HTTPRoute shop/split: spec.rules[0].backendRefs: "
        "backend Service shop/web-v3 not found (BackendNotFound)"
    )
    routing = res.services[WEB].routing
    assert routing is not None
    assert [r.route for r in routing.http] == [PolicyKey("HTTPRoute", "shop", "api")]


def test_a_rejected_route_keeps_its_last_valid_version() -> None:
    first = resolve(route("split", SPLIT))
    moved = SPLIT.replace("90", "0").replace("10", "100").replace("web-v2", "web-v3")
    second = resolve(route("split", moved), before=first.accepted)
    state, reasons, services = status(second, "split")
    assert state == "REJECTED" and services == ("web.shop",)
    assert "not found (BackendNotFound)" in reasons
    assert "serving its last valid version (routes.yaml:1:1)" in reasons
    assert weights(second) == [("web-v1", 90), ("web-v2", 10)]
    # Fixed: the new version applies.
    third = resolve(route("split", moved.replace("web-v3", "web-v2")), before=first.accepted)
    assert weights(third) == [("web-v2", 100)]
    assert status(third, "split")[0] == "ACCEPTED"


VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec: {hosts: [web], http: [{route: [{destination: {host: web-v1}}]}]}
"""


def test_a_virtual_service_keeps_its_service_and_the_routes_are_reported() -> None:
    res = resolve(route("split", SPLIT), VS)
    routing = res.services[WEB].routing
    assert routing is not None and routing.key == PolicyKey("VirtualService", "shop", "web")
    state, reasons, services = status(res, "split")
    assert state == "WARNING" and services == ()
    assert "VirtualService shop/web routes it (Conflicted" in reasons
    assert status(res, "web", "VirtualService")[0] == "ACCEPTED"


def test_a_consumer_route_is_not_applied_to_everyone() -> None:
    split = SPLIT.replace("port: 80,", "namespace: shop, port: 80,")
    res = resolve(route("mine", split, ns="client", parent="{name: web, namespace: shop}"))
    [found] = res.statuses
    assert found.state == "ACCEPTED" and found.services == (WEB,), found
    assert res.services.get(WEB) is None or res.services[WEB].routing is None
    # Only callers in its namespace get it (tests/test_policy_consumer_routes.py).
    assert set(res.consumers) == {"client"}


GRPC_RULE = """\
- backendRefs: [{name: api, port: 9090}]
"""


def test_a_grpc_route_displaces_http_routes_on_its_port() -> None:
    res = resolve(
        route("split", SPLIT, parent="{name: web}"),
        route("grpc", GRPC_RULE, kind="GRPCRoute", parent="{name: web}"),
    )
    state, reasons, services = status(res, "split")
    assert state == "WARNING" and services == ()
    assert "takes precedence over HTTPRoutes on the same port (Conflicted)" in reasons
    assert status(res, "grpc", "GRPCRoute")[0] == "ACCEPTED"
    routing = res.services[WEB].routing
    assert routing is not None
    assert {r.route for r in routing.http} == {PolicyKey("GRPCRoute", "shop", "grpc")}


def test_policy_files_read_routes_with_positions_and_name_the_supported_kinds() -> None:
    [bad] = objects(route("x", "- backendRefs: [{name: web-v1, port: 80, weight: -1}]\n"))
    assert bad.policy is None
    assert bad.error.startswith("routes.yaml:7:")
    assert "HTTPRoute shop/x: spec.rules[0].backendRefs[0].weight" in bad.error
    [other] = objects("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n"
                      "metadata: {name: g}\nspec: {}\n")  # fmt: skip
    assert "HTTPRoute and GRPCRoute of gateway.networking.k8s.io/v1 are" in other.error
    res = resolve_policies(CAT, [other], {})
    assert res.statuses[0].state == "REJECTED" and res.statuses[0].reasons == (other.error,)


QUERY = """\
- matches: [{queryParams: [{name: debug, value: "1"}]}]
  backendRefs: [{name: api, port: 80}]
"""


def test_what_grpc_clients_cannot_apply_is_reported_on_the_route_that_wrote_it() -> None:
    res = resolve(route("split", SPLIT), route("debug", QUERY))
    statuses = {s.key.name: s for s in grpc_not_applied(res, CAT)}
    assert statuses["debug"].state == "WARNING"
    assert "query parameter match" in " ".join(statuses["debug"].reasons)
    assert statuses["debug"].reasons[0].startswith("HTTPRoute shop/debug http[0]")
    assert statuses["split"].state == "ACCEPTED"
