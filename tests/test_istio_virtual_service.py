"""Istio VirtualServices parsed into the policy model: every field into its exact model
value, and the notices for what is accepted but not applied."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from sources.istio import DEFAULT_RETRY_ON, Notice, parse_policy
from tests.istio_objects import NS, REVIEWS, http_vs, parse_rule, rejection, to_reviews, v1, vs
from xds_server.model import (
    Cors,
    Destination,
    DirectResponse,
    Fault,
    HeaderMatch,
    HeaderOps,
    HttpRule,
    Mirror,
    PolicyKey,
    QueryMatch,
    Redirect,
    RequestMatch,
    Retry,
    Rewrite,
    RoutePolicy,
    StringMatch,
    TcpRule,
    WeightedDestination,
)


def test_virtual_service_whole() -> None:
    """Istio's canary example (header match to v2, 90/10 split otherwise) and a TCP rule."""
    obj = vs(
        {
            "hosts": ["reviews", "reviews.shop.svc.cluster.local"],
            "gateways": ["mesh", "shop/ingress"],
            "http": [
                {
                    "name": "jason",
                    "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                    "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
                },
                {
                    "route": [
                        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10},
                    ],
                    "timeout": "10s",
                },
            ],
            "tcp": [
                {
                    "match": [{"port": 3306}],
                    "route": [{"destination": {"host": "mysql", "port": {"number": 3306}}}],
                }
            ],
        }
    )
    parsed = parse_policy(obj, origin="policy.yaml")
    assert parsed.notices == ()
    assert parsed.applies
    assert parsed.policy == RoutePolicy(
        key=PolicyKey("VirtualService", NS, "reviews-route"),
        hosts=("reviews", "reviews.shop.svc.cluster.local"),
        http=(
            HttpRule(
                name="jason",
                matches=(
                    RequestMatch(headers=(HeaderMatch("end-user", StringMatch("exact", "jason")),)),
                ),
                destinations=(WeightedDestination(v1("v2"), 100),),
            ),
            HttpRule(
                destinations=(
                    WeightedDestination(v1("v1"), 90),
                    WeightedDestination(v1("v2"), 10),
                ),
                timeout=10.0,
            ),
        ),
        tcp=(TcpRule((WeightedDestination(Destination("mysql", NS, 3306), 100),), 3306),),
        origin="policy.yaml",
    )


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_every_served_version_parses_alike(version: str) -> None:
    obj = http_vs(to_reviews())
    obj["apiVersion"] = f"networking.istio.io/{version}"
    assert parse_policy(obj).policy.http == (  # type: ignore[union-attr]
        HttpRule(destinations=(WeightedDestination(REVIEWS),)),
    )


def test_namespace_defaults_and_status_is_ignored() -> None:
    obj = http_vs(to_reviews())
    del obj["metadata"]["namespace"]
    obj["metadata"].update(labels={"a": "b"}, resourceVersion="7", uid="u")
    obj["status"] = {"validationMessages": []}
    policy = parse_policy(obj).policy
    assert policy.key == PolicyKey("VirtualService", "default", "reviews-route")
    assert policy.http[0].destinations[0].destination.namespace == "default"  # type: ignore[union-attr]


def test_null_members_are_unset() -> None:
    assert parse_rule(match=None, timeout=None, headers=None) == parse_rule()


