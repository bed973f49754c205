"""deploy/kubernetes: the manifests are valid Kubernetes objects (schemas, offline) and
say what the README promises: read-only RBAC (but for route status and its Lease),
2 replicas probed on the admin port, a Service for xDS and admin, and an Envoy
bootstrap that Envoy accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sources.kube_lease import LEASE_NAME
from sources.kube_policies import CRDS
from tests.harness.envoy import validate_bootstrap
from xds_server.cli import _parser
from xds_server.settings import load

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
# The oldest Kubernetes still in upstream support when this was written, and the newest
# the validator knows; the manifests use nothing newer than discovery.k8s.io/v1 (1.21).
VERSIONS = ["1.31.0", "1.37.0"]


def manifests() -> list[Path]:
    return sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def objects() -> list[dict[str, Any]]:
    return [doc for p in manifests() for doc in yaml.safe_load_all(p.read_text()) if doc]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    (obj,) = [o for o in objects() if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return obj


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", manifests(), ids=lambda p: p.name)
def test_schema_valid(path: Path, version: str) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any problem


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in manifests()]


def test_rbac_is_read_only_on_services_endpointslices_and_pods() -> None:
    role = one("ClusterRole", "xds-server")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {
        (group, resource, verb)
        for group, resource in [("", "services"), ("discovery.k8s.io", "endpointslices")]
        for verb in ("get", "list", "watch")
    } | {("", "pods", "list"), ("", "pods", "watch")} | {  # the pod label watch needs no get
        (group, resource, verb)  # the policy CRDs: list+watch only, like pods
        for group, resource in [
            ("networking.istio.io", "virtualservices"),
            ("networking.istio.io", "destinationrules"),
            ("gateway.networking.k8s.io", "httproutes"),
            ("gateway.networking.k8s.io", "grpcroutes"),
            ("security.istio.io", "authorizationpolicies"),
            ("security.istio.io", "peerauthentications"),
        ]
        for verb in ("list", "watch")
    }
    # Every custom resource the policy source watches is granted (a new kind in CRDS
    # without its RBAC rule would 403 in a real cluster).
    watched = {(group, plural) for plural, (_, group, _) in CRDS.items()}
    assert watched <= {(g, r) for g, r, _ in granted}
    binding = one("ClusterRoleBinding", "xds-server")
    account = one("ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]


def test_deployment_runs_the_kubernetes_source_with_probes_on_admin() -> None:
    deploy = one("Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == one("ServiceAccount")["metadata"]["name"]
    (container,) = pod["containers"]
    # The arguments are ones xds-server accepts, and they enable the Kubernetes source.
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    settings = load(vars(_parser().parse_args(container["args"])), environ=env)
    assert settings.kubernetes
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert settings.admin_address == f"0.0.0.0:{ports['http-admin']}"
    assert settings.xds_address == f"0.0.0.0:{ports['grpc-xds']}"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-admin"}


def test_service_exposes_xds_and_admin() -> None:
    svc = one("Service")
    labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert {(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]} == {
        (18000, "grpc-xds"),
        (19000, "http-admin"),
    }


def test_envoy_bootstrap_points_at_the_service_and_envoy_accepts_it(tmp_path: Path) -> None:
    boot = yaml.safe_load(one("ConfigMap", "envoy-bootstrap")["data"]["envoy.yaml"])
    (cluster,) = boot["static_resources"]["clusters"]
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    sock = address["address"]["socket_address"]
    svc = one("Service")
    assert sock["address"] == (
        f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local"
    )
    assert sock["port_value"] == 18000
    validate_bootstrap(boot, tmp_path)


def granted(role: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """(group, resource, verb, resourceName or "*") for every rule of `role`."""
    return {
        (group, resource, verb, name)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames", ["*"])
    }


def bound_to_the_service_account(kind: str, name: str) -> None:
    binding, account = one(kind, name), one("ServiceAccount")
    assert binding["roleRef"]["name"] == name
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]  # fmt: skip


def test_rbac_writes_only_route_status_and_the_status_lease() -> None:
    """The route status writer (sources.kube_route_status_writer) patches the status
    subresource and re-reads it on a conflict; the elector (sources.kube_lease_client)
    gets, creates and updates its one Lease in the server's namespace."""
    gateway = "gateway.networking.k8s.io"
    assert granted(one("ClusterRole", "xds-server-route-status")) == {
        (gateway, f"{kind}/status", verb, "*")
        for kind in ("httproutes", "grpcroutes")
        for verb in ("get", "patch")
    }
    bound_to_the_service_account("ClusterRoleBinding", "xds-server-route-status")
    role = one("Role", "xds-server-leader-election")
    assert role["metadata"]["namespace"] == one("Deployment")["metadata"]["namespace"]
    assert granted(role) == {
        ("coordination.k8s.io", "leases", "create", "*"),  # create cannot name the object
        ("coordination.k8s.io", "leases", "get", "xds-server-status"),
        ("coordination.k8s.io", "leases", "update", "xds-server-status"),
    }
    bound_to_the_service_account("RoleBinding", "xds-server-leader-election")
    assert (
        one("RoleBinding", "xds-server-leader-election")["metadata"]["namespace"]
        == (role["metadata"]["namespace"])
    )


def test_the_lease_name_and_namespace_are_the_servers() -> None:
    """The Lease the Role names is the one the elector uses, in the pod's namespace
    (POD_NAMESPACE from the downward API) under the pod's name (POD_NAME)."""
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
              for e in container["env"] if "valueFrom" in e}  # fmt: skip
    assert fields == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert LEASE_NAME == "xds-server-status"
