"""`xdsctl explain`'s walker (xds_server/explain*.py) on snapshots the real translators
build from Istio objects: the route that matches and why the earlier ones did not, the
policy rule behind it, the clusters and endpoints, for Envoy and proxyless gRPC; and
Envoy's matching rules on hand-built route configurations (domain order, regex, header
inversion, missing headers, case, path forms)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import wrappers_pb2

from sources.policy_parse import parse_policy_file
from translators import resources as rb
from translators.group import ProxyGroup
from translators.policy_resolve import resolve_policies
from translators.translate import translate
from xds_server import types
from xds_server.cache import SnapshotCache
from xds_server.explain import (
    ExplainError,
    explain,
    grpc_target_name,
    parse_headers,
)
from xds_server.explain_match import Request, find_virtual_host, header_mismatch, match_route
from xds_server.explain_routes import route_policy
from xds_server.explain_text import render
from xds_server.model import Endpoint, Locality, Port, Service, ServiceEntry, ServiceKey, labels
from xds_server.snapshot import Snapshot

POLICIES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: web, subset: v2}}]
  - name: beta
    match: [{uri: {regex: "/beta/[0-9]+"}}, {queryParams: {beta: {exact: "1"}}}]
    route:
    - {destination: {host: web, subset: v1}, weight: 75}
    - {destination: {host: web, subset: v2}, weight: 25}
  - name: everyone-else
    route: [{destination: {host: web, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web
  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 3}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""

ZONE_A = Locality("eu", "eu-a", "")


def catalog() -> dict[ServiceKey, ServiceEntry]:
    web = Service("web", "default", (Port("http", 80, "http"),))
    api = Service("api", "default", (Port("http", 8080, "http"), Port("db", 5432, "tcp")))
    eps = (
        Endpoint("10.0.0.1", 8001, "http", locality=ZONE_A, labels=labels({"version": "v1"})),
        Endpoint("10.0.0.2", 8002, "http", "unhealthy", labels=labels({"version": "v2"})),
    )
    return {
        web.key: ServiceEntry(web, eps),
        api.key: ServiceEntry(api, (Endpoint("10.0.1.1", 8080, "http"),)),
    }


def world(kind: str = "envoy") -> tuple[Snapshot, list[dict[str, Any]]]:
    """The group's snapshot as the controller would build it, and the policy statuses."""
    cat = catalog()
    resolution = resolve_policies(cat, parse_policy_file(POLICIES, "policies.yaml"), {})
    group = ProxyGroup(kind)  # type: ignore[arg-type]
    built = translate(cat, group, policies=resolution.services)
    cache = SnapshotCache()
    cache.set_snapshot(group.key, built.resources)
    return cache.get(group.key), [s.as_dict() for s in resolution.statuses]


def run(host: str, path: str = "/", headers: Sequence[str] = (), **kw: Any) -> dict[str, Any]:
    snap, statuses = world()
    req = Request(host, path, headers=parse_headers(headers))
    return explain(snap, req, policies=statuses, **kw)


def subsets(doc: dict[str, Any]) -> list[tuple[str | None, float]]:
    return [(c.get("subset"), c["share"]) for c in doc["clusters"]]


# ------------------------------------------------------------- through the translators


def test_header_canary_names_the_rule_its_policy_and_the_subset_endpoints() -> None:
    doc = run("web", headers=["End-User=jason"])
    assert doc["listener"]["name"] == "http_10000"
    assert doc["virtual_host"] == {"name": "web.default", "matched_by": "exact domain web"}
    assert doc["not_matched"] == []
    route = doc["route"]
    assert route["name"] == "VirtualService default/web http[0] (jason)"
    assert route["policy"]["rule"] == "VirtualService default/web http[0] (jason)"
    assert (route["policy"]["kind"], route["policy"]["state"]) == ("VirtualService", "ACCEPTED")
    assert route["policy"]["origin"].startswith("policies.yaml")
    (v2,) = doc["clusters"]
    assert (v2["name"], v2["subset"], v2["service"]) == ("web.default:80|v2", "v2", "web.default")
    assert v2["destination_policy"]["name"] == "web"
    assert v2["outlier_detection"]["consecutive_5xx"] == 3
    assert v2["endpoints"] == [
        {"address": "10.0.0.2:8002", "health": "UNHEALTHY", "weight": 1, "locality": "",
         "locality_weight": 1, "priority": 0},
    ]  # fmt: skip
    assert doc["action"]["timeout"] == "off"  # Istio's default, not Envoy's 15 s


