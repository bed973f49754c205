"""Gateway API HTTPRoute and GRPCRoute (GAMMA) parsed into the policy model: attachment to
Services, matches with their defaults, backends and weights, filters, timeouts."""

from __future__ import annotations

from sources.gateway_api import is_supported_kind
from tests.gateway_objects import parse, route, to
from xds_server.model import (
    Destination,
    DirectResponse,
    HeaderMatch,
    HeaderOps,
    Mirror,
    QueryMatch,
    Redirect,
    RequestMatch,
    Retry,
    Rewrite,
    StringMatch,
    WeightedDestination,
)

EVERYTHING = StringMatch("path_prefix", "/")


def dest(name: str, port: int = 80, namespace: str = "shop") -> Destination:
    return Destination(name, namespace, port)


def test_supported_kinds() -> None:
    assert is_supported_kind(route(to("web")))
    assert is_supported_kind(route(to("web"), kind="GRPCRoute"))
    assert not is_supported_kind(
        {**route(to("web")), "apiVersion": "gateway.networking.k8s.io/v1beta1"}
    )
    assert not is_supported_kind({**route(to("web")), "kind": "TCPRoute"})
    assert not is_supported_kind([])


def test_canary_split_across_services() -> None:
    rule = {"backendRefs": [{"name": "web-v1", "port": 80, "weight": 90},
                            {"name": "web-v2", "port": 8080, "weight": 10}]}  # fmt: skip
    parsed = parse(route(rule))
    assert parsed.applies and parsed.notices == ()
    policy = parsed.policy
    assert policy.hosts == ("web.shop",)
    assert policy.callers is None
    (http,) = policy.http
    assert http.matches == (RequestMatch(uri=EVERYTHING, port=80),)
    assert http.destinations == (
        WeightedDestination(dest("web-v1"), 90),
        WeightedDestination(dest("web-v2", 8080), 10),
    )
    assert http.timeout is None and http.retry is None


def test_weights_default_one_zero_dropped_all_zero_is_500() -> None:
    (http,) = parse(route(to("a", "b"))).policy.http
    assert [wd.weight for wd in http.destinations] == [1, 1]
    rule = {"backendRefs": [{"name": "a", "port": 80, "weight": 0},
                            {"name": "b", "port": 80, "weight": 3}]}  # fmt: skip
    (http,) = parse(route(rule)).policy.http
    assert http.destinations == (WeightedDestination(dest("b"), 3),)
    for rule in ({"backendRefs": [{"name": "a", "port": 80, "weight": 0}]}, {}):
        (http,) = parse(route(rule)).policy.http
        assert http.destinations == () and http.direct_response == DirectResponse(500)


def test_no_rules_is_the_default_rule_answering_500() -> None:
    (http,) = parse(route()).policy.http
    assert http.matches == (RequestMatch(uri=EVERYTHING, port=80),)
    assert http.direct_response == DirectResponse(500)


def test_matches_path_headers_query_method() -> None:
    rule = to("web", matches=[
        {"path": {"type": "Exact", "value": "/login"}, "method": "POST"},
        {"path": {"value": "/api/"},
         "headers": [{"name": "X-Env", "value": "canary"},
                     {"type": "RegularExpression", "name": "user", "value": "a.*"}],
         "queryParams": [{"name": "debug", "value": "1"}]},
        {"path": {"type": "RegularExpression", "value": "/v[0-9]+/.*"}},
        {"headers": [{"name": "x", "value": "on"}]},
    ])  # fmt: skip
    (http,) = parse(
        route(rule, parents=[{"kind": "Service", "group": "", "name": "web"}])
    ).policy.http
    assert http.matches == (
        RequestMatch(uri=StringMatch("exact", "/login"), method=StringMatch("exact", "POST")),
        RequestMatch(
            uri=StringMatch("path_prefix", "/api"),
            headers=(
                HeaderMatch("user", StringMatch("regex", "a.*")),
                HeaderMatch("x-env", StringMatch("exact", "canary")),
            ),
            query=(QueryMatch("debug", StringMatch("exact", "1")),),
        ),
        RequestMatch(uri=StringMatch("regex", "/v[0-9]+/.*")),
        RequestMatch(uri=EVERYTHING, headers=(HeaderMatch("x", StringMatch("exact", "on")),)),
    )


