"""Istio VirtualService / DestinationRule objects parsed into the policy model (sources.istio).

Every field into its exact model value, every rejection with its exact message and field
path, the notices for what is accepted but not applied, property tests over generated
objects, and Envoy itself as the judge of the regex program-size limit and of the header
and direct-response checks.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sources.istio import (
    CORS_METHODS,
    DEFAULT_RETRY_ON,
    GRPC_STATUS_NAMES,
    HEADER_VARIABLES,
    MAX_DIRECT_RESPONSE_BODY,
    MAX_DURATION_SECONDS,
    MAX_HEADER_BYTES,
    MAX_HEADERS_TO_ADD,
    MAX_MAGLEV_TABLE_SIZE,
    MAX_QUERY_NAME_BYTES,
    MAX_RING_SIZE,
    RETRY_ON_TOKENS,
    Notice,
    PolicyError,
    check_regex,
    header_value_problem,
    is_supported_kind,
    parse_duration,
    parse_policy,
    render_path,
)
from tests.harness.envoy import static_bootstrap, validate_bootstrap
from xds_server.model import (
    ConnectionPool,
    Cors,
    Destination,
    DestinationPolicy,
    DirectResponse,
    Fault,
    HashOn,
    HeaderMatch,
    HeaderOps,
    HttpRule,
    LoadBalancer,
    LocalityDistribute,
    LocalityFailover,
    LocalityLb,
    Mirror,
    OutlierDetection,
    PolicyKey,
    PortTrafficPolicy,
    QueryMatch,
    Redirect,
    RequestMatch,
    Retry,
    Rewrite,
    RoutePolicy,
    StringMatch,
    Subset,
    TcpRule,
    TrafficPolicy,
    WeightedDestination,
)

NS = "shop"
REVIEWS = Destination("reviews", NS)


def v1(subset: str = "v1", port: int | None = None) -> Destination:
    return Destination("reviews", NS, port, subset)


def vs(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews-route", "namespace": NS, **meta},
        "spec": spec,
    }


def dr(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews-dr", "namespace": NS, **meta},
        "spec": {"host": "reviews", **spec},
    }


def to_reviews(**fields: Any) -> dict[str, Any]:
    """An HTTP rule routing to `reviews`, with `fields` added."""
    return {"route": [{"destination": {"host": "reviews"}}], **fields}


def http_vs(*rules: dict[str, Any]) -> dict[str, Any]:
    return vs({"hosts": ["reviews"], "http": list(rules)})


def parse_rule(**fields: Any) -> HttpRule:
    (rule,) = parse_policy(http_vs(to_reviews(**fields))).policy.http  # type: ignore[union-attr]
    return rule


def parse_dr(**spec: Any) -> DestinationPolicy:
    policy = parse_policy(dr(spec)).policy
    assert isinstance(policy, DestinationPolicy)
    return policy


def top_policy(**traffic: Any) -> TrafficPolicy | None:
    return parse_dr(trafficPolicy=traffic).policy


def rejection(obj: Any) -> str:
    with pytest.raises(PolicyError) as caught:
        parse_policy(obj)
    err = caught.value
    if err.path:  # the documented shape of the message
        assert str(err) == f"{render_path(err.path)}: {err.reason}"
    return str(err)


def notices(obj: dict[str, Any]) -> list[str]:
    return [str(n) for n in parse_policy(obj).notices]


# --------------------------------------------------------------------------- small pieces


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (("spec", "http", 0, "match", 1, "uri", "regex"), "spec.http[0].match[1].uri.regex"),
        (("spec", "http", 0, "headers"), "spec.http[0].headers"),
        (
            ("spec", "http", 0, "match", 0, "headers", "end-user"),
            'spec.http[0].match[0].headers["end-user"]',
        ),
        (("labels", 'a"b\\c'), 'labels["a\\"b\\\\c"]'),
        (("mirror_percent",), "mirror_percent"),
        ((0, "x"), "[0].x"),
        (("x-y",), '["x-y"]'),
        ((), ""),
    ],
)
def test_render_path(path: tuple[str | int, ...], text: str) -> None:
    assert render_path(path) == text


@pytest.mark.parametrize(
    ("obj", "supported"),
    [
        ({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService"}, True),
        ({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule"}, True),
        ({"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService"}, True),
        ({"apiVersion": "networking.istio.io/v1", "kind": "Gateway"}, False),
        ({"apiVersion": "networking.istio.io/v2", "kind": "VirtualService"}, False),
        ({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute"}, False),
        ({"kind": "VirtualService"}, False),
        ([], False),
    ],
)
def test_is_supported_kind(obj: Any, supported: bool) -> None:
    assert is_supported_kind(obj) is supported


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("0.5s", 0.5),
        ("1.5s", 1.5),
        ("100ms", 0.1),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("10ns", 1e-8),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("+2s", 2.0),
        ("-0s", 0.0),
        ("9223372035s", 9223372035.0),
        ("2562047h47m15s", 9223372035.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1", 'invalid duration \'1\' (for example "1.5s", "100ms", "1m")'),
        ("", 'invalid duration \'\' (for example "1.5s", "100ms", "1m")'),
        ("1 s", 'invalid duration \'1 s\' (for example "1.5s", "100ms", "1m")'),
        ("1d", 'invalid duration \'1d\' (for example "1.5s", "100ms", "1m")'),
        (" 1s", 'invalid duration \' 1s\' (for example "1.5s", "100ms", "1m")'),
        ("s", 'invalid duration \'s\' (for example "1.5s", "100ms", "1m")'),
        ("-1s", "negative duration '-1s'"),
        ("9223372036s", "duration '9223372036s' is longer than 9223372035s (Envoy's limit)"),
    ],
)
def test_parse_duration_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert str(caught.value) == reason


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("/api/v[0-9]+/.*", None),
        ("a" * 96, None),  # program size exactly 100: Envoy's limit is inclusive
        ("a" * 97, "regex program size 101 exceeds Envoy's limit of 100"),
        ("[a-z]{200}", "regex program size 204 exceeds Envoy's limit of 100"),
        ("", "empty regex"),
        ("a(", "invalid RE2 regex: missing ): a("),
        ("(?<=a)b", "invalid RE2 regex: invalid perl operator: (?<="),
        ("*", "invalid RE2 regex: no argument for repetition operator: *"),
        ("x" * 1025, "regex is 1025 characters long; the limit is 1024"),
    ],
)
def test_check_regex(pattern: str, reason: str | None) -> None:
    assert check_regex(pattern) == reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("plain", None),
        ("", None),
        ("100%%", None),
        ("%HOSTNAME%", None),
        ("a %DOWNSTREAM_REMOTE_ADDRESS% b %%", None),
        ("%REQ(x-request-id)%", None),
        ("%REQ(:authority)%", None),
        (
            "100%",
            "invalid '%' at position 3 in header value '100%': write '%%' for a literal '%', "
            "or use a known variable such as %HOSTNAME% or %REQ(x-name)%",
        ),
        (
            "%FOO%",
            "invalid '%' at position 0 in header value '%FOO%': write '%%' for a literal "
            "'%', or use a known variable such as %HOSTNAME% or %REQ(x-name)%",
        ),
        (
            "%HOSTNAME(x)%",
            "invalid '%' at position 0 in header value '%HOSTNAME(x)%': write '%%' for a "
            "literal '%', or use a known variable such as %HOSTNAME% or %REQ(x-name)%",
        ),
        ("a\nb", "header value contains a NUL, CR or LF character"),
    ],
)
def test_header_value_problem(value: str, reason: str | None) -> None:
    assert header_value_problem(value) == reason


def test_policy_error_and_notice_text() -> None:
    err = PolicyError(("spec", "http", 0, "timeout"), "bad")
    assert (err.path, err.reason, str(err)) == (
        ("spec", "http", 0, "timeout"),
        "bad",
        "spec.http[0].timeout: bad",
    )
    assert isinstance(err, ValueError)
    assert str(PolicyError((), "whole object")) == "whole object"
    assert str(Notice(("spec", "exportTo"), "ignored")) == "spec.exportTo: ignored"


# --------------------------------------------------------------------------- VirtualService


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


def with_top(**changes: Any) -> dict[str, Any]:
    """A valid VirtualService with top-level members replaced (None deletes one)."""
    obj = http_vs(to_reviews())
    for key, value in changes.items():
        if value is None:
            del obj[key]
        else:
            obj[key] = value
    return obj


def with_meta(**changes: Any) -> dict[str, Any]:
    obj = http_vs(to_reviews())
    obj["metadata"] = {k: v for k, v in {**obj["metadata"], **changes}.items() if v is not None}
    return obj


REGEX_TOO_BIG = "a" * 97
BIG = "regex program size 101 exceeds Envoy's limit of 100"


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        # the object
        ([], "expected an object, got a list"),
        (
            with_top(apiVersion="networking.istio.io/v2"),
            "apiVersion: unsupported apiVersion 'networking.istio.io/v2' (one of "
            "networking.istio.io/v1, "
            "networking.istio.io/v1alpha3, networking.istio.io/v1beta1)",
        ),
        (
            with_top(apiVersion=None),
            "apiVersion: unsupported apiVersion None (one of networking.istio.io/v1, "
            "networking.istio.io/v1alpha3, "
            "networking.istio.io/v1beta1)",
        ),
        (
            with_top(kind="Gateway"),
            "kind: unsupported kind 'Gateway' (VirtualService or DestinationRule)",
        ),
        (with_top(extra=1), 'extra: unknown field "extra"'),
        (with_top(spce={}), 'spce: unknown field "spce" (did you mean "spec"?)'),
        (with_top(spec=None), "spec: required"),
        (with_top(spec=[]), "spec: expected an object, got a list"),
        (with_top(metadata="x"), "metadata: expected an object, got string 'x'"),
        (with_meta(name=None), "metadata.name: required"),
        (with_meta(name=5), "metadata.name: expected a string, got integer 5"),
        (
            with_meta(name="Reviews"),
            "metadata.name: invalid name 'Reviews' (a lowercase DNS subdomain)",
        ),
        (with_meta(name="a_b"), "metadata.name: invalid name 'a_b' (a lowercase DNS subdomain)"),
        (
            with_meta(name="a" * 254),
            f"metadata.name: invalid name '{'a' * 254}' (a lowercase DNS subdomain)",
        ),
        (
            with_meta(namespace="a.b"),
            "metadata.namespace: invalid namespace 'a.b' (a lowercase DNS label)",
        ),
        ({**http_vs(to_reviews()), 1: 2}, "field names must be strings, got integer 1"),
        # spec
        (vs({"http": [to_reviews()]}), "spec.hosts: at least one host is required"),
        (vs({"hosts": [], "http": [to_reviews()]}), "spec.hosts: at least one host is required"),
        (
            vs({"hosts": "reviews", "http": [to_reviews()]}),
            "spec.hosts: expected a list, got string 'reviews'",
        ),
        (
            vs({"hosts": ["*.example.com"], "http": [to_reviews()]}),
            "spec.hosts[0]: wildcard hosts are not supported ('*.example.com')",
        ),
        (
            vs({"hosts": ["*"], "http": [to_reviews()]}),
            "spec.hosts[0]: wildcard hosts are not supported ('*')",
        ),
        (
            vs({"hosts": ["a", "Reviews"], "http": [to_reviews()]}),
            "spec.hosts[1]: invalid host 'Reviews' (a lowercase DNS name)",
        ),
        (
            vs({"hosts": ["10.0.0.1"], "http": [to_reviews()]}),
            "spec.hosts[0]: invalid host '10.0.0.1' (a lowercase DNS name)",
        ),
        (
            vs({"hosts": ["a..b"], "http": [to_reviews()]}),
            "spec.hosts[0]: invalid host 'a..b' (a lowercase DNS name)",
        ),
        (
            vs({"hosts": [""], "http": [to_reviews()]}),
            "spec.hosts[0]: invalid host '' (a lowercase DNS name)",
        ),
        (vs({"hosts": [None], "http": [to_reviews()]}), "spec.hosts[0]: must not be null"),
        (
            vs({"hosts": ["a", "b", "a"], "http": [to_reviews()]}),
            "spec.hosts[2]: duplicate host 'a'",
        ),
        (vs({"hosts": ["a"]}), "spec: at least one of http, tcp, tls is required"),
        (vs({"hosts": ["a"], "http": []}), "spec: at least one of http, tcp, tls is required"),
        (vs({"hosts": ["a"], "http": {}, "tcp": [1]}), "spec.http: expected a list, got an object"),
        (
            vs({"hosts": ["a"], "http": [to_reviews()], "gateways": "mesh"}),
            "spec.gateways: expected a list, got string 'mesh'",
        ),
        (
            vs({"hosts": ["a"], "http": [to_reviews()], "tpc": []}),
            'spec.tpc: unknown field "tpc" (did you mean "tcp"?)',
        ),
        # rules
        (http_vs({}), "spec.http[0]: one of route, redirect, directResponse is required"),
        (
            http_vs({"route": []}),
            "spec.http[0]: one of route, redirect, directResponse is required",
        ),
        (
            http_vs(to_reviews(redirect={"uri": "/"})),
            "spec.http[0]: only one of route, redirect, directResponse may be set (got route and "
            "redirect)",
        ),
        (
            http_vs({"redirect": {"uri": "/"}, "directResponse": {"status": 200}}),
            "spec.http[0]: only one of route, redirect, directResponse may be set (got redirect "
            "and "
            "directResponse)",
        ),
        (
            http_vs(to_reviews(delegate={"name": "x"})),
            "spec.http[0]: only one of route, redirect, directResponse may be set (got route and "
            "delegate)",
        ),
        (
            http_vs(to_reviews(timout="1s")),
            'spec.http[0].timout: unknown field "timout" (did you mean "timeout"?)',
        ),
        (
            http_vs(to_reviews(per_try_timeout="1s")),
            'spec.http[0].per_try_timeout: unknown field "per_try_timeout" (did you mean '
            '"timeout"?)',
        ),
        (
            http_vs(to_reviews(retries={"per_try_timeout": "1s"})),
            'spec.http[0].retries.per_try_timeout: unknown field "per_try_timeout" (did you mean '
            '"perTryTimeout"?)',
        ),
        (http_vs(to_reviews(name=3)), "spec.http[0].name: expected a string, got integer 3"),
        (
            http_vs({"redirect": {"uri": "/"}, "fault": {"abort": {"httpStatus": 500}}}),
            "spec.http[0].fault: cannot be combined with redirect",
        ),
        (
            http_vs({"redirect": {"uri": "/"}, "rewrite": {"uri": "/"}}),
            "spec.http[0].rewrite: cannot be combined with redirect",
        ),
        (
            http_vs({"directResponse": {"status": 200}, "rewrite": {"uri": "/"}}),
            "spec.http[0].rewrite: cannot be combined with directResponse",
        ),
        (
            http_vs({"delegate": {"name": "x", "namespace": "y", "extra": 1}}),
            'spec.http[0].delegate.extra: unknown field "extra"',
        ),
        # matches
        (http_vs(to_reviews(match={})), "spec.http[0].match: expected a list, got an object"),
        (
            http_vs(to_reviews(match=[{"uri": {"exact": "/a", "prefix": "/b"}}])),
            "spec.http[0].match[0].uri: only one of exact, prefix, regex may be set (got exact and "
            "prefix)",
        ),
        (
            http_vs(to_reviews(match=[{"uri": {"prefix": ""}}])),
            "spec.http[0].match[0].uri.prefix: must not be empty",
        ),
        (
            http_vs(to_reviews(match=[{"uri": {"regex": ""}}])),
            "spec.http[0].match[0].uri.regex: empty regex",
        ),
        (
            http_vs(to_reviews(match=[{"uri": {"regex": "a("}}])),
            "spec.http[0].match[0].uri.regex: invalid RE2 regex: missing ): a(",
        ),
        (
            http_vs(to_reviews(match=[{"uri": {"regex": REGEX_TOO_BIG}}])),
            f"spec.http[0].match[0].uri.regex: {BIG}",
        ),
        (
            http_vs(to_reviews(match=[{}, {"authority": {"regex": REGEX_TOO_BIG}}])),
            f"spec.http[0].match[1].authority.regex: {BIG}",
        ),
        (
            http_vs(to_reviews(match=[{"method": {"regex": REGEX_TOO_BIG}}])),
            f"spec.http[0].match[0].method.regex: {BIG}",
        ),
        (
            http_vs(to_reviews(match=[{"scheme": {"regex": REGEX_TOO_BIG}}])),
            f"spec.http[0].match[0].scheme.regex: {BIG}",
        ),
        (
            http_vs(to_reviews(match=[{"headers": {"x-a": {"regex": REGEX_TOO_BIG}}}])),
            f'spec.http[0].match[0].headers["x-a"].regex: {BIG}',
        ),
        (
            http_vs(to_reviews(match=[{"withoutHeaders": {"x-a": {"regex": "("}}}])),
            'spec.http[0].match[0].withoutHeaders["x-a"].regex: invalid RE2 regex: missing ): (',
        ),
        (
            http_vs(to_reviews(match=[{"queryParams": {"q": {"regex": REGEX_TOO_BIG}}}])),
            f"spec.http[0].match[0].queryParams.q.regex: {BIG}",
        ),
        (
            http_vs(to_reviews(match=[{"uri": {"exact": 5}}])),
            "spec.http[0].match[0].uri.exact: expected a string, got integer 5",
        ),
        (
            http_vs(to_reviews(match=[{"uri": {"suffix": "x"}}])),
            'spec.http[0].match[0].uri.suffix: unknown field "suffix"',
        ),
        (
            http_vs(to_reviews(match=[{"uri": "/api"}])),
            "spec.http[0].match[0].uri: expected an object, got string '/api'",
        ),
        (
            http_vs(to_reviews(match=[{"headers": {":path": {"exact": "/"}}}])),
            """spec.http[0].match[0].headers[":path"]: pseudo-header ':path' cannot be matched """
            """here; """
            """use uri, method, authority or scheme""",
        ),
        (
            http_vs(to_reviews(match=[{"headers": {"a b": {}}}])),
            """spec.http[0].match[0].headers["a b"]: invalid header name 'a b'""",
        ),
        (
            http_vs(to_reviews(match=[{"headers": {"": {}}}])),
            'spec.http[0].match[0].headers[""]: header name must not be empty',
        ),
        (
            http_vs(to_reviews(match=[{"headers": {"@request.auth.claims.x": {}}}])),
            """spec.http[0].match[0].headers["@request.auth.claims.x"]: invalid header name """
            """'@request.auth.claims.x'""",
        ),
        (
            http_vs(to_reviews(match=[{"headers": {"X-A": {}, "x-a": {}}}])),
            """spec.http[0].match[0].headers["x-a"]: duplicate name 'x-a'""",
        ),
        (
            http_vs(to_reviews(match=[{"headers": {"x": "jason"}}])),
            "spec.http[0].match[0].headers.x: expected an object, got string 'jason'",
        ),
        (
            http_vs(to_reviews(match=[{"headers": ["x"]}])),
            "spec.http[0].match[0].headers: expected an object, got a list",
        ),
        (
            http_vs(to_reviews(match=[{"queryParams": {"": {}}}])),
            'spec.http[0].match[0].queryParams[""]: must not be empty',
        ),
        (
            http_vs(to_reviews(match=[{"queryParams": {"a\nb": {}}}])),
            'spec.http[0].match[0].queryParams["a\nb"]: contains a NUL, CR or LF character',
        ),
        (
            http_vs(to_reviews(match=[{"port": 70000}])),
            "spec.http[0].match[0].port: 70000 is outside 1-65535",
        ),
        (
            http_vs(to_reviews(match=[{"port": "80"}])),
            "spec.http[0].match[0].port: expected an integer, got string '80'",
        ),
        (
            http_vs(to_reviews(match=[{"port": True}])),
            "spec.http[0].match[0].port: expected an integer, got boolean true",
        ),
        (
            http_vs(to_reviews(match=[{"ignoreUriCase": "yes"}])),
            "spec.http[0].match[0].ignoreUriCase: expected a boolean, got string 'yes'",
        ),
        (
            http_vs(to_reviews(match=[{"sourceLabels": {"app": 1}}])),
            "spec.http[0].match[0].sourceLabels.app: expected a string, got integer 1",
        ),
        (http_vs(to_reviews(match=[None])), "spec.http[0].match[0]: must not be null"),
        # destinations
        (http_vs({"route": [{"weight": 1}]}), "spec.http[0].route[0].destination: required"),
        (
            http_vs({"route": [{"destination": {}}]}),
            "spec.http[0].route[0].destination.host: required",
        ),
        (
            http_vs({"route": [{"destination": {"host": "*.x"}}]}),
            "spec.http[0].route[0].destination.host: wildcard hosts are not supported ('*.x')",
        ),
        (
            http_vs({"route": [{"destination": {"host": "a", "subset": "V1"}}]}),
            "spec.http[0].route[0].destination.subset: invalid subset name 'V1' (a lowercase DNS "
            "label)",
        ),
        (
            http_vs({"route": [{"destination": {"host": "a", "port": {}}}]}),
            "spec.http[0].route[0].destination.port.number: required",
        ),
        (
            http_vs({"route": [{"destination": {"host": "a", "port": {"number": 0}}}]}),
            "spec.http[0].route[0].destination.port.number: 0 is outside 1-65535",
        ),
        (
            http_vs({"route": [{"destination": {"host": "a", "port": {"name": "http"}}}]}),
            'spec.http[0].route[0].destination.port.name: unknown field "name" (did you mean '
            '"number"?)',
        ),
        (
            http_vs({"route": [{"destination": {"host": "a"}, "weight": -1}]}),
            "spec.http[0].route[0].weight: -1 is outside 0-2147483647",
        ),
        (
            http_vs({"route": [{"destination": {"host": "a"}, "weight": 2**31}]}),
            "spec.http[0].route[0].weight: 2147483648 is outside 0-2147483647",
        ),
        (
            http_vs({"route": [{"destination": {"host": "a"}, "weight": "50"}]}),
            "spec.http[0].route[0].weight: expected an integer, got string '50'",
        ),
        (
            http_vs({"route": [{"destination": {"host": "a"}, "weight": 1.5}]}),
            "spec.http[0].route[0].weight: expected an integer, got number 1.5",
        ),
        (
            http_vs({"route": [{"destination": {"host": "a"}}, {"destination": {"host": "b"}}]}),
            "spec.http[0].route: total weight is zero (give at least one destination a weight)",
        ),
        (
            http_vs(
                {
                    "route": [
                        {"destination": {"host": "a"}, "weight": 0},
                        {"destination": {"host": "b"}, "weight": 0},
                    ]
                }
            ),
            "spec.http[0].route: total weight is zero (give at least one destination a weight)",
        ),
        (
            http_vs({"route": [{"destination": {"host": "a"}, "weight": 2**31 - 1}] * 3}),
            "spec.http[0].route: total weight 6442450941 exceeds 4294967295",
        ),
        (
            http_vs(
                {
                    "route": [
                        {
                            "destination": {"host": "a"},
                            "headers": {"request": {"set": {"host": "x"}}},
                            "weight": 1,
                        },
                        {"destination": {"host": "b"}, "weight": 1},
                    ]
                }
            ),
            "spec.http[0].route[0].headers.request: setting the authority per destination is not "
            "supported; "
            "use the rule's rewrite.authority",
        ),
        (
            http_vs(
                {
                    "route": [
                        {"destination": {"host": "a"}, "weight": 1},
                        {
                            "destination": {"host": "b"},
                            "weight": 0,
                            "headers": {"request": {"set": {":path": "/"}}},
                        },
                    ]
                }
            ),
            "spec.http[0].route[1].headers.request.set[\":path\"]: pseudo-header ':path' cannot "
            "be modified",
        ),
        # header operations
        (
            http_vs(to_reviews(headers={"request": {"set": {":path": "/x"}}})),
            """spec.http[0].headers.request.set[":path"]: pseudo-header ':path' cannot be """
            """modified""",
        ),
        (
            http_vs(to_reviews(headers={"request": {"remove": ["Host"]}})),
            "spec.http[0].headers.request.remove[0]: the host header cannot be modified here",
        ),
        (
            http_vs(to_reviews(headers={"request": {"remove": [":authority"]}})),
            "spec.http[0].headers.request.remove[0]: pseudo-header ':authority' cannot be modified",
        ),
        (
            http_vs(to_reviews(headers={"response": {"set": {"host": "x"}}})),
            "spec.http[0].headers.response.set.host: the host header cannot be modified here",
        ),
        (
            http_vs(to_reviews(headers={"response": {"add": {":status": "200"}}})),
            """spec.http[0].headers.response.add[":status"]: pseudo-header ':status' cannot be """
            """modified""",
        ),
        (
            http_vs(to_reviews(headers={"response": {"remove": [":status"]}})),
            "spec.http[0].headers.response.remove[0]: pseudo-header ':status' cannot be modified",
        ),
        (
            http_vs(to_reviews(headers={"request": {"set": {"x-a": "50%"}}})),
            "spec.http[0].headers.request.set[\"x-a\"]: invalid '%' at position 2 in header value "
            "'50%': write '%%' for a literal '%', or use a known variable such as %HOSTNAME% or "
            "%REQ(x-name)%",
        ),
        (
            http_vs(to_reviews(headers={"request": {"set": {"x-a": "a\r\nb: c"}}})),
            'spec.http[0].headers.request.set["x-a"]: header value contains a NUL, CR or LF '
            "character",
        ),
        (
            http_vs(to_reviews(headers={"request": {"set": {"x-a": 1}}})),
            'spec.http[0].headers.request.set["x-a"]: expected a string, got integer 1',
        ),
        (
            http_vs(to_reviews(headers={"request": {"set": {"X-A": "1", "x-a": "2"}}})),
            """spec.http[0].headers.request.set["x-a"]: duplicate header 'x-a'""",
        ),
        (
            http_vs(to_reviews(headers={"request": {"set": {"x y": "1"}}})),
            """spec.http[0].headers.request.set["x y"]: invalid header name 'x y'""",
        ),
        (
            http_vs(
                to_reviews(headers={"request": {"set": {"host": "a"}, "add": {":authority": "b"}}})
            ),
            'spec.http[0].headers.request.add[":authority"]: the authority is set more than once',
        ),
        (
            http_vs(to_reviews(headers={"request": {"set": {"host": "a\nb"}}})),
            "spec.http[0].headers.request.set.host: contains a NUL, CR or LF character",
        ),
        (
            http_vs(
                to_reviews(headers={"request": {"set": {"host": "a"}}}, rewrite={"authority": "b"})
            ),
            "spec.http[0].headers.request: the authority is also set by rewrite.authority; set it "
            "in one place",
        ),
        (
            http_vs(to_reviews(headers={"request": {"append": {}}})),
            'spec.http[0].headers.request.append: unknown field "append"',
        ),
        (
            http_vs(to_reviews(headers={"request": {"remove": "x"}})),
            "spec.http[0].headers.request.remove: expected a list, got string 'x'",
        ),
        (
            http_vs(to_reviews(headers={"request": {"set": {"x-a": "v" * 16385}}})),
            'spec.http[0].headers.request.set["x-a"]: header value is longer than 16384 bytes',
        ),
        (
            http_vs(to_reviews(headers={"response": {"remove": ["x" * 16385]}})),
            "spec.http[0].headers.response.remove[0]: header name is longer than 16384 bytes",
        ),
        (
            http_vs(
                to_reviews(
                    headers={
                        "response": {
                            "set": {f"s{i}": "v" for i in range(500)},
                            "add": {f"a{i}": "v" for i in range(501)},
                        }
                    }
                )
            ),
            "spec.http[0].headers.response: more than 1000 headers to set and add",
        ),
        (
            http_vs(to_reviews(match=[{"queryParams": {"q" * 1025: {}}}])),
            f"spec.http[0].match[0].queryParams.{'q' * 1025}: query parameter name is longer "
            "than 1024 bytes",
        ),
        # rewrite, redirect, direct response
        (
            http_vs(to_reviews(rewrite={})),
            "spec.http[0].rewrite: one of uri, authority is required",
        ),
        (
            http_vs(to_reviews(rewrite={"uriRegexRewrite": {"match": "a", "rewrite": "b"}})),
            "spec.http[0].rewrite.uriRegexRewrite: not supported",
        ),
        (
            http_vs(to_reviews(rewrite={"uri": "/a\n"})),
            "spec.http[0].rewrite.uri: contains a NUL, CR or LF character",
        ),
        (
            http_vs({"redirect": {}}),
            "spec.http[0].redirect: one of uri, authority, scheme, port is required",
        ),
        (
            http_vs({"redirect": {"uri": "/", "redirectCode": 300}}),
            "spec.http[0].redirect.redirectCode: 300 is not a redirect code Envoy can send (301, "
            "302, "
            "303, 307, 308)",
        ),
        (
            http_vs({"redirect": {"uri": "/", "redirectCode": 200}}),
            "spec.http[0].redirect.redirectCode: 200 is not a redirect code Envoy can send (301, "
            "302, "
            "303, 307, 308)",
        ),
        (
            http_vs({"redirect": {"scheme": "ftp"}}),
            """spec.http[0].redirect.scheme: invalid scheme 'ftp' ("http" or "https")""",
        ),
        (
            http_vs({"redirect": {"port": 99999}}),
            "spec.http[0].redirect.port: 99999 is outside 1-65535",
        ),
        (
            http_vs({"redirect": {"port": 80, "derivePort": "FROM_REQUEST_PORT"}}),
            "spec.http[0].redirect: only one of port, derivePort may be set (got port and "
            "derivePort)",
        ),
        (
            http_vs({"redirect": {"uri": "/", "derivePort": "FROM_REQUEST_PORT"}}),
            "spec.http[0].redirect.derivePort: FROM_REQUEST_PORT is not supported",
        ),
        (
            http_vs({"redirect": {"uri": "/", "derivePort": "OTHER"}}),
            "spec.http[0].redirect.derivePort: unknown value 'OTHER' (FROM_PROTOCOL_DEFAULT or "
            "FROM_REQUEST_PORT)",
        ),
        (
            http_vs({"redirect": {"uri": "/", "derivePort": 1}}),
            "spec.http[0].redirect.derivePort: expected a string, got integer 1",
        ),
        (
            http_vs({"redirect": {"prefixRewrite": "/v2"}}),
            "spec.http[0].redirect.prefixRewrite: not supported",
        ),
        (http_vs({"directResponse": {}}), "spec.http[0].directResponse.status: required"),
        (
            http_vs({"directResponse": {"status": 199}}),
            "spec.http[0].directResponse.status: 199 is outside 200-599",
        ),
        (
            http_vs({"directResponse": {"status": 600}}),
            "spec.http[0].directResponse.status: 600 is outside 200-599",
        ),
        (
            http_vs({"directResponse": {"status": 200, "body": {}}}),
            "spec.http[0].directResponse.body: one of string, bytes is required",
        ),
        (
            http_vs({"directResponse": {"status": 200, "body": {"string": "a", "bytes": "YQ=="}}}),
            "spec.http[0].directResponse.body: only one of string, bytes may be set (got string "
            "and "
            "bytes)",
        ),
        (
            http_vs({"directResponse": {"status": 200, "body": {"string": "x" * 4097}}}),
            "spec.http[0].directResponse.body.string: body is 4097 bytes; Envoy's limit is 4096",
        ),
        (
            http_vs({"directResponse": {"status": 200, "body": {"string": "é" * 2049}}}),
            "spec.http[0].directResponse.body.string: body is 4098 bytes; Envoy's limit is 4096",
        ),
        (
            http_vs({"directResponse": {"status": 200, "body": {"bytes": "%%%"}}}),
            "spec.http[0].directResponse.body.bytes: not base64",
        ),
        (
            http_vs(
                {
                    "directResponse": {
                        "status": 200,
                        "body": {"bytes": base64.b64encode(b"\xff").decode()},
                    }
                }
            ),
            "spec.http[0].directResponse.body.bytes: not UTF-8 text",
        ),
        (
            http_vs(
                {
                    "directResponse": {
                        "status": 200,
                        "body": {"bytes": base64.b64encode(b"x" * 4097).decode()},
                    }
                }
            ),
            "spec.http[0].directResponse.body.bytes: body is 4097 bytes; Envoy's limit is 4096",
        ),
        # timeout, retries
        (
            http_vs(to_reviews(timeout="0.5ms")),
            "spec.http[0].timeout: duration '0.5ms' is shorter than 1ms",
        ),
        (http_vs(to_reviews(timeout="-1s")), "spec.http[0].timeout: negative duration '-1s'"),
        (
            http_vs(to_reviews(timeout="5")),
            """spec.http[0].timeout: invalid duration '5' (for example "1.5s", "100ms", "1m")""",
        ),
        (http_vs(to_reviews(timeout=5)), "spec.http[0].timeout: expected a string, got integer 5"),
        (
            http_vs(to_reviews(retries={"attempts": -1})),
            "spec.http[0].retries.attempts: -1 is outside 0-2147483647",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 0, "retryOn": "5xx"})),
            "spec.http[0].retries.retryOn: set although attempts is 0 (retries disabled)",
        ),
        (
            http_vs(to_reviews(retries={"perTryTimeout": "1s"})),
            "spec.http[0].retries.perTryTimeout: set although attempts is 0 (retries disabled)",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 0, "retryRemoteLocalities": True})),
            "spec.http[0].retries.retryRemoteLocalities: set although attempts is 0 (retries "
            "disabled)",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 1, "retryOn": "5xx,bogus"})),
            "spec.http[0].retries.retryOn: unknown retry condition 'bogus'",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 1, "retryOn": "5XX"})),
            "spec.http[0].retries.retryOn: unknown retry condition '5XX'",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 1, "retryOn": "600"})),
            "spec.http[0].retries.retryOn: retriable status code 600 is outside 100-599",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 1, "retryOn": "99"})),
            "spec.http[0].retries.retryOn: retriable status code 99 is outside 100-599",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 1, "retryOn": "-503"})),
            "spec.http[0].retries.retryOn: unknown retry condition '-503'",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 1, "retryOn": " , "})),
            "spec.http[0].retries.retryOn: no retry condition given",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 1, "perTryTimeout": "0s"})),
            "spec.http[0].retries.perTryTimeout: duration '0s' is shorter than 1ms",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 1, "retryOn": ["5xx"]})),
            "spec.http[0].retries.retryOn: expected a string, got a list",
        ),
        # fault
        (http_vs(to_reviews(fault={})), "spec.http[0].fault: one of delay, abort is required"),
        (
            http_vs(to_reviews(fault={"delay": {"percentage": {"value": 1}}})),
            "spec.http[0].fault.delay.fixedDelay: required",
        ),
        (
            http_vs(to_reviews(fault={"delay": {"exponentialDelay": "1s"}})),
            "spec.http[0].fault.delay.exponentialDelay: not supported",
        ),
        (
            http_vs(to_reviews(fault={"delay": {"fixedDelay": "0s"}})),
            "spec.http[0].fault.delay.fixedDelay: duration '0s' is shorter than 1ms",
        ),
        (
            http_vs(
                to_reviews(fault={"delay": {"fixedDelay": "1s", "percentage": {"value": 101}}})
            ),
            "spec.http[0].fault.delay.percentage.value: 101 is neither 0 nor within 0.0001-100",
        ),
        (
            http_vs(
                to_reviews(fault={"delay": {"fixedDelay": "1s", "percentage": {"value": 0.00001}}})
            ),
            "spec.http[0].fault.delay.percentage.value: 1e-05 is neither 0 nor within 0.0001-100",
        ),
        (
            http_vs(to_reviews(fault={"delay": {"fixedDelay": "1s", "percentage": {"value": -1}}})),
            "spec.http[0].fault.delay.percentage.value: -1 is neither 0 nor within 0.0001-100",
        ),
        (
            http_vs(
                to_reviews(fault={"delay": {"fixedDelay": "1s", "percentage": {"value": "50"}}})
            ),
            "spec.http[0].fault.delay.percentage.value: expected a number, got string '50'",
        ),
        (
            http_vs(
                to_reviews(
                    fault={"delay": {"fixedDelay": "1s", "percentage": {"value": float("nan")}}}
                )
            ),
            "spec.http[0].fault.delay.percentage.value: nan is not a finite number",
        ),
        (
            http_vs(to_reviews(fault={"delay": {"fixedDelay": "1s", "percentage": 50}})),
            "spec.http[0].fault.delay.percentage: expected an object, got integer 50",
        ),
        (
            http_vs(to_reviews(fault={"delay": {"fixedDelay": "1s", "percent": 101}})),
            "spec.http[0].fault.delay.percent: 101 is outside 0-100",
        ),
        (
            http_vs(to_reviews(fault={"abort": {"percentage": {"value": 1}}})),
            "spec.http[0].fault.abort: one of httpStatus, grpcStatus is required",
        ),
        (
            http_vs(to_reviews(fault={"abort": {"httpStatus": 600}})),
            "spec.http[0].fault.abort.httpStatus: 600 is outside 200-599",
        ),
        (
            http_vs(to_reviews(fault={"abort": {"httpStatus": 199}})),
            "spec.http[0].fault.abort.httpStatus: 199 is outside 200-599",
        ),
        (
            http_vs(to_reviews(fault={"abort": {"grpcStatus": "unavailable"}})),
            "spec.http[0].fault.abort.grpcStatus: unknown gRPC status 'unavailable' (a name such "
            "as "
            "UNAVAILABLE)",
        ),
        (
            http_vs(to_reviews(fault={"abort": {"grpcStatus": 14}})),
            "spec.http[0].fault.abort.grpcStatus: expected a string, got integer 14",
        ),
        (
            http_vs(to_reviews(fault={"abort": {"httpStatus": 500, "grpcStatus": "INTERNAL"}})),
            "spec.http[0].fault.abort: only one of httpStatus, grpcStatus, http2Error may be set "
            "(got "
            "httpStatus and grpcStatus)",
        ),
        (
            http_vs(to_reviews(fault={"abort": {"http2Error": "REFUSED_STREAM"}})),
            "spec.http[0].fault.abort.http2Error: not supported",
        ),
        # mirrors
        (
            http_vs(to_reviews(mirror={"host": "a"}, mirrorPercentage={"value": 100.5})),
            "spec.http[0].mirrorPercentage.value: 100.5 is neither 0 nor within 0.0001-100",
        ),
        (
            http_vs(to_reviews(mirror={"host": "a"}, mirrorPercent=101)),
            "spec.http[0].mirrorPercent: 101 is outside 0-100",
        ),
        (http_vs(to_reviews(mirror={"subset": "v1"})), "spec.http[0].mirror.host: required"),
        (
            http_vs(to_reviews(mirrors=[{"percentage": {"value": 1}}])),
            "spec.http[0].mirrors[0].destination: required",
        ),
        (
            http_vs(
                to_reviews(mirrors=[{"destination": {"host": "a"}, "percentage": {"value": 200}}])
            ),
            "spec.http[0].mirrors[0].percentage.value: 200 is neither 0 nor within 0.0001-100",
        ),
        # CORS
        (
            http_vs(to_reviews(corsPolicy={"allowOrigins": [{}]})),
            "spec.http[0].corsPolicy.allowOrigins[0]: one of exact, prefix, regex is required",
        ),
        (
            http_vs(to_reviews(corsPolicy={"allowOrigins": [{"exact": ""}]})),
            "spec.http[0].corsPolicy.allowOrigins[0].exact: must not be empty",
        ),
        (
            http_vs(to_reviews(corsPolicy={"allowOrigins": [{"regex": REGEX_TOO_BIG}]})),
            f"spec.http[0].corsPolicy.allowOrigins[0].regex: {BIG}",
        ),
        (
            http_vs(to_reviews(corsPolicy={"allowOrigins": [{"regex": "*"}]})),
            "spec.http[0].corsPolicy.allowOrigins[0].regex: invalid RE2 regex: no argument for "
            "repetition "
            "operator: *",
        ),
        (
            http_vs(to_reviews(corsPolicy={"allowOrigin": [""]})),
            "spec.http[0].corsPolicy.allowOrigin[0]: must not be empty",
        ),
        (
            http_vs(to_reviews(corsPolicy={"allowMethods": ["GET", "get"]})),
            "spec.http[0].corsPolicy.allowMethods[1]: unknown HTTP method 'get'",
        ),
        (
            http_vs(to_reviews(corsPolicy={"allowHeaders": ["a b"]})),
            "spec.http[0].corsPolicy.allowHeaders[0]: invalid header name 'a b'",
        ),
        (
            http_vs(to_reviews(corsPolicy={"exposeHeaders": [""]})),
            "spec.http[0].corsPolicy.exposeHeaders[0]: header name must not be empty",
        ),
        (
            http_vs(to_reviews(corsPolicy={"maxAge": "1.5s"})),
            "spec.http[0].corsPolicy.maxAge: must be whole seconds",
        ),
        (
            http_vs(to_reviews(corsPolicy={"allowCredentials": "true"})),
            "spec.http[0].corsPolicy.allowCredentials: expected a boolean, got string 'true'",
        ),
        # tcp
        (
            vs({"hosts": ["db"], "tcp": [{}]}),
            "spec.tcp[0].route: at least one destination is required",
        ),
        (
            vs(
                {
                    "hosts": ["db"],
                    "tcp": [{"route": [{"destination": {"host": "db"}, "headers": {}}]}],
                }
            ),
            'spec.tcp[0].route[0].headers: unknown field "headers"',
        ),
        (
            vs(
                {
                    "hosts": ["db"],
                    "tcp": [
                        {"route": [{"destination": {"host": "a"}}, {"destination": {"host": "b"}}]}
                    ],
                }
            ),
            "spec.tcp[0].route: total weight is zero (give at least one destination a weight)",
        ),
        (
            vs(
                {
                    "hosts": ["db"],
                    "tcp": [{"match": [{"port": 0.5}], "route": [{"destination": {"host": "db"}}]}],
                }
            ),
            "spec.tcp[0].match[0].port: expected an integer, got number 0.5",
        ),
        (
            vs(
                {
                    "hosts": ["db"],
                    "tcp": [{"match": [{"sni": "x"}], "route": [{"destination": {"host": "db"}}]}],
                }
            ),
            'spec.tcp[0].match[0].sni: unknown field "sni"',
        ),
    ],
)
def test_virtual_service_rejections(obj: Any, message: str) -> None:
    assert rejection(obj) == message


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


# --------------------------------------------------------------------------- DestinationRule


def test_destination_rule_whole() -> None:
    obj = dr(
        {
            "trafficPolicy": {
                "loadBalancer": {"simple": "LEAST_REQUEST"},
                "connectionPool": {
                    "tcp": {"maxConnections": 100, "connectTimeout": "30ms", "idleTimeout": "1h"},
                    "http": {
                        "http1MaxPendingRequests": 1,
                        "http2MaxRequests": 2,
                        "maxRequestsPerConnection": 3,
                        "maxRetries": 4,
                        "idleTimeout": "5m",
                    },
                },
                "outlierDetection": {
                    "consecutive5xxErrors": 7,
                    "consecutiveGatewayErrors": 0,
                    "interval": "5m",
                    "baseEjectionTime": "15m",
                    "maxEjectionPercent": 50,
                    "minHealthPercent": 0,
                },
                "portLevelSettings": [
                    {"port": {"number": 80}, "loadBalancer": {"simple": "RANDOM"}},
                    {"port": {"number": 9080}, "connectionPool": {"tcp": {"maxConnections": 10}}},
                ],
            },
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {
                    "name": "v2",
                    "labels": {"version": "v2", "app.kubernetes.io/name": "reviews"},
                    "trafficPolicy": {
                        "loadBalancer": {"simple": "ROUND_ROBIN"},
                        "portLevelSettings": [
                            {
                                "port": {"number": 80},
                                "outlierDetection": {"consecutive5xxErrors": 1},
                            }
                        ],
                    },
                },
                {"name": "all"},
            ],
        }
    )
    parsed = parse_policy(obj, origin="dr.yaml")
    assert (parsed.notices, parsed.applies) == ((), True)
    assert parsed.policy == DestinationPolicy(
        key=PolicyKey("DestinationRule", NS, "reviews-dr"),
        host="reviews",
        policy=TrafficPolicy(
            load_balancer=LoadBalancer(simple="LEAST_REQUEST"),
            connection_pool=ConnectionPool(
                max_connections=100,
                connect_timeout=0.03,
                tcp_idle_timeout=3600.0,
                http1_max_pending_requests=1,
                http2_max_requests=2,
                max_requests_per_connection=3,
                max_retries=4,
                idle_timeout=300.0,
            ),
            outlier_detection=OutlierDetection(
                consecutive_5xx_errors=7,
                consecutive_gateway_errors=0,
                interval=300.0,
                base_ejection_time=900.0,
                max_ejection_percent=50,
                min_health_percent=0,
            ),
        ),
        ports=(
            PortTrafficPolicy(80, TrafficPolicy(load_balancer=LoadBalancer(simple="RANDOM"))),
            PortTrafficPolicy(
                9080, TrafficPolicy(connection_pool=ConnectionPool(max_connections=10))
            ),
        ),
        subsets=(
            Subset("v1", (("version", "v1"),)),
            Subset(
                "v2",
                (("app.kubernetes.io/name", "reviews"), ("version", "v2")),
                TrafficPolicy(load_balancer=LoadBalancer(simple="ROUND_ROBIN")),
                (
                    PortTrafficPolicy(
                        80,
                        TrafficPolicy(outlier_detection=OutlierDetection(consecutive_5xx_errors=1)),
                    ),
                ),
            ),
            Subset("all", ()),
        ),
        origin="dr.yaml",
    )
    # Istio's merge (subset over port over top level) works on what was parsed
    merged = parsed.policy.for_port(80, "v2")  # type: ignore[union-attr]
    assert merged.load_balancer == LoadBalancer(simple="ROUND_ROBIN")
    assert merged.outlier_detection == OutlierDetection(consecutive_5xx_errors=1)


@pytest.mark.parametrize(
    ("lb", "want"),
    [
        ({"simple": "ROUND_ROBIN"}, LoadBalancer(simple="ROUND_ROBIN")),
        ({"simple": "LEAST_CONN"}, LoadBalancer(simple="LEAST_REQUEST")),  # deprecated alias
        ({"simple": "RANDOM"}, LoadBalancer(simple="RANDOM")),
        ({"simple": "UNSPECIFIED"}, None),
        ({}, None),
        (
            {"consistentHash": {"httpHeaderName": "X-User"}},
            LoadBalancer(hash=HashOn(header="x-user")),
        ),
        ({"consistentHash": {"useSourceIp": True}}, LoadBalancer(hash=HashOn(source_ip=True))),
        (
            {"consistentHash": {"httpQueryParameterName": "user"}},
            LoadBalancer(hash=HashOn(query_parameter="user")),
        ),
        (
            {"consistentHash": {"httpCookie": {"name": "session", "ttl": "0s"}}},
            LoadBalancer(hash=HashOn(cookie="session", cookie_ttl=0.0)),
        ),
        (
            {"consistentHash": {"httpCookie": {"name": "s", "path": "/app", "ttl": "1h"}}},
            LoadBalancer(hash=HashOn(cookie="s", cookie_ttl=3600.0, cookie_path="/app")),
        ),
        (
            {"consistentHash": {"httpHeaderName": "x", "ringHash": {"minimumRingSize": 8_388_608}}},
            LoadBalancer(hash=HashOn(header="x"), minimum_ring_size=8_388_608),
        ),
        (
            {"consistentHash": {"httpHeaderName": "x", "ringHash": {}}},
            LoadBalancer(hash=HashOn(header="x")),
        ),
        (
            {"consistentHash": {"httpHeaderName": "x", "minimumRingSize": 1}},  # deprecated form
            LoadBalancer(hash=HashOn(header="x"), minimum_ring_size=1),
        ),
        (
            {"consistentHash": {"httpHeaderName": "x", "maglev": {"tableSize": 65537}}},
            LoadBalancer(hash=HashOn(header="x"), maglev=True, maglev_table_size=65537),
        ),
        (
            {"consistentHash": {"httpHeaderName": "x", "maglev": {"tableSize": 5_000_011}}},
            LoadBalancer(hash=HashOn(header="x"), maglev=True, maglev_table_size=5_000_011),
        ),
        (
            {"consistentHash": {"httpHeaderName": "x", "useSourceIp": False}},  # proto3 false
            LoadBalancer(hash=HashOn(header="x")),
        ),
        (
            {
                "simple": "ROUND_ROBIN",
                "localityLbSetting": {
                    "enabled": True,
                    "distribute": [
                        {
                            "from": "us-west/zone1/*",
                            "to": {"us-west/zone1/*": 80, "us-west/zone2/*": 20},
                        },
                        {"from": "us-west/zone2/*", "to": {"us-west/zone2": 100}},
                    ],
                },
            },
            LoadBalancer(
                simple="ROUND_ROBIN",
                locality=LocalityLb(
                    distribute=(
                        LocalityDistribute(
                            "us-west/zone1/*", (("us-west/zone1/*", 80), ("us-west/zone2/*", 20))
                        ),
                        LocalityDistribute("us-west/zone2/*", (("us-west/zone2", 100),)),
                    )
                ),
            ),
        ),
        (
            {
                "localityLbSetting": {
                    "failover": [
                        {"from": "us-east", "to": "eu-west"},
                        {"from": "us-west", "to": "us-east"},
                    ]
                }
            },
            LoadBalancer(
                locality=LocalityLb(
                    failover=(
                        LocalityFailover("us-east", "eu-west"),
                        LocalityFailover("us-west", "us-east"),
                    )
                )
            ),
        ),
        (
            {"localityLbSetting": {"enabled": False}},
            LoadBalancer(locality=LocalityLb(enabled=False)),
        ),
        ({"localityLbSetting": {}}, LoadBalancer(locality=LocalityLb())),
        (
            {
                "consistentHash": {"httpHeaderName": "x"},
                "localityLbSetting": {"distribute": [{"from": "*", "to": {"a": 100}}]},
            },
            LoadBalancer(
                hash=HashOn(header="x"),
                locality=LocalityLb(distribute=(LocalityDistribute("*", (("a", 100),)),)),
            ),
        ),
    ],
)
def test_load_balancer(lb: dict[str, Any], want: LoadBalancer | None) -> None:
    policy = top_policy(loadBalancer=lb)
    assert (policy.load_balancer if policy else None) == want


@pytest.mark.parametrize(
    ("pool", "want"),
    [
        ({"tcp": {"maxConnections": 0}}, None),  # Istio: 0 is unset, never a limit of 0
        ({"http": {"http2MaxRequests": 0, "maxRetries": 0}}, None),
        ({"tcp": {"idleTimeout": "0s"}}, ConnectionPool(tcp_idle_timeout=0.0)),
        (
            {"http": {"http1MaxPendingRequests": 2147483647}},
            ConnectionPool(http1_max_pending_requests=2147483647),
        ),
        ({"http": {"h2UpgradePolicy": "DEFAULT", "useClientProtocol": False}}, None),
    ],
)
def test_connection_pool(pool: dict[str, Any], want: ConnectionPool | None) -> None:
    policy = top_policy(connectionPool=pool)
    assert (policy.connection_pool if policy else None) == want


@pytest.mark.parametrize(
    ("outlier", "want"),
    [
        ({}, OutlierDetection()),
        ({"maxEjectionPercent": 0}, OutlierDetection()),  # Istio: 0 is Envoy's default
        (
            {"maxEjectionPercent": 100, "minHealthPercent": 100},
            OutlierDetection(max_ejection_percent=100, min_health_percent=100),
        ),
        ({"consecutive5xxErrors": 0}, OutlierDetection(consecutive_5xx_errors=0)),  # disabled
        (
            {"consecutiveGatewayErrors": 4294967295},
            OutlierDetection(consecutive_gateway_errors=4294967295),
        ),
        (
            {"interval": "1ms", "baseEjectionTime": "1ms"},
            OutlierDetection(interval=0.001, base_ejection_time=0.001),
        ),
    ],
)
def test_outlier_detection(outlier: dict[str, Any], want: OutlierDetection) -> None:
    policy = top_policy(outlierDetection=outlier)
    assert policy is not None and policy.outlier_detection == want


def dr_with(**spec: Any) -> dict[str, Any]:
    return dr(spec)


def tp(**traffic: Any) -> dict[str, Any]:
    return dr({"trafficPolicy": traffic})


def lb(**fields: Any) -> dict[str, Any]:
    return tp(loadBalancer=fields)


def ch(**fields: Any) -> dict[str, Any]:
    return lb(consistentHash=fields)


def loc(**fields: Any) -> dict[str, Any]:
    return lb(localityLbSetting=fields)


TP = "spec.trafficPolicy"
LB = f"{TP}.loadBalancer"
CH = f"{LB}.consistentHash"
LOC = f"{LB}.localityLbSetting"


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({**dr({}), "spec": {}}, "spec.host: required"),
        (
            dr({"host": "*.example.com"}),
            "spec.host: wildcard hosts are not supported ('*.example.com')",
        ),
        (dr({"host": "Reviews"}), "spec.host: invalid host 'Reviews' (a lowercase DNS name)"),
        (dr({"hots": "x"}), 'spec.hots: unknown field "hots" (did you mean "host"?)'),
        (dr({"trafficPolicy": {}}), f"{TP}: must set at least one field"),
        (dr({"trafficPolicy": []}), f"{TP}: expected an object, got a list"),
        (
            tp(loadbalancer={}),
            f'{TP}.loadbalancer: unknown field "loadbalancer" (did you mean "loadBalancer"?)',
        ),
        # load balancer
        (lb(simple="PASSTHROUGH"), f"{LB}.simple: PASSTHROUGH is not supported"),
        (
            lb(simple="round_robin"),
            f"{LB}.simple: unknown value 'round_robin' (ROUND_ROBIN, LEAST_REQUEST, RANDOM)",
        ),
        (lb(simple=1), f"{LB}.simple: expected a string, got integer 1"),
        (
            lb(simple="RANDOM", consistentHash={"useSourceIp": True}),
            f"{LB}: only one of simple, consistentHash may be set (got simple and consistentHash)",
        ),
        (
            ch(),
            f"{CH}: one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is "
            "required",
        ),
        (
            ch(useSourceIp=False),
            f"{CH}: one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is "
            "required",
        ),
        (
            ch(httpHeaderName="x", useSourceIp=True),
            f"{CH}: only one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName "
            "may "
            "be set (got httpHeaderName and useSourceIp)",
        ),
        (ch(httpHeaderName=""), f"{CH}.httpHeaderName: header name must not be empty"),
        (ch(httpHeaderName="x y"), f"{CH}.httpHeaderName: invalid header name 'x y'"),
        (ch(httpQueryParameterName=""), f"{CH}.httpQueryParameterName: must not be empty"),
        (ch(httpCookie={}), f"{CH}.httpCookie.name: required"),
        (ch(httpCookie={"name": "a;b"}), f"{CH}.httpCookie.name: invalid cookie name 'a;b'"),
        (
            ch(httpCookie={"name": "a", "ttl": "-1s"}),
            f"{CH}.httpCookie.ttl: negative duration '-1s'",
        ),
        (
            ch(httpCookie={"name": "a", "path": "/\n"}),
            f"{CH}.httpCookie.path: contains a NUL, CR or LF character",
        ),
        (
            ch(httpHeaderName="x", ringHash={"minimumRingSize": 8_388_609}),
            f"{CH}.ringHash.minimumRingSize: 8388609 is outside 0-8388608",
        ),
        (
            ch(httpHeaderName="x", minimumRingSize=-1),
            f"{CH}.minimumRingSize: -1 is outside 0-8388608",
        ),
        (
            ch(httpHeaderName="x", ringHash={}, maglev={"tableSize": 7}),
            f"{CH}: only one of ringHash, maglev may be set (got ringHash and maglev)",
        ),
        (
            ch(httpHeaderName="x", ringHash={}, minimumRingSize=1024),
            f"{CH}.minimumRingSize: cannot be combined with ringHash; use ringHash",
        ),
        (ch(httpHeaderName="x", maglev={}), f"{CH}.maglev.tableSize: required"),
        (
            ch(httpHeaderName="x", maglev={"tableSize": 65536}),
            f"{CH}.maglev.tableSize: 65536 is not a prime number",
        ),
        (
            ch(httpHeaderName="x", maglev={"tableSize": 1}),
            f"{CH}.maglev.tableSize: 1 is not a prime number",
        ),
        (
            ch(httpHeaderName="x", maglev={"tableSize": 5_000_017}),
            f"{CH}.maglev.tableSize: 5000017 is outside 1-5000011",
        ),
        # locality
        (
            loc(distribute=[{"from": "a", "to": {"a": 100}}], failover=[{"from": "a", "to": "b"}]),
            f"{LOC}: distribute and failover cannot both be set",
        ),
        (loc(distribute=[{"to": {"a": 100}}]), f"{LOC}.distribute[0].from: required"),
        (
            loc(distribute=[{"from": "a", "to": {"a": 50, "b": 40}}]),
            f"{LOC}.distribute[0].to: weights add up to 90, not 100",
        ),
        (
            loc(distribute=[{"from": "a", "to": {"a": 0, "b": 100}}]),
            f"{LOC}.distribute[0].to.a: 0 is outside 1-100",
        ),
        (
            loc(distribute=[{"from": "a", "to": {}}]),
            f"{LOC}.distribute[0].to: weights add up to 0, not 100",
        ),
        (
            loc(distribute=[{"from": "us-*", "to": {"a": 100}}]),
            f"{LOC}.distribute[0].from: invalid locality 'us-*' (no empty parts; '*' only as the "
            "last "
            "part)",
        ),
        (
            loc(distribute=[{"from": "a//b", "to": {"a": 100}}]),
            f"{LOC}.distribute[0].from: invalid locality 'a//b' (no empty parts; '*' only as the "
            "last "
            "part)",
        ),
        (
            loc(distribute=[{"from": "a/b/c/d", "to": {"a": 100}}]),
            f"{LOC}.distribute[0].from: invalid locality 'a/b/c/d' (region/zone/subzone)",
        ),
        (
            loc(distribute=[{"from": "a", "to": {"a/b": 50, "a/*": 50}}]),
            f'{LOC}.distribute[0].to["a/*"]: locality a overlaps a/b',
        ),
        (
            loc(distribute=[{"from": "a/*", "to": {"x": 100}}, {"from": "a/b", "to": {"x": 100}}]),
            f"{LOC}.distribute[1].from: locality a/b overlaps a",
        ),
        (
            loc(distribute=[{"from": "*", "to": {"x": 100}}, {"from": "b", "to": {"x": 100}}]),
            f"{LOC}.distribute[1].from: locality b overlaps *",
        ),
        (loc(failover=[{"from": "a"}]), f"{LOC}.failover[0].to: required"),
        (
            loc(failover=[{"from": "a", "to": "a"}]),
            f"{LOC}.failover[0]: from and to must be different regions",
        ),
        (
            loc(failover=[{"from": "a/z", "to": "b"}]),
            f"{LOC}.failover[0].from: 'a/z' is not a region (no '/' or '*')",
        ),
        (
            loc(failover=[{"from": "a", "to": "*"}]),
            f"{LOC}.failover[0].to: '*' is not a region (no '/' or '*')",
        ),
        (loc(enabled="true"), f"{LOC}.enabled: expected a boolean, got string 'true'"),
        # connection pool
        (tp(connectionPool={}), f"{TP}.connectionPool: one of tcp, http is required"),
        (
            tp(connectionPool={"tcp": {"maxConnections": -1}}),
            f"{TP}.connectionPool.tcp.maxConnections: -1 is outside 0-2147483647",
        ),
        (
            tp(connectionPool={"tcp": {"connectTimeout": "0s"}}),
            f"{TP}.connectionPool.tcp.connectTimeout: duration '0s' is shorter than 1ms",
        ),
        (
            tp(connectionPool={"tcp": {"idleTimeout": "0.1ms"}}),
            f"{TP}.connectionPool.tcp.idleTimeout: duration '0.1ms' is shorter than 1ms",
        ),
        (
            tp(connectionPool={"http": {"idleTimeout": "0s"}}),
            f"{TP}.connectionPool.http.idleTimeout: duration '0s' is shorter than 1ms",
        ),
        (
            tp(connectionPool={"http": {"http2MaxRequests": "1"}}),
            f"{TP}.connectionPool.http.http2MaxRequests: expected an integer, got string '1'",
        ),
        (
            tp(connectionPool={"http": {"maxRequestsPerConnection": -1}}),
            f"{TP}.connectionPool.http.maxRequestsPerConnection: -1 is outside 0-2147483647",
        ),
        (
            tp(connectionPool={"http": {"http1MaxPendingRequest": 1}}),
            f"{TP}.connectionPool.http.http1MaxPendingRequest: unknown field "
            '"http1MaxPendingRequest" (did you mean "http1MaxPendingRequests"?)',
        ),
        # outlier detection
        (
            tp(outlierDetection={"consecutive5xxErrors": -1}),
            f"{TP}.outlierDetection.consecutive5xxErrors: -1 is outside 0-4294967295",
        ),
        (
            tp(outlierDetection={"consecutiveGatewayErrors": 2**32}),
            f"{TP}.outlierDetection.consecutiveGatewayErrors: 4294967296 is outside 0-4294967295",
        ),
        (
            tp(outlierDetection={"interval": "0s"}),
            f"{TP}.outlierDetection.interval: duration '0s' is shorter than 1ms",
        ),
        (
            tp(outlierDetection={"baseEjectionTime": "1"}),
            f"""{TP}.outlierDetection.baseEjectionTime: invalid duration '1' (for example """
            """"1.5s", """
            """"100ms", "1m")""",
        ),
        (
            tp(outlierDetection={"maxEjectionPercent": 101}),
            f"{TP}.outlierDetection.maxEjectionPercent: 101 is outside 0-100",
        ),
        (
            tp(outlierDetection={"minHealthPercent": -1}),
            f"{TP}.outlierDetection.minHealthPercent: -1 is outside 0-100",
        ),
        # port level settings
        (
            tp(portLevelSettings=[{"loadBalancer": {"simple": "RANDOM"}}]),
            f"{TP}.portLevelSettings[0].port: required",
        ),
        (
            tp(portLevelSettings=[{"port": {"number": 80}}]),
            f"{TP}.portLevelSettings[0]: one of loadBalancer, connectionPool, outlierDetection, "
            "tls "
            "is required",
        ),
        (
            tp(portLevelSettings=[{"port": {"number": 80}, "tls": {}, "portLevelSettings": []}]),
            f'{TP}.portLevelSettings[0].portLevelSettings: unknown field "portLevelSettings"',
        ),
        (
            tp(
                portLevelSettings=[
                    {"port": {"number": 80}, "loadBalancer": {"simple": "RANDOM"}},
                    {"port": {"number": 80}, "tls": {}},
                ]
            ),
            f"{TP}.portLevelSettings[1].port: duplicate port 80",
        ),
        (
            tp(
                portLevelSettings=[{"port": {"number": 80}, "outlierDetection": {"interval": "0s"}}]
            ),
            f"{TP}.portLevelSettings[0].outlierDetection.interval: duration '0s' is shorter than "
            "1ms",
        ),
        # subsets
        (dr({"subsets": [{"labels": {"v": "1"}}]}), "spec.subsets[0].name: required"),
        (
            dr({"subsets": [{"name": "V1"}]}),
            "spec.subsets[0].name: invalid subset name 'V1' (a lowercase DNS label)",
        ),
        (
            dr({"subsets": [{"name": "v1.0"}]}),
            "spec.subsets[0].name: invalid subset name 'v1.0' (a lowercase DNS label)",
        ),
        (
            dr({"subsets": [{"name": "v1"}, {"name": "v1"}]}),
            "spec.subsets[1].name: duplicate subset name 'v1'",
        ),
        (
            dr({"subsets": [{"name": "v1", "labels": {"version": 1}}]}),
            "spec.subsets[0].labels.version: expected a string, got integer 1",
        ),
        (
            dr({"subsets": [{"name": "v1", "labels": {"bad key": "x"}}]}),
            """spec.subsets[0].labels["bad key"]: invalid label key 'bad key'""",
        ),
        (
            dr({"subsets": [{"name": "v1", "labels": {"Example.com/x": "x"}}]}),
            """spec.subsets[0].labels["Example.com/x"]: invalid label key 'Example.com/x'""",
        ),
        (
            dr({"subsets": [{"name": "v1", "labels": {"v": "a b"}}]}),
            "spec.subsets[0].labels.v: invalid label value 'a b'",
        ),
        (
            dr({"subsets": [{"name": "v1", "labels": {"v": "x" * 64}}]}),
            f"spec.subsets[0].labels.v: invalid label value '{'x' * 64}'",
        ),
        (
            dr({"subsets": [{"name": "v1", "trafficPolicy": {}}]}),
            "spec.subsets[0].trafficPolicy: must set at least one field",
        ),
        (
            dr({"subsets": [{"name": "v1", "trafficPolicy": {"loadBalancer": {"simple": "X"}}}]}),
            "spec.subsets[0].trafficPolicy.loadBalancer.simple: unknown value 'X' (ROUND_ROBIN, "
            "LEAST_REQUEST, "
            "RANDOM)",
        ),
        (
            dr(
                {
                    "subsets": [
                        {
                            "name": "v1",
                            "trafficPolicy": {
                                "portLevelSettings": [{"port": {"number": 0}, "tls": {}}]
                            },
                        }
                    ]
                }
            ),
            "spec.subsets[0].trafficPolicy.portLevelSettings[0].port.number: 0 is outside 1-65535",
        ),
        (dr({"subsets": {"v1": {}}}), "spec.subsets: expected a list, got an object"),
    ],
)
def test_destination_rule_rejections(obj: dict[str, Any], message: str) -> None:
    assert rejection(obj) == message


def test_destination_rule_notices() -> None:
    obj = dr(
        {
            "exportTo": ["."],
            "trafficPolicy": {
                "tls": {"mode": "ISTIO_MUTUAL"},
                "tunnel": {"targetHost": "x", "targetPort": 1},
                "proxyProtocol": {"version": "V2"},
                "retryBudget": {"percent": 20},
                "loadBalancer": {
                    "simple": "ROUND_ROBIN",
                    "warmupDurationSecs": "60s",
                    "localityLbSetting": {"failoverPriority": ["topology.kubernetes.io/region"]},
                },
                "connectionPool": {
                    "tcp": {"tcpKeepalive": {"time": "7200s"}, "maxConnectionDuration": "1h"},
                    "http": {
                        "h2UpgradePolicy": "UPGRADE",
                        "useClientProtocol": True,
                        "maxConcurrentStreams": 5,
                    },
                },
                "outlierDetection": {
                    "consecutiveErrors": 5,
                    "splitExternalLocalOriginErrors": True,
                },
                "portLevelSettings": [{"port": {"number": 443}, "tls": {"mode": "SIMPLE"}}],
            },
            "subsets": [
                {
                    "name": "v1",
                    "trafficPolicy": {
                        "loadBalancer": {
                            "consistentHash": {
                                "httpCookie": {"name": "c", "attributes": [{"name": "SameSite"}]}
                            }
                        }
                    },
                }
            ],
        }
    )
    parsed = parse_policy(obj)
    assert parsed.applies
    assert [str(n) for n in parsed.notices] == [
        "spec.exportTo: not supported; ignored",
        f"{TP}.tls: not supported; ignored",
        f"{TP}.tunnel: not supported; ignored",
        f"{TP}.proxyProtocol: not supported; ignored",
        f"{TP}.retryBudget: not supported; ignored",
        f"{TP}.portLevelSettings[0].tls: not supported; ignored",
        f"{LB}.warmupDurationSecs: not supported; ignored",
        f"{LOC}.failoverPriority: not supported; ignored",
        f"{TP}.connectionPool.tcp.tcpKeepalive: not supported; ignored",
        f"{TP}.connectionPool.tcp.maxConnectionDuration: not supported; ignored",
        f"{TP}.connectionPool.http.h2UpgradePolicy: not supported; ignored",
        f"{TP}.connectionPool.http.useClientProtocol: not supported; ignored",
        f"{TP}.connectionPool.http.maxConcurrentStreams: not supported; ignored",
        f"{TP}.outlierDetection.consecutiveErrors: not supported; ignored",
        f"{TP}.outlierDetection.splitExternalLocalOriginErrors: not supported; ignored",
        "spec.subsets[0].trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes: not "
        "supported; "
        "ignored",
    ]
    policy = parsed.policy
    assert isinstance(policy, DestinationPolicy)
    assert policy.policy == TrafficPolicy(
        load_balancer=LoadBalancer(simple="ROUND_ROBIN", locality=LocalityLb()),
        outlier_detection=OutlierDetection(),
    )
    assert policy.ports == (PortTrafficPolicy(443, TrafficPolicy()),)
    assert policy.subsets == (
        Subset("v1", (), TrafficPolicy(load_balancer=LoadBalancer(hash=HashOn(cookie="c")))),
    )


def test_tls_only_traffic_policy_is_none() -> None:
    assert parse_dr(trafficPolicy={"tls": {"mode": "DISABLE"}}).policy is None


def test_workload_selector_destination_rule_applies_to_nothing() -> None:
    obj = dr(
        {
            "workloadSelector": {"matchLabels": {"app": "web"}},
            "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}},
            "subsets": [{"name": "v1", "labels": {"version": "v1"}}],
        }
    )
    parsed = parse_policy(obj, "x")
    assert not parsed.applies
    assert parsed.policy == DestinationPolicy(
        PolicyKey("DestinationRule", NS, "reviews-dr"), "reviews", origin="x"
    )
    assert [str(n) for n in parsed.notices] == [
        "spec.workloadSelector: applies only to the selected workloads; selecting workloads is "
        "not supported, so it is not applied"
    ]
    # still validated whole
    obj["spec"]["subsets"][0]["name"] = "V1"
    assert (
        rejection(obj) == "spec.subsets[0].name: invalid subset name 'V1' (a lowercase DNS label)"
    )


# --------------------------------------------------------------------------- property tests

LABEL = st.from_regex(r"[a-z]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
HOST = st.one_of(LABEL, st.builds(lambda a, b: f"{a}.{b}", LABEL, LABEL))
HEADER = st.from_regex(r"x-[a-z0-9-]{1,8}", fullmatch=True)
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00\r\n%"), max_size=12)
REGEXES = st.sampled_from(["/v[0-9]+", "[a-z]+", "^(a|b)$", ".*", "\\d{1,3}", "a" * 96])
DURATION = st.builds(
    lambda n, unit: f"{n}{unit}", st.integers(1, 5000), st.sampled_from(["ms", "s", "m", "h"])
)
PERCENT = st.one_of(st.just(0), st.floats(0.0001, 100), st.integers(1, 100))


def string_match(present: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    options = [
        st.builds(lambda v: {"exact": v}, TEXT),
        st.builds(lambda v: {"prefix": v}, TEXT.filter(bool)),
        st.builds(lambda v: {"regex": v}, REGEXES),
    ]
    return st.one_of(*options, st.builds(dict)) if present else st.one_of(*options)


MATCH = st.fixed_dictionaries(
    {},
    optional={
        "name": LABEL,
        "uri": string_match(present=False),
        "method": string_match(),
        "authority": string_match(),
        "headers": st.dictionaries(HEADER, string_match(), max_size=3),
        "withoutHeaders": st.dictionaries(HEADER, string_match(), max_size=2),
        "queryParams": st.dictionaries(LABEL, string_match(), max_size=2),
        "ignoreUriCase": st.booleans(),
        "port": st.integers(1, 65535),
    },
)
DESTINATION = st.fixed_dictionaries(
    {"host": HOST},
    optional={"subset": LABEL, "port": st.builds(lambda n: {"number": n}, st.integers(1, 65535))},
)
HEADER_OPS = st.fixed_dictionaries(
    {},
    optional={
        side: st.fixed_dictionaries(
            {},
            optional={
                "set": st.dictionaries(HEADER, TEXT, max_size=2),
                "add": st.dictionaries(HEADER, TEXT, max_size=2),
                "remove": st.lists(HEADER, max_size=2),
            },
        )
        for side in ("request", "response")
    },
)


@st.composite
def weighted(draw: st.DrawFn, headers: bool) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 4))
    weights = draw(st.lists(st.integers(0, 1000), min_size=count, max_size=count))
    if count > 1 and not any(weights):
        weights[0] = 1
    out = []
    for weight in weights:
        entry: dict[str, Any] = {"destination": draw(DESTINATION)}
        if count > 1 or draw(st.booleans()):
            entry["weight"] = weight
        if headers and draw(st.booleans()):
            entry["headers"] = draw(HEADER_OPS)
        out.append(entry)
    return out


HTTP_RULE = st.fixed_dictionaries(
    {"route": weighted(headers=True)},
    optional={
        "name": LABEL,
        "match": st.lists(MATCH, max_size=3),
        "timeout": st.one_of(DURATION, st.just("0s")),
        "retries": st.one_of(
            st.builds(lambda: {"attempts": 0}),
            st.fixed_dictionaries(
                {"attempts": st.integers(1, 10)},
                optional={
                    "perTryTimeout": DURATION,
                    "retryOn": st.lists(
                        st.one_of(
                            st.sampled_from(sorted(RETRY_ON_TOKENS)), st.integers(100, 599).map(str)
                        ),
                        min_size=1,
                        max_size=4,
                    ).map(",".join),
                },
            ),
        ),
        "fault": st.one_of(
            st.builds(
                lambda d, p: {"delay": {"fixedDelay": d, "percentage": {"value": p}}},
                DURATION,
                PERCENT,
            ),
            st.builds(
                lambda s, p: {"abort": {"httpStatus": s, "percentage": {"value": p}}},
                st.integers(200, 599),
                PERCENT,
            ),
            st.builds(
                lambda s: {"abort": {"grpcStatus": s, "percentage": {"value": 100}}},
                st.sampled_from(GRPC_STATUS_NAMES),
            ),
        ),
        "mirror": DESTINATION,
        "mirrors": st.lists(
            st.fixed_dictionaries(
                {"destination": DESTINATION},
                optional={"percentage": st.builds(lambda p: {"value": p}, PERCENT)},
            ),
            max_size=2,
        ),
        "rewrite": st.fixed_dictionaries({"uri": st.just("/new")}, optional={"authority": HOST}),
        "corsPolicy": st.fixed_dictionaries(
            {},
            optional={
                "allowOrigins": st.lists(
                    string_match(present=False).filter(lambda m: m.get("exact", "x")), max_size=2
                ),
                "allowMethods": st.lists(st.sampled_from(sorted(CORS_METHODS)), max_size=3),
                "allowHeaders": st.lists(HEADER, max_size=2),
                "maxAge": st.integers(1, 100000).map(lambda n: f"{n}s"),
                "allowCredentials": st.booleans(),
            },
        ),
        "headers": HEADER_OPS,
    },
)
OTHER_RULE = st.one_of(
    st.fixed_dictionaries(
        {
            "redirect": st.fixed_dictionaries(
                {"uri": st.just("/moved")},
                optional={
                    "authority": HOST,
                    "scheme": st.sampled_from(["http", "https"]),
                    "port": st.integers(1, 65535),
                    "redirectCode": st.sampled_from([301, 302, 303, 307, 308]),
                },
            )
        },
        optional={"match": st.lists(MATCH, max_size=2), "headers": HEADER_OPS},
    ),
    st.fixed_dictionaries(
        {
            "directResponse": st.fixed_dictionaries(
                {"status": st.integers(200, 599)},
                optional={"body": st.builds(lambda t: {"string": t}, TEXT)},
            )
        },
        optional={"match": st.lists(MATCH, max_size=2), "corsPolicy": st.builds(dict)},
    ),
)
TCP_RULE = st.fixed_dictionaries(
    {"route": weighted(headers=False)},
    optional={
        "match": st.lists(
            st.fixed_dictionaries({}, optional={"port": st.integers(1, 65535)}), max_size=3
        )
    },
)
VIRTUAL_SERVICE = st.builds(
    lambda hosts, http, tcp, ns: {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "gen", "namespace": ns},
        "spec": {"hosts": hosts, "http": http, "tcp": tcp},
    },
    st.lists(HOST, min_size=1, max_size=3, unique=True),
    st.lists(st.one_of(HTTP_RULE, HTTP_RULE, OTHER_RULE), min_size=1, max_size=4),
    st.lists(TCP_RULE, max_size=2),
    LABEL,
)

LB_SETTINGS = st.one_of(
    st.builds(
        lambda s: {"simple": s},
        st.sampled_from(["ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN", "RANDOM"]),
    ),
    st.builds(
        lambda key, algo: {"consistentHash": {**key, **algo}},
        st.one_of(
            st.builds(lambda h: {"httpHeaderName": h}, HEADER),
            st.builds(lambda: {"useSourceIp": True}),
            st.builds(lambda q: {"httpQueryParameterName": q}, LABEL),
            st.builds(lambda c, t: {"httpCookie": {"name": c, "ttl": t}}, LABEL, DURATION),
        ),
        st.one_of(
            st.builds(dict),
            st.builds(lambda n: {"ringHash": {"minimumRingSize": n}}, st.integers(1, 8_388_608)),
            st.builds(
                lambda n: {"maglev": {"tableSize": n}}, st.sampled_from([2, 3, 65537, 5_000_011])
            ),
        ),
    ),
)
POOL = st.fixed_dictionaries(
    {
        "tcp": st.fixed_dictionaries(
            {}, optional={"maxConnections": st.integers(0, 10**6), "connectTimeout": DURATION}
        )
    },
    optional={
        "http": st.fixed_dictionaries(
            {},
            optional={
                "http1MaxPendingRequests": st.integers(0, 10**6),
                "http2MaxRequests": st.integers(0, 10**6),
                "maxRequestsPerConnection": st.integers(0, 100),
                "maxRetries": st.integers(0, 100),
                "idleTimeout": DURATION,
            },
        )
    },
)
OUTLIER = st.fixed_dictionaries(
    {},
    optional={
        "consecutive5xxErrors": st.integers(0, 100),
        "consecutiveGatewayErrors": st.integers(0, 100),
        "interval": DURATION,
        "baseEjectionTime": DURATION,
        "maxEjectionPercent": st.integers(0, 100),
        "minHealthPercent": st.integers(0, 100),
    },
)
TRAFFIC_POLICY = st.fixed_dictionaries(
    {"loadBalancer": LB_SETTINGS},
    optional={"connectionPool": POOL, "outlierDetection": OUTLIER},
)


@st.composite
def destination_rules(draw: st.DrawFn) -> dict[str, Any]:
    def with_ports(policy: dict[str, Any]) -> dict[str, Any]:
        ports = draw(st.lists(st.integers(1, 65535), max_size=3, unique=True))
        if ports:
            policy["portLevelSettings"] = [
                {"port": {"number": p}, **draw(TRAFFIC_POLICY)} for p in ports
            ]
        return policy

    spec: dict[str, Any] = {"host": draw(HOST)}
    if draw(st.booleans()):
        spec["trafficPolicy"] = with_ports(draw(TRAFFIC_POLICY))
    names = draw(st.lists(LABEL, max_size=4, unique=True))
    spec["subsets"] = [
        {
            "name": name,
            "labels": draw(st.dictionaries(LABEL, LABEL, max_size=3)),
            **({"trafficPolicy": with_ports(draw(TRAFFIC_POLICY))} if draw(st.booleans()) else {}),
        }
        for name in names
    ]
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "DestinationRule",
        "metadata": {"name": "gen"},
        "spec": spec,
    }


def expected_weights(route: list[dict[str, Any]]) -> list[int]:
    if len(route) == 1:
        return [100]
    kept = [r["weight"] for r in route if r.get("weight")]
    return [100] if len(kept) == 1 else kept


@settings(max_examples=150, deadline=None)
@given(VIRTUAL_SERVICE)
def test_generated_virtual_services_parse(obj: dict[str, Any]) -> None:
    parsed = parse_policy(obj)
    policy = parsed.policy
    assert isinstance(policy, RoutePolicy)
    spec = obj["spec"]
    assert policy.hosts == tuple(spec["hosts"])
    assert policy.key.namespace == obj["metadata"]["namespace"]
    assert len(policy.http) == len(spec["http"])
    for rule, raw in zip(policy.http, spec["http"], strict=True):
        assert len(rule.matches) == len(raw.get("match", []))
        assert (rule.redirect is None, rule.direct_response is None) == (
            "redirect" not in raw,
            "directResponse" not in raw,
        )
        if "route" not in raw:
            assert rule.destinations == ()
            continue
        assert [d.weight for d in rule.destinations] == expected_weights(raw["route"])
        assert {d.destination.namespace for d in rule.destinations} == {
            obj["metadata"]["namespace"]
        }
        if "timeout" in raw:
            assert rule.timeout == parse_duration(raw["timeout"])
        if "retries" in raw:
            assert rule.retry is not None and rule.retry.attempts == raw["retries"]["attempts"]
        assert len(rule.mirrors) == ("mirror" in raw) + sum(
            1 for m in raw.get("mirrors", []) if m.get("percentage", {"value": 1})["value"]
        )
    assert len(policy.tcp) == sum(max(1, len(r.get("match", []))) for r in spec["tcp"])
    # the only notices a valid object can get: a fault without a percentage
    assert all(n.message.startswith("no percentage") for n in parsed.notices)


@settings(max_examples=150, deadline=None)
@given(destination_rules())
def test_generated_destination_rules_parse(obj: dict[str, Any]) -> None:
    parsed = parse_policy(obj)
    assert (parsed.notices, parsed.applies) == ((), True)
    policy = parsed.policy
    assert isinstance(policy, DestinationPolicy)
    spec = obj["spec"]
    assert policy.host == spec["host"]
    assert [s.name for s in policy.subsets] == [s["name"] for s in spec["subsets"]]
    assert [dict(s.labels) for s in policy.subsets] == [s["labels"] for s in spec["subsets"]]
    raw_ports = [
        p["port"]["number"] for p in spec.get("trafficPolicy", {}).get("portLevelSettings", [])
    ]
    assert [p.port for p in policy.ports] == raw_ports
    if "trafficPolicy" in spec:
        lb = spec["trafficPolicy"]["loadBalancer"]
        top = policy.policy
        assert top is not None and top.load_balancer is not None
        assert (top.load_balancer.hash is not None) == ("consistentHash" in lb)


def message_paths(node: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """The paths of the objects in `node` that are Istio messages (not maps of names)."""
    maps = {"labels", "queryParams", "withoutHeaders", "set", "add", "to", "metadata"}
    out: list[tuple[str | int, ...]] = []
    if isinstance(node, dict):
        last = path[-1] if path else None
        is_map = last in maps or (last == "headers" and len(path) > 2 and path[-3] == "match")
        if not is_map:
            out.append(path)
        for key, value in node.items():
            out += message_paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += message_paths(value, (*path, i))
    return out


def scalar_paths(node: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in scalar_paths(v, (*path, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in scalar_paths(v, (*path, i))]
    return [path]


def at(obj: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        obj = obj[part]
    return obj


@settings(max_examples=150, deadline=None)
@given(st.one_of(VIRTUAL_SERVICE, destination_rules()), st.data())
def test_an_unknown_field_anywhere_is_named(obj: dict[str, Any], data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(message_paths(obj)))
    at(obj, path)["zzUnknown"] = 1
    with pytest.raises(PolicyError) as caught:
        parse_policy(obj)
    assert caught.value.path == (*path, "zzUnknown")
    assert caught.value.reason == 'unknown field "zzUnknown"'


@settings(max_examples=150, deadline=None)
@given(st.one_of(VIRTUAL_SERVICE, destination_rules()), st.data())
def test_a_wrong_type_anywhere_is_named(obj: dict[str, Any], data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(scalar_paths(obj)))
    parent = at(obj, path[:-1])
    parent[path[-1]] = [1]
    with pytest.raises(PolicyError) as caught:
        parse_policy(obj)
    assert caught.value.path == path
    assert caught.value.reason.startswith("expected ") or caught.value.reason.startswith(
        "unsupported "
    )
    assert caught.value.reason.endswith(", got a list") or "[1]" in caught.value.reason


# --------------------------------------------------------------------------- Envoy as the judge


def envoy_config(
    routes: list[dict[str, Any]] | None = None, cluster: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A static bootstrap whose only virtual host has `routes` (to cluster "backend", which
    gets `cluster` merged in), with the fault filter before the router."""
    boot = static_bootstrap(10000, 10001, 10002)
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    if routes is not None:
        hcm["route_config"]["virtual_hosts"][0]["routes"] = routes
    hcm["http_filters"].insert(
        0,
        {
            "name": "envoy.filters.http.fault",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
            },
        },
    )
    boot["static_resources"]["clusters"][0].update(cluster or {})
    return boot