def test_non_matching_request_says_why_each_earlier_route_failed() -> None:
    doc = run("web:80", "/shop?beta=2", ["end-user=bob"])
    assert doc["virtual_host"]["matched_by"] == "exact domain web:80"
    reasons = {nm["name"]: nm["why"] for nm in doc["not_matched"]}
    assert reasons == {
        "VirtualService default/web http[0] (jason)": [
            "header end-user 'bob' does not match exact 'jason'"
        ],
        "VirtualService default/web http[1] (beta) match[0]": [
            "path '/shop' does not match regex '/beta/[0-9]+'"
        ],
        "VirtualService default/web http[1] (beta) match[1]": [
            "query parameter beta '2' does not match exact '1'"
        ],
    }
    assert doc["route"]["policy"]["rule"] == "VirtualService default/web http[2] (everyone-else)"
    assert subsets(doc) == [("v1", 100.0)]
    (v1,) = doc["clusters"]
    assert [(e["address"], e["locality"]) for e in v1["endpoints"]] == [
        ("10.0.0.1:8001", "eu/eu-a/")
    ]


def test_regex_and_query_alternatives_give_weighted_subsets() -> None:
    by_regex = run("web", "/beta/42")
    assert by_regex["route"]["name"] == "VirtualService default/web http[1] (beta) match[0]"
    assert by_regex["route"]["policy"]["rule"] == "VirtualService default/web http[1] (beta)"
    assert by_regex["action"]["kind"] == "weighted_clusters"
    assert subsets(by_regex) == [("v1", 75.0), ("v2", 25.0)]
    # RE2 matches the whole path: a longer one does not match.
    assert run("web", "/beta/42x")["route"]["name"].endswith("(everyone-else)")
    by_query = run("web", "/x?beta=1")
    assert by_query["route"]["name"] == "VirtualService default/web http[1] (beta) match[1]"


def test_service_without_policy_gets_the_default_route_and_no_policy() -> None:
    doc = run("api:8080")
    assert (doc["route"]["name"], doc["route"]["policy"]) == ("default", None)
    (c,) = doc["clusters"]
    assert (c["name"], c["type"], c["lb_policy"]) == ("api.default:8080", "EDS", "ROUND_ROBIN")
    assert "subset" not in c and "destination_policy" not in c
    assert doc["action"]["retries"]["num_retries"] == 2


def test_host_port_of_a_tcp_listener_walks_that_listener() -> None:
    doc = run("api:5432")
    assert doc["listener"]["name"] == "tcp_5432"
    assert doc["action"] == {"kind": "tcp_proxy"}
    assert [c["name"] for c in doc["clusters"]] == ["api.default:5432"]
    assert "virtual_host" not in doc


@pytest.mark.parametrize(
    ("host", "kw", "status", "message"),
    [
        ("nowhere", {}, 404, "virtual host: host 'nowhere': no domain of route configuration"),
        ("web", {"port": 1234}, 404, "listener: port 1234: the proxy has no listener there"),
    ],
)
def test_errors_say_where_what_why(
    host: str, kw: dict[str, Any], status: int, message: str
) -> None:
    with pytest.raises(ExplainError) as info:
        run(host, **kw)
    assert info.value.status == status
    assert str(info.value).startswith(message), info.value


def test_text_rendering_reads_top_down() -> None:
    def labels(service: str, subset: str) -> dict[str, str] | None:
        return {"version": subset} if service == "web.default" else None

    doc = {
        "node": "n1",
        "group": "envoy",
        **run("web", "/", ["end-user=bob"], subset_labels=labels),
    }
    assert doc["clusters"][0]["subset_labels"] == {"version": "v1"}
    text = render(doc)
    assert "route[0] VirtualService default/web http[0] (jason): no match" in text
    assert "header end-user 'bob' does not match exact 'jason'" in text
    assert "route[3] VirtualService default/web http[2] (everyone-else): MATCHES" in text
    assert "cluster web.default:80|v1  subset v1 (version=v1)" in text
    assert "endpoint 10.0.0.1:8001  HEALTHY" in text


