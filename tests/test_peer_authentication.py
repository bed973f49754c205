"""The effective inbound mTLS mode of a workload's port: port level > workload selector >
namespace > mesh (the root namespace) > PERMISSIVE; UNSET inherits."""

from __future__ import annotations

from xds_server.model import (
    ROOT_NAMESPACE,
    MtlsMode,
    PeerAuthentication,
    PolicyKey,
    Workload,
    mtls_mode,
)

API = Workload("shop", (("app", "api"), ("version", "v1")))


def pa(
    namespace: str,
    mode: MtlsMode,
    selector: dict[str, str] | None = None,
    ports: tuple[tuple[int, MtlsMode], ...] = (),
    name: str = "p",
) -> PeerAuthentication:
    labels = tuple(sorted(selector.items())) if selector else None
    return PeerAuthentication(PolicyKey("PeerAuthentication", namespace, name), mode, labels, ports)


def test_nothing_set_is_permissive() -> None:
    assert mtls_mode([], API, 8080) == "PERMISSIVE"
    assert mtls_mode([pa(ROOT_NAMESPACE, "UNSET")], API, 8080) == "PERMISSIVE"


def test_levels_from_mesh_to_port() -> None:
    mesh = pa(ROOT_NAMESPACE, "STRICT")
    assert mtls_mode([mesh], API, 8080) == "STRICT"
    namespace = pa("shop", "DISABLE")
    assert mtls_mode([mesh, namespace], API, 8080) == "DISABLE"
    workload = pa("shop", "PERMISSIVE", {"app": "api"}, ((9000, "STRICT"),), name="w")
    assert mtls_mode([mesh, namespace, workload], API, 8080) == "PERMISSIVE"
    assert mtls_mode([mesh, namespace, workload], API, 9000) == "STRICT"
    # UNSET inherits, at the workload and at the port level.
    unset = pa("shop", "UNSET", {"app": "api"}, ((9000, "UNSET"),), name="w")
    assert mtls_mode([mesh, namespace, unset], API, 9000) == "DISABLE"


def test_selectors_and_namespaces_must_match() -> None:
    other_ns = pa("other", "STRICT")
    other_app = pa("shop", "STRICT", {"app": "web"})
    assert mtls_mode([other_ns, other_app], API, 8080) == "PERMISSIVE"
    # A selector in the root namespace selects only the root namespace's workloads.
    root_selector = pa(ROOT_NAMESPACE, "STRICT", {"app": "api"})
    assert mtls_mode([root_selector], API, 8080) == "PERMISSIVE"
    assert mtls_mode([root_selector], Workload(ROOT_NAMESPACE, API.labels), 1) == "STRICT"


def test_several_at_one_level_first_by_name_wins() -> None:
    a = pa("shop", "STRICT", name="a")
    b = pa("shop", "DISABLE", name="b")
    assert mtls_mode([b, a], API, 8080) == "STRICT"
