"""Security objects in a policy file, through the server: `/debug/policies` and `xdsctl
policies` list each with its state (a refused one names its field), next to the traffic
policy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.timeout(60)
pytest_plugins = ["tests.harness.fixtures"]

POLICY = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: shop}
spec:
  action: AUDIT
"""


def test_security_objects_are_listed_with_their_state(
    tmp_path: Path, xds_server_factory: Callable[..., XdsServerProcess]
) -> None:
    policy = tmp_path / "security.yaml"
    policy.write_text(POLICY)
    server = xds_server_factory("--policy", str(policy))

    def listed() -> dict[str, Any]:
        return {p["name"]: p for p in server.get("/debug/policies")}

    wait_for(lambda: len(listed()) == 3, 10, message="the three objects")
    got = listed()
    assert got["api"]["kind"] == "AuthorizationPolicy" and got["api"]["state"] == "ACCEPTED"
    assert got["api"]["reasons"] == []
    assert got["mesh"]["state"] == "ACCEPTED"
    assert got["audit"]["state"] == "REJECTED"
    assert got["audit"]["reasons"][0].endswith(
        "AuthorizationPolicy shop/audit: spec.action: action AUDIT is not supported: "
        "no audit logger is configured"
    )
    table = server.xdsctl("policies").stdout
    assert "AuthorizationPolicy" in table and "PeerAuthentication" in table
    assert "REJECTED" in table