def envoy_rejection(tmp_path: Path, boot: dict[str, Any]) -> str | None:
    """None if Envoy accepts `boot`, else its error output."""
    try:
        validate_bootstrap(boot, tmp_path)
    except AssertionError as exc:
        return str(exc)
    return None


def to_backend(match: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"match": match, "route": {"cluster": "backend"}, **extra}


REGEX_CASES = [
    *(f"[a-z]{{{n}}}" for n in range(92, 100)),  # program sizes 96..103
    *("a" * n for n in range(94, 100)),
    "/api/(users|orders)/[0-9a-f]{8}$",
    ".*\\.(png|jpg|gif)$",
    "(foo|bar|baz)+/v[0-9]{1,3}",
    "(?i)/hello/.*",
    "(?P<id>[0-9]+)",
    "(?<id>[0-9]+)",
    "\\p{Greek}+",
    "[[:alpha:]]+",
    "\\bword\\b",
    "x*?y",
    "a{1000}",
    "(a|b|c|d|e|f|g|h){5}",
    "a(",
    "(?=x)",
    "\\8",
]


def test_envoy_accepts_exactly_the_regexes_check_regex_accepts(tmp_path: Path) -> None:
    """Envoy is the judge: every regex check_regex accepts is accepted by Envoy (as a path
    and as a header matcher), every one it rejects, for program size or syntax, is not."""
    accepted = [p for p in REGEX_CASES if check_regex(p) is None]
    too_big = [p for p in REGEX_CASES if (check_regex(p) or "").startswith("regex program size")]
    invalid = [p for p in REGEX_CASES if (check_regex(p) or "").startswith("invalid RE2")]
    assert len(accepted) >= 10 and len(too_big) >= 6 and len(invalid) >= 3
    assert len(accepted) + len(too_big) + len(invalid) == len(REGEX_CASES)
    # the parser hands Envoy what it accepted
    obj = http_vs(
        to_reviews(
            match=[{"uri": {"regex": p}, "headers": {"x-a": {"regex": p}}} for p in accepted]
        )
    )
    matches = parse_policy(obj).policy.http[0].matches  # type: ignore[union-attr]
    routes = [
        to_backend(
            {
                "safe_regex": {"regex": m.uri.value},  # type: ignore[union-attr]
                "headers": [
                    {
                        "name": "x-a",
                        "string_match": {"safe_regex": {"regex": m.headers[0].match.value}},
                    }
                ],
            }
        )
        for m in matches
    ]
    assert len(routes) == len(accepted)
    assert envoy_rejection(tmp_path, envoy_config(routes)) is None
    for pattern in too_big + invalid:
        output = envoy_rejection(
            tmp_path, envoy_config([to_backend({"safe_regex": {"regex": pattern}})])
        )
        assert output is not None, f"Envoy accepted {pattern!r}, which check_regex rejects"
        if pattern in too_big:
            assert "RE2 program size" in output


