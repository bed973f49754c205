"""AuthorizationPolicies and PeerAuthentications watched from Kubernetes (kmock), as
`security.istio.io/v1`, or `v1beta1` where only that is served."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.kubeapi import KubeApi
from tests.harness.waiting import async_wait_for, running_task
from tests.test_kubernetes_policies import WAIT, Recorder, lists, make_source
from xds_server.model import AuthorizationPolicy, PeerAuthentication

pytestmark = pytest.mark.timeout(60)
pytest_plugins = ["tests.harness.kube_fixtures"]


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
async def test_security_kinds_are_listed_and_followed(
    kube_api: KubeApi, tmp_path: Path, version: str
) -> None:
    kube_api.serve_crds(istio=version, gateway=False)
    api = f"security.istio.io/{version}"
    kube_api.create_custom(
        {
            "apiVersion": api,
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "deny-admin", "namespace": "shop"},
            "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]},
        }
    )
    kube_api.create_custom(
        {
            "apiVersion": api,
            "kind": "PeerAuthentication",
            "metadata": {"name": "mesh", "namespace": "istio-system"},
            "spec": {"mtls": {"mode": "BOGUS"}},
        }
    )
    rec = Recorder()
    async with running_task(make_source(kube_api, tmp_path, rec).run()):
        await async_wait_for(lambda: len(rec.policies()) == 2, WAIT, message="listed")
        got = rec.policies()
        deny = got["AuthorizationPolicy shop/deny-admin"]
        assert isinstance(deny.security, AuthorizationPolicy) and deny.security.action == "DENY"
        bad = got["PeerAuthentication istio-system/mesh"]
        assert bad.security is None
        assert bad.error == (
            "kubernetes:istio-system/mesh: PeerAuthentication istio-system/mesh: "
            "spec.mtls.mode: unknown mode 'BOGUS' (one of UNSET, DISABLE, PERMISSIVE, STRICT)"
        )
        # Served: no "not served by the cluster" note for the security kinds.
        assert not [n for n in rec.status()["notes"] if "security.istio.io" in n]
        assert lists(kube_api, "authorizationpolicies")[-1] == f"/apis/{api}/authorizationpolicies"
        kube_api.patch_custom(
            api, "PeerAuthentication", "mesh", {"spec": {"mtls": {"mode": "STRICT"}}},
            "istio-system",
        )  # fmt: skip
        await async_wait_for(
            lambda: isinstance(
                rec.policies()["PeerAuthentication istio-system/mesh"].security,
                PeerAuthentication,
            ),
            WAIT,
            message="the fixed PeerAuthentication",
        )