@pytest.mark.parametrize(
    ("match", "want"),
    [
        ({"uri": {"exact": "/a"}}, RequestMatch(uri=StringMatch("exact", "/a"))),
        ({"uri": {"prefix": "/api"}}, RequestMatch(uri=StringMatch("prefix", "/api"))),
        ({"uri": {"regex": "/v[0-9]+"}}, RequestMatch(uri=StringMatch("regex", "/v[0-9]+"))),
        ({"uri": {}}, RequestMatch()),  # no constraint on the path
        (
            {"uri": {"prefix": "/A"}, "ignoreUriCase": True},
            RequestMatch(uri=StringMatch("prefix", "/A"), ignore_uri_case=True),
        ),
        ({"method": {"exact": "GET"}}, RequestMatch(method=StringMatch("exact", "GET"))),
        ({"authority": {"prefix": "api."}}, RequestMatch(authority=StringMatch("prefix", "api."))),
        ({"scheme": {"exact": "https"}}, RequestMatch(scheme=StringMatch("exact", "https"))),
        ({"method": {}}, RequestMatch(method=StringMatch("present"))),
        ({"port": 8080}, RequestMatch(port=8080)),
        ({"port": 0}, RequestMatch()),  # proto3 zero: any port
        ({"name": "canary"}, RequestMatch(name="canary")),
        (
            {"headers": {"X-User": {"prefix": "a"}, "b": {"regex": "v[12]"}, "c": {}}},
            RequestMatch(
                headers=(
                    HeaderMatch("b", StringMatch("regex", "v[12]")),
                    HeaderMatch("c", StringMatch("present")),
                    HeaderMatch("x-user", StringMatch("prefix", "a")),
                )
            ),
        ),
        (
            {"headers": {"a": {"exact": ""}, "b": {"regex": "*"}, "c": None}},
            RequestMatch(
                headers=(
                    HeaderMatch("a", StringMatch("exact", "")),
                    HeaderMatch("b", StringMatch("present")),  # Istio's legacy "*"
                    HeaderMatch("c", StringMatch("present")),
                )
            ),
        ),
        (
            {"withoutHeaders": {"x-test": {}, "x-b": {"exact": "1"}}, "headers": {"x-test": {}}},
            RequestMatch(
                headers=(
                    HeaderMatch("x-b", StringMatch("exact", "1"), invert=True),
                    HeaderMatch("x-test", StringMatch("present")),
                    HeaderMatch("x-test", StringMatch("present"), invert=True),
                )
            ),
        ),
        (
            {"queryParams": {"v": {"exact": "2"}, "debug": {}, "id": {"regex": "\\d+"}}},
            RequestMatch(
                query=(
                    QueryMatch("debug", StringMatch("present")),
                    QueryMatch("id", StringMatch("regex", "\\d+")),
                    QueryMatch("v", StringMatch("exact", "2")),
                )
            ),
        ),
        ({"gateways": ["mesh", "shop/gw"]}, RequestMatch()),  # includes the mesh: kept
        ({"sourceLabels": {}}, RequestMatch()),  # empty: selects every caller
    ],
)
def test_match_fields(match: dict[str, Any], want: RequestMatch) -> None:
    assert parse_rule(match=[match]).matches == (want,)


def test_match_alternatives_keep_their_order() -> None:
    rule = parse_rule(match=[{"uri": {"prefix": "/b"}}, {"uri": {"prefix": "/a"}}, {}])
    assert rule.matches == (
        RequestMatch(uri=StringMatch("prefix", "/b")),
        RequestMatch(uri=StringMatch("prefix", "/a")),
        RequestMatch(),
    )


@pytest.mark.parametrize(
    ("route", "want"),
    [
        ([{"destination": {"host": "reviews"}}], [(REVIEWS, 100)]),
        ([{"destination": {"host": "reviews"}, "weight": 0}], [(REVIEWS, 100)]),  # single: all
        ([{"destination": {"host": "reviews"}, "weight": 30}], [(REVIEWS, 100)]),
        (
            [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 1},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": 3},
            ],
            [(v1("v1"), 1), (v1("v2"), 3)],  # relative weights, no need to sum to 100
        ),
        (
            [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 100},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0},
                {"destination": {"host": "reviews", "subset": "v3"}},
            ],
            [(v1("v1"), 100)],  # zero weights dropped
        ),
        (
            [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 0},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": 7},
            ],
            [(v1("v2"), 100)],
        ),
        (
            [
                {
                    "destination": {
                        "host": "ratings.prod.svc.cluster.local",
                        "port": {"number": 9080},
                    }
                },
            ],
            [(Destination("ratings.prod.svc.cluster.local", NS, 9080), 100)],
        ),
        (
            [
                {"destination": {"host": "a"}, "weight": 2_147_483_647},
                {"destination": {"host": "b"}, "weight": 2_147_483_647},
            ],
            [(Destination("a", NS), 2_147_483_647), (Destination("b", NS), 2_147_483_647)],
        ),
    ],
)
def test_route_destinations(
    route: list[dict[str, Any]], want: list[tuple[Destination, int]]
) -> None:
    rule = parse_rule(route=route)
    assert [(d.destination, d.weight) for d in rule.destinations] == want