def test_envoy_accepts_the_header_values_we_accept(tmp_path: Path) -> None:
    values = [f"%{name}%" for name in sorted(HEADER_VARIABLES)]
    values += ["%REQ(x-request-id)%", "%REQ(:authority)%", "a 100%% b", "", "plain"]
    values += ["v" * MAX_HEADER_BYTES]
    assert all(header_value_problem(v) is None for v in values)
    ops = [{"header": {"key": f"x-v{i}", "value": v}} for i, v in enumerate(values)]
    route = to_backend({"prefix": "/"}, request_headers_to_add=ops, response_headers_to_add=ops)
    assert envoy_rejection(tmp_path, envoy_config([route])) is None
    many = [{"header": {"key": f"x-{i}", "value": "v"}} for i in range(MAX_HEADERS_TO_ADD)]
    assert (
        envoy_rejection(
            tmp_path, envoy_config([to_backend({"prefix": "/"}, request_headers_to_add=many)])
        )
        is None
    )
    many.append({"header": {"key": "x-last", "value": "v"}})
    assert envoy_rejection(
        tmp_path, envoy_config([to_backend({"prefix": "/"}, request_headers_to_add=many)])
    )
    query = {
        "prefix": "/",
        "query_parameters": [{"name": "q" * MAX_QUERY_NAME_BYTES, "present_match": True}],
    }
    assert envoy_rejection(tmp_path, envoy_config([to_backend(query)])) is None
    query["query_parameters"][0]["name"] += "q"  # type: ignore[index]
    assert envoy_rejection(tmp_path, envoy_config([to_backend(query)]))
    for bad in ["100%", "%FOO%", "%REQUEST_PROTOCOL%", "v" * (MAX_HEADER_BYTES + 1)]:
        assert header_value_problem(bad) is not None
        ops = [{"header": {"key": "x-a", "value": bad}}]
        assert envoy_rejection(
            tmp_path, envoy_config([to_backend({"prefix": "/"}, request_headers_to_add=ops)])
        )