def test_proxyless_target_walks_the_api_listener_and_its_routes() -> None:
    snap, statuses = world("grpc")
    req = Request("web", "/pkg.Svc/Method", headers={"end-user": "jason"}, client="grpc")
    doc = explain(snap, req, policies=statuses, target="xds:///web")
    assert doc["listener"] == {
        "name": "web", "port": 0, "kind": "api",
        "chosen": "the API listener named by the target xds:///web",
    }  # fmt: skip
    assert doc["route"]["policy"]["rule"] == "VirtualService default/web http[0] (jason)"
    assert subsets(doc) == [("v2", 100.0)]
    # gRPC gets no route for a query parameter match: the regex alternative is there,
    # the query one is not.
    other = explain(snap, Request("web", "/pkg.Svc/M", client="grpc"), target="xds:///web")
    assert [nm["name"] for nm in other["not_matched"]] == [
        "VirtualService default/web http[0] (jason)",
        "VirtualService default/web http[1] (beta) match[0]",
    ]
    assert other["route"]["policy"]["note"] == "no policy object of this name is known now"
    with pytest.raises(ExplainError, match="listener: 'nope': no API listener"):
        explain(snap, req, target="xds:///nope")


# ------------------------------------------------------------------ Envoy's matching


def vhosts(*domains: Sequence[str]) -> route_pb2.RouteConfiguration:
    config = route_pb2.RouteConfiguration(name="r")
    for i, ds in enumerate(domains):
        config.virtual_hosts.add(name=f"vh{i}", domains=list(ds))
    return config


@pytest.mark.parametrize(
    ("host", "chosen", "how"),
    [
        ("api.example.com", "vh0", "exact domain api.example.com"),
        ("API.Example.com", "vh0", "exact domain api.example.com"),
        ("x.api.example.com", "vh1", "suffix wildcard *.api.example.com"),  # longest suffix
        ("x.example.com", "vh2", "suffix wildcard *.example.com"),
        ("api.example.org", "vh3", "prefix wildcard api.example.*"),  # longest prefix
        ("api.other", "vh4", "prefix wildcard api.*"),
        (".example.com", "vh5", "default domain *"),  # the wildcard needs a character
        ("elsewhere", "vh5", "default domain *"),
    ],
)
def test_domain_matching_order(host: str, chosen: str, how: str) -> None:
    config = vhosts(
        ["api.example.com"], ["*.api.example.com"], ["*.example.com"], ["api.example.*"],
        ["api.*"], ["*"],
    )  # fmt: skip
    vhost, found = find_virtual_host(config, host)
    assert (vhost.name if vhost else None, found) == (chosen, how)


def test_suffix_wildcard_wins_over_prefix_wildcard_and_exact_over_both() -> None:
    config = vhosts(["web.*"], ["*.default"], ["web.default"])
    assert find_virtual_host(config, "web.default")[0].name == "vh2"  # type: ignore[union-attr]
    assert find_virtual_host(config, "web.other")[0].name == "vh0"  # type: ignore[union-attr]
    assert find_virtual_host(config, "api.default")[0].name == "vh1"  # type: ignore[union-attr]
    assert find_virtual_host(vhosts(["a"]), "b") == (None, "")


def header(name: str, **kw: Any) -> rc.HeaderMatcher:
    return rc.HeaderMatcher(name=name, **kw)


def exact(value: str, **kw: Any) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(exact=value, **kw)