def test_destination_headers() -> None:
    rule = parse_rule(
        route=[
            {
                "destination": {"host": "reviews", "subset": "v1"},
                "weight": 50,
                "headers": {
                    "request": {"set": {"X-Version": "v1"}, "add": {"x-b": "%HOSTNAME%"}},
                    "response": {"remove": ["x-internal", "X-Internal", "server"]},
                },
            },
            {"destination": {"host": "reviews", "subset": "v2"}, "weight": 50},
        ]
    )
    assert rule.destinations == (
        WeightedDestination(
            v1("v1"),
            50,
            HeaderOps(
                request_set=(("x-version", "v1"),),
                request_add=(("x-b", "%HOSTNAME%"),),
                response_remove=("server", "x-internal"),
            ),
        ),
        WeightedDestination(v1("v2"), 50),
    )


def test_rule_headers() -> None:
    rule = parse_rule(
        headers={
            "request": {"set": {"b": "2", "a": "1"}, "add": {"c": "3"}, "remove": ["d"]},
            "response": {"set": {"e": "5"}, "add": {"f": "100%%"}, "remove": ["g"]},
        }
    )
    assert rule.headers == HeaderOps(
        request_set=(("a", "1"), ("b", "2")),
        request_add=(("c", "3"),),
        request_remove=("d",),
        response_set=(("e", "5"),),
        response_add=(("f", "100%%"),),
        response_remove=("g",),
    )


@pytest.mark.parametrize(
    ("fields", "want"),
    [
        (
            {"headers": {"request": {"set": {":authority": "a.example"}}}},
            Rewrite(None, "a.example"),
        ),
        ({"headers": {"request": {"add": {"Host": "a.example"}}}}, Rewrite(None, "a.example")),
        (
            {"headers": {"request": {"set": {"host": "a"}}}, "rewrite": {"uri": "/v2"}},
            Rewrite("/v2", "a"),
        ),
        (  # a single destination's authority becomes the rule's
            {
                "route": [
                    {
                        "destination": {"host": "reviews"},
                        "headers": {"request": {"set": {"host": "d.example"}}},
                    }
                ]
            },
            Rewrite(None, "d.example"),
        ),
        (  # ... unless the rule sets one itself (as Istio)
            {
                "headers": {"request": {"set": {"host": "r.example"}}},
                "route": [
                    {
                        "destination": {"host": "reviews"},
                        "headers": {"request": {"set": {"host": "d.example"}}},
                    }
                ],
            },
            Rewrite(None, "r.example"),
        ),
        ({"rewrite": {"uri": "/v1/api"}}, Rewrite("/v1/api")),
        ({"rewrite": {"authority": "new.example", "uri": ""}}, Rewrite(None, "new.example")),
    ],
)
def test_authority_and_rewrite(fields: dict[str, Any], want: Rewrite) -> None:
    rule = parse_rule(**fields)
    assert rule.rewrite == want
    assert rule.headers == HeaderOps()
    assert all(not d.headers for d in rule.destinations)


@pytest.mark.parametrize(
    ("timeout", "want"), [("0.5s", 0.5), ("1m", 60.0), ("1ms", 0.001), ("0s", 0.0), ("0", 0.0)]
)
def test_timeout(timeout: str, want: float) -> None:
    assert parse_rule(timeout=timeout).timeout == want


