"""Traffic policy that answers in Envoy, without a backend, through a real Envoy (SotW and
delta): a VirtualService `redirect`, a `directResponse`, and a `corsPolicy` preflight."""

from __future__ import annotations

import http.client

import pytest

from tests.harness.policy import PolicyWorld, destination, virtual_service

pytest_plugins = ["tests.harness.policy_fixtures"]
pytestmark = pytest.mark.timeout(120)

SERVICES = [("web", [("web", {})])]
ORIGIN = "https://app.example.com"

RULES = [
    {
        "name": "moved",
        "match": [{"uri": {"prefix": "/old"}}],
        "redirect": {"uri": "/new", "authority": "example.org", "redirectCode": 308},
    },
    {
        "name": "teapot",
        "match": [{"uri": {"exact": "/teapot"}}],
        "directResponse": {"status": 418, "body": {"string": "I'm a teapot"}},
    },
    {
        "name": "main",
        "route": [destination("web")],
        "corsPolicy": {
            "allowOrigins": [{"exact": ORIGIN}],
            "allowMethods": ["GET", "POST"],
            "allowHeaders": ["x-user"],
            "maxAge": "3600s",
        },
    },
]


def request(
    port: int, method: str, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], str]:
    """One request on its own connection: status, headers (lower-case names), body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers={"Host": "web", **headers})
        resp = conn.getresponse()
        body = resp.read().decode()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def test_redirect_direct_response_and_cors_answer_in_envoy(world: PolicyWorld, mode: str) -> None:
    world.apply(virtual_service("web", ["web"], RULES))
    port = world.ports[mode]
    backend = world.backends["web"]
    seen = len(backend.seen)

    status, headers, _ = request(port, "GET", "/old/page", {})
    assert (status, headers.get("location")) == (308, "http://example.org/new"), headers

    status, _, body = request(port, "GET", "/teapot", {})
    assert (status, body) == (418, "I'm a teapot")

    # A CORS preflight from an allowed origin is answered by Envoy's CORS filter.
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    status, headers, _ = request(port, "OPTIONS", "/", preflight)
    assert status == 200, headers
    assert headers.get("access-control-allow-origin") == ORIGIN, headers
    assert headers.get("access-control-allow-methods") == "GET,POST", headers
    assert headers.get("access-control-max-age") == "3600", headers
    # A simple request from an allowed origin reaches the backend and gets the header;
    # from another origin it gets no CORS header.
    status, headers, body = request(port, "GET", "/", {"Origin": ORIGIN})
    assert (status, body, headers.get("access-control-allow-origin")) == (200, "web", ORIGIN)
    status, headers, _ = request(port, "GET", "/", {"Origin": "https://evil.example"})
    assert status == 200 and "access-control-allow-origin" not in headers, headers

    # Only the two plain GETs reached the backend: the rest was answered by Envoy.
    assert len(backend.seen) - seen == 2, backend.seen[seen:]
