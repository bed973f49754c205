"""Each config entry kind parsed as Consul's API returns it: what is accepted, with its
model values, and what is refused, with the field path and Consul-like reason."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sources.consul_config import KINDS, compile_entries
from sources.consul_config.entries import parse_entry
from sources.consul_config.kinds import (
    ProxyDefaults,
    ServiceDefaults,
    ServiceResolver,
    ServiceRouter,
    ServiceSplitter,
    Target,
)
from sources.istio.report import Context
from tests.consul_entries import (
    defaults,
    every_field_entries,
    resolver,
    router,
    splitter,
    versions,
)
from xds_server.model import (
    ConnectionPool,
    HashOn,
    HeaderMatch,
    LoadBalancer,
    OutlierDetection,
    QueryMatch,
    Retry,
    StringMatch,
)


def parse(raw: dict[str, Any]) -> tuple[Any, list[str]]:
    ctx = Context()
    return parse_entry(raw, ctx), [str(n) for n in ctx.notices]


def error_of(raw: dict[str, Any]) -> str:
    (obj,) = compile_entries([raw]).entries
    assert obj.error, f"accepted: {raw}"
    return obj.error


def test_service_defaults_protocol_and_upstream_config() -> None:
    entry, notices = parse(
        defaults(
            "web",
            "HTTP2",
            UpstreamConfig={
                "Defaults": {
                    "Limits": {"MaxConnections": 10, "MaxPendingRequests": 5},
                    "ConnectTimeoutMs": 2500,
                },
                "Overrides": [
                    {
                        "Name": "api",
                        "Limits": {"MaxConcurrentRequests": 7},
                        "PassiveHealthCheck": {
                            "Interval": "10s",
                            "MaxFailures": 3,
                            "BaseEjectionTime": "30s",
                            "MaxEjectionPercent": 50,
                        },
                    }
                ],
            },
            MeshGateway={"Mode": "local"},
            CreateIndex=5,
            ModifyIndex=9,
        )
    )
    assert isinstance(entry, ServiceDefaults)
    assert entry.protocol == "http2"
    assert entry.upstream_defaults is not None
    assert entry.upstream_defaults.pool == ConnectionPool(
        max_connections=10, http1_max_pending_requests=5, connect_timeout=2.5
    )
    ((name, api),) = entry.upstream_overrides
    assert name == "api"
    assert api.pool == ConnectionPool(http2_max_requests=7)
    assert api.outlier == OutlierDetection(
        consecutive_5xx_errors=3, interval=10.0, base_ejection_time=30.0, max_ejection_percent=50
    )
    assert notices == ["MeshGateway: not supported; ignored"]


def test_proxy_defaults_protocol_and_its_fixed_name() -> None:
    entry, _ = parse({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "grpc"}})
    assert entry == ProxyDefaults(entry.key, "grpc")
    assert error_of({"Kind": "proxy-defaults", "Name": "mine"}) == (
        "consul config entry proxy-defaults/mine: Name: proxy-defaults must be named "
        "\"global\", not 'mine'"
    )


def test_router_match_and_destination() -> None:
    route = {
        "Match": {
            "HTTP": {
                "PathPrefix": "/admin",
                "Header": [
                    {"Name": "X-Debug", "Present": True},
                    {"Name": "x-env", "Suffix": ".test", "Invert": True},
                ],
                "QueryParam": [{"Name": "v", "Exact": "2"}],
                "Methods": ["GET", "POST"],
            }
        },
        "Destination": {
            "Service": "admin",
            "ServiceSubset": "v2",
            "PrefixRewrite": "/",
            "RequestTimeout": "5s",
            "NumRetries": 2,
            "RetryOnConnectFailure": True,
            "RetryOnStatusCodes": [503],
            "RequestHeaders": {"Set": {"x-via": "consul"}, "Remove": ["x-secret"]},
        },
    }
    entry, _ = parse(router("web", route, {}))
    assert isinstance(entry, ServiceRouter)
    first, catch_all = entry.routes
    assert first.match is not None
    assert first.match.uri == StringMatch("prefix", "/admin")
    assert first.match.method == StringMatch("regex", "GET|POST")
    assert first.match.headers == (
        HeaderMatch("x-debug", StringMatch("present")),
        HeaderMatch("x-env", StringMatch("regex", r".*\.test"), invert=True),
    )
    assert first.match.query == (QueryMatch("v", StringMatch("exact", "2")),)
    assert first.target == Target("admin", "v2")
    assert (first.prefix_rewrite, first.timeout) == ("/", 5.0)
    assert first.retry == Retry(2, retry_on=("connect-failure",), status_codes=(503,))
    assert first.headers.request_set == (("x-via", "consul"),)
    assert first.headers.request_remove == ("x-secret",)
    # Consul sets no retry policy unless asked: Envoy then does not retry.
    assert catch_all.match is None and catch_all.retry == Retry(0)


def test_splitter_weights_are_hundredths() -> None:
    entry, _ = parse(
        splitter("web", {"Weight": 33.33, "ServiceSubset": "a"}, {"Weight": 66.67, "Service": "b"})
    )
    assert isinstance(entry, ServiceSplitter)
    assert [(s.weight, s.target) for s in entry.splits] == [
        (3333, Target(subset="a")),
        (6667, Target(service="b")),
    ]


def test_resolver_fields() -> None:
    entry, notices = parse(
        resolver(
            "web",
            DefaultSubset="v1",
            Subsets={
                "v1": {"Filter": "Service.Meta.version == v1", "OnlyPassing": True},
                "canary": {"Filter": '"canary" in Service.Tags and Service.Meta.zone == `a`'},
            },
            Failover={"*": {"Targets": [{"Service": "backup"}, {"ServiceSubset": "canary"}]}},
            ConnectTimeout="3s",
            RequestTimeout="15s",
            LoadBalancer={
                "Policy": "maglev",
                "HashPolicies": [
                    {"Field": "cookie", "FieldValue": "sid", "CookieConfig": {"TTL": "60s"}},
                    {"SourceIP": True},
                ],
            },
        )
    )
    assert isinstance(entry, ServiceResolver)
    assert entry.subsets == (
        ("canary", (("canary", ""), ("zone", "a"))),
        ("v1", (("version", "v1"),)),
    )
    assert entry.failover == (("*", (Target("backup"), Target(subset="canary"))),)
    assert (entry.connect_timeout, entry.request_timeout) == (3.0, 15.0)
    assert entry.load_balancer == LoadBalancer(
        hash=HashOn(cookie="sid", cookie_ttl=60.0), maglev=True
    )
    assert notices == [
        "Subsets.v1.OnlyPassing: not supported; ignored",
        "LoadBalancer.HashPolicies[1]: only the first hash policy is applied",
    ]


def test_unknown_fields_of_a_newer_consul_are_notices() -> None:
    _, notices = parse(resolver("web", FutureThing={"x": 1}))
    assert notices == ["FutureThing: unknown field (of a newer Consul?); ignored"]


REJECTED = [
    (
        router("web", {"Match": {"HTTP": {"PathRegex": "(", "PathPrefix": "/"}}}),
        "service-router/web: Routes[0].Match.HTTP: only one of PathExact, PathPrefix, "
        "PathRegex may be set (got PathPrefix and PathRegex)",
    ),
    (
        router("web", {"Match": {"HTTP": {"PathRegex": "("}}}),
        "service-router/web: Routes[0].Match.HTTP.PathRegex: invalid RE2 regex: missing ): (",
    ),
    (
        router("web", {"Match": {"HTTP": {"PathPrefix": "admin"}}}),
        "Routes[0].Match.HTTP.PathPrefix: PathPrefix doesn't start with '/': 'admin'",
    ),
    (
        router("web", {"Destination": {"PrefixRewrite": "/x"}}),
        "Routes[0].Destination.PrefixRewrite: requires Match.HTTP.PathPrefix or "
        "Match.HTTP.PathExact",
    ),
    (
        router("web", {"Match": {"HTTP": {"Methods": ["FETCH"]}}}),
        "Routes[0].Match.HTTP.Methods[0]: invalid method 'FETCH'",
    ),
    (
        router("web", {"Match": {"HTTP": {"Header": [{"Name": "a", "Exact": "1", "Regex": "1"}]}}}),
        "Routes[0].Match.HTTP.Header[0]: only one of Present, Exact, Prefix, Suffix, Regex",
    ),
    (
        router("web", {"Match": {"HTTP": {"QueryParam": [{"Name": "q"}]}}}),
        "Routes[0].Match.HTTP.QueryParam[0]: one of Present, Exact or Regex is required",
    ),
    (
        router("web", {"Destination": {"RetryOn": ["sometimes"]}}),
        "Routes[0].Destination.RetryOn[0]: unsupported retry condition 'sometimes'",
    ),
    (
        router("web", {"Destination": {"RequestTimeout": "soon"}}),
        "Routes[0].Destination.RequestTimeout: invalid duration 'soon'",
    ),
    (
        router("web", {"Destination": {"RequestHeaders": {"Set": {"x": "100%"}}}}),
        "Routes[0].Destination.RequestHeaders.Set.x: invalid '%' at position 3",
    ),
    (
        splitter("web", {"Weight": 90, "ServiceSubset": "a"}, {"Weight": 5, "ServiceSubset": "b"}),
        "service-splitter/web: Splits: the sum of all split weights must be 100, not 95",
    ),
    (splitter("web"), "service-splitter/web: Splits: at least one split is required"),
    (
        splitter("web", {"Weight": 101}, {"Weight": -1}),
        "Splits[0].Weight: weight 101 is outside 0-100",
    ),
    (
        resolver("web", Subsets={"v1": {"Filter": "Service.Meta.version != v1"}}),
        "service-resolver/web: Subsets.v1.Filter: unsupported filter",
    ),
    (
        resolver("web", Subsets={"V_1": {}}),
        "Subsets.V_1: invalid subset name 'V_1' (a lowercase DNS label)",
    ),
    (
        resolver("web", DefaultSubset="v9", Subsets=versions("v1")),
        "DefaultSubset: DefaultSubset 'v9' is not a valid subset",
    ),
    (
        resolver("web", Redirect={"Service": "api"}, Subsets=versions("v1")),
        "Redirect: Redirect and Subsets cannot both be set",
    ),
    (resolver("web", Redirect={"Service": "web"}), "Redirect: Redirect is a self-redirect"),
    (
        resolver("web", Failover={"v3": {"Service": "backup"}}),
        "Failover.v3: Bad Failover['v3']: not a valid subset",
    ),
    (resolver("web", Failover={"*": {}}), 'Failover["*"]: one of Service, ServiceSubset'),
    (
        resolver(
            "web", LoadBalancer={"Policy": "round_robin", "HashPolicies": [{"SourceIP": True}]}
        ),
        "LoadBalancer.HashPolicies: HashPolicies specified for non-hash-based Policy",
    ),
    (
        resolver(
            "web", LoadBalancer={"Policy": "ring_hash", "HashPolicies": [{"Field": "header"}]}
        ),
        "HashPolicies[0].FieldValue: field 'header' was specified without a FieldValue",
    ),
    (resolver("web", LoadBalancer={"Policy": "fastest"}), "unknown load balancing policy"),
    (defaults("web", "udp"), "service-defaults/web: Protocol: unsupported protocol 'udp'"),
    (
        defaults("web", UpstreamConfig={"Overrides": [{"Name": "a"}, {"Name": "a"}]}),
        "UpstreamConfig.Overrides[1].Name: upstream 'a' is overridden twice",
    ),
    (
        defaults(
            "web", UpstreamConfig={"Defaults": {"PassiveHealthCheck": {"MaxEjectionPercent": 101}}}
        ),
        "PassiveHealthCheck.MaxEjectionPercent: 101 is outside 0-100",
    ),
    ({"Kind": "ingress-gateway", "Name": "x"}, "Kind: unsupported kind 'ingress-gateway'"),
    ({"Kind": "service-router", "Name": ""}, "entry service-router/?: Name: must not be empty"),
]


@pytest.mark.parametrize(("raw", "reason"), REJECTED, ids=[r for _, r in REJECTED])
def test_rejected_entries_name_the_field_and_the_reason(raw: dict[str, Any], reason: str) -> None:
    error = error_of(raw)
    assert error.startswith("consul config entry ")
    assert reason in error


def test_an_entry_outside_the_default_namespace_is_named_with_it() -> None:
    raw = splitter("web", {"Weight": 50})
    raw["Namespace"] = "team"
    assert error_of(raw).startswith("consul config entry service-splitter/team/web: Splits:")


# -- generated: any value in any field of valid entries --------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(["", "*", "/", "0", "0s", "v1", "web", "(", "%", ":path", "tcp"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [path] + [p for k, v in value.items() for p in _paths(v, (*path, k))]
    if isinstance(value, list):
        return [path] + [p for i, v in enumerate(value) for p in _paths(v, (*path, i))]
    return [path]


BASE = every_field_entries()
PATHS = [(i, p) for i, entry in enumerate(BASE) for p in _paths(entry) if p]
_SPLITTER = next(i for i, e in enumerate(BASE) if e["Kind"] == "service-splitter")
_ROUTER = next(i for i, e in enumerate(BASE) if e["Kind"] == "service-router")


@settings(max_examples=500, derandomize=True, database=None, deadline=None)
# What an earlier run found: a weight too large for decimal rounding, a non-list.
@example([((_SPLITTER, ("Splits", 0, "Weight")), 1e300)])
@example([((_ROUTER, ("Routes", 0, "Destination", "RetryOnStatusCodes")), True)])
@given(st.lists(st.tuples(st.sampled_from(PATHS), SCALARS), min_size=1, max_size=3))
def test_any_value_anywhere_is_accepted_or_reported_never_an_exception(
    changes: list[tuple[tuple[int, tuple[Any, ...]], Any]],
) -> None:
    entries = copy.deepcopy(BASE)
    for (i, path), value in changes:
        target: Any = entries[i]
        try:
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change replaced what held this field
    result = compile_entries(entries)
    for obj in (*result.entries, *result.policies):
        assert "internal error" not in obj.error, obj.error
        assert (obj.policy is None) == bool(obj.error) or obj.key.kind in KINDS, obj
