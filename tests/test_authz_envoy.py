"""Rendered authorization against a real Envoy, without mTLS: the HTTP RBAC filters in
front of an HttpBackend (a DENY rule on a path wins over an ALLOW, method/path rules,
header `when` conditions, 403 ``RBAC: access denied`` and ``rbac.denied`` moving), the
network RBAC filters closing denied TCP connections (destination.port, source.ip), Istio's
TCP rule for an ALLOW policy with only HTTP fields, and the local rate limit (429).
Principal checks need mTLS and live with the inbound listener tests."""

from __future__ import annotations

import http.client
from collections.abc import Callable
from typing import Any

import pytest

from sources.consul_config import compile_intentions
from sources.istio.security import parse_security
from tests.authz_bootstrap import authz_bootstrap
from tests.harness.backends import HttpBackend
from tests.harness.envoy import EnvoyProcess
from tests.harness.ports import free_port
from translators.authz import http_authz_filters, network_authz_filters
from translators.inbound_ratelimit import local_rate_limit_filter
from xds_server.model import RateLimit, SecurityPolicy, Workload

pytestmark = pytest.mark.timeout(60)
pytest_plugins = ["tests.harness.fixtures"]

TD = "cluster.local"
WEB = Workload("shop", (("app", "web"),))
TCP_DENIED = Workload("shop", (("app", "tcp-denied"),))
TCP_ALLOWED = Workload("shop", (("app", "tcp-allowed"),))
TCP_HTTP_ONLY = Workload("shop", (("app", "tcp-http-only"),))


def policy(name: str, spec: dict[str, Any]) -> SecurityPolicy:
    return parse_security(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": spec,
        }
    ).policy


