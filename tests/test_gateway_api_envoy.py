"""Real Envoy, as the judge of how Gateway API routes are rendered: whole-segment path
prefixes, the spec's ReplacePrefixMatch table, ReplaceFullPath and prefix redirects
(routes from `parse_route` through `translators.policy_routes`, in a static bootstrap)."""

from __future__ import annotations

import http.client
from collections.abc import Callable
from typing import Any

import pytest

from tests.gateway_objects import route
from tests.gateway_render import envoy_routes, merged_envoy_routes
from tests.harness.backends import HttpBackend
from tests.harness.envoy import EnvoyProcess, static_bootstrap
from tests.harness.ports import free_port

pytest_plugins = ["tests.harness.fixtures"]
pytestmark = pytest.mark.timeout(60)

# The HTTPPathModifier table of apis/v1/httproute_types.go (request, prefix, replacement,
# result), plus the root prefix.
REPLACE_PREFIX = [
    ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
    ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
    ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
    ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
    ("/foo", "/foo", "/xyz", "/xyz"),
    ("/foo/", "/foo", "/xyz", "/xyz/"),
    ("/foo/bar", "/foo", "", "/bar"),
    ("/foo/", "/foo", "", "/"),
    ("/foo", "/foo", "", "/"),
    ("/foo/", "/foo", "/", "/"),
    ("/foo", "/foo", "/", "/"),
]


def rewrite_prefix(prefix: str, replacement: str) -> dict[str, Any]:
    return {
        "matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
        "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {
            "type": "ReplacePrefixMatch", "replacePrefixMatch": replacement}}}],
        "backendRefs": [{"name": "web", "port": 80}],
    }  # fmt: skip


def tagged(prefix: str, tag: str) -> dict[str, Any]:
    return {
        "matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
        "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "set": [{"name": "x-rule", "value": tag}]}}],
        "backendRefs": [{"name": "web", "port": 80}],
    }  # fmt: skip


def request(port: int, path: str) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("location")
    finally:
        conn.close()


@pytest.fixture
def envoy_with(
    envoy_factory: Callable[..., EnvoyProcess], http_backend_factory: Callable[..., HttpBackend]
) -> Callable[[list[dict[str, Any]]], tuple[int, HttpBackend]]:
    def start(routes: list[dict[str, Any]]) -> tuple[int, HttpBackend]:
        backend = http_backend_factory("web")
        listener = free_port()
        boot = static_bootstrap(free_port(), listener, backend.port)
        hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"] = routes
        envoy_factory(boot, wait="ready")
        return listener, backend

    return start


def test_prefix_rewrites_follow_the_spec_table(envoy_with: Any) -> None:
    rules = [rewrite_prefix(f"/r{i}{prefix}", repl) for i, (_, prefix, repl, _) in
             enumerate(REPLACE_PREFIX)]  # fmt: skip
    full = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/full"}}],
        "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {
            "type": "ReplaceFullPath", "replaceFullPath": "/replaced"}}}],
        "backendRefs": [{"name": "web", "port": 80}],
    }  # fmt: skip
    backslash = {**full, "matches": [{"path": {"type": "Exact", "value": "/bs"}}]}
    backslash["filters"] = [{"type": "URLRewrite", "urlRewrite": {"path": {
        "type": "ReplaceFullPath", "replaceFullPath": "/a\\1b"}}}]  # fmt: skip
    rules += [full, backslash, rewrite_prefix("/", "/root")]  # the root last: it matches all
    routes: list[dict[str, Any]] = []
    for i in range(0, len(rules), 16):  # at most 16 rules per route
        routes += envoy_routes(route(*rules[i : i + 16], name=f"r{i}"))
    port, backend = envoy_with(routes)
    cases = [(f"/r{i}{req}", want) for i, (req, _, _, want) in enumerate(REPLACE_PREFIX)]
    cases += [
        ("/r0/foo/bar?q=1", "/xyz/bar?q=1"),  # the query string is kept
        ("/full", "/replaced"),
        ("/full/a/b?x=1", "/replaced?x=1"),
        ("/bs", "/a\\1b"),  # a backslash is not a capture-group reference
        ("/bar", "/root/bar"),
        ("/r0/foobar", "/root/r0/foobar"),  # not a segment of /r0/foo: the root's
    ]
    got = []
    for path, _ in cases:
        assert request(port, path)[0] == 200, path
        got.append(backend.seen[-1].path)
    assert got == [want for _, want in cases]


def test_path_prefix_matches_whole_segments(envoy_with: Any) -> None:
    # Two routes, the longer prefix in the newer one: precedence puts it first.
    seg = route(tagged("/seg", "seg"), name="seg", created="2024-01-01T00:00:00Z")
    deeper = route(tagged("/seg/deeper/", "deeper"), name="deeper", created="2025-01-01T00:00:00Z")
    port, backend = envoy_with(merged_envoy_routes(seg, deeper))
    got = {}
    for path in ("/seg", "/seg/", "/seg/x", "/segx", "/seg/deeper", "/seg/deeperx", "/se"):
        status, _ = request(port, path)
        got[path] = backend.seen[-1].headers.get("x-rule") if status == 200 else status
        backend.seen.clear()
    assert got == {
        "/seg": "seg",
        "/seg/": "seg",
        "/seg/x": "seg",
        "/segx": 404,
        "/seg/deeper": "deeper",
        "/seg/deeperx": "seg",
        "/se": 404,
    }


def test_redirects_replace_the_prefix_or_the_path_and_name_the_port(envoy_with: Any) -> None:
    def redirect(prefix: str, code: int, **target: Any) -> dict[str, Any]:
        return {
            "matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
            "filters": [{"type": "RequestRedirect", "requestRedirect": {
                "statusCode": code, **target}}],
        }  # fmt: skip

    obj = route(
        redirect("/old", 301, path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}),
        redirect("/gone", 302, path={"type": "ReplacePrefixMatch", "replacePrefixMatch": ""}),
        redirect("/moved", 308, path={"type": "ReplaceFullPath", "replaceFullPath": "/here"}),
        # The spec: a scheme brings its well-known port, a port is kept, neither keeps
        # the request's port (Envoy would keep the request's port across a scheme change).
        redirect("/secure", 302, scheme="https"),
        redirect("/plain", 302, scheme="http", hostname="example.com"),
        redirect("/port80", 302, port=80),
        redirect("/alt", 302, scheme="https", port=8443),
    )
    port, _ = envoy_with(envoy_routes(obj))
    paths = ("/old/a/b", "/old", "/gone/x", "/gone", "/moved/y", "/secure/s", "/plain",
             "/port80", "/alt")  # fmt: skip
    got = [request(port, p) for p in paths]
    host = f"http://127.0.0.1:{port}"
    assert got == [
        (301, f"{host}/new/a/b"),
        (301, f"{host}/new"),
        (302, f"{host}/x"),
        (302, f"{host}/"),
        (308, f"{host}/here"),
        (302, "https://127.0.0.1:443/secure/s"),
        (302, "http://example.com:80/plain"),
        (302, "http://127.0.0.1:80/port80"),
        (302, "https://127.0.0.1:8443/alt"),
    ]
