"""The routes attached to one Service merged in the Gateway API's order of precedence,
with GEP-1426's producer/consumer groups and route-kind conflicts."""

from __future__ import annotations

from typing import Any

from sources.gateway_api import kind_conflicts, merge_attached
from tests.gateway_objects import parse, route, to
from xds_server.model import PolicyKey, StringMatch

SVC = {"group": "", "kind": "Service", "name": "web"}
OLD, NEW = "2024-01-01T00:00:00Z", "2024-06-01T00:00:00Z"


def path(kind: str, value: str) -> dict[str, Any]:
    return {"path": {"type": kind, "value": value}}


def order(*routes: dict[str, Any], callers: str | None = None, **kw: Any) -> list[str]:
    """The merged rules of Service shop/web as "route: path" (with extras)."""
    policy = merge_attached("web", "shop", [parse(r) for r in routes], callers, **kw)
    assert policy.hosts == ("web.shop",) and policy.callers == callers
    out = []
    for rule in policy.http:
        (match,) = rule.matches
        assert rule.route is not None and match.uri is not None
        extra = "".join(
            [
                f" {match.method.value}" if match.method else "",
                f" h{len(match.headers)}" if match.headers else "",
                f" q{len(match.query)}" if match.query else "",
                f" :{match.port}" if match.port else "",
            ]
        )
        out.append(f"{rule.route.name}: {match.uri.kind} {match.uri.value}{extra}")
    return out


def test_match_specificity_orders_rules_across_routes() -> None:
    """The HTTPRoute spec's criteria, in turn: exact path, longest prefix, method, most
    headers, most query parameters (then Istio's: regex paths after prefixes)."""
    a = route(
        to("web", matches=[{}]),
        to("web", matches=[path("PathPrefix", "/api")]),
        to("web", matches=[path("RegularExpression", "/a.*")]),
        name="a", parents=[SVC], created=OLD,
    )  # fmt: skip
    b = route(
        to("web", matches=[
            {**path("PathPrefix", "/api"), "queryParams": [{"name": "q", "value": "1"}]},
            {**path("PathPrefix", "/api"), "headers": [{"name": "x", "value": "1"}]},
            {**path("PathPrefix", "/api"), "headers": [{"name": "x", "value": "1"},
                                                       {"name": "y", "value": "2"}]},
            {**path("PathPrefix", "/api"), "method": "GET"},
            path("PathPrefix", "/api/v2"),
            path("Exact", "/login"),
        ]),
        name="b", parents=[SVC], created=NEW,
    )  # fmt: skip
    assert order(a, b) == [
        "b: exact /login",
        "b: path_prefix /api/v2",
        "b: path_prefix /api GET",
        "b: path_prefix /api h2",
        "b: path_prefix /api h1",
        "b: path_prefix /api q1",
        "a: path_prefix /api",
        "a: path_prefix /",
        "a: regex /a.*",
    ]


def test_ties_go_to_the_oldest_route_then_namespace_name_then_rule_order() -> None:
    same = [path("PathPrefix", "/x")]
    newer = route(to("web", matches=same), name="a-newer", parents=[SVC], created=NEW)
    older = route(to("web", matches=same), name="z-older", parents=[SVC], created=OLD)
    assert order(newer, older) == ["z-older: path_prefix /x", "a-newer: path_prefix /x"]
    b = route(to("web", matches=same), name="b", parents=[SVC], created=OLD)
    a = route(to("web", matches=same), to("web", matches=[path("PathPrefix", "/x/")]),
              name="a", parents=[SVC], created=OLD)  # fmt: skip
    # "/x/" and "/x" are one prefix; within route a, rule order.
    assert order(b, a) == ["a: path_prefix /x", "a: path_prefix /x", "b: path_prefix /x"]
    unknown = route(to("web", matches=same), name="a-unknown", parents=[SVC])
    assert order(unknown, newer) == ["a-newer: path_prefix /x", "a-unknown: path_prefix /x"]