@pytest.mark.parametrize(
    ("retries", "want"),
    [
        ({"attempts": 0}, Retry(0)),
        ({}, Retry(0)),
        ({"attempts": 3}, Retry(3, None, DEFAULT_RETRY_ON)),
        ({"attempts": 3, "retryOn": ""}, Retry(3, None, DEFAULT_RETRY_ON)),  # proto3 unset
        ({"attempts": 0, "retryOn": ""}, Retry(0)),
        (
            {"attempts": 3, "perTryTimeout": "2s", "retryOn": "gateway-error,connect-failure"},
            Retry(3, 2.0, ("gateway-error", "connect-failure")),
        ),
        (
            {"attempts": 2, "retryOn": "5xx, 503 ,unavailable,,5xx,503"},
            Retry(2, None, ("5xx", "unavailable", "retriable-status-codes"), (503,)),
        ),
        (
            {"attempts": 1, "retryOn": "retriable-status-codes,409,100,599"},
            Retry(1, None, ("retriable-status-codes",), (409, 100, 599)),
        ),
        (
            {
                "attempts": 5,
                "retryOn": "cancelled,deadline-exceeded,internal,resource-exhausted,unavailable",
            },
            Retry(
                5,
                None,
                ("cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"),
            ),
        ),
        (
            {
                "attempts": 1,
                "retryOn": "5xx,gateway-error,reset,reset-before-request,connect-failure,"
                "envoy-ratelimited,retriable-4xx,refused-stream,retriable-status-codes,"
                "retriable-headers,http3-post-connect-failure",
            },
            Retry(
                1,
                None,
                (
                    "5xx",
                    "gateway-error",
                    "reset",
                    "reset-before-request",
                    "connect-failure",
                    "envoy-ratelimited",
                    "retriable-4xx",
                    "refused-stream",
                    "retriable-status-codes",
                    "retriable-headers",
                    "http3-post-connect-failure",
                ),
            ),
        ),
    ],
)
def test_retries(retries: dict[str, Any], want: Retry) -> None:
    assert parse_rule(retries=retries).retry == want


def test_no_retries_field_means_default_policy() -> None:
    assert parse_rule().retry is None


@pytest.mark.parametrize(
    ("fault", "want"),
    [
        (
            {"delay": {"fixedDelay": "300ms", "percentage": {"value": 100}}},
            Fault(delay=0.3, delay_percent=100.0, abort_percent=0.0),
        ),
        (
            {"delay": {"fixedDelay": "5s", "percent": 10}},  # the deprecated integer form
            Fault(delay=5.0, delay_percent=10.0, abort_percent=0.0),
        ),
        (
            {"abort": {"httpStatus": 418, "percentage": {"value": 50}}},
            Fault(delay_percent=0.0, abort_http=418, abort_percent=50.0),
        ),
        (
            {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 0.0001}}},
            Fault(delay_percent=0.0, abort_grpc="UNAVAILABLE", abort_percent=0.0001),
        ),
        (
            {
                "delay": {"fixedDelay": "1s", "percentage": {"value": 12.5}},
                "abort": {"httpStatus": 599, "percentage": {"value": 0}},
            },
            Fault(delay=1.0, delay_percent=12.5, abort_http=599, abort_percent=0.0),
        ),
        (
            {"abort": {"httpStatus": 200, "percentage": {}}},  # value unset: 0
            Fault(delay_percent=0.0, abort_http=200, abort_percent=0.0),
        ),
    ],
)
def test_fault(fault: dict[str, Any], want: Fault) -> None:
    assert parse_rule(fault=fault).fault == want


@pytest.mark.parametrize(
    ("fields", "want"),
    [
        ({"mirror": {"host": "reviews", "subset": "v3"}}, (Mirror(v1("v3"), 100.0),)),
        (
            {"mirror": {"host": "reviews"}, "mirrorPercentage": {"value": 12.5}},
            (Mirror(REVIEWS, 12.5),),
        ),
        ({"mirror": {"host": "reviews"}, "mirrorPercent": 20}, (Mirror(REVIEWS, 20.0),)),
        ({"mirror": {"host": "reviews"}, "mirror_percent": 30}, (Mirror(REVIEWS, 30.0),)),
        (
            {"mirror": {"host": "reviews"}, "mirrorPercentage": {"value": 5}, "mirrorPercent": 20},
            (Mirror(REVIEWS, 5.0),),  # the newer field wins, as in Istio
        ),
        (
            {"mirror": {"host": "reviews"}, "mirrorPercentage": {"value": 0}},
            (),
        ),  # 0 % mirrors nothing
        (
            {
                "mirrors": [
                    {"destination": {"host": "reviews", "subset": "v2"}},
                    {
                        "destination": {"host": "shadow", "port": {"number": 81}},
                        "percentage": {"value": 1},
                    },
                    {"destination": {"host": "off"}, "percentage": {"value": 0}},
                ]
            },
            (Mirror(v1("v2"), 100.0), Mirror(Destination("shadow", NS, 81), 1.0)),
        ),
        (
            {"mirror": {"host": "a"}, "mirrors": [{"destination": {"host": "b"}}]},
            (Mirror(Destination("a", NS)), Mirror(Destination("b", NS))),
        ),
    ],
)
def test_mirrors(fields: dict[str, Any], want: tuple[Mirror, ...]) -> None:
    assert parse_rule(**fields).mirrors == want