@pytest.mark.parametrize("name", ["host", ":authority", ":path", ":method", ":scheme", ":status"])
def test_envoy_refuses_the_header_modifications_we_refuse(tmp_path: Path, name: str) -> None:
    for side in ("request", "response"):
        for verb, envoy_field, op in (
            ("set", f"{side}_headers_to_add", {"header": {"key": name, "value": "v"}}),
            ("remove", f"{side}_headers_to_remove", name),
        ):
            if side == "request" and verb == "set" and name in ("host", ":authority"):
                continue  # the parser turns these into an authority rewrite
            ops = {verb: [name]} if verb == "remove" else {verb: {name: "v"}}
            with pytest.raises(PolicyError):
                parse_policy(http_vs(to_reviews(headers={side: ops})))
            route = to_backend({"prefix": "/"}, **{envoy_field: [op]})
            assert envoy_rejection(tmp_path, envoy_config([route])), (side, verb, name)


def test_envoy_direct_response_limits_are_ours(tmp_path: Path) -> None:
    def direct(status: int, body: str) -> dict[str, Any]:
        return {
            "match": {"prefix": "/"},
            "direct_response": {"status": status, "body": {"inline_string": body}},
        }

    limit = "x" * MAX_DIRECT_RESPONSE_BODY
    for status in (200, 599):
        parse_policy(http_vs({"directResponse": {"status": status, "body": {"string": limit}}}))
        assert envoy_rejection(tmp_path, envoy_config([direct(status, limit)])) is None
    for status, body in ((199, ""), (600, ""), (200, limit + "x")):
        with pytest.raises(PolicyError):
            parse_policy(http_vs({"directResponse": {"status": status, "body": {"string": body}}}))
        assert envoy_rejection(tmp_path, envoy_config([direct(status, body)]))