def test_each_rule_keeps_its_route_and_this_service_ports() -> None:
    parents = [{**SVC, "port": 80}, {"group": "", "kind": "Service", "name": "api", "port": 80}]
    policy = merge_attached("web", "shop", [parse(route(to("web"), parents=parents))])
    (rule,) = policy.http
    assert rule.route == PolicyKey("HTTPRoute", "shop", "web")
    assert [m.port for m in rule.matches] == [80]
    assert policy.key == PolicyKey("Service", "shop", "web")
    other = merge_attached("other", "shop", [parse(route(to("web"), parents=parents))])
    assert other.http == ()


def test_producer_routes_for_everyone_consumer_routes_replace_them_for_their_namespace() -> None:
    producer = route(to("web"), name="producer", parents=[SVC])
    consumer_parent = [{**SVC, "namespace": "shop"}]
    consumer = route(to("web", matches=[path("Exact", "/c")]), name="consumer",
                     namespace="checkout", parents=consumer_parent)  # fmt: skip
    assert order(producer, consumer) == ["producer: path_prefix /"]
    assert order(producer, consumer, callers="checkout") == ["consumer: exact /c"]
    assert order(producer, consumer, callers="billing") == ["producer: path_prefix /"]
    assert order(producer, consumer, callers="shop") == ["producer: path_prefix /"]


def test_routes_for_gateways_are_left_out() -> None:
    gateway = route(to("web"), name="north-south", parents=[{"name": "ingress"}])
    assert order(gateway) == []


def test_grpc_route_wins_over_http_route_on_the_same_port() -> None:
    http = route(to("web"), name="http", parents=[SVC])
    grpc = route(to("web"), name="grpc", kind="GRPCRoute", parents=[{**SVC, "port": 9000}])
    parsed = [parse(http), parse(grpc)]
    # Knowing the Service's ports, the HTTPRoute keeps the ports the GRPCRoute leaves.
    assert order(http, grpc, service_ports=(80, 9000)) == [
        "grpc: path_prefix / :9000",
        "http: path_prefix / :80",
    ]
    assert kind_conflicts("web", "shop", parsed, (80, 9000)) == {}
    # Not knowing them, it cannot be limited to "the others": it loses whole.
    assert order(http, grpc) == ["grpc: path_prefix / :9000"]
    lost = kind_conflicts("web", "shop", parsed)
    assert lost == {
        PolicyKey("HTTPRoute", "shop", "http"): "a GRPCRoute attached to Service shop/web "
        "takes precedence over HTTPRoutes on the same port"
    }
    every_port = route(to("web"), name="grpc", kind="GRPCRoute", parents=[SVC])
    assert order(http, every_port, service_ports=(80,)) == ["grpc: path_prefix /"]
    # Another group (a consumer GRPCRoute) does not take the producer HTTPRoute's ports.
    consumer = route(to("web"), name="c", kind="GRPCRoute", namespace="checkout",
                     parents=[{**SVC, "namespace": "shop"}])  # fmt: skip
    assert order(http, consumer) == ["http: path_prefix /"]
    assert kind_conflicts("web", "shop", [parse(http), parse(consumer)]) == {}


def test_grpc_method_precedence() -> None:
    grpc = route(
        to("web", matches=[{"method": {"service": "shop.Cart"}}]),
        to("web", matches=[{"method": {"service": "shop.Cart", "method": "Add"}}]),
        to("web", matches=[{"method": {"type": "RegularExpression", "method": "A.*"}}]),
        kind="GRPCRoute", parents=[SVC],
    )  # fmt: skip
    assert order(grpc) == [
        "web: exact /shop.Cart/Add",
        "web: prefix /shop.Cart/",
        "web: regex /(?:[^/]+)/(?:A.*)",
    ]


def test_merged_uri_kinds() -> None:
    policy = merge_attached("web", "shop", [parse(route(to("web"), parents=[SVC]))])
    assert policy.http[0].matches[0].uri == StringMatch("path_prefix", "/")