@pytest.mark.parametrize(
    ("cors", "want"),
    [
        (
            {
                "allowOrigins": [
                    {"exact": "https://a.example"},
                    {"prefix": "https://b"},
                    {"regex": ".*\\.c\\.example"},
                ],
                "allowMethods": ["GET", "POST"],
                "allowHeaders": ["X-Custom", "*"],
                "exposeHeaders": ["x-exposed"],
                "maxAge": "24h",
                "allowCredentials": False,
            },
            Cors(
                allow_origins=(
                    StringMatch("exact", "https://a.example"),
                    StringMatch("prefix", "https://b"),
                    StringMatch("regex", ".*\\.c\\.example"),
                ),
                allow_methods=("GET", "POST"),
                allow_headers=("x-custom", "*"),
                expose_headers=("x-exposed",),
                max_age=86400.0,
                allow_credentials=False,
            ),
        ),
        (
            {"allowOrigin": ["https://old.example"]},  # deprecated: exact matches
            Cors(allow_origins=(StringMatch("exact", "https://old.example"),)),
        ),
        ({"unmatchedPreflights": "FORWARD"}, Cors()),
        ({}, Cors()),
    ],
)
def test_cors(cors: dict[str, Any], want: Cors) -> None:
    assert parse_rule(corsPolicy=cors).cors == want


@pytest.mark.parametrize(
    ("redirect", "want"),
    [
        ({"uri": "/v2"}, Redirect(uri="/v2")),
        (
            {"authority": "new.example", "redirectCode": 302},
            Redirect(authority="new.example", code=302),
        ),
        (
            {"scheme": "https", "port": 8443, "redirectCode": 308},
            Redirect(scheme="https", port=8443, code=308),
        ),
        ({"uri": "/x", "redirectCode": 0}, Redirect(uri="/x")),  # proto3 zero: 301
        ({"uri": "/x", "port": 0}, Redirect(uri="/x")),  # proto3 zero: no port
        ({"uri": "/x", "derivePort": "FROM_PROTOCOL_DEFAULT"}, Redirect(uri="/x")),
        ({"scheme": "http", "redirectCode": 303}, Redirect(scheme="http", code=303)),
        ({"scheme": "https", "redirectCode": 307}, Redirect(scheme="https", code=307)),
    ],
)
def test_redirect(redirect: dict[str, Any], want: Redirect) -> None:
    (rule,) = parse_policy(http_vs({"redirect": redirect})).policy.http  # type: ignore[union-attr]
    assert rule == HttpRule(redirect=want)


@pytest.mark.parametrize(
    ("response", "want"),
    [
        ({"status": 503}, DirectResponse(503)),
        ({"status": 200, "body": {"string": "ok\n"}}, DirectResponse(200, "ok\n")),
        (
            {"status": 418, "body": {"bytes": base64.b64encode(b"teapot").decode()}},
            DirectResponse(418, "teapot"),
        ),
        ({"status": 599, "body": {"string": "x" * 4096}}, DirectResponse(599, "x" * 4096)),
        ({"status": 200, "body": {"string": "é" * 2048}}, DirectResponse(200, "é" * 2048)),
    ],
)
def test_direct_response(response: dict[str, Any], want: DirectResponse) -> None:
    (rule,) = parse_policy(
        http_vs(
            {
                "directResponse": response,
                "fault": {"abort": {"httpStatus": 500, "percentage": {"value": 1}}},
            }
        )
    ).policy.http  # type: ignore[union-attr]
    assert rule == HttpRule(
        direct_response=want, fault=Fault(delay_percent=0.0, abort_http=500, abort_percent=1.0)
    )


