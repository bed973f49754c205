"""End-to-end: `xds-server --kubernetes` (a real subprocess) against kmock's Kubernetes API,
driving a real Envoy to real loopback backends.

Each backend is one EndpointSlice (they all listen on 127.0.0.1, on different ports, and
a slice has one port list), so scaling is creating/deleting slices and conditions are
patches of them. What a user sees is asserted: traffic through Envoy's listener (Host
header = the service's name or its cluster-local FQDN), Envoy's admin API, `xdsctl`,
and the server's /metrics and /debug/sources.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import e2e
from tests.harness.backends import HttpBackend, RequestLoop
from tests.harness.e2e import WAIT, Mesh
from tests.harness.envoy import EnvoyProcess
from tests.harness.kubeapi import SLICES, FirstWatch, KubeApi, endpoint, endpoint_slice, service
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for

pytest_plugins = ["tests.harness.fixtures", "tests.harness.kube_fixtures"]

pytestmark = pytest.mark.timeout(90)

NODE = "envoy-kube"
CLUSTER = "web.default:80"


class KubeMesh(Mesh):
    def __init__(self, api: KubeApi, server: XdsServerProcess, listener_port: int) -> None:
        super().__init__(server, listener_port, NODE)
        self.api = api

    def source(self) -> dict[str, Any]:
        """The registry source's status (`--kubernetes` runs the policy source too)."""
        return self.sources()["kubernetes"]


def backend_slice(b: HttpBackend, **conditions: bool) -> dict[str, Any]:
    """The EndpointSlice of one backend (named after it) for Service `web`, port `http`."""
    return endpoint_slice(f"web-{b.name}", "web", [endpoint(**conditions)], [("http", b.port)])


def create_web(api: KubeApi, *backends: HttpBackend, **spec: Any) -> None:
    """Service `web` (``spec`` as for ``service``) and one EndpointSlice per backend."""
    api.create(service("web", **spec))
    for b in backends:
        api.create(backend_slice(b))


@pytest.fixture
def mesh_factory(
    tmp_path: Path, kube_api: KubeApi, xds_server_factory: Callable[..., XdsServerProcess]
) -> Callable[..., KubeMesh]:
    def start(*extra: str) -> KubeMesh:
        config = kube_api.kubeconfig(tmp_path / "kubeconfig")
        port = free_port()
        server = xds_server_factory(
            "--kubernetes", "--kubeconfig", str(config), "--http-listener-port", str(port),
            *extra,
        )  # fmt: skip
        return KubeMesh(kube_api, server, port)

    return start


def eds_health(env: EnvoyProcess, cluster: str) -> dict[int, str]:
    """Envoy's view of each endpoint's EDS health: {port: HEALTHY|DRAINING|UNHEALTHY}."""
    out: dict[int, str] = {}
    for c in json.loads(env.admin_get("/clusters?format=json")).get("cluster_statuses", []):
        if c.get("name") != cluster:
            continue
        for h in c.get("host_statuses", []):
            port = h["address"]["socket_address"]["port_value"]
            out[int(port)] = h.get("health_status", {}).get("eds_health_status", "")
    return out


def test_services_and_slices_drive_real_traffic(
    mesh_factory, envoy_factory, http_backend_factory, request_loop_factory
) -> None:
    v1, v2 = e2e.backends(http_backend_factory, "v1", "v2")
    # The end deletes the only Service: all of them, which the guard would hold for a
    # minute (tests/test_kubernetes_source.py covers the hold).
    mesh = mesh_factory("--registry-hold-threshold", "0")
    api = mesh.api
    create_web(api, v1, ports=[{"name": "http", "port": 80, "targetPort": "web"}])
    env = mesh.envoy(envoy_factory)
    web: RequestLoop = request_loop_factory(mesh.url, "web")
    web.wait_for_body("v1", WAIT, since=0)
    fqdn: RequestLoop = request_loop_factory(mesh.url, "web.default.svc.cluster.local")
    fqdn.wait_for_body("v1", WAIT, since=0)
    fqdn.stop()

    # Scale up: a second endpoint answers beside the first.
    api.create(backend_slice(v2))
    web.wait_for_body("v2", WAIT)
    web.wait_for_body("v1", WAIT)

    # Not ready: no traffic. Ready again: traffic.
    api.patch("endpointslices", "web-v1", {"endpoints": [endpoint(ready=False)]})
    e2e.only(web, "v2")
    api.patch("endpointslices", "web-v1", {"endpoints": [endpoint(ready=True)]})
    web.wait_for_body("v1", WAIT)

    # Terminating but still serving: sent as draining, which Envoy gives no new requests.
    terminating = endpoint(ready=False, serving=True, terminating=True)
    api.patch("endpointslices", "web-v2", {"endpoints": [terminating]})
    e2e.only(web, "v1")
    assert eds_health(env, CLUSTER) == {v1.port: "HEALTHY", v2.port: "DRAINING"}

    # Scale down: the slice is gone, so is the endpoint.
    api.delete("endpointslices", "web-v2")
    wait_for(lambda: env.endpoints(CLUSTER) == [("127.0.0.1", v1.port)], WAIT, message="v2 gone")
    e2e.only(web, "v1")

    header, *rows = [line.split() for line in mesh.server.xdsctl("sources").stdout.splitlines()]
    assert rows and rows[0][0] == "kubernetes", (header, rows)

    # Delete the Service: 200 until 404, never a 503; the cluster is removed.
    mark = web.mark()
    api.delete("services", "web")
    e2e.wait_for_switch(web, mark, 200, 404)
    wait_for(lambda: env.cluster_names(dynamic_only=True) == [], WAIT, message="cluster gone")
    assert e2e.rejected(env) == {}


