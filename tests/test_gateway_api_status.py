"""status.parents[] of HTTPRoutes and GRPCRoutes: Accepted and ResolvedRefs with the Gateway
API's reasons, for the Service parents only."""

from __future__ import annotations

from typing import Any

from sources.gateway_api import ParsedRoute, Ref, kind_conflicts, route_status
from sources.istio import PolicyError
from tests.gateway_objects import parse, rejection, route, to
from xds_server.model import PolicyKey

SERVICES = {("shop", "web"): frozenset({80}), ("shop", "web-v1"): frozenset({80}),
            ("shop", "web-v2"): frozenset({80}), ("ops", "audit"): frozenset({9000})}  # fmt: skip


def exists(namespace: str, name: str) -> frozenset[int] | None:
    return SERVICES.get((namespace, name))


def conditions(obj: dict[str, Any], **kw: Any) -> list[tuple[str, str, str]]:
    parsed: ParsedRoute | None
    try:
        parsed, error = parse(obj), ""
    except PolicyError as exc:
        parsed, error = None, str(exc)
    (entry,) = route_status(obj, parsed, error, exists, **kw)
    assert entry["controllerName"] == "xds-server.io/mesh"
    return [(c["type"], c["status"], c["reason"]) for c in entry["conditions"]]


def test_accepted_and_resolved() -> None:
    obj = route(to("web-v1", "web-v2"))
    obj["metadata"]["generation"] = 4
    (entry,) = route_status(obj, parse(obj), "", exists)
    assert entry == {
        "parentRef": {
            "group": "", "kind": "Service", "name": "web", "namespace": "shop", "port": 80,
        },
        "controllerName": "xds-server.io/mesh",
        "conditions": [
            {"type": "Accepted", "status": "True", "reason": "Accepted",
             "message": "Route was valid", "observedGeneration": 4},
            {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs",
             "message": "Resolved all the Object references", "observedGeneration": 4},
        ],
    }  # fmt: skip


def test_backend_not_found_and_wrong_port() -> None:
    assert conditions(route(to("web-v1", "web-v3"))) == [
        ("Accepted", "True", "Accepted"),
        ("ResolvedRefs", "False", "BackendNotFound"),
    ]
    assert conditions(route(to("web-v1", port=8080)))[1] == (
        "ResolvedRefs", "False", "BackendNotFound",
    )  # fmt: skip
    mirror = {
        "type": "RequestMirror",
        "requestMirror": {"backendRef": {"name": "gone", "port": 80}},
    }
    assert conditions(route(to("web-v1", filters=[mirror])))[1][2] == "BackendNotFound"


def test_invalid_kind_and_cross_namespace_refs() -> None:
    rule = {"backendRefs": [{"group": "example.com", "kind": "Bucket", "name": "b"}]}
    assert conditions(route(rule))[1] == ("ResolvedRefs", "False", "InvalidKind")
    # A Service is in the core group ("" or "core"), not another group's kind "Service".
    other = {
        "backendRefs": [{"group": "example.com", "kind": "Service", "name": "web", "port": 80}]
    }
    assert conditions(route(other))[1] == ("ResolvedRefs", "False", "InvalidKind")
    core = {"backendRefs": [{"group": "core", "kind": "Service", "name": "web", "port": 80}]}
    assert conditions(route(core))[1] == ("ResolvedRefs", "True", "ResolvedRefs")
    cross = {"backendRefs": [{"name": "audit", "namespace": "ops", "port": 9000}]}
    # GEP-1426: mesh routes need no ReferenceGrant ...
    assert conditions(route(cross))[1] == ("ResolvedRefs", "True", "ResolvedRefs")

    # ... unless the implementation says otherwise.
    def same_namespace(route_namespace: str, ref: Ref) -> bool:
        return ref.namespace == route_namespace

    assert conditions(route(cross), permitted=same_namespace)[1] == (
        "ResolvedRefs", "False", "RefNotPermitted",
    )  # fmt: skip


def test_no_matching_parent() -> None:
    missing = route(to("web"), parents=[{"group": "", "kind": "Service", "name": "nope"}])
    assert conditions(missing)[0] == ("Accepted", "False", "NoMatchingParent")
    no_port = route(
        to("web"), parents=[{"group": "", "kind": "Service", "name": "web", "port": 81}]
    )
    assert conditions(no_port)[0] == ("Accepted", "False", "NoMatchingParent")


def test_rejected_route_is_not_accepted_with_the_reason() -> None:
    obj = route(to("web", matches=[{"path": {"value": "api"}}]))
    (entry,) = route_status(obj, None, rejection(obj), exists)
    assert entry["conditions"] == [{
        "type": "Accepted", "status": "False", "reason": "UnsupportedValue",
        "message": "spec.rules[0].matches[0].path.value: path 'api' must start with '/'",
    }]  # fmt: skip


def test_gateway_parents_get_no_status_from_us() -> None:
    obj = route(
        to("web"), parents=[{"name": "ingress"}, {"group": "", "kind": "Service", "name": "web"}]
    )
    entries = route_status(obj, parse(obj), "", exists)
    assert [e["parentRef"]["kind"] for e in entries] == ["Service"]


def test_conflicted_http_route() -> None:
    http = route(to("web"), name="http", parents=[{"group": "", "kind": "Service", "name": "web"}])
    grpc = route(to("web"), name="grpc", kind="GRPCRoute",
                 parents=[{"group": "", "kind": "Service", "name": "web"}])  # fmt: skip
    lost = kind_conflicts("web", "shop", [parse(http), parse(grpc)])
    conflicts = {("shop", "web"): lost[PolicyKey("HTTPRoute", "shop", "http")]}
    assert conditions(http, conflicts=conflicts) == [
        ("Accepted", "False", "Conflicted"),
        ("ResolvedRefs", "True", "ResolvedRefs"),
    ]
    assert conditions(grpc) == [
        ("Accepted", "True", "Accepted"),
        ("ResolvedRefs", "True", "ResolvedRefs"),
    ]
