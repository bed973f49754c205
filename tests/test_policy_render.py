"""Policy renderers (translators/policy_routes.py, policy_clusters.py): the messages they
build for Envoy and for proxyless gRPC, field by field; and that the real Envoy accepts
what they build (``envoy --mode validate`` over a static bootstrap holding the rendered
routes and clusters), for a representative set and for generated policies.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from envoy.type.v3 import percent_pb2
from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.harness.backends import GrpcBackend
from tests.harness.envoy import validate_bootstrap
from tests.harness.grpc_xds import GrpcXdsClient, grpc_bootstrap
from tests.harness.ports import free_port
from tests.harness.waiting import wait_for
from tests.harness.xds import XdsServerThread
from translators import names
from translators import resources as rb
from translators.policy_actions import default_retry_policy
from translators.policy_clusters import (
    apply_traffic_policy,
    locality_load_assignment,
    locality_priorities,
    subset_endpoints,
)
from translators.policy_common import Client, NotApplied, RouteTarget, fractional_percent
from translators.policy_routes import (
    default_route,
    http_routes,
    tcp_target,
)
from xds_server import types, validation
from xds_server.model import (
    ConnectionPool,
    Cors,
    Destination,
    DirectResponse,
    Endpoint,
    Fault,
    HashOn,
    HeaderMatch,
    HeaderOps,
    HttpRule,
    LoadBalancer,
    Locality,
    LocalityDistribute,
    LocalityFailover,
    LocalityLb,
    Mirror,
    OutlierDetection,
    Port,
    QueryMatch,
    Redirect,
    RequestMatch,
    Retry,
    Rewrite,
    Service,
    ServiceEntry,
    StringMatch,
    TcpRule,
    TrafficPolicy,
    WeightedDestination,
    labels,
)

pytest_plugins = ["tests.harness.fixtures"]

SUBJECT = "VirtualService shop/reviews"
UINT32_MAX = 2**32 - 1
FAULT = "envoy.filters.http.fault"
CORS = "envoy.filters.http.cors"

# ------------------------------------------------------------------------ helpers


def dest(host: str = "reviews", subset: str = "", port: int | None = None) -> Destination:
    return Destination(host, "shop", port, subset)


def wd(
    host: str = "reviews", subset: str = "", weight: int = 100, **kw: Any
) -> WeightedDestination:
    return WeightedDestination(dest(host, subset), weight, **kw)


def cluster_of(d: Destination) -> str:
    base = f"{d.host}.{d.namespace}:{d.port or 80}"
    return names.subset_cluster_name(base, d.subset) if d.subset else base


def resolver(hashing: dict[str, HashOn] | None = None) -> Any:
    """Destinations resolve to ``<host>.<ns>:<port>[|<subset>]``; hosts in `hashing` hash."""

    def resolve(d: Destination) -> RouteTarget:
        return RouteTarget(cluster_of(d), (hashing or {}).get(d.host))

    return resolve


def render(
    *rules: HttpRule,
    client: Client = "envoy",
    port: int = 80,
    hashing: dict[str, HashOn] | None = None,
) -> tuple[list[rc.Route], list[NotApplied]]:
    return http_routes(rules, port=port, resolve=resolver(hashing), client=client, subject=SUBJECT)


def route_of(rule: HttpRule, client: Client = "envoy", **kw: Any) -> rc.Route:
    routes, _ = render(rule, client=client, **kw)
    assert len(routes) == 1, routes
    return routes[0]


def notes_of(rule: HttpRule, client: Client = "grpc") -> list[str]:
    return [n.what for n in render(rule, client=client)[1]]


def to_dict(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return out


def forward(*matches: RequestMatch, **kw: Any) -> HttpRule:
    kw.setdefault("destinations", (wd(),))
    return HttpRule(matches=matches, **kw)


def prefix(value: str, **kw: Any) -> RequestMatch:
    return RequestMatch(uri=StringMatch("prefix", value), **kw)


def unpack(any_msg: Any, cls: type[Message]) -> Any:
    out = cls()
    assert any_msg.Unpack(out)
    return out


# ---------------------------------------------------------------------- matching


def test_uri_matches_and_ignore_case() -> None:
    routes, _ = render(
        forward(
            RequestMatch(uri=StringMatch("exact", "/a")),
            RequestMatch(uri=StringMatch("prefix", "/b"), ignore_uri_case=True),
            RequestMatch(uri=StringMatch("regex", "/c/[0-9]+")),
        )
    )
    assert [r.match.WhichOneof("path_specifier") for r in routes] == [
        "path",
        "prefix",
        "safe_regex",
    ]
    assert routes[0].match.path == "/a" and not routes[0].match.HasField("case_sensitive")
    assert routes[1].match.prefix == "/b" and routes[1].match.case_sensitive.value is False
    assert routes[2].match.safe_regex.regex == "/c/[0-9]+"
    # RE2 is the default engine; the deprecated explicit google_re2 field stays unset.
    assert not routes[2].match.safe_regex.HasField("google_re2")


def test_headers_pseudo_headers_and_inversion() -> None:
    match = RequestMatch(
        headers=(
            HeaderMatch("x-z", StringMatch("regex", "a.+")),
            HeaderMatch("end-user", StringMatch("exact", "jason")),
            HeaderMatch("x-gone", StringMatch("present"), invert=True),
            HeaderMatch("x-not", StringMatch("prefix", "b"), invert=True),
            HeaderMatch("x-any", StringMatch("present")),
        ),
        method=StringMatch("exact", "GET"),
        authority=StringMatch("prefix", "shop."),
        scheme=StringMatch("exact", "https"),
    )
    headers = {h.name: h for h in route_of(forward(match)).match.headers}
    order = [h.name for h in route_of(forward(match)).match.headers]
    assert order == [
        "end-user",
        "x-any",
        "x-gone",
        "x-not",
        "x-z",
        ":method",
        ":authority",
        ":scheme",
    ]
    assert headers["end-user"].string_match.exact == "jason"
    assert headers["x-z"].string_match.safe_regex.regex == "a.+"
    assert headers["x-any"].present_match and not headers["x-any"].invert_match
    assert headers["x-gone"].present_match and headers["x-gone"].invert_match
    assert not headers["x-gone"].treat_missing_header_as_empty
    # "must not match" holds when the header is missing too.
    assert headers["x-not"].invert_match and headers["x-not"].treat_missing_header_as_empty
    assert headers["x-not"].string_match.prefix == "b"
    assert headers[":method"].string_match.exact == "GET"
    assert headers[":authority"].string_match.prefix == "shop."
    assert headers[":scheme"].string_match.exact == "https"


def test_grpc_inverted_value_match_becomes_absent_or_not_matching() -> None:
    """gRPC fails an inverted match on a missing header: two routes keep the meaning."""
    rule = forward(
        RequestMatch(
            headers=(
                HeaderMatch("a", StringMatch("exact", "1"), invert=True),
                HeaderMatch("b", StringMatch("exact", "2")),
            )
        )
    )
    routes, notes = render(rule, client="grpc")
    assert notes == []
    assert len(routes) == 2
    a_matchers = [r.match.headers[0] for r in routes]
    assert [m.WhichOneof("header_match_specifier") for m in a_matchers] == [
        "string_match",
        "present_match",
    ]
    assert a_matchers[0].invert_match and a_matchers[0].string_match.exact == "1"
    assert a_matchers[1].present_match is False and not a_matchers[1].invert_match
    assert all(r.match.headers[1].string_match.exact == "2" for r in routes)
    assert len(render(rule, client="envoy")[0]) == 1


def test_query_parameters_for_envoy_left_out_for_grpc() -> None:
    rule = forward(
        prefix(
            "/q",
            query=(
                QueryMatch("v", StringMatch("exact", "2")),
                QueryMatch("d", StringMatch("present")),
            ),
        ),
        prefix("/other"),
    )
    q = route_of(forward(rule.matches[0])).match.query_parameters
    assert [(p.name, p.WhichOneof("query_parameter_match_specifier")) for p in q] == [
        ("v", "string_match"),
        ("d", "present_match"),
    ]
    assert q[0].string_match.exact == "2"
    routes, notes = render(rule, client="grpc")
    assert [r.match.prefix for r in routes] == ["/other"]
    assert notes == [
        NotApplied(
            f"{SUBJECT} http[0] match[0]",
            "query parameter match: not applied to gRPC clients (route left out)",
        )
    ]


def test_one_route_per_alternative_in_order_with_names() -> None:
    rules = [
        HttpRule(
            name="canary",
            matches=(prefix("/a", name="first"), prefix("/b")),
            destinations=(wd(subset="v2"),),
        ),
        HttpRule(matches=(prefix("/c"),), destinations=(wd(subset="v1"),)),
    ]
    routes, _ = render(*rules)
    assert [r.match.prefix for r in routes] == ["/a", "/b", "/c"]
    assert [r.name for r in routes] == [
        f"{SUBJECT} http[0] (canary) match[0] (first)",
        f"{SUBJECT} http[0] (canary) match[1]",
        f"{SUBJECT} http[1]",
    ]
    assert routes[0].route == routes[1].route
    assert routes[0].route.cluster == "reviews.shop:80|v2"
    assert routes[2].route.cluster == "reviews.shop:80|v1"


def test_port_restricted_alternatives() -> None:
    rules = [
        forward(prefix("/only9090", port=9090)),
        forward(prefix("/both"), prefix("/on80", port=80), prefix("/on9090", port=9090)),
    ]
    on80, _ = render(*rules, port=80)
    on9090, _ = render(*rules, port=9090)
    assert [r.match.prefix for r in on80] == ["/both", "/on80"]
    assert [r.match.prefix for r in on9090] == ["/only9090", "/both", "/on9090"]


def test_nothing_follows_a_catch_all() -> None:
    rules = [
        forward(prefix("/a"), prefix("/"), prefix("/never")),
        forward(prefix("/never-either")),
    ]
    assert [r.match.prefix for r in render(*rules)[0]] == ["/a", "/"]
    rules = [forward(prefix("/a")), HttpRule(destinations=(wd(),)), forward(prefix("/never"))]
    assert [r.match.prefix for r in render(*rules)[0]] == ["/a", "/"]
    # A route with a header condition is not a catch-all, nor a regex other than ".*".
    rules = [
        forward(RequestMatch(headers=(HeaderMatch("x", StringMatch("exact", "1")),))),
        forward(RequestMatch(uri=StringMatch("regex", ".*"))),
        forward(prefix("/never")),
    ]
    assert len(render(*rules)[0]) == 2
    # Left out for gRPC (a redirect), a catch-all still ends the rules.
    rules = [HttpRule(redirect=Redirect(uri="/x")), forward(prefix("/never"))]
    assert render(*rules, client="grpc")[0] == []


# ------------------------------------------------------------------ destinations


def test_single_destination_and_weighted_split() -> None:
    single = route_of(forward(prefix("/"), destinations=(wd(subset="v1", weight=0),)))
    assert single.route.cluster == "reviews.shop:80|v1"
    split = route_of(
        forward(
            prefix("/"),
            destinations=(
                wd(subset="v1", weight=90),
                wd(subset="v3", weight=0),
                wd("ratings", weight=10),
            ),
        )
    ).route
    assert split.WhichOneof("cluster_specifier") == "weighted_clusters"
    assert [(c.name, c.weight.value) for c in split.weighted_clusters.clusters] == [
        ("reviews.shop:80|v1", 90),
        ("ratings.shop:80", 10),
    ]
    assert not split.weighted_clusters.HasField("total_weight")


def test_no_positive_weight_means_no_route_never_empty_weighted_clusters() -> None:
    rule = forward(prefix("/"), destinations=(wd(subset="a", weight=0), wd(subset="b", weight=0)))
    for client in ("envoy", "grpc"):
        routes, notes = render(rule, client=client)
        assert routes == [] and len(notes) == 1 and "positive weight" in notes[0].what


def test_header_operations_route_and_weighted_clusters() -> None:
    overwrite = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    append = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
    rule = forward(
        prefix("/"),
        headers=HeaderOps(
            request_set=(("x-set", "1"), (":path", "/no")),
            request_add=(("x-add", "2"),),
            request_remove=("x-rm", "host"),
            response_set=(("x-rs", "3"),),
            response_add=(("x-ra", "4"),),
            response_remove=("x-rr",),
        ),
        destinations=(
            wd(
                subset="v1",
                weight=50,
                headers=HeaderOps(request_set=(("x-v", "1"), ("host", "v1.example"))),
            ),
            wd(subset="v2", weight=50, headers=HeaderOps(response_remove=("x-secret",))),
        ),
    )
    route = route_of(rule)
    assert [
        (h.header.key, h.header.value, h.append_action) for h in route.request_headers_to_add
    ] == [
        ("x-set", "1", overwrite),
        ("x-add", "2", append),
    ]
    assert list(route.request_headers_to_remove) == ["x-rm"]  # Envoy NACKs removing host
    assert [(h.header.key, h.append_action) for h in route.response_headers_to_add] == [
        ("x-rs", overwrite),
        ("x-ra", append),
    ]
    assert list(route.response_headers_to_remove) == ["x-rr"]
    v1, v2 = route.route.weighted_clusters.clusters
    assert [h.header.key for h in v1.request_headers_to_add] == ["x-v"]
    assert v1.host_rewrite_literal == "v1.example"  # a Host header set is a host rewrite
    assert list(v2.response_headers_to_remove) == ["x-secret"]
    assert not route.route.host_rewrite_literal
    assert notes_of(rule) == ["header operations: not applied to gRPC clients"]
    grpc = route_of(rule, "grpc")
    assert not grpc.request_headers_to_add
    assert not grpc.route.weighted_clusters.clusters[0].host_rewrite_literal


def test_single_destination_header_ops_and_authority() -> None:
    rule = forward(
        prefix("/"),
        headers=HeaderOps(request_add=((":authority", "rule.example"),)),
        destinations=(
            wd(headers=HeaderOps(request_set=(("x-d", "1"), (":authority", "dest.example")))),
        ),
    )
    route = route_of(rule)
    assert [h.header.key for h in route.request_headers_to_add] == ["x-d"]
    assert route.route.host_rewrite_literal == "rule.example"  # the rule's wins (as Istio)


# --------------------------------------------------------------------- timeouts


def test_timeout_envoy() -> None:
    unset = route_of(forward(prefix("/"))).route
    assert unset.HasField("timeout") and unset.timeout.ToNanoseconds() == 0
    assert unset.max_stream_duration.HasField("grpc_timeout_header_max")
    assert unset.max_stream_duration.grpc_timeout_header_max.ToNanoseconds() == 0
    assert not unset.max_stream_duration.HasField("max_stream_duration")
    set_ = route_of(forward(prefix("/"), timeout=1.25)).route
    assert set_.timeout.ToMilliseconds() == 1250
    # Envoy ignores `timeout` on a route with max_stream_duration ("new timeouts").
    assert not set_.HasField("max_stream_duration")


def test_timeout_grpc_reads_max_stream_duration() -> None:
    unset = route_of(forward(prefix("/")), "grpc").route
    assert not unset.HasField("max_stream_duration")
    set_ = route_of(forward(prefix("/"), timeout=0.5), "grpc").route
    assert set_.max_stream_duration.max_stream_duration.ToMilliseconds() == 500
    assert not set_.max_stream_duration.HasField("grpc_timeout_header_max")


# ---------------------------------------------------------------------- retries

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"


def test_default_retry_policy_envoy() -> None:
    # Envoy routes that keep the default carry no policy: the virtual host's applies.
    assert not route_of(forward(prefix("/"))).route.HasField("retry_policy")
    policy = default_retry_policy()
    assert policy.retry_on == DEFAULT_RETRY_ON
    assert policy.num_retries.value == 2
    assert policy.host_selection_retry_max_attempts == 5
    assert not policy.retriable_status_codes and not policy.HasField("per_try_timeout")
    assert [p.name for p in policy.retry_host_predicate] == [
        "envoy.retry_host_predicates.previous_hosts"
    ]
    assert policy.retry_host_predicate[0].HasField("typed_config")


def test_retry_attempts_zero_means_no_retries() -> None:
    # Envoy: an empty policy replaces the virtual host's default whole (no conditions,
    # no retries); gRPC has no virtual-host default here, and NACKs num_retries 0.
    envoy = route_of(forward(prefix("/"), retry=Retry(0)), "envoy").route.retry_policy
    assert envoy.retry_on == "" and envoy.num_retries.value == 0
    assert envoy == type(envoy)(num_retries=envoy.num_retries)
    grpc = route_of(forward(prefix("/"), retry=Retry(0)), "grpc")
    assert not grpc.route.HasField("retry_policy")


def test_retry_policy_from_rule_envoy() -> None:
    retry = Retry(3, per_try_timeout=0.25, retry_on=("5xx", "reset"), status_codes=(503, 429))
    policy = route_of(forward(prefix("/"), retry=retry)).route.retry_policy
    assert policy.retry_on == "5xx,reset,retriable-status-codes"
    assert list(policy.retriable_status_codes) == [503, 429]
    assert policy.num_retries.value == 3
    assert policy.per_try_timeout.ToMilliseconds() == 250
    # Attempts only: Istio's default conditions with the rule's attempts.
    policy = route_of(forward(prefix("/"), retry=Retry(4))).route.retry_policy
    assert policy.retry_on == DEFAULT_RETRY_ON and policy.num_retries.value == 4
    # Codes only: just the status-code condition.
    policy = route_of(forward(prefix("/"), retry=Retry(1, status_codes=(503,)))).route.retry_policy
    assert policy.retry_on == "retriable-status-codes"


def test_retry_keeps_hashed_host() -> None:
    hashing = {"reviews": HashOn(header="x-user")}
    policy = route_of(forward(prefix("/")), hashing=hashing).route.retry_policy
    assert not policy.retry_host_predicate and policy.num_retries.value == 2
    split = forward(prefix("/"), destinations=(wd("ratings", weight=1), wd(weight=1)))
    assert not route_of(split, hashing=hashing).route.retry_policy.retry_host_predicate


def test_retry_policy_grpc() -> None:
    default = route_of(forward(prefix("/")), "grpc").route.retry_policy
    assert default.retry_on == "unavailable,cancelled" and default.num_retries.value == 2
    assert not default.retry_host_predicate and not default.host_selection_retry_max_attempts
    assert notes_of(forward(prefix("/"))) == []

    retry = Retry(
        7, per_try_timeout=1, retry_on=("5xx", "unavailable", "internal"), status_codes=(503,)
    )
    rule = forward(prefix("/"), retry=retry)
    policy = route_of(rule, "grpc").route.retry_policy
    assert policy.retry_on == "unavailable,internal"
    assert policy.num_retries.value == 4  # gRPC caps attempts at 5
    assert not policy.retriable_status_codes and not policy.HasField("per_try_timeout")
    assert notes_of(rule) == [
        "retry on 5xx: not applied to gRPC clients",
        "retry on HTTP status 503: not applied to gRPC clients",
        "per-try timeout: not applied to gRPC clients",
        "7 retries: not applied to gRPC clients (gRPC retries at most 4)",
    ]


def test_grpc_never_gets_an_empty_or_zero_retry_policy() -> None:
    rule = forward(prefix("/"), retry=Retry(2, retry_on=("5xx", "gateway-error")))
    assert not route_of(rule, "grpc").route.HasField("retry_policy")
    assert notes_of(rule) == ["retry on 5xx,gateway-error: not applied to gRPC clients"]


# ------------------------------------------------------------------------ faults


@pytest.mark.parametrize("client", ["envoy", "grpc"])
def test_fault_delay_and_abort(client: Client) -> None:
    rule = forward(
        prefix("/"), fault=Fault(delay=0.3, delay_percent=12.5, abort_http=418, abort_percent=50)
    )
    fault = unpack(route_of(rule, client).typed_per_filter_config[FAULT], fault_pb2.HTTPFault)
    assert fault.delay.fixed_delay.ToMilliseconds() == 300
    assert (fault.delay.percentage.numerator, fault.delay.percentage.denominator) == (
        1250,
        percent_pb2.FractionalPercent.TEN_THOUSAND,
    )
    assert fault.abort.http_status == 418
    assert (fault.abort.percentage.numerator, fault.abort.percentage.denominator) == (
        50,
        percent_pb2.FractionalPercent.HUNDRED,
    )
    grpc_abort = forward(prefix("/"), fault=Fault(abort_grpc="UNAVAILABLE"))
    fault = unpack(route_of(grpc_abort, client).typed_per_filter_config[FAULT], fault_pb2.HTTPFault)
    assert fault.abort.grpc_status == 14 and fault.abort.percentage.numerator == 100
    assert not fault.HasField("delay")
    assert not route_of(forward(prefix("/")), client).typed_per_filter_config


def test_fractional_percent_keeps_decimals() -> None:
    fp = percent_pb2.FractionalPercent
    cases = {
        100: (100, fp.HUNDRED),
        0: (0, fp.HUNDRED),
        0.5: (50, fp.TEN_THOUSAND),
        33.33: (3333, fp.TEN_THOUSAND),
        0.0001: (1, fp.MILLION),
        12.34567: (123457, fp.MILLION),
    }
    for percent, (numerator, denominator) in cases.items():
        got = fractional_percent(percent)
        assert (got.numerator, got.denominator) == (numerator, denominator), percent


# ------------------------------------------------- mirrors, rewrite, CORS, actions


def test_mirrors() -> None:
    rule = forward(
        prefix("/"),
        mirrors=(Mirror(dest(subset="v2"), 0.5), Mirror(dest("ratings")), Mirror(dest("off"), 0)),
    )
    policies = route_of(rule).route.request_mirror_policies
    assert [(p.cluster, p.runtime_fraction.default_value.numerator) for p in policies] == [
        ("reviews.shop:80|v2", 50),
        ("ratings.shop:80", 100),
    ]
    assert (
        policies[0].runtime_fraction.default_value.denominator
        == percent_pb2.FractionalPercent.TEN_THOUSAND
    )
    assert not route_of(rule, "grpc").route.request_mirror_policies
    assert notes_of(rule) == ["mirror: not applied to gRPC clients"]


def test_rewrite() -> None:
    rule = forward(
        RequestMatch(uri=StringMatch("exact", "/old")), rewrite=Rewrite("/new", "api.example")
    )
    action = route_of(rule).route
    # For an exact (or regex) match Envoy's prefix_rewrite replaces the whole path.
    assert action.prefix_rewrite == "/new" and action.host_rewrite_literal == "api.example"
    grpc = route_of(rule, "grpc").route
    assert not grpc.prefix_rewrite and not grpc.host_rewrite_literal
    assert notes_of(rule) == ["rewrite: not applied to gRPC clients"]


def test_redirect() -> None:
    rule = HttpRule(
        matches=(prefix("/old"),), redirect=Redirect("/new", "b.example", "https", 8443, 308)
    )
    redirect = route_of(rule).redirect
    assert (redirect.path_redirect, redirect.host_redirect, redirect.scheme_redirect) == (
        "/new",
        "b.example",
        "https",
    )
    assert redirect.port_redirect == 8443
    assert redirect.response_code == rc.RedirectAction.PERMANENT_REDIRECT
    default_port = route_of(
        HttpRule(redirect=Redirect(uri="/x", scheme="https", port=443))
    ).redirect
    assert default_port.port_redirect == 0
    assert default_port.response_code == rc.RedirectAction.MOVED_PERMANENTLY
    routes, notes = render(rule, client="grpc")
    assert routes == []
    assert [n.what for n in notes] == ["redirect: not applied to gRPC clients (route left out)"]


def test_direct_response() -> None:
    rule = HttpRule(
        matches=(prefix("/teapot"),), direct_response=DirectResponse(418, "short and stout")
    )
    route = route_of(rule)
    assert route.direct_response.status == 418
    assert route.direct_response.body.inline_string == "short and stout"
    assert not route.HasField("route")
    # Faults apply to any route, as Istio's.
    faulty = route_of(HttpRule(direct_response=DirectResponse(200), fault=Fault(delay=1)))
    assert FAULT in faulty.typed_per_filter_config
    routes, notes = render(rule, client="grpc")
    assert routes == [] and [n.what for n in notes] == [
        "direct response: not applied to gRPC clients (route left out)"
    ]


def test_cors() -> None:
    cors = Cors(
        allow_origins=(
            StringMatch("exact", "https://a.example"),
            StringMatch("regex", "https://.*\\.b"),
        ),
        allow_methods=("GET", "POST"),
        allow_headers=("x-a",),
        expose_headers=("x-b", "x-c"),
        max_age=86400,
        allow_credentials=True,
    )
    rule = forward(prefix("/"), cors=cors)
    policy = unpack(route_of(rule).typed_per_filter_config[CORS], cors_pb2.CorsPolicy)
    assert [o.WhichOneof("match_pattern") for o in policy.allow_origin_string_match] == [
        "exact",
        "safe_regex",
    ]
    assert (policy.allow_methods, policy.allow_headers, policy.expose_headers) == (
        "GET,POST",
        "x-a",
        "x-b,x-c",
    )
    assert policy.max_age == "86400" and policy.allow_credentials.value is True
    assert CORS not in route_of(rule, "grpc").typed_per_filter_config
    assert notes_of(rule) == ["CORS policy: not applied to gRPC clients"]


# ------------------------------------------------------------------------ hashing


def test_hash_policies_envoy() -> None:
    hashing = {
        "h": HashOn(header="x-user"),
        "c": HashOn(cookie="session", cookie_ttl=60, cookie_path="/"),
        "s": HashOn(source_ip=True),
        "q": HashOn(query_parameter="user"),
        "h2": HashOn(header="x-user"),
    }
    rule = forward(
        prefix("/"),
        destinations=tuple(wd(h, weight=1) for h in ("h", "c", "s", "q", "h2", "plain")),
    )
    policies = route_of(rule, hashing=hashing).route.hash_policy
    assert [p.WhichOneof("policy_specifier") for p in policies] == [
        "header",
        "cookie",
        "connection_properties",
        "query_parameter",
    ]  # the second x-user header policy is the same policy: once
    assert policies[0].header.header_name == "x-user"
    assert (policies[1].cookie.name, policies[1].cookie.ttl.seconds, policies[1].cookie.path) == (
        "session",
        60,
        "/",
    )
    assert policies[2].connection_properties.source_ip
    assert policies[3].query_parameter.name == "user"
    grpc = route_of(rule, "grpc", hashing=hashing).route.hash_policy
    # gRPC: headers, and its channel for source-IP affinity (one client, one backend).
    assert [p.WhichOneof("policy_specifier") for p in grpc] == ["header", "filter_state"]
    assert grpc[1].filter_state.key == "io.grpc.channel_id"


# ------------------------------------------------------------------ default route


def test_default_route_envoy() -> None:
    route = default_route(RouteTarget("web.default:80"), "envoy")
    assert route.name == "default" and route.match.prefix == "/"
    assert route.route.cluster == "web.default:80"
    assert route.route.HasField("timeout") and route.route.timeout.ToNanoseconds() == 0
    assert not route.route.HasField("retry_policy")  # the virtual host's default applies
    assert not route.route.hash_policy
    hashed = default_route(RouteTarget("web.default:80", HashOn(header="x-user")), "envoy")
    assert hashed.route.hash_policy[0].header.header_name == "x-user"
    # A hashed destination overrides it: the default without previous_hosts.
    assert hashed.route.retry_policy.retry_on == DEFAULT_RETRY_ON
    assert hashed.route.retry_policy.num_retries.value == 2
    assert not hashed.route.retry_policy.retry_host_predicate


def test_default_route_grpc() -> None:
    route = default_route(RouteTarget("web.default:80", HashOn(cookie="c")), "grpc")
    assert route.route.cluster == "web.default:80"
    assert route.route.retry_policy.retry_on == "unavailable,cancelled"
    assert route.route.retry_policy.num_retries.value == 2
    assert not route.route.HasField("max_stream_duration") and not route.route.hash_policy


# ---------------------------------------------------------------------------- TCP


def test_tcp_target() -> None:
    resolve = resolver()
    rules = [
        TcpRule((wd(subset="v9"),), port=9999),
        TcpRule(
            (
                wd(subset="v1", weight=80),
                wd(subset="v2", weight=0),
                wd(subset="v1", weight=20),
                wd("db", weight=5),
            )
        ),
    ]
    assert tcp_target(rules, port=5432, resolve=resolve) == [
        ("reviews.shop:80|v1", 100),
        ("db.shop:80", 5),
    ]
    assert tcp_target(rules, port=9999, resolve=resolve) == [("reviews.shop:80|v9", 100)]
    assert tcp_target([TcpRule((wd(weight=0),))], port=1, resolve=resolve) == [
        ("reviews.shop:80", 1)
    ]
    assert tcp_target([TcpRule((wd(),), port=1)], port=2, resolve=resolve) == []


def test_weighted_tcp_listener() -> None:
    one = rb.weighted_tcp_listener("tcp_5432", 5432, [("a", 100)])
    assert one == rb.tcp_listener("tcp_5432", 5432, "a")
    two = rb.weighted_tcp_listener("tcp_5432", 5432, [("a", 90), ("b", 10)])
    proxy = unpack(two.filter_chains[0].filters[0].typed_config, tcp_proxy_pb2.TcpProxy)
    assert [(c.name, c.weight) for c in proxy.weighted_clusters.clusters] == [("a", 90), ("b", 10)]
    assert not proxy.HasField("idle_timeout")  # Envoy's default, 1 h as Istio's
    for idle, seconds in ((0.0, 0), (2.5, 2)):
        lst = rb.weighted_tcp_listener("tcp_5432", 5432, [("a", 1)], idle_timeout=idle)
        proxy = unpack(lst.filter_chains[0].filters[0].typed_config, tcp_proxy_pb2.TcpProxy)
        assert proxy.HasField("idle_timeout") and proxy.idle_timeout.seconds == seconds


# ----------------------------------------------------------------------- clusters


def base_cluster(http2: bool = False) -> cluster_pb2.Cluster:
    return rb.eds_cluster("web.default:80", http2=http2)


def applied(
    policy: TrafficPolicy, client: Client = "envoy", http2: bool = False
) -> tuple[cluster_pb2.Cluster, list[str]]:
    cluster, notes = apply_traffic_policy(
        base_cluster(http2), policy, client, "DestinationRule default/web"
    )
    assert all(n.subject == "DestinationRule default/web" for n in notes)
    return cluster, [n.what for n in notes]


def test_input_cluster_is_not_modified() -> None:
    before = base_cluster()
    policy = TrafficPolicy(
        LoadBalancer(simple="RANDOM"), ConnectionPool(max_connections=1), OutlierDetection(1)
    )
    for client in ("envoy", "grpc"):
        after, _ = apply_traffic_policy(before, policy, client, "x")
        assert before == base_cluster() and after != before


@pytest.mark.parametrize(
    ("simple", "enum"),
    [
        ("ROUND_ROBIN", cluster_pb2.Cluster.ROUND_ROBIN),
        ("LEAST_REQUEST", cluster_pb2.Cluster.LEAST_REQUEST),
        ("RANDOM", cluster_pb2.Cluster.RANDOM),
    ],
)
def test_simple_lb_envoy(simple: Any, enum: int) -> None:
    cluster, notes = applied(TrafficPolicy(LoadBalancer(simple=simple)))
    assert (
        cluster.lb_policy == enum and not cluster.HasField("load_balancing_policy") and notes == []
    )


def test_hash_lb_envoy() -> None:
    ring, _ = applied(TrafficPolicy(LoadBalancer(hash=HashOn(header="x"), minimum_ring_size=2048)))
    assert ring.lb_policy == cluster_pb2.Cluster.RING_HASH
    assert ring.HasField("ring_hash_lb_config")
    assert ring.ring_hash_lb_config.hash_function == cluster_pb2.Cluster.RingHashLbConfig.XX_HASH
    assert ring.ring_hash_lb_config.minimum_ring_size.value == 2048
    maglev, _ = applied(
        TrafficPolicy(LoadBalancer(hash=HashOn(header="x"), maglev=True, maglev_table_size=131))
    )
    assert maglev.lb_policy == cluster_pb2.Cluster.MAGLEV
    assert maglev.maglev_lb_config.table_size.value == 131


def lb_types(cluster: cluster_pb2.Cluster) -> list[str]:
    return [
        p.typed_extension_config.typed_config.type_url.rsplit(".", 1)[-1]
        for p in cluster.load_balancing_policy.policies
    ]


def test_lb_grpc_only_through_load_balancing_policy() -> None:
    rr, notes = applied(TrafficPolicy(LoadBalancer(simple="ROUND_ROBIN")), "grpc")
    assert rr.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN and not rr.HasField(
        "load_balancing_policy"
    )
    assert notes == []
    for simple, first in (("LEAST_REQUEST", "LeastRequest"), ("RANDOM", "Random")):
        cluster, notes = applied(TrafficPolicy(LoadBalancer(simple=simple)), "grpc")  # type: ignore[arg-type]
        # Never the enum gRPC NACKs; gRPC takes round robin over weighted localities.
        assert cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
        assert lb_types(cluster) == [first, "WrrLocality", "RoundRobin"]
        assert notes == [f"{simple}: not applied to gRPC clients (gRPC clients use round robin)"]


def test_hash_lb_grpc() -> None:
    ring, notes = applied(
        TrafficPolicy(LoadBalancer(hash=HashOn(header="x"), minimum_ring_size=4096)), "grpc"
    )
    assert ring.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN and not ring.HasField(
        "ring_hash_lb_config"
    )
    assert lb_types(ring) == ["RingHash", "WrrLocality", "RoundRobin"]
    config = unpack(
        ring.load_balancing_policy.policies[0].typed_extension_config.typed_config,
        ring_hash_pb2.RingHash,
    )
    assert config.hash_function == ring_hash_pb2.RingHash.XX_HASH
    assert config.minimum_ring_size.value == 4096
    assert notes == []
    maglev, notes = applied(
        TrafficPolicy(LoadBalancer(hash=HashOn(cookie="c"), maglev=True)), "grpc"
    )
    assert maglev.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert lb_types(maglev) == ["Maglev", "RingHash", "WrrLocality", "RoundRobin"]
    assert notes == [
        "Maglev: not applied to gRPC clients (gRPC clients use a ring hash)",
        "consistent hash on a cookie: not applied to gRPC clients (requests hash randomly)",
    ]
    _, notes = applied(TrafficPolicy(LoadBalancer(hash=HashOn(query_parameter="u"))), "grpc")
    assert notes == [
        "consistent hash on a query parameter: not applied to gRPC clients (requests hash randomly)"
    ]


def test_locality_distribute_needs_locality_weights_envoy() -> None:
    setting = LocalityLb(distribute=(LocalityDistribute("r1/*", (("r1/z1", 100),)),))
    cluster, _ = applied(TrafficPolicy(LoadBalancer(locality=setting)))
    assert cluster.common_lb_config.HasField("locality_weighted_lb_config")
    failover, _ = applied(
        TrafficPolicy(LoadBalancer(locality=LocalityLb(failover=(LocalityFailover("r1", "r2"),))))
    )
    assert not failover.common_lb_config.HasField("locality_weighted_lb_config")


def test_connection_pool_envoy() -> None:
    pool = ConnectionPool(
        max_connections=10, connect_timeout=2.5, http2_max_requests=7, max_retries=0
    )
    cluster, notes = applied(TrafficPolicy(connection_pool=pool))
    (t,) = cluster.circuit_breakers.thresholds
    assert t.priority == base_pb2.DEFAULT and t.track_remaining
    # Unset (and 0, as Istio) is the maximum: only what the operator set limits.
    assert (
        t.max_connections.value,
        t.max_pending_requests.value,
        t.max_requests.value,
        t.max_retries.value,
    ) == (
        10,
        UINT32_MAX,
        7,
        UINT32_MAX,
    )
    assert cluster.connect_timeout.ToMilliseconds() == 2500
    assert not cluster.typed_extension_protocol_options and notes == []


def protocol_options(cluster: cluster_pb2.Cluster) -> Any:
    return unpack(
        cluster.typed_extension_protocol_options[rb.HTTP_PROTOCOL_OPTIONS], hpo.HttpProtocolOptions
    )


def test_connection_pool_per_connection_options_merge() -> None:
    pool = ConnectionPool(max_requests_per_connection=3, idle_timeout=30)
    h2 = protocol_options(applied(TrafficPolicy(connection_pool=pool), http2=True)[0])
    assert h2.explicit_http_config.HasField("http2_protocol_options")  # kept
    assert h2.common_http_protocol_options.max_requests_per_connection.value == 3
    assert h2.common_http_protocol_options.idle_timeout.seconds == 30
    h1 = protocol_options(
        applied(TrafficPolicy(connection_pool=ConnectionPool(tcp_idle_timeout=5)))[0]
    )
    # Envoy requires a protocol choice in HttpProtocolOptions: HTTP/1.1, as before.
    assert h1.explicit_http_config.HasField("http_protocol_options")
    assert h1.common_http_protocol_options.idle_timeout.seconds == 5  # tcp idle stands in


def test_connection_pool_grpc_only_max_requests() -> None:
    pool = ConnectionPool(
        max_connections=1, connect_timeout=1, tcp_idle_timeout=1, http1_max_pending_requests=1,
        http2_max_requests=5, max_requests_per_connection=1, max_retries=1, idle_timeout=1,
    )  # fmt: skip
    cluster, notes = applied(TrafficPolicy(connection_pool=pool), "grpc")
    (t,) = cluster.circuit_breakers.thresholds
    assert t.priority == base_pb2.DEFAULT and t.max_requests.value == 5
    assert not t.HasField("max_connections") and not t.HasField("max_pending_requests")
    assert cluster.connect_timeout == base_cluster().connect_timeout
    assert notes == [
        f"connection pool {label}: not applied to gRPC clients"
        for label in (
            "max connections", "connect timeout", "TCP idle timeout", "max pending requests",
            "max requests per connection", "max retries", "idle timeout",
        )
    ]  # fmt: skip
    unlimited, _ = applied(TrafficPolicy(connection_pool=ConnectionPool(max_connections=3)), "grpc")
    assert not unlimited.HasField("circuit_breakers")  # gRPC keeps its own default


def test_outlier_detection_envoy() -> None:
    od = OutlierDetection(
        consecutive_5xx_errors=3,
        interval=0.5,
        base_ejection_time=30,
        max_ejection_percent=50,
        min_health_percent=25,
    )
    cluster, notes = applied(TrafficPolicy(outlier_detection=od))
    assert notes == []
    out = cluster.outlier_detection
    assert (out.consecutive_5xx.value, out.enforcing_consecutive_5xx.value) == (3, 100)
    assert out.HasField("enforcing_success_rate") and out.enforcing_success_rate.value == 0
    assert not out.HasField("consecutive_gateway_failure")
    assert out.HasField("enforcing_consecutive_gateway_failure")
    assert out.enforcing_consecutive_gateway_failure.value == 0
    assert out.interval.ToMilliseconds() == 500 and out.base_ejection_time.seconds == 30
    assert out.max_ejection_percent.value == 50
    assert cluster.common_lb_config.healthy_panic_threshold.value == 25
    gateway, _ = applied(
        TrafficPolicy(
            outlier_detection=OutlierDetection(
                consecutive_gateway_errors=2, consecutive_5xx_errors=0
            )
        )
    )
    out = gateway.outlier_detection
    assert (
        out.consecutive_gateway_failure.value,
        out.enforcing_consecutive_gateway_failure.value,
    ) == (2, 100)
    assert (out.consecutive_5xx.value, out.enforcing_consecutive_5xx.value) == (0, 0)
    assert not out.HasField("interval") and not out.HasField("max_ejection_percent")
    # Unset minimum health: panic mode off (as Istio).
    assert gateway.common_lb_config.HasField("healthy_panic_threshold")
    assert gateway.common_lb_config.healthy_panic_threshold.value == 0


def test_outlier_detection_grpc_is_reported_not_sent() -> None:
    cluster, notes = applied(
        TrafficPolicy(outlier_detection=OutlierDetection(5, min_health_percent=10)), "grpc"
    )
    assert not cluster.HasField("outlier_detection") and not cluster.HasField("common_lb_config")
    assert notes == [
        "outlier detection: not applied to gRPC clients "
        "(gRPC ejects only by success rate or failure percentage)"
    ]


# ---------------------------------------------------------------------- endpoints


def ep(
    port: int, region: str = "", zone: str = "", subzone: str = "", weight: int = 1, **kw: Any
) -> Endpoint:
    return Endpoint("10.0.0.1", port, locality=Locality(region, zone, subzone), weight=weight, **kw)


def test_subset_endpoints() -> None:
    eps = [
        ep(1, labels=labels({"version": "v1", "zone": "a"})),
        ep(2, labels=labels({"version": "v2"})),
        ep(3, labels=labels({"version": "v1"})),
    ]
    assert [e.port for e in subset_endpoints(eps, labels({"version": "v1"}))] == [1, 3]
    assert [e.port for e in subset_endpoints(eps, labels({"version": "v1", "zone": "a"}))] == [1]
    assert [e.port for e in subset_endpoints(eps, ())] == [1, 2, 3]
    assert subset_endpoints(eps, labels({"version": "v3"})) == []


CLIENT = Locality("r1", "z1", "s1")

LOCALITY_EPS = [
    ep(1, "r1", "z1", "s1"),
    ep(2, "r1", "z1", "s2"),
    ep(3, "r1", "z2"),
    ep(4, "r2", "z1"),
    ep(5, "r3", "z1", weight=3),
]


def priorities(setting: LocalityLb | None, client: Locality = CLIENT, **kw: Any) -> dict[int, int]:
    """endpoint port → priority."""
    return {
        e.port: g.priority
        for g in locality_priorities(LOCALITY_EPS, client, setting, **kw)
        for e in g.endpoints
    }


def test_locality_failover_priorities() -> None:
    assert priorities(None) == {1: 0, 2: 1, 3: 2, 4: 3, 5: 3}
    # Without a subzone the client shares no subzone: the zone comes first, and
    # priorities stay contiguous from 0.
    assert priorities(None, Locality("r1", "z1")) == {1: 0, 2: 0, 3: 1, 4: 2, 5: 2}
    assert priorities(None, Locality("r1", "z1", "")) == priorities(None, Locality("r1", "z1"))
    assert priorities(None, Locality("r2", "z1")) == {1: 1, 2: 1, 3: 1, 4: 0, 5: 1}
    failover = LocalityLb(failover=(LocalityFailover("r1", "r3"),))
    assert priorities(failover) == {1: 0, 2: 1, 3: 2, 4: 4, 5: 3}
    # A failover rule for another region changes nothing.
    assert priorities(LocalityLb(failover=(LocalityFailover("r2", "r3"),))) == priorities(None)


def test_locality_priorities_off() -> None:
    flat = dict.fromkeys(range(1, 6), 0)
    assert priorities(LocalityLb(enabled=False)) == flat
    assert priorities(None, failover=False) == flat
    assert priorities(None, Locality()) == flat  # a client without a locality


def weights(
    setting: LocalityLb, client: Locality = CLIENT
) -> dict[tuple[str, str, str], tuple[int, int]]:
    """locality → (priority, weight)."""
    return {
        (g.locality.region, g.locality.zone, g.locality.subzone): (g.priority, g.weight or 0)
        for g in locality_priorities(LOCALITY_EPS, client, setting)
    }


def test_locality_distribute() -> None:
    setting = LocalityLb(
        distribute=(
            LocalityDistribute("r2/*", (("r2/*", 100),)),
            LocalityDistribute("r1/z1/*", (("r1/z1/*", 70), ("r3", 30), ("r1/*", 0))),
        )
    )
    # r1/z1's two subzones share 70 by weight; r3 (weight 3) gets 30; r1/z2 and r2 get nothing.
    assert weights(setting) == {
        ("r1", "z1", "s1"): (0, 35),
        ("r1", "z1", "s2"): (0, 35),
        ("r3", "z1", ""): (0, 30),
    }
    assert weights(setting, Locality("r2", "z9")) == {("r2", "z1", ""): (0, 100)}
    # A client no rule names: unchanged (weights from endpoints), no priorities.
    assert weights(setting, Locality("r3", "z1")) == {
        ("r1", "z1", "s1"): (0, 0), ("r1", "z1", "s2"): (0, 0), ("r1", "z2", ""): (0, 0),
        ("r2", "z1", ""): (0, 0), ("r3", "z1", ""): (0, 0),
    }  # fmt: skip
    # Targets no endpoint is in: traffic keeps flowing everywhere rather than nowhere.
    nowhere = LocalityLb(distribute=(LocalityDistribute("*", (("r9", 100),)),))
    assert len(weights(nowhere)) == 5


def test_locality_load_assignment() -> None:
    setting = LocalityLb(
        distribute=(LocalityDistribute("r1/z1/s1", (("r1/z1/s1", 1), ("r3", 99))),)
    )
    cla = locality_load_assignment("c", LOCALITY_EPS, Locality("r1", "z1", "s1"), setting)
    assert cla.cluster_name == "c"
    assert [
        (e.locality.region, e.load_balancing_weight.value, e.priority) for e in cla.endpoints
    ] == [
        ("r1", 1, 0),
        ("r3", 99, 0),
    ]
    failover = locality_load_assignment("c", LOCALITY_EPS, Locality("r2", "z1"), None)
    assert sorted({e.priority for e in failover.endpoints}) == [0, 1]
    assert all(
        e.load_balancing_weight.value >= 1 and e.HasField("locality") for e in failover.endpoints
    )
    # Without policy, the same as the plain load assignment.
    flat = locality_load_assignment("c", LOCALITY_EPS, Locality(), None)
    assert flat == rb.load_assignment("c", LOCALITY_EPS)


# ---------------------------------------------------------------- resources, names


def test_policy_http_filters() -> None:
    envoy = rb.policy_http_filters("envoy")
    assert [f.name for f in envoy] == [CORS, FAULT, "envoy.filters.http.router"]
    assert envoy[0].is_optional and not envoy[1].is_optional
    assert unpack(envoy[1].typed_config, fault_pb2.HTTPFault) == fault_pb2.HTTPFault()
    grpc = rb.policy_http_filters("grpc")
    assert [f.name for f in grpc] == [FAULT, "envoy.filters.http.router"]
    # The existing builders keep their router-only default.
    hcm = rb.http_connection_manager("r", "s")
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.router"]
    listener = rb.api_listener("web", "web", grpc)
    api = unpack(listener.api_listener.api_listener, rb.HCM)
    assert [f.name for f in api.http_filters] == [FAULT, "envoy.filters.http.router"]


def test_subset_cluster_name_cannot_collide() -> None:
    assert names.subset_cluster_name("web.default:80", "v2") == "web.default:80|v2"
    # A service cluster name never holds "|": the registry rejects such service names.
    ports = (Port("http", 80),)
    accepted, rejections = validation.check_entry(
        "test", ServiceEntry(Service("web|v2", ports=ports))
    )
    assert accepted is None and "invalid service name" in rejections[0].reason
    assert validation.check_entry("test", ServiceEntry(Service("web", ports=ports)))[0] is not None


# ------------------------------------------------------------- Envoy accepts it

ENDPOINTS = [
    Endpoint("127.0.0.1", 18001, locality=Locality("r1", "z1"), labels=labels({"version": "v1"})),
    Endpoint("127.0.0.1", 18002, locality=Locality("r1", "z2"), labels=labels({"version": "v2"})),
    Endpoint("127.0.0.1", 18003, locality=Locality("r2", "z1"), weight=3),
]
CLIENT_LOCALITY = Locality("r1", "z1")


def static_cluster(cluster: cluster_pb2.Cluster, setting: LocalityLb | None) -> dict[str, Any]:
    """A rendered EDS cluster as a STATIC one, its endpoints prioritised for the client."""
    out = to_dict(cluster)
    out.pop("eds_cluster_config")
    out["type"] = "STATIC"
    cla = locality_load_assignment(cluster.name, ENDPOINTS, CLIENT_LOCALITY, setting)
    out["load_assignment"] = to_dict(cla)
    return out


def static_listener(name: str, routes: Sequence[rc.Route], client: Client) -> dict[str, Any]:
    """An HTTP listener with the policy filters for `client` and `routes` inline."""
    listener = to_dict(
        rb.http_listener(name, free_port(), name, "127.0.0.1", rb.policy_http_filters(client))
    )
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm.pop("rds")
    config = route_pb2.RouteConfiguration(
        name=name, virtual_hosts=[rc.VirtualHost(name=name, domains=["*"], routes=routes)]
    )
    hcm["route_config"] = to_dict(config)
    return listener


def assert_envoy_accepts(
    rules: Sequence[HttpRule],
    policies: dict[str, TrafficPolicy],
    tmp_path: Path,
    hashing: dict[str, HashOn] | None = None,
) -> None:
    """Renders `rules` for both clients (gRPC's clusters prefixed ``grpc-``) and `policies`
    onto the clusters named after their keys, then runs ``envoy --mode validate``."""
    clusters: list[dict[str, Any]] = []
    listeners = []
    for client in ("envoy", "grpc"):
        prefix_ = "grpc-" if client == "grpc" else ""

        def resolve(d: Destination, prefix_: str = prefix_) -> RouteTarget:
            return RouteTarget(prefix_ + cluster_of(d), (hashing or {}).get(d.host))

        routes, _ = http_routes(rules, port=80, resolve=resolve, client=client, subject=SUBJECT)
        routes.append(default_route(resolve(dest("fallback")), client))
        listeners.append(static_listener(f"policy-{client}", routes, client))
        for name, policy in policies.items():
            cluster = rb.eds_cluster(prefix_ + name, http2=name.startswith("h2"))
            cluster, _ = apply_traffic_policy(cluster, policy, client, "DestinationRule")
            setting = policy.load_balancer.locality if policy.load_balancer else None
            clusters.append(static_cluster(cluster, setting))
    config = {
        "node": {"id": "validate", "cluster": "validate"},
        "static_resources": {"clusters": clusters, "listeners": listeners},
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}}
        },
    }
    try:
        validate_bootstrap(config, tmp_path)
    except AssertionError:
        (tmp_path / "rejected.json").write_text(json.dumps(config, indent=1))
        raise


HOSTS = ("reviews", "ratings", "h2svc")
SUBSETS = ("", "v1", "v2")
ALL_CLUSTERS = [cluster_of(dest(h, s)) for h in (*HOSTS, "fallback") for s in SUBSETS]

REPRESENTATIVE_RULES = [
    HttpRule(
        name="canary",
        matches=(
            RequestMatch(
                name="jason",
                uri=StringMatch("prefix", "/api"),
                ignore_uri_case=True,
                headers=(
                    HeaderMatch("end-user", StringMatch("exact", "jason")),
                    HeaderMatch("x-beta", StringMatch("present")),
                    HeaderMatch("x-not", StringMatch("regex", "a.*"), invert=True),
                ),
                method=StringMatch("exact", "GET"),
                authority=StringMatch("prefix", "reviews"),
                scheme=StringMatch("exact", "http"),
            ),
            RequestMatch(
                uri=StringMatch("regex", "/v[0-9]+/.*"),
                query=(QueryMatch("debug", StringMatch("present")),),
            ),
        ),
        destinations=(
            wd(
                subset="v1",
                weight=90,
                headers=HeaderOps(request_set=(("x-v", "1"), (":authority", "v1.local"))),
            ),
            wd(subset="v2", weight=10, headers=HeaderOps(response_add=(("x-canary", "yes"),))),
            wd("ratings", weight=0),
        ),
        timeout=2.5,
        retry=Retry(3, 0.5, ("5xx", "reset", "unavailable"), (503, 429)),
        fault=Fault(delay=0.3, delay_percent=0.5, abort_grpc="UNAVAILABLE", abort_percent=12.5),
        mirrors=(Mirror(dest(subset="v2"), 33.3333), Mirror(dest("ratings"))),
        rewrite=Rewrite("/v2/api", "api.internal"),
        cors=Cors(
            (StringMatch("exact", "https://shop.example"), StringMatch("prefix", "https://")),
            ("GET",),
            ("x-a",),
            ("x-b",),
            3600,
            False,
        ),
        headers=HeaderOps(
            request_set=(("x-env", "prod"),),
            request_add=(("x-trace", "1"),),
            request_remove=("x-debug",),
            response_set=(("cache-control", "no-store"),),
            response_remove=("server",),
        ),
    ),
    HttpRule(matches=(prefix("/old"),), redirect=Redirect("/new", "b.example", "https", 8443, 307)),
    HttpRule(
        matches=(RequestMatch(uri=StringMatch("exact", "/teapot")),),
        direct_response=DirectResponse(418, "I'm a teapot"),
    ),
    HttpRule(
        matches=(prefix("/stuck"),),
        destinations=(wd("h2svc"),),
        retry=Retry(0),
        timeout=0,
        fault=Fault(abort_http=503, abort_percent=100),
    ),
    HttpRule(destinations=(wd("ratings", "v1"),), retry=Retry(2, retry_on=("gateway-error",))),
]

REPRESENTATIVE_POLICIES = {
    cluster_of(dest("reviews", "v1")): TrafficPolicy(
        LoadBalancer(
            simple="LEAST_REQUEST", locality=LocalityLb(failover=(LocalityFailover("r1", "r2"),))
        ),
        ConnectionPool(100, 0.25, 3600, 10, 1000, 5, 3, 60),
        OutlierDetection(5, 2, 1.5, 30, 50, 20),
    ),
    cluster_of(dest("reviews", "v2")): TrafficPolicy(
        LoadBalancer(
            hash=HashOn(header="x-user"),
            minimum_ring_size=2048,
            locality=LocalityLb(
                distribute=(LocalityDistribute("r1/z1", (("r1/*", 80), ("r2", 20))),)
            ),
        )
    ),
    cluster_of(dest("ratings")): TrafficPolicy(
        LoadBalancer(
            hash=HashOn(cookie="sid", cookie_ttl=0, cookie_path="/"),
            maglev=True,
            maglev_table_size=65537,
        )
    ),
    cluster_of(dest("ratings", "v1")): TrafficPolicy(
        LoadBalancer(simple="RANDOM"), ConnectionPool(idle_timeout=0)
    ),
    cluster_of(dest("h2svc")): TrafficPolicy(
        LoadBalancer(hash=HashOn(source_ip=True)), ConnectionPool(max_requests_per_connection=1)
    ),
}


def test_envoy_accepts_representative_policies(tmp_path: Path) -> None:
    policies = {c: REPRESENTATIVE_POLICIES.get(c, TrafficPolicy()) for c in ALL_CLUSTERS}
    hashing = {
        "reviews": HashOn(header="x-user"),
        "ratings": HashOn(query_parameter="u"),
        "h2svc": HashOn(source_ip=True),
    }
    assert_envoy_accepts(REPRESENTATIVE_RULES, policies, tmp_path, hashing)


def test_envoy_validation_catches_a_bad_route(tmp_path: Path) -> None:
    """The check above can fail: a route to a cluster that is not there is rejected."""
    rules = [HttpRule(destinations=(wd("nowhere"),))]
    with pytest.raises(AssertionError, match="unknown cluster"):
        assert_envoy_accepts(rules, dict.fromkeys(ALL_CLUSTERS, TrafficPolicy()), tmp_path)


# ----------------------------------------------------------- generated policies

_token = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)
_header_name = st.builds(lambda t: f"x-{t}", _token)
_header_value = st.text("abcXYZ019 ._-/", max_size=12)
_path = st.builds(lambda parts: "/" + "/".join(parts), st.lists(_token, max_size=3))
_regex = st.sampled_from(["/api/.*", "[a-z]+", "/v[0-9]+/(users|items)", ".*", "(?i)abc", "a|b|c"])
# Boundaries first, so few examples reach them: durations in whole ms, percentages 0-100
# in steps of 0.0001.
_seconds = st.one_of(
    st.sampled_from([0, 0.001, 1, 3600]),
    st.integers(0, 3600),
    st.integers(1, 10**6).map(lambda ms: ms / 1000),
)
_percent = st.one_of(
    st.sampled_from([0, 0.0001, 50, 100]),
    st.integers(0, 100),
    st.integers(0, 10**6).map(lambda n: n / 10**4),
)


def _string_match(values: st.SearchStrategy[str]) -> st.SearchStrategy[StringMatch]:
    return st.one_of(
        st.builds(StringMatch, st.just("exact"), values),
        st.builds(StringMatch, st.just("prefix"), values),
        st.builds(StringMatch, st.just("regex"), _regex),
        st.just(StringMatch("present")),
    )


_uri = st.one_of(
    st.builds(StringMatch, st.sampled_from(["exact", "prefix"]), _path),
    st.builds(StringMatch, st.just("regex"), _regex),
)
_request_match = st.builds(
    RequestMatch,
    name=st.one_of(st.just(""), _token),
    uri=st.one_of(st.none(), _uri),
    ignore_uri_case=st.booleans(),
    method=st.one_of(
        st.none(), st.builds(StringMatch, st.just("exact"), st.sampled_from(["GET", "POST"]))
    ),
    authority=st.one_of(st.none(), _string_match(_token)),
    scheme=st.one_of(
        st.none(), st.builds(StringMatch, st.just("exact"), st.sampled_from(["http", "https"]))
    ),
    headers=st.lists(
        st.builds(HeaderMatch, _header_name, _string_match(_header_value), st.booleans()),
        max_size=3,
    ).map(tuple),
    query=st.lists(st.builds(QueryMatch, _token, _string_match(_header_value)), max_size=2).map(
        tuple
    ),
    port=st.one_of(st.none(), st.sampled_from([80, 8080])),
)
_pairs = st.lists(
    st.tuples(
        st.one_of(_header_name, st.sampled_from([":authority", "host", ":path"])), _header_value
    ),
    max_size=2,
).map(tuple)
_names = st.lists(st.one_of(_header_name, st.just("host")), max_size=2).map(tuple)
_header_ops = st.builds(HeaderOps, _pairs, _pairs, _names, _pairs, _pairs, _names)
_destination = st.builds(dest, st.sampled_from(HOSTS), st.sampled_from(SUBSETS))
_weighted = st.builds(WeightedDestination, _destination, st.integers(0, 1000), _header_ops)
_destinations = (
    st.lists(_weighted, min_size=1, max_size=4)
    .filter(lambda ds: len(ds) == 1 or any(d.weight > 0 for d in ds))
    .map(tuple)
)
_retry_tokens = st.sampled_from(
    ["5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx", "refused-stream",
     "retriable-status-codes", "reset-before-request", "cancelled", "deadline-exceeded",
     "internal", "resource-exhausted", "unavailable"]
)  # fmt: skip
_retry = st.builds(
    Retry,
    st.integers(0, 10),
    st.one_of(st.none(), _seconds.filter(lambda s: s > 0)),
    st.lists(_retry_tokens, max_size=4, unique=True).map(tuple),
    st.lists(st.sampled_from([500, 502, 503, 504, 429]), max_size=3, unique=True).map(tuple),
)
_fault = st.builds(
    Fault,
    st.one_of(st.none(), _seconds),
    _percent,
    st.one_of(st.none(), st.integers(200, 599)),
    st.one_of(
        st.none(), st.sampled_from(["UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "ABORTED"])
    ),
    _percent,
)
_cors = st.builds(
    Cors,
    st.lists(_string_match(st.just("https://a.example")), max_size=2).map(tuple),
    st.lists(st.sampled_from(["GET", "POST", "PUT"]), max_size=2).map(tuple),
    st.lists(_header_name, max_size=2).map(tuple),
    st.lists(_header_name, max_size=2).map(tuple),
    st.one_of(st.none(), st.integers(0, 86400)),
    st.one_of(st.none(), st.booleans()),
)
_action = st.one_of(
    st.fixed_dictionaries(
        {"destinations": _destinations},
        optional={
            "timeout": _seconds,
            "retry": _retry,
            "fault": _fault,
            "mirrors": st.lists(st.builds(Mirror, _destination, _percent), max_size=2).map(tuple),
            "rewrite": st.builds(
                Rewrite, st.one_of(st.none(), _path), st.one_of(st.none(), st.just("api.example"))
            ),
            "cors": _cors,
            "headers": _header_ops,
        },
    ),
    st.fixed_dictionaries(
        {
            "redirect": st.builds(
                Redirect,
                _path,
                st.one_of(st.none(), st.just("b.example")),
                st.sampled_from([None, "http", "https"]),
                st.sampled_from([None, 80, 443, 8443]),
                st.sampled_from([301, 302, 303, 307, 308]),
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "direct_response": st.builds(
                DirectResponse, st.integers(200, 599), st.one_of(st.none(), _header_value)
            )
        }
    ),
)
_rule = st.builds(
    lambda name, matches, action: HttpRule(name=name, matches=matches, **action),
    st.one_of(st.just(""), _token),
    st.lists(_request_match, max_size=3).map(tuple),
    _action,
)
_hash = st.one_of(
    st.builds(HashOn, header=_header_name),
    st.builds(
        HashOn,
        cookie=_token,
        cookie_ttl=st.one_of(st.none(), _seconds),
        cookie_path=st.one_of(st.none(), _path),
    ),
    st.just(HashOn(source_ip=True)),
    st.builds(HashOn, query_parameter=_token),
)
_locality_pattern = st.sampled_from(["r1", "r1/z1", "r1/*", "r2", "r2/z1", "*", "r3"])
_locality = st.builds(
    LocalityLb,
    st.booleans(),
    st.lists(
        st.builds(
            LocalityDistribute,
            _locality_pattern,
            st.lists(st.tuples(_locality_pattern, st.integers(0, 100)), min_size=1, max_size=3).map(
                tuple
            ),
        ),
        max_size=2,
    ).map(tuple),
    st.lists(
        st.builds(
            LocalityFailover, st.sampled_from(["r1", "r2"]), st.sampled_from(["r1", "r2", "r3"])
        ),
        max_size=2,
    ).map(tuple),
)
_load_balancer = st.one_of(
    st.builds(
        LoadBalancer,
        simple=st.sampled_from(["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"]),
        locality=st.one_of(st.none(), _locality),
    ),
    st.builds(
        LoadBalancer,
        hash=_hash,
        maglev=st.booleans(),
        minimum_ring_size=st.one_of(st.none(), st.integers(1, 8_388_608)),
        maglev_table_size=st.one_of(st.none(), st.sampled_from([131, 65537, 5000011])),
        locality=st.one_of(st.none(), _locality),
    ),
)
_count = st.one_of(st.none(), st.sampled_from([0, 1, UINT32_MAX]), st.integers(0, UINT32_MAX))
_positive_seconds = st.one_of(st.none(), _seconds.filter(lambda s: s > 0))
_pool = st.builds(
    ConnectionPool,
    _count,
    _positive_seconds,
    st.one_of(st.none(), _seconds),
    _count,
    _count,
    _count,
    _count,
    st.one_of(st.none(), _seconds),
)
_outlier = st.builds(
    OutlierDetection,
    _count,
    _count,
    _positive_seconds,
    _positive_seconds,
    st.one_of(st.none(), st.integers(0, 100)),
    st.one_of(st.none(), st.integers(0, 100)),
)
_policy = st.builds(
    TrafficPolicy,
    st.one_of(st.none(), _load_balancer),
    st.one_of(st.none(), _pool),
    st.one_of(st.none(), _outlier),
)


@settings(
    # Envoy runs once per example (~0.15 s): few examples, each holding many rules and
    # every cluster. No shrinking, so a failure reports at once (Envoy names the field).
    max_examples=25,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.large_base_example,
    ],
)
@given(
    rules=st.lists(_rule, min_size=1, max_size=6),
    policies=st.lists(_policy, min_size=len(ALL_CLUSTERS), max_size=len(ALL_CLUSTERS)),
    hashes=st.lists(st.one_of(st.none(), _hash), min_size=len(HOSTS), max_size=len(HOSTS)),
)
def test_envoy_accepts_generated_policies(
    rules: list[HttpRule],
    policies: list[TrafficPolicy],
    hashes: list[HashOn | None],
    tmp_path: Path,
) -> None:
    hashing = {h: on for h, on in zip(HOSTS, hashes, strict=True) if on is not None}
    assert_envoy_accepts(rules, dict(zip(ALL_CLUSTERS, policies, strict=True)), tmp_path, hashing)


# ------------------------------------------------------- proxyless gRPC accepts it


def grpc_snapshot(
    g1: GrpcBackend, g2: GrpcBackend, lb_enum: int | None
) -> dict[str, list[Message]]:
    """``xds:///web`` rendered for gRPC from a representative policy: routes with header
    matches (an inverted one), a query match (left out), a redirect (left out), a weighted
    split with fault, retries and timeout, then a catch-all; clusters with a ring hash
    (hashed on a header), LEAST_REQUEST through load_balancing_policy, a circuit breaker,
    outlier detection (reported, not sent); endpoints with locality priorities.

    `lb_enum` instead sets that lb_policy enum on the first cluster (the negative control).
    """
    v1, v2 = dest("web", "v1"), dest("web", "v2")
    hashing = {"web": HashOn(header="x-user")}
    rules = [
        HttpRule(
            matches=(RequestMatch(headers=(HeaderMatch("x-never", StringMatch("exact", "1")),)),),
            destinations=(WeightedDestination(v2),),
            fault=Fault(delay=0.01, delay_percent=50, abort_grpc="UNAVAILABLE", abort_percent=100),
        ),
        HttpRule(
            matches=(prefix("/", query=(QueryMatch("q", StringMatch("present")),)),),
            destinations=(WeightedDestination(v2),),
        ),
        HttpRule(matches=(prefix("/old/"),), redirect=Redirect("/new")),
        HttpRule(
            matches=(
                RequestMatch(
                    headers=(HeaderMatch("x-canary", StringMatch("exact", "yes"), invert=True),)
                ),
            ),
            destinations=(
                WeightedDestination(v1, 100),
                WeightedDestination(v2, 0),
                WeightedDestination(v1, 1),
            ),
            timeout=5,
            retry=Retry(3, retry_on=("unavailable", "5xx"), per_try_timeout=1),
            fault=Fault(abort_http=503, abort_percent=0.0001),
            mirrors=(Mirror(v2, 50),),
        ),
        HttpRule(destinations=(WeightedDestination(v2),)),
    ]

    def resolve(d: Destination) -> RouteTarget:
        return RouteTarget(cluster_of(d), hashing.get(d.host))

    routes, notes = http_routes(rules, port=80, resolve=resolve, client="grpc", subject=SUBJECT)
    # query match and redirect left out, 5xx and per-try timeout and mirror not applied;
    # the inverted match is two routes.
    assert len(routes) == 4 and len(notes) == 5, notes
    policies = {
        cluster_of(v1): TrafficPolicy(
            LoadBalancer(hash=HashOn(header="x-user"), minimum_ring_size=64),
            ConnectionPool(max_connections=5, http2_max_requests=100),
            OutlierDetection(consecutive_5xx_errors=3),
        ),
        cluster_of(v2): TrafficPolicy(LoadBalancer(simple="LEAST_REQUEST")),
    }
    clusters, assignments = [], []
    # v1: g1 shares the client's zone (priority 0), g2 is only a failover (priority 1).
    endpoints = {
        cluster_of(v1): [
            Endpoint("127.0.0.1", g1.port, locality=Locality("local", "z1")),
            Endpoint("127.0.0.1", g2.port, locality=Locality("local", "z2")),
        ],
        cluster_of(v2): [Endpoint("127.0.0.1", g2.port, locality=Locality("local", "z1"))],
    }
    for name, policy in policies.items():
        cluster, _ = apply_traffic_policy(rb.eds_cluster(name, http2=True), policy, "grpc", "DR")
        if lb_enum is not None and name == cluster_of(v1):
            cluster.ClearField("load_balancing_policy")
            cluster.lb_policy = lb_enum
        clusters.append(cluster)
        assignments.append(
            locality_load_assignment(name, endpoints[name], Locality("local", "z1"), None)
        )
    config = route_pb2.RouteConfiguration(
        name="web", virtual_hosts=[rc.VirtualHost(name="web", domains=["web"], routes=routes)]
    )
    return {
        types.LISTENER: [rb.api_listener("web", "web", rb.policy_http_filters("grpc"))],
        types.ROUTE: [config],
        types.CLUSTER: clusters,
        types.ENDPOINT: assignments,
    }


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "lb_enum", [None, cluster_pb2.Cluster.LEAST_REQUEST], ids=["rendered", "enum-control"]
)
def test_grpc_accepts_rendered_policy(
    grpc_backend_factory: Callable[..., GrpcBackend],
    grpc_xds_client_factory: Callable[..., GrpcXdsClient],
    lb_enum: int | None,
) -> None:
    """A real grpcio client ACKs every rendered resource and its calls succeed, answered by
    the backend of the client's own zone. The control (the LEAST_REQUEST enum, which the
    renderer never sends to gRPC) shows that this check sees a NACK."""
    g1, g2 = grpc_backend_factory("g1"), grpc_backend_factory("g2")
    with XdsServerThread() as xds:
        group = f"policy-render-{'control' if lb_enum else 'ok'}"
        xds.set_snapshot(group, grpc_snapshot(g1, g2, lb_enum))
        node_id = f"{group}-node"
        client = grpc_xds_client_factory(
            grpc_bootstrap(
                xds.port,
                node_id,
                node_cluster=group,
                locality={"region": "local", "zone": "z1", "sub_zone": ""},
            ),
            "xds:///web",
            interval=0.02,
            timeout=2.0,
            trace="xds_client",
        )

        def states() -> dict[str, Any] | None:
            found = [p for p in xds.proxies() if p["node_id"] == node_id]
            return found[0]["types"] if len(found) == 1 else None

        if lb_enum is not None:
            nacked = wait_for(
                lambda: (t := states()) is not None and t.get("clusters", {}).get("nacks") and t,
                timeout=15,
                message=f"the LEAST_REQUEST enum was not NACKed\n{client.log_tail(30)}",
            )
            assert "LB policy is not supported" in nacked["clusters"]["last_error"], nacked
            return
        first = client.wait_for_body("g1", timeout=15)
        client.wait_for_calls(20, timeout=10)
        synced = wait_for(
            lambda: (
                (t := states()) is not None
                and all(s["state"] == "SYNCED" for s in t.values())
                and t
            ),
            timeout=10,
            message=f"not every type SYNCED: {states()}",
        )
        assert set(synced) == {"listeners", "routes", "clusters", "endpoints"}
        assert all(s["nacks"] == 0 for s in synced.values()), synced
        assert client.errors_since(first) == [], client.log_tail(30)
        assert client.bodies_since(first) == {"g1": len(client.results_since(first))}