def test_parent_ports_limit_every_match_and_several_ports_multiply() -> None:
    parents = [{"group": "", "kind": "Service", "name": "web", "port": 80},
               {"group": "", "kind": "Service", "name": "web", "port": 8080}]  # fmt: skip
    (http,) = parse(route(to("web"), parents=parents)).policy.http
    assert [m.port for m in http.matches] == [80, 8080]
    unported = [{"group": "", "kind": "Service", "name": "web"}]
    (http,) = parse(route(to("web"), parents=unported)).policy.http
    assert [m.port for m in http.matches] == [None]


def test_gateway_parents_are_not_ours() -> None:
    parents = [{"name": "ingress"}]  # group gateway.networking.k8s.io, kind Gateway
    parsed = parse(route(to("web"), parents=parents))
    assert not parsed.applies
    assert parsed.policy.hosts == ()
    assert [str(n) for n in parsed.notices] == [
        'spec.parentRefs: no parentRef names a Service (group "", kind Service); routes '
        "attached to Gateways are not served by this server; not applied"
    ]
    mixed = parse(
        route(
            to("web"),
            parents=[{"name": "ingress"}, {"kind": "Service", "group": "", "name": "web"}],
        )
    )
    assert mixed.applies and mixed.policy.hosts == ("web.shop",)


def test_producer_and_consumer_routes() -> None:
    producer = parse(route(to("web")))
    assert producer.policy.callers is None
    consumer_parent = [{"group": "", "kind": "Service", "name": "web", "namespace": "shop"}]
    consumer = parse(route(to("web"), namespace="checkout", parents=consumer_parent))
    assert consumer.policy.callers == "checkout"
    assert consumer.policy.hosts == ("web.shop",)
    # Backends without a namespace are in the route's namespace.
    assert consumer.policy.http[0].destinations[0].destination == dest("web", namespace="checkout")


def test_header_modifiers_host_is_authority() -> None:
    filters = [
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "set": [{"name": "X-A", "value": "1"}, {"name": "Host", "value": "web.example.com"}],
            "add": [{"name": "x-b", "value": "%HOSTNAME%"}], "remove": ["x-c"]}},
        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
            "set": [{"name": "x-d", "value": "2"}], "remove": ["server"]}},
    ]  # fmt: skip
    (http,) = parse(route(to("web", filters=filters))).policy.http
    assert http.headers == HeaderOps(
        request_set=(("x-a", "1"),),
        request_add=(("x-b", "%HOSTNAME%"),),
        request_remove=("x-c",),
        response_set=(("x-d", "2"),),
        response_remove=("server",),
    )
    assert http.rewrite == Rewrite(authority="web.example.com")


def test_backend_header_filters() -> None:
    ref = {"name": "web", "port": 80, "filters": [{"type": "RequestHeaderModifier",
           "requestHeaderModifier": {"set": [{"name": "x-v", "value": "2"}]}}]}  # fmt: skip
    (http,) = parse(route({"backendRefs": [ref]})).policy.http
    assert http.destinations[0].headers == HeaderOps(request_set=(("x-v", "2"),))


def test_mirror_percent_and_fraction() -> None:
    filters = [
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow", "port": 80}}},
        {"type": "RequestMirror", "requestMirror": {
            "backendRef": {"name": "audit", "namespace": "ops", "port": 9000}, "percent": 25}},
        {"type": "RequestMirror", "requestMirror": {
            "backendRef": {"name": "tiny", "port": 80},
            "fraction": {"numerator": 1, "denominator": 1000}}},
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "off", "port": 80},
                                                    "percent": 0}},
    ]  # fmt: skip
    (http,) = parse(route(to("web", filters=filters))).policy.http
    assert http.mirrors == (
        Mirror(dest("shadow"), 100.0),
        Mirror(dest("audit", 9000, "ops"), 25.0),
        Mirror(dest("tiny"), 0.1),
    )