def request(
    port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def tcp_refused(port: int) -> bool:
    """Whether an HTTP request through the TCP listener is cut off (RBAC closes it)."""
    try:
        request(port, "/")
    except (ConnectionError, http.client.HTTPException, TimeoutError):
        return True
    return False


POLICIES = [
    policy(
        "web-allow",
        {
            "selector": {"matchLabels": {"app": "web"}},
            "rules": [
                {"to": [{"operation": {"methods": ["GET"], "paths": ["/public/*", "/admin/*"]}}]},
                {
                    "to": [{"operation": {"methods": ["POST"], "paths": ["/submit"]}}],
                    "when": [{"key": "request.headers[x-token]", "values": ["secret"]}],
                },
            ],
        },
    ),
    policy(
        "web-deny-admin",
        {
            "selector": {"matchLabels": {"app": "web"}},
            "action": "DENY",
            "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}],
        },
    ),
]


def test_http_rbac_deny_wins_and_rules_hold(
    envoy_factory: Callable[..., EnvoyProcess], http_backend_factory: Callable[..., HttpBackend]
) -> None:
    backend = http_backend_factory("web")
    port = free_port()
    filters = http_authz_filters(POLICIES, WEB, TD)
    envoy = envoy_factory(authz_bootstrap(free_port(), port, backend.port, filters), wait="ready")

    def denied() -> int:
        return envoy.stat("http.ingress.rbac.denied") or 0

    assert request(port, "/public/a") == (200, "web")
    before = denied()
    # The ALLOW policy allows GET /admin/*; the DENY policy on the path wins.
    assert request(port, "/admin/x") == (403, "RBAC: access denied")
    assert denied() == before + 1
    assert request(port, "/public/a", "POST")[0] == 403  # method not allowed
    assert request(port, "/elsewhere")[0] == 403  # no ALLOW rule matches
    assert request(port, "/submit", "POST", {"x-token": "secret"}) == (200, "web")
    assert request(port, "/submit", "POST", {"x-token": "guess"})[0] == 403
    assert request(port, "/submit", "POST")[0] == 403  # header absent
    assert denied() == before + 5
    assert sorted(s.path for s in backend.seen) == ["/public/a", "/submit"]


def test_network_rbac_closes_denied_connections(
    envoy_factory: Callable[..., EnvoyProcess], http_backend_factory: Callable[..., HttpBackend]
) -> None:
    backend = http_backend_factory("tcp")
    http_port, denied_port, allowed_port, http_only_port = (free_port() for _ in range(4))
    policies = [
        policy(  # destination.port: this listener's port is denied
            "deny-port",
            {
                "selector": {"matchLabels": {"app": "tcp-denied"}},
                "action": "DENY",
                "rules": [{"when": [{"key": "destination.port", "values": [str(denied_port)]}]}],
            },
        ),
        policy(  # source.ip: loopback allowed, and a DENY whose HTTP field widens it
            "allow-loopback",
            {
                "selector": {"matchLabels": {"app": "tcp-allowed"}},
                "rules": [{"from": [{"source": {"ipBlocks": ["127.0.0.1/32"]}}]}],
            },
        ),
        policy(  # an ALLOW rule with only HTTP fields allows nothing on TCP (Istio)
            "allow-http-only",
            {
                "selector": {"matchLabels": {"app": "tcp-http-only"}},
                "rules": [{"to": [{"operation": {"paths": ["/"]}}]}],
            },
        ),
    ]
    tcp = [
        ("denied", denied_port, network_authz_filters(policies, TCP_DENIED, TD)),
        ("allowed", allowed_port, network_authz_filters(policies, TCP_ALLOWED, TD)),
        ("http_only", http_only_port, network_authz_filters(policies, TCP_HTTP_ONLY, TD)),
    ]
    envoy = envoy_factory(
        authz_bootstrap(free_port(), http_port, backend.port, [], tcp), wait="ready"
    )
    assert not tcp_refused(allowed_port)
    assert tcp_refused(denied_port)
    assert tcp_refused(http_only_port)
    assert (envoy.stat("tcp.rbac.denied") or 0) == 2
    assert (envoy.stat("tcp.rbac.allowed") or 0) >= 1
    assert backend.requests == 1


def test_local_rate_limit_answers_429(
    envoy_factory: Callable[..., EnvoyProcess], http_backend_factory: Callable[..., HttpBackend]
) -> None:
    backend = http_backend_factory("limited")
    port = free_port()
    # One token, one more each second: back-to-back requests soon find the bucket empty.
    filters = [local_rate_limit_filter(RateLimit(1, 1), "limited")]
    envoy_factory(authz_bootstrap(free_port(), port, backend.port, filters), wait="ready")
    assert request(port, "/")[0] == 200
    for _ in range(20):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
        finally:
            conn.close()
        if resp.status == 429:
            break
    assert resp.status == 429
    assert resp.getheader("x-local-rate-limit") == "true"


def test_consul_l7_intentions_first_permission_wins(
    envoy_factory: Callable[..., EnvoyProcess], http_backend_factory: Callable[..., HttpBackend]
) -> None:
    """Consul's ordered L7 permissions through Envoy: an earlier allow exempts what a later
    deny matches (`unless` as a not_rule), header and regex matchers; both defaults."""
    permissions = [
        {"Action": "allow", "HTTP": {"PathPrefix": "/admin/health"}},
        {"Action": "deny", "HTTP": {"PathRegex": "/admin/.*"}},
        {"Action": "deny", "HTTP": {"Header": [{"Name": "x-debug", "Present": True}]}},
        {"Action": "allow", "HTTP": {"PathExact": "/public", "Methods": ["GET"]}},
    ]
    entry = {
        "Kind": "service-intentions",
        "Name": "api",
        # Any caller (a plaintext one too): principals need mTLS, tested with the sidecars.
        "Sources": [{"Name": "*", "Namespace": "*", "Permissions": permissions}],
    }
    api = Workload("default", service="api")
    backend = http_backend_factory("api")
    allow_port, deny_port = free_port(), free_port()
    for default_allow, port in ((True, allow_port), (False, deny_port)):
        policies = [o.security for o in compile_intentions([entry], default_allow) if o.security]
        filters = http_authz_filters(policies, api, TD)
        envoy_factory(authz_bootstrap(free_port(), port, backend.port, filters), wait="ready")
    for port in (allow_port, deny_port):
        assert request(port, "/admin/health")[0] == 200
        assert request(port, "/admin/x") == (403, "RBAC: access denied")
        assert request(port, "/public", headers={"x-debug": "1"})[0] == 403
        assert request(port, "/public")[0] == 200
    # No permission matches: the default decides.
    assert request(allow_port, "/other")[0] == 200
    assert request(deny_port, "/other")[0] == 403