def test_envoy_load_balancer_limits_are_ours(tmp_path: Path) -> None:
    def accepted(lb: dict[str, Any]) -> bool:
        return (
            parse_dr(
                trafficPolicy={"loadBalancer": {"consistentHash": {"useSourceIp": True, **lb}}}
            )
            is not None
        )

    ring = {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": MAX_RING_SIZE}}
    assert accepted({"ringHash": {"minimumRingSize": MAX_RING_SIZE}})
    assert envoy_rejection(tmp_path, envoy_config(cluster=ring)) is None
    ring["ring_hash_lb_config"] = {"minimum_ring_size": MAX_RING_SIZE + 1}
    assert envoy_rejection(tmp_path, envoy_config(cluster=ring))
    with pytest.raises(PolicyError):
        accepted({"ringHash": {"minimumRingSize": MAX_RING_SIZE + 1}})
    for size, prime in (
        (2, True),
        (65537, True),
        (MAX_MAGLEV_TABLE_SIZE, True),
        (65536, False),
        (9, False),
    ):
        maglev = {"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": size}}
        if prime:
            assert accepted({"maglev": {"tableSize": size}})
            assert envoy_rejection(tmp_path, envoy_config(cluster=maglev)) is None
        else:
            with pytest.raises(PolicyError):
                accepted({"maglev": {"tableSize": size}})
            assert "prime" in (envoy_rejection(tmp_path, envoy_config(cluster=maglev)) or "")


def test_envoy_accepts_the_longest_duration_we_accept(tmp_path: Path) -> None:
    longest = parse_duration(f"{MAX_DURATION_SECONDS}s")
    text = f"{longest:.0f}s"
    route = to_backend(
        {"prefix": "/"},
        typed_per_filter_config={
            "envoy.filters.http.fault": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                "delay": {"fixed_delay": text, "percentage": {"numerator": 1}},
            }
        },
    )
    route["route"].update(
        timeout=text,
        idle_timeout=text,
        retry_policy={"per_try_timeout": text},
        hash_policy=[{"cookie": {"name": "c", "ttl": text}}],
    )
    cluster = {
        "connect_timeout": text,
        "outlier_detection": {"interval": text, "base_ejection_time": text},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "common_http_protocol_options": {"idle_timeout": text},
                "explicit_http_config": {"http_protocol_options": {}},
            }
        },
    }
    assert envoy_rejection(tmp_path, envoy_config([route], cluster)) is None
    route["route"]["timeout"] = f"{MAX_DURATION_SECONDS + 1}s"
    assert "out-of-range" in (envoy_rejection(tmp_path, envoy_config([route], cluster)) or "")