def test_url_rewrite_full_path_and_prefix() -> None:
    full = {"type": "URLRewrite", "urlRewrite": {"hostname": "api.internal",
            "path": {"type": "ReplaceFullPath", "replaceFullPath": "/v2/all"}}}  # fmt: skip
    (http,) = parse(route(to("web", filters=[full]))).policy.http
    assert http.rewrite == Rewrite(authority="api.internal", path="/v2/all")
    prefix = {
        "type": "URLRewrite",
        "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}},
    }
    rule = to("web", filters=[prefix], matches=[{"path": {"value": "/api"}}])
    (http,) = parse(route(rule)).policy.http
    assert http.rewrite == Rewrite(uri="/")


def test_redirect_defaults_to_302() -> None:
    redirect = {
        "type": "RequestRedirect",
        "requestRedirect": {"scheme": "https", "hostname": "secure.example.com", "port": 8443},
    }
    parsed = parse(route({"filters": [redirect]}))
    (http,) = parsed.policy.http
    assert http.redirect == Redirect(
        authority="secure.example.com", scheme="https", port=8443, code=302, derive_port=True
    )
    assert http.destinations == () and http.direct_response is None
    prefix = {"type": "RequestRedirect", "requestRedirect": {"statusCode": 301,
              "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}}}  # fmt: skip
    (http,) = parse(
        route({"filters": [prefix], "matches": [{"path": {"value": "/old"}}]})
    ).policy.http
    assert http.redirect == Redirect(prefix="/new", code=301)


def test_timeouts() -> None:
    (http,) = parse(
        route(to("web", timeouts={"request": "10s", "backendRequest": "2s"}))
    ).policy.http
    assert http.timeout == 10.0
    assert http.retry == Retry(2, per_try_timeout=2.0)
    (http,) = parse(
        route(to("web", timeouts={"request": "0s", "backendRequest": "1m"}))
    ).policy.http
    assert http.timeout == 0.0 and http.retry == Retry(2, per_try_timeout=60.0)
    (http,) = parse(route(to("web", timeouts={"request": "1h30m"}))).policy.http
    assert http.timeout == 5400.0 and http.retry is None


def test_unsupported_backend_kind_gives_its_share_away() -> None:
    rule = {"backendRefs": [{"group": "example.com", "kind": "Bucket", "name": "b"},
                            {"name": "web", "port": 80}]}  # fmt: skip
    parsed = parse(route(rule))
    assert parsed.policy.http[0].destinations == (WeightedDestination(dest("web"), 1),)
    assert [str(n) for n in parsed.notices] == [
        "spec.rules[0].backendRefs[0]: backend kind example.com/Bucket is not supported; its "
        "share of traffic goes to the other backends"
    ]
    assert [(b.kind, b.name) for b in parsed.backends] == [("Bucket", "b"), ("Service", "web")]


def test_hostnames_and_experimental_fields_are_noticed() -> None:
    obj = route(to("web", retry={"attempts": 3}))
    obj["spec"]["hostnames"] = ["web.example.com", "*.example.com"]
    assert [str(n) for n in parse(obj).notices] == [
        "spec.hostnames: not used by routes attached to a Service; ignored",
        "spec.rules[0].retry: not supported; ignored",
    ]


def test_grpc_route_methods_as_paths() -> None:
    rule = to("grpc-web", port=9000, matches=[
        {"method": {"service": ".shop.Cart", "method": "Add"}},
        {"method": {"service": "shop.Cart"}, "headers": [{"name": "x-user", "value": "a"}]},
        {"method": {"method": "Get"}},
        {"method": {"type": "RegularExpression", "service": "shop\\..*|admin",
                    "method": "Get|Put"}},
        {"method": {"type": "RegularExpression", "method": "List.*"}},
        {},
    ])  # fmt: skip
    parsed = parse(
        route(rule, kind="GRPCRoute", parents=[{"group": "", "kind": "Service", "name": "web"}])
    )
    uris = [m.uri for m in parsed.policy.http[0].matches]
    assert uris == [
        StringMatch("exact", "/shop.Cart/Add"),
        StringMatch("prefix", "/shop.Cart/"),
        StringMatch("regex", "/[^/]+/Get"),
        StringMatch("regex", "/(?:shop\\..*|admin)/(?:Get|Put)"),
        StringMatch("regex", "/(?:[^/]+)/(?:List.*)"),
        EVERYTHING,
    ]
    assert parsed.policy.http[0].matches[1].headers == (
        HeaderMatch("x-user", StringMatch("exact", "a")),
    )
    assert parsed.policy.key.kind == "GRPCRoute"