def test_tcp_rules() -> None:
    obj = vs(
        {
            "hosts": ["db"],
            "tcp": [
                {
                    "match": [{"port": 5432}, {"port": 5433, "sourceLabels": {"app": "x"}}, {}],
                    "route": [
                        {"destination": {"host": "db", "subset": "a"}, "weight": 90},
                        {"destination": {"host": "db", "subset": "b"}, "weight": 10},
                    ],
                },
                {"route": [{"destination": {"host": "db"}, "weight": 0}]},
            ],
        }
    )
    split = (
        WeightedDestination(Destination("db", NS, None, "a"), 90),
        WeightedDestination(Destination("db", NS, None, "b"), 10),
    )
    parsed = parse_policy(obj)
    assert parsed.policy.tcp == (  # type: ignore[union-attr]
        TcpRule(split, 5432),
        TcpRule(split, None),
        TcpRule((WeightedDestination(Destination("db", NS)),)),
    )
    assert [str(n) for n in parsed.notices] == [
        "spec.tcp[0].match[1].sourceLabels: selecting source workloads is not supported; "
        "match alternative dropped"
    ]


def test_gateway_only_virtual_service_applies_to_nothing() -> None:
    obj = vs(
        {
            "hosts": ["reviews"],
            "gateways": ["shop/ingress", "other"],
            "exportTo": ["."],
            "http": [to_reviews(match=[{"sourceLabels": {"app": "a"}}])],
        }
    )
    parsed = parse_policy(obj)
    assert not parsed.applies
    assert parsed.policy == RoutePolicy(
        PolicyKey("VirtualService", NS, "reviews-route"), ("reviews",)
    )
    # the rule-level notices are noise for an object that applies to nothing: left out
    assert [str(n) for n in parsed.notices] == [
        "spec.exportTo: not supported; ignored",
        "spec.gateways: applies only to gateways shop/ingress, other; not applied to the mesh "
        '(add "mesh" to apply it to sidecars and gRPC clients)',
    ]


def test_gateway_only_virtual_service_is_still_validated() -> None:
    obj = vs({"hosts": ["reviews"], "gateways": ["gw"], "http": [to_reviews(timeout="soon")]})
    assert rejection(obj) == (
        """spec.http[0].timeout: invalid duration 'soon' (for example "1.5s", "100ms", "1m")"""
    )


