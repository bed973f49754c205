"""Which AuthorizationPolicies apply to a workload (Istio's selection rules)."""

from __future__ import annotations

from xds_server.model import (
    ROOT_NAMESPACE,
    AuthorizationPolicy,
    PeerAuthentication,
    PolicyKey,
    ValueMatch,
    Workload,
    applicable_authz,
)

API = Workload("shop", (("app", "api"),))


def ap(namespace: str, name: str, selector: dict[str, str] | None = None) -> AuthorizationPolicy:
    labels = tuple(sorted(selector.items())) if selector else None
    return AuthorizationPolicy(PolicyKey("AuthorizationPolicy", namespace, name), "ALLOW",
                               selector=labels)  # fmt: skip


def test_selection() -> None:
    namespace_wide = ap("shop", "all")
    selected = ap("shop", "api", {"app": "api"})
    other_app = ap("shop", "web", {"app": "web"})
    other_ns = ap("other", "all")
    mesh = ap(ROOT_NAMESPACE, "mesh")
    mesh_selected = ap(ROOT_NAMESPACE, "mesh-api", {"app": "api"})  # every namespace's api
    peer = PeerAuthentication(PolicyKey("PeerAuthentication", "shop", "p"))
    found = applicable_authz(
        [other_app, selected, other_ns, mesh_selected, namespace_wide, mesh, peer], API
    )
    assert [p.key.name for p in found] == ["mesh", "mesh-api", "all", "api"]
    assert applicable_authz([selected], Workload("shop", (("app", "api2"),))) == ()


def test_istio_string_forms() -> None:
    assert ValueMatch.istio("*") == ValueMatch("present")
    assert ValueMatch.istio("/a/*") == ValueMatch("prefix", "/a/")
    assert ValueMatch.istio("*.json") == ValueMatch("suffix", ".json")
    assert ValueMatch.istio("/x") == ValueMatch("exact", "/x")