@pytest.mark.parametrize(
    ("matcher", "headers", "why"),
    [
        (header("x", string_match=exact("a")), {"x": "a"}, None),
        (header("x", string_match=exact("a")), {}, "header x is absent"),
        (header("x", string_match=exact("a"), invert_match=True), {"x": "b"}, None),
        (header("x", string_match=exact("a"), invert_match=True), {"x": "a"},
         "header x 'a' matches exact 'a', and the match is inverted"),
        # Envoy fails an inverted match on a missing header unless told to take it as "".
        (header("x", string_match=exact("a"), invert_match=True), {},
         "header x is absent (an inverted match fails too)"),
        (header("x", string_match=exact("a"), invert_match=True,
                treat_missing_header_as_empty=True), {}, None),
        (header("x", string_match=exact("A", ignore_case=True)), {"x": "a"}, None),
        (header("x", string_match=string_pb2.StringMatcher(
            safe_regex=regex_pb2.RegexMatcher(regex="v[0-9]"))), {"x": "v10"},
         "header x 'v10' does not match regex 'v[0-9]'"),
        (header("x", string_match=string_pb2.StringMatcher(suffix="-b")), {"x": "a-b"}, None),
        (header("x", string_match=string_pb2.StringMatcher(contains="mid")), {"x": "amidb"}, None),
        (header("x", present_match=True), {}, "header x is absent, wanted present"),
        (header("x", present_match=True, invert_match=True), {}, None),
        (header("x", present_match=False), {"x": "1"}, "header x is present, wanted absent"),
        (header(":method", string_match=exact("POST")), {},
         "header :method 'GET' does not match exact 'POST'"),
        (header(":authority", string_match=string_pb2.StringMatcher(prefix="we")), {}, None),
    ],
)  # fmt: skip
def test_header_matchers(
    matcher: rc.HeaderMatcher, headers: dict[str, str], why: str | None
) -> None:
    assert header_mismatch(matcher, Request("web", headers=headers)) == why


def route(**match: Any) -> rc.Route:
    return rc.Route(name="r", match=rc.RouteMatch(**match))


@pytest.mark.parametrize(
    ("r", "path", "why"),
    [
        (route(prefix="/api"), "/api/x?q=1", None),
        (route(prefix="/API"), "/api", "path '/api' does not start with prefix '/API'"),
        (route(prefix="/API", case_sensitive=wrappers_pb2.BoolValue(value=False)), "/api", None),
        (route(path="/a"), "/a?x=1", None),  # the query string is not part of the path
        (route(path="/a"), "/a/", "path '/a/' is not exactly '/a'"),
        (route(path_separated_prefix="/foo"), "/foo/bar", None),
        (route(path_separated_prefix="/foo"), "/foo", None),
        (route(path_separated_prefix="/foo"), "/foobar",
         "path '/foobar' is not '/foo' or under '/foo/'"),
        (route(safe_regex=regex_pb2.RegexMatcher(regex="/v[12]/.*")), "/v3/x",
         "path '/v3/x' does not match regex '/v[12]/.*'"),
    ],
)  # fmt: skip
def test_path_matchers(r: rc.Route, path: str, why: str | None) -> None:
    verdict = match_route(r, Request("web", path))
    assert verdict.why == (() if why is None else (why,))


def test_runtime_fraction_is_flagged_not_evaluated_and_all_failures_are_listed() -> None:
    r = route(prefix="/", runtime_fraction={"default_value": {"numerator": 10}})
    verdict = match_route(r, Request("web"))
    assert verdict.matched
    assert verdict.notes == (
        "runtime_fraction 10/100 of requests: ignored here (taken as matching)",
    )
    both = route(prefix="/a", headers=[header("x", present_match=True)])
    assert match_route(both, Request("web", "/b")).why == (
        "path '/b' does not start with prefix '/a'",
        "header x is absent, wanted present",
    )


def test_route_policy_prefers_the_longest_policy_name() -> None:
    common = {"kind": "VirtualService", "namespace": "d", "state": "ACCEPTED"}
    statuses = [
        {**common, "name": "w", "origin": "a"},
        {**common, "name": "w http[0]", "origin": "b"},
    ]
    found = route_policy("VirtualService d/w http[0] http[1] (x)", statuses)
    assert found is not None and found["origin"] == "b"


def test_parse_headers() -> None:
    assert parse_headers(["A=1", "a=2", ":authority=x", "b:3"]) == {
        "a": "1,2", ":authority": "x", "b": "3"
    }  # fmt: skip
    with pytest.raises(ExplainError, match="header: 'nothing': give K=V"):
        parse_headers(["nothing"])


