"""The model pieces Gateway API routes added, rendered by `translators.policy_routes`:
whole-segment prefixes (`path_prefix`), full-path rewrites and prefix redirects."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from translators.policy_common import RouteTarget
from translators.policy_routes import http_routes
from xds_server.model import (
    Destination,
    HttpRule,
    Redirect,
    RequestMatch,
    Rewrite,
    StringMatch,
    WeightedDestination,
)

WEB = (WeightedDestination(Destination("web", "shop", 80)),)


def render(rule: HttpRule, client: Any = "envoy") -> list[dict[str, Any]]:
    routes, _ = http_routes(
        [rule], port=80, resolve=lambda d: RouteTarget("web"), client=client, subject="t"
    )
    return [MessageToDict(r) for r in routes]


def prefix(value: str, kind: Any = "path_prefix") -> tuple[RequestMatch, ...]:
    return (RequestMatch(uri=StringMatch(kind, value)),)


def test_path_prefix_for_envoy_and_grpc() -> None:
    rule = HttpRule(matches=prefix("/api"), destinations=WEB)
    assert [r["match"] for r in render(rule)] == [{"pathSeparatedPrefix": "/api"}]
    assert [r["match"] for r in render(rule, "grpc")] == [{"path": "/api"}, {"prefix": "/api/"}]
    root = HttpRule(matches=prefix("/"), destinations=WEB)
    assert [r["match"] for r in render(root)] == [{"prefix": "/"}]
    assert [r["match"] for r in render(root, "grpc")] == [{"prefix": "/"}]


def test_full_path_rewrite_is_a_regex_rewrite_for_envoy_only() -> None:
    rule = HttpRule(matches=prefix("/a"), destinations=WEB, rewrite=Rewrite(path="/b"))
    (route,) = render(rule)
    assert route["route"]["regexRewrite"] == {"pattern": {"regex": "^/.*$"}, "substitution": "/b"}
    assert all("regexRewrite" not in r["route"] for r in render(rule, "grpc"))


def test_redirect_prefix_on_a_plain_prefix_match() -> None:
    """A model redirect with `prefix` on an Istio-style prefix match replaces that prefix
    (the whole-segment case is split per route, see test_gateway_api_envoy)."""
    rule = HttpRule(matches=prefix("/old", "prefix"), redirect=Redirect(prefix="/new"))
    (route,) = render(rule)
    assert route["redirect"] == {"prefixRewrite": "/new"}
    empty = HttpRule(matches=prefix("/old", "prefix"), redirect=Redirect(prefix=""))
    assert render(empty)[0]["redirect"] == {"prefixRewrite": "/"}
