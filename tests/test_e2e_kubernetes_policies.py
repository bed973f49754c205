"""End to end: traffic policy kept in Kubernetes — Istio VirtualServices and
DestinationRules, Gateway API HTTPRoutes — read by `xds-server --kubernetes` (a real
subprocess, no policy file) from kmock's Kubernetes API, through a real Envoy to real
loopback backends.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sources.kube_policies import CRDS
from tests.gateway_objects import route
from tests.harness import e2e
from tests.harness.backends import HttpBackend
from tests.harness.e2e import WAIT, Mesh
from tests.harness.envoy import EnvoyProcess
from tests.harness.kubeapi import (
    FirstWatch,
    KubeApi,
    endpoint,
    endpoint_slice,
    policy_crds,
    service,
)
from tests.harness.policy import (
    Client,
    destination,
    destination_rule,
    subsets,
    virtual_hosts,
    virtual_service,
)
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for
from tests.test_e2e_kubernetes_subsets import at, backend_pod, within

pytest_plugins = ["tests.harness.fixtures", "tests.harness.kube_fixtures"]
pytestmark = pytest.mark.timeout(120)

NODE = "envoy-kube-policies"
REQUESTS = 500
SOURCE = "kubernetes-policies"


@pytest.fixture
def mesh_factory(
    tmp_path: Path, kube_api: KubeApi, xds_server_factory: Callable[..., XdsServerProcess]
) -> Callable[..., Mesh]:
    def start(*extra: str) -> Mesh:
        config = kube_api.kubeconfig(tmp_path / "kubeconfig")
        port = free_port()
        server = xds_server_factory(
            "--kubernetes", "--kubeconfig", str(config), "--http-listener-port", str(port),
            *extra,
        )  # fmt: skip
        return Mesh(server, port, NODE)

    return start


def split(v1: int) -> list[dict[str, Any]]:
    """VirtualService `web`'s one rule: `v1` % to subset v1, the rest to v2."""
    return [{"route": [destination("web", "v1", v1), destination("web", "v2", 100 - v1)]}]


def assert_split(client: Client, host: str, **percent: float) -> None:
    """`REQUESTS` requests to `host`: each group of backends (`ac=90`: backends a and c)
    answers its percentage of them (`within`)."""
    counts = client.bodies(host, REQUESTS)
    assert all(within(counts, names, p) for names, p in percent.items()), counts


def backend_service(api: KubeApi, name: str, b: HttpBackend) -> None:
    """Service `name` whose one endpoint is backend `b`."""
    api.create(service(name))
    api.create(endpoint_slice(name, name, [endpoint()], [("http", b.port)]))


def canary(name: str, v1: int, v2: int, parent: str = "web", **refs: int) -> dict[str, Any]:
    """HTTPRoute `name` in default, attached to Service `parent`, sending `v1` parts to
    Service web-v1 and `v2` to web-v2 (`refs`: other Services and their weights)."""
    weights = {"web-v1": v1, "web-v2": v2, **refs}
    backends = [{"name": n, "port": 80, "weight": w} for n, w in weights.items() if w]
    parent_ref = {"group": "", "kind": "Service", "name": parent, "port": 80}
    return route({"backendRefs": backends}, name=name, namespace="default", parents=[parent_ref])


@pytest.mark.parametrize("istio", ["v1", "v1beta1"])
def test_virtual_service_and_destination_rule_split_by_pod_labels_and_follow_an_edit(
    istio: str,
    kube_api: KubeApi,
    mesh_factory: Callable[..., Mesh],
    envoy_factory: Callable[..., EnvoyProcess],
    http_backend_factory: Callable[..., HttpBackend],
) -> None:
    """v1beta1: a cluster serving Istio's CRDs only as v1beta1 (older Istio) works too."""
    kube_api.serve_crds(istio=istio)
    a, b, c = e2e.backends(http_backend_factory, "a", "b", "c")
    kube_api.create(service("web"))
    backend_pod(kube_api, a, "v1")
    backend_pod(kube_api, b, "v2")
    backend_pod(kube_api, c, "v1")
    api_version = f"networking.istio.io/{istio}"
    for obj in (destination_rule("web", "web", subsets("v1", "v2")),
                virtual_service("web", ["web"], split(90))):  # fmt: skip
        kube_api.create_custom({**obj, "apiVersion": api_version})
    mesh = mesh_factory()
    env = mesh.envoy(envoy_factory)
    v1, v2 = "web.default:80|v1", "web.default:80|v2"
    wait_for(
        lambda: env.endpoints(v1) == at(a, c) and env.endpoints(v2) == at(b),
        WAIT,
        message="subset clusters by pod label",
    )
    client = Client(mesh.listener_port)
    wait_for(lambda: set(client.bodies("web", 50)) == {"a", "b", "c"}, WAIT, message="split")
    assert_split(client, "web", ac=90, b=10)
    policies = {p["kind"]: p for p in mesh.server.get("/debug/policies")}
    assert policies["VirtualService"]["origin"] == "kubernetes:default/web", policies
    assert policies["VirtualService"]["state"] == "ACCEPTED", policies

    # kubectl edit: the weights turn round, and the traffic follows.
    kube_api.patch_custom(
        api_version, "VirtualService", "web", {"spec": {"http": split(10)}}, "default"
    )
    wait_for(lambda: client.bodies("web", 60)["b"] > 30, WAIT, message="the weight edit applied")
    assert_split(client, "web", ac=10, b=90)
    client.close()
    assert e2e.rejected(env) == {}, "Envoy rejected an update"


