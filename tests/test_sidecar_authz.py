"""Authorization and peer authentication from a policy file, enforced by sidecar Envoys
(issue 13, test 2, and test 3 with PeerAuthentication instead of the flag).

The mesh of tests.test_sidecar_envoy (``web`` calls ``api`` over mutual TLS) and a third
identity, ``other``: a client-only sidecar (sa/other) that also depends on ``api``. The
objects come from a ``--policy`` file the server rereads; every edit applies without a
restart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.backends import http_get
from tests.harness.envoy import EnvoyProcess
from tests.harness.mesh import plain_request, sidecar_bootstrap
from tests.harness.ports import free_port
from tests.harness.waiting import wait_for
from tests.test_sidecar_envoy import Mesh, mesh_of  # noqa: F401  (the fixture)

pytest_plugins = ["tests.harness.fixtures"]
pytestmark = pytest.mark.timeout(120)

ALLOW_WEB = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api-allow-web, namespace: default}
spec:
  selector: {matchLabels: {app: api}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/web]}}]
"""
DENY_ADMIN = """\
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api-deny-admin, namespace: default}
spec:
  selector: {matchLabels: {app: api}}
  action: DENY
  rules:
  - to: [{operation: {paths: [/admin]}}]
"""
PEER_AUTHENTICATION = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: %s}
"""


def status(port: int, path: str = "/") -> int:
    try:
        return http_get(f"http://127.0.0.1:{port}{path}", host="api", timeout=5)[0]
    except OSError:
        return 0


def other_sidecar(mesh: Mesh, envoy_factory: Callable[..., EnvoyProcess]) -> int:
    """A client-only sidecar with identity sa/other that depends on api; its HTTP port."""
    port = free_port()
    boot = sidecar_bootstrap(
        mesh.server.xds_port,
        free_port(),
        node_id="other-1",
        service_account="other",
        http_listener_port=port,
        dependencies=["api"],
    )
    envoy_factory(boot, name="other", wait="ready", timeout=30)
    return port


def test_2_only_web_is_allowed_and_a_deny_on_a_path_wins(
    tmp_path: Path,
    mesh_of: Callable[..., Mesh],  # noqa: F811
    envoy_factory: Callable[..., EnvoyProcess],
) -> None:
    policy = tmp_path / "security.yaml"
    policy.write_text(ALLOW_WEB)
    mesh = mesh_of("--policy", str(policy), api_labels={"app": "api"})
    assert mesh.call_api()[0] == 200
    other = other_sidecar(mesh, envoy_factory)
    denied = "http.inbound_80.rbac.denied"  # api's inbound HCM (its service port)
    # `other` reaches api's sidecar over mutual TLS; api's RBAC refuses its identity.
    wait_for(lambda: status(other) == 403, timeout=20, message=lambda: f"other: {status(other)}")
    before = mesh.api.stat(denied) or 0
    assert before >= 1 and status(other) == 403
    assert (mesh.api.stat(denied) or 0) == before + 1
    assert mesh.call_api()[0] == 200 and status(mesh.web_port, "/admin") == 200

    # A DENY on /admin, added to the file: it wins over the ALLOW for web.
    policy.write_text(ALLOW_WEB + DENY_ADMIN)
    wait_for(lambda: status(mesh.web_port, "/admin") == 403, timeout=20, message="the DENY")
    requests = mesh.backend.requests
    assert status(mesh.web_port, "/admin") == 403 and status(other) == 403
    assert mesh.call_api()[0] == 200
    assert mesh.backend.requests == requests + 1  # only web's / reached the backend

    # The ALLOW removed: anyone may call again, except /admin.
    policy.write_text(DENY_ADMIN.removeprefix("---\n"))
    wait_for(lambda: status(other) == 200, timeout=20, message="other allowed")
    assert status(other, "/admin") == 403


def test_3_peer_authentication_from_a_policy_file(
    tmp_path: Path,
    mesh_of: Callable[..., Mesh],  # noqa: F811
) -> None:
    """Mesh-wide STRICT refuses plaintext on the inbound port (the flag says PERMISSIVE);
    switched to PERMISSIVE in the file, plaintext is served; mutual TLS all along."""
    policy = tmp_path / "security.yaml"
    policy.write_text(PEER_AUTHENTICATION % "STRICT")
    mesh = mesh_of("--policy", str(policy), "--mesh-mtls-mode", "PERMISSIVE")
    assert mesh.call_api()[0] == 200
    assert plain_request(mesh.api_inbound) != 200
    policy.write_text(PEER_AUTHENTICATION % "PERMISSIVE")
    wait_for(lambda: plain_request(mesh.api_inbound) == 200, timeout=20, message="PERMISSIVE")
    assert mesh.call_api()[0] == 200