@pytest.mark.parametrize(
    ("obj", "want_http", "messages"),
    [
        (
            http_vs(
                to_reviews(
                    match=[
                        {"sourceLabels": {"app": "web"}},
                        {"uri": {"prefix": "/a"}, "gateways": ["gw"]},
                        {"sourceNamespace": "front"},
                        {"uri": {"prefix": "/b"}, "statPrefix": "b"},
                    ]
                )
            ),
            (
                HttpRule(
                    matches=(RequestMatch(uri=StringMatch("prefix", "/b")),),
                    destinations=(WeightedDestination(REVIEWS),),
                ),
            ),
            [
                "spec.http[0].match[0].sourceLabels: selecting source workloads is not supported; "
                "match alternative dropped",
                "spec.http[0].match[1].gateways: applies only to gateways; match alternative "
                "dropped",
                "spec.http[0].match[2].sourceNamespace: selecting a source namespace is not "
                "supported; "
                "match alternative dropped",
                "spec.http[0].match[3].statPrefix: not supported; ignored",
            ],
        ),
        (
            http_vs(to_reviews(match=[{"sourceLabels": {"app": "web"}}]), to_reviews(name="rest")),
            (HttpRule(name="rest", destinations=(WeightedDestination(REVIEWS),)),),
            [
                "spec.http[0].match[0].sourceLabels: selecting source workloads is not supported; "
                "match alternative dropped",
                "spec.http[0]: every match alternative was dropped; rule dropped",
            ],
        ),
        (
            http_vs({"delegate": {"name": "reviews-v2", "namespace": "v2"}}, to_reviews()),
            (HttpRule(destinations=(WeightedDestination(REVIEWS),)),),
            ["spec.http[0].delegate: delegation is not supported; rule dropped"],
        ),
        (
            http_vs(
                {
                    "redirect": {"uri": "/new"},
                    "timeout": "1s",
                    "retries": {"attempts": 2},
                    "mirror": {"host": "reviews"},
                    "mirrors": [],
                }
            ),
            (HttpRule(redirect=Redirect("/new")),),
            [
                "spec.http[0].timeout: has no effect without route; ignored",
                "spec.http[0].retries: has no effect without route; ignored",
                "spec.http[0].mirror: has no effect without route; ignored",
                "spec.http[0].mirrors: has no effect without route; ignored",
            ],
        ),
        (
            http_vs(
                to_reviews(
                    retries={
                        "attempts": 2,
                        "retryRemoteLocalities": True,
                        "retryIgnorePreviousHosts": False,
                        "backoff": "50ms",
                    }
                )
            ),
            (
                HttpRule(
                    destinations=(WeightedDestination(REVIEWS),),
                    retry=Retry(2, None, DEFAULT_RETRY_ON),
                ),
            ),
            [
                "spec.http[0].retries.retryRemoteLocalities: not supported; ignored",
                "spec.http[0].retries.backoff: not supported; ignored",
            ],
        ),
        (
            http_vs(
                to_reviews(fault={"delay": {"fixedDelay": "1s"}, "abort": {"httpStatus": 503}})
            ),
            (
                HttpRule(
                    destinations=(WeightedDestination(REVIEWS),),
                    fault=Fault(1.0, 0.0, 503, None, 0.0),
                ),
            ),
            [
                "spec.http[0].fault.delay: no percentage set: no request is delayed (Istio's "
                "default "
                "is 0%)",
                "spec.http[0].fault.abort: no percentage set: no request is aborted (Istio's "
                "default "
                "is 0%)",
            ],
        ),
        (
            http_vs(
                to_reviews(
                    corsPolicy={
                        "allowOrigins": [{"exact": "https://a"}],
                        "allowOrigin": ["https://b"],
                        "unmatchedPreflights": "IGNORE",
                    }
                )
            ),
            (
                HttpRule(
                    destinations=(WeightedDestination(REVIEWS),),
                    cors=Cors(allow_origins=(StringMatch("exact", "https://a"),)),
                ),
            ),
            [
                "spec.http[0].corsPolicy.unmatchedPreflights: not supported; ignored",
                "spec.http[0].corsPolicy.allowOrigin: ignored: allowOrigins is set",
            ],
        ),
        (
            vs(
                {
                    "hosts": ["reviews"],
                    "tls": [{"match": [{"sniHosts": ["reviews"]}], "route": []}],
                    "exportTo": ["*"],
                }
            ),
            (),
            [
                "spec.exportTo: not supported; ignored",
                "spec.tls: not supported; ignored",
                "spec: no rule is left to apply; not applied",
            ],
        ),
        (
            vs(
                {
                    "hosts": ["db"],
                    "tcp": [
                        {
                            "match": [
                                {"destinationSubnets": ["10.0.0.0/8"]},
                                {"sourceSubnet": "10.1.0.0/16"},
                            ],
                            "route": [{"destination": {"host": "db"}}],
                        }
                    ],
                }
            ),
            (),
            [
                "spec.tcp[0].match[0].destinationSubnets: selecting destination subnets is not "
                "supported; "
                "match alternative dropped",
                "spec.tcp[0].match[1].sourceSubnet: selecting a source subnet is not supported; "
                "match "
                "alternative dropped",
                "spec.tcp[0]: every match alternative was dropped; rule dropped",
                "spec: no rule is left to apply; not applied",
            ],
        ),
        (
            vs(
                {
                    "hosts": ["reviews"],
                    "http": [to_reviews()],
                    "gateways": ["mesh", "gw"],
                    "exportTo": [],
                }
            ),
            (HttpRule(destinations=(WeightedDestination(REVIEWS),)),),
            [],
        ),
    ],
)
def test_virtual_service_notices(
    obj: dict[str, Any], want_http: tuple[HttpRule, ...], messages: list[str]
) -> None:
    parsed = parse_policy(obj)
    policy = parsed.policy
    assert isinstance(policy, RoutePolicy)
    assert parsed.applies == bool(policy.http or policy.tcp)  # no rule left: applies to nothing
    assert parsed.policy.http == want_http  # type: ignore[union-attr]
    assert [str(n) for n in parsed.notices] == messages
    assert all(isinstance(n, Notice) and n.path for n in parsed.notices)