def test_grpc_skips_query_parameter_routes_and_binary_headers() -> None:
    """gRPC has no query string to match (gRFC A28): such a route never matches a gRPC
    call, even where an Envoy request with the parameter would; and gRPC C-core routes
    as if binary (-bin) headers were absent."""
    r = route(prefix="/", query_parameters=[rc.QueryParameterMatcher(name="q", present_match=True)])
    assert match_route(r, Request("web", "/?q=1")).matched
    assert match_route(r, Request("web", "/?q=1", client="grpc")).why == (
        "gRPC skips routes that match query parameters",
    )
    binary = header("x-bin", present_match=True)
    assert header_mismatch(binary, Request("web", headers={"x-bin": "1"})) is None
    assert header_mismatch(binary, Request("web", headers={"x-bin": "1"}, client="grpc")) == (
        "header x-bin is absent, wanted present (gRPC hides binary -bin headers from routing)"
    )


def test_grpc_target_names() -> None:
    forms = ["xds:///web", "xds://authority.example/web", "xds:web", "xds:///web:8080"]
    assert [grpc_target_name(t) for t in forms] == ["web", "web", "web", "web:8080"]
    for bad, why in [("dns:///web", "a proxyless target is xds:///<name>"), ("xds:///", "no name")]:
        with pytest.raises(ExplainError, match=why):
            grpc_target_name(bad)


def test_route_policy_asks_who_wrote_a_rule_of_a_merged_policy() -> None:
    common = {"kind": "HTTPRoute", "namespace": "default", "state": "ACCEPTED"}
    statuses = [{**common, "name": "a", "origin": "a.yaml"}, {**common, "name": "b", "origin": "b"}]

    def writer(subject: str, index: int) -> tuple[str, str, str] | None:
        return (
            ("HTTPRoute", "default", "b")
            if (subject, index) == ("Service default/web", 1)
            else None
        )

    found = route_policy("Service default/web http[1] match[0]", statuses, writer)
    assert found == {
        "rule": "Service default/web http[1]",
        **common,
        "name": "b",
        "origin": "b",
        "source": None,
    }
    unknown = route_policy("Service default/web http[0]", statuses, writer)
    assert unknown == {
        "rule": "Service default/web http[0]",
        "note": "no policy object of this name is known now",
    }


def test_redirect_direct_response_missing_cluster_and_host_header() -> None:
    """Actions other than a cluster; a weighted cluster the snapshot lacks (Envoy: 503
    NC); and Envoy's header map has :authority, never a "host" header."""
    config = route_pb2.RouteConfiguration(name="http_1")
    vhost = config.virtual_hosts.add(name="all", domains=["*"])
    moved = rc.RedirectAction(host_redirect="new.example", response_code=rc.RedirectAction.FOUND)
    vhost.routes.add(
        name="by-host",
        match=rc.RouteMatch(prefix="/", headers=[header("host", present_match=True)]),
        direct_response=rc.DirectResponseAction(status=500),
    )
    vhost.routes.add(name="moved", match=rc.RouteMatch(prefix="/old"), redirect=moved)
    vhost.routes.add(
        name="teapot",
        match=rc.RouteMatch(path="/tea"),
        direct_response=rc.DirectResponseAction(status=418),
    )
    split = rc.WeightedCluster(
        clusters=[
            rc.WeightedCluster.ClusterWeight(name="gone", weight=wrappers_pb2.UInt32Value(value=1))
        ]
    )
    vhost.routes.add(
        name="split", match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(weighted_clusters=split)
    )
    cache = SnapshotCache()
    cache.set_snapshot(
        "g", {types.LISTENER: [rb.http_listener("http_1", 1, "http_1")], types.ROUTE: [config]}
    )
    snap = cache.get("g")

    def walk(path: str) -> dict[str, Any]:
        return explain(snap, Request("web", path, headers={"host": "web"}))

    assert walk("/old/x")["not_matched"][0]["why"] == ["header host is absent, wanted present"]
    assert walk("/old/x")["action"] == {
        "kind": "redirect",
        "host_redirect": "new.example",
        "response_code": "FOUND",
    }
    assert walk("/tea")["action"] == {"kind": "direct_response", "status": 418, "body": ""}
    (gone,) = walk("/x")["clusters"]
    assert (
        gone["missing"] == "the proxy's configuration has no cluster of this name (Envoy: 503 NC)"
    )
    assert "action: redirect" in render({"group": "g", **walk("/old/x")})