def test_http_route_splits_across_services_and_a_missing_backend_changes_nothing_else(
    kube_api: KubeApi,
    mesh_factory: Callable[..., Mesh],
    envoy_factory: Callable[..., EnvoyProcess],
    http_backend_factory: Callable[..., HttpBackend],
) -> None:
    kube_api.serve_crds()
    a, b, d = e2e.backends(http_backend_factory, "a", "b", "d")
    kube_api.create(service("web"))  # the parent: the name callers use; no endpoints
    backend_service(kube_api, "web-v1", a)
    backend_service(kube_api, "web-v2", b)
    backend_service(kube_api, "api", d)
    kube_api.create_custom(canary("web", 75, 25))
    mesh = mesh_factory()
    env = mesh.envoy(envoy_factory)
    client = Client(mesh.listener_port)
    wait_for(lambda: set(client.bodies("web", 50)) == {"a", "b"}, WAIT, message="HTTPRoute split")
    assert_split(client, "web", a=75, b=25)

    # A route for Service api naming a Service that does not exist: refused, with the
    # Gateway API's reason; api keeps its own routing, web its split.
    mesh.wait_synced()
    before, pushes = virtual_hosts(env), mesh.pushes()
    kube_api.create_custom(canary("api-canary", 0, 0, parent="api", ghost=10))

    def refused() -> dict[str, Any] | None:
        for p in mesh.server.get("/debug/policies"):
            if p["name"] == "api-canary" and p["state"] == "REJECTED":
                return dict(p)
        return None

    rejection = wait_for(refused, WAIT, message="the route is refused")
    assert any("BackendNotFound" in r for r in rejection["reasons"]), rejection
    assert rejection["origin"] == "kubernetes:default/api-canary"
    assert set(client.bodies("api", 20)) == {"d"}
    assert_split(client, "web", a=75, b=25)
    client.close()
    assert virtual_hosts(env) == before and mesh.pushes() == pushes
    assert e2e.rejected(env) == {}, "Envoy rejected an update"


def test_missing_crds_leave_services_working_and_are_reported_once(
    kube_api: KubeApi,
    mesh_factory: Callable[..., Mesh],
    envoy_factory: Callable[..., EnvoyProcess],
    http_backend_factory: Callable[..., HttpBackend],
) -> None:
    (a,) = e2e.backends(http_backend_factory, "a")
    backend_service(kube_api, "web", a)  # no policy CRD installed at all
    mesh = mesh_factory("--kubernetes-crd-recheck", "0.5s")
    env = mesh.envoy(envoy_factory)
    client = Client(mesh.listener_port)
    wait_for(lambda: set(client.bodies("web", 10)) == {"a"}, WAIT, message="web served")
    client.close()
    status = mesh.sources()[SOURCE]
    assert status["synced"] and not status["stale"] and status["error"] is None, status
    missing = [n for n in status["notes"] if "not served" in n]
    assert len(missing) == len(CRDS), status["notes"]
    # The rest of the notes are the route status writer's (who writes; nothing failed).
    assert all(n.startswith("route status") for n in status["notes"] if n not in missing)
    assert mesh.sources()["kubernetes"]["services"] == 1
    # Looked for again, still missing: the log says so once per kind, not per look.
    looks = [r for r in kube_api.requests() if r["path"].endswith("/virtualservices")]
    wait_for(
        lambda: (
            len([r for r in kube_api.requests() if r["path"].endswith("/virtualservices")])
            >= len(looks) + 4
        ),
        WAIT,
        message="looked for again",
    )
    assert mesh.server.log().count("not served by the API server") == len(CRDS), mesh.server.tail()
    table = mesh.server.xdsctl("sources").stdout
    assert table.count("is not served by the cluster") == len(CRDS), table
    assert "virtualservices.networking.istio.io" in table, table
    assert e2e.rejected(env) == {}


def test_gone_on_the_route_watch_relists_without_a_push(
    kube_api: KubeApi,
    mesh_factory: Callable[..., Mesh],
    envoy_factory: Callable[..., EnvoyProcess],
    http_backend_factory: Callable[..., HttpBackend],
) -> None:
    kube_api.serve_crds()
    a, b = e2e.backends(http_backend_factory, "a", "b")
    kube_api.create(service("web"))
    backend_service(kube_api, "web-v1", a)
    backend_service(kube_api, "web-v2", b)
    kube_api.create_custom(canary("web", 50, 50))
    once = FirstWatch("httproutes", armed=False)
    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    routes = policy_crds(None)[0]
    error = ({"type": "ERROR", "object": gone},)
    kube_api.script(lambda k: k[k.action.WATCH, k.resource(routes), once] << error)
    mesh = mesh_factory()
    env = mesh.envoy(envoy_factory)
    client = Client(mesh.listener_port)
    wait_for(lambda: set(client.bodies("web", 50)) == {"a", "b"}, WAIT, message="split")
    mesh.wait_synced()
    pushes, updates = mesh.pushes(), e2e.xds_updates(env)

    def route_lists() -> int:
        return sum(
            1
            for r in kube_api.requests()
            if r["path"].endswith("/httproutes") and not r["query"].get("watch")
        )

    lists = route_lists()
    once.armed = True
    kube_api.cut()
    kube_api.restore()
    wait_for(lambda: route_lists() > lists, WAIT, message="relisted after 410")
    wait_for(lambda: not mesh.sources()[SOURCE]["stale"], WAIT, message="recovered")
    mesh.wait_synced()
    assert mesh.pushes() == pushes and e2e.xds_updates(env) == updates
    assert set(client.bodies("web", 50)) == {"a", "b"}
    client.close()