def test_gone_mid_watch_relists_without_pushing(
    kube_api: KubeApi, mesh_factory, envoy_factory, http_backend_factory, request_loop_factory
) -> None:
    v1, v2 = e2e.backends(http_backend_factory, "v1", "v2")
    api: KubeApi = kube_api
    create_web(api, v1)

    # The server's first EndpointSlice watch stays quiet until `gate` opens, then says
    # 410 Gone (as an API server does when its watch cache has moved on).
    gate = api.call(_new_event())
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    first = FirstWatch("endpointslices")
    api.script(lambda k: k[k.action.WATCH, k.resource(SLICES), first] << (gate.wait, gone))
    mesh = mesh_factory()

    env = mesh.envoy(envoy_factory)
    web: RequestLoop = request_loop_factory(mesh.url, "web")
    web.wait_for_body("v1", WAIT, since=0)
    wait_for(lambda: first.chosen is not None, WAIT, message="the scripted watch")
    mesh.wait_synced()  # all pushes ACKed: a complete baseline
    pushes = mesh.pushes()
    updates = e2e.xds_updates(env)
    relists = 'xds_kubernetes_relists_total{resource="endpointslices",source="kubernetes"}'

    api.loop.call_soon_threadsafe(gate.set)
    # Counted as the relist's result is applied (and published, had it changed anything).
    wait_for(lambda: mesh.metric(relists) == 1, WAIT, message="relisted after the 410")
    assert len(_requests(api, "endpointslices", watch=False)) == 2
    time.sleep(1.0)  # room for any (wrong) push to reach Envoy and be counted
    assert mesh.pushes() == pushes, "a relist of unchanged state pushed something"
    assert e2e.xds_updates(env) == updates, "a relist of unchanged state reached Envoy"
    assert not mesh.source()["stale"]

    # The new watch follows changes again.
    api.create(backend_slice(v2))
    web.wait_for_body("v2", WAIT)
    assert mesh.pushes() > pushes
    assert web.snapshot().failed == 0
    assert e2e.rejected(env) == {}


def test_api_unreachable_for_10s_keeps_traffic_flowing(
    mesh_factory, envoy_factory, http_backend_factory, request_loop_factory
) -> None:
    v1, v2 = e2e.backends(http_backend_factory, "v1", "v2")
    mesh = mesh_factory()
    create_web(mesh.api, v1, v2)
    # Created after the server's first list: they arrive by the watch. A proxy started
    # before that would rightly answer 404 for a while.
    wait_for(lambda: mesh.server.endpoint_counts().get(CLUSTER) == 2, WAIT, message="web")
    env = mesh.envoy(envoy_factory)
    web: RequestLoop = request_loop_factory(mesh.url, "web")
    web.wait_for_body("v1", WAIT, since=0)
    web.wait_for_body("v2", WAIT, since=0)
    mesh.wait_synced()  # all pushes ACKed: a complete baseline
    pushes = mesh.pushes()
    updates = e2e.xds_updates(env)
    stale = 'xds_source_stale{source="kubernetes"}'

    mesh.api.cut()
    cut_at = time.monotonic()
    source = wait_for(lambda: (s := mesh.source())["stale"] and s, WAIT, message="stale")
    assert source["synced"] and source["error"], source
    assert mesh.metric(stale) == 1
    assert mesh.server.ready()  # serving the last good state: still ready
    assert env.endpoints(CLUSTER) == sorted([("127.0.0.1", v1.port), ("127.0.0.1", v2.port)])
    time.sleep(max(0.0, 10.0 - (time.monotonic() - cut_at)))  # the outage lasts 10 s
    assert e2e.xds_updates(env) == updates
    watches = {kind: len(_requests(mesh.api, kind, watch=True)) for kind in KINDS}
    mesh.api.restore()

    wait_for(lambda: not mesh.source()["stale"], 15.0, message="recovered after the outage")
    assert mesh.metric(stale) == 0
    # Both watches are back (each one's first events replay every object, unchanged).
    wait_for(
        lambda: all(len(_requests(mesh.api, kind, watch=True)) > watches[kind] for kind in KINDS),
        WAIT,
        message="both watches resumed",
    )
    time.sleep(1.0)  # room for any (wrong) push to reach Envoy and be counted
    web.wait_for_body("v1", WAIT)
    web.wait_for_body("v2", WAIT)
    e2e.stop_served(web)
    assert mesh.pushes() == pushes, "nothing changed, yet the recovery pushed"
    assert e2e.xds_updates(env) == updates, "nothing changed, yet the recovery reached Envoy"


# --- helpers -----------------------------------------------------------------------


async def _new_event() -> asyncio.Event:
    return asyncio.Event()  # made on the emulator's loop, which waits on it


KINDS = ("services", "endpointslices")


def _requests(api: KubeApi, kind: str, watch: bool) -> list[dict[str, Any]]:
    """The server's GETs of ``kind``: its watches, or its lists."""
    return [
        r
        for r in api.requests()
        if r["method"] == "GET" and r["path"].endswith(kind)
        and bool(r["query"].get("watch")) == watch
    ]  # fmt: skip
