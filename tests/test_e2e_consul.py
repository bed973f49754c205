"""End-to-end: `xds-server --consul` (a real subprocess) on the Consul HTTP API emulator,
driving a real Envoy.

Services are registered, health-checked and deregistered through Consul's agent API
with py-consul, as an operator's tooling would. What a user sees is asserted: HTTP
traffic through Envoy's listener (Host = service name), Envoy's admin API, the
server's /readyz, /metrics and `xdsctl`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import consul
import pytest

from tests.consul_emulator import ConsulEmulator
from tests.harness.backends import HttpBackend, RequestLoop, http_get
from tests.harness.envoy import EnvoyProcess, bootstrap
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for
from tests.test_e2e_envoy import CDS_REJECTED, LDS_REJECTED, outcomes, runs, wait_for_status
from tests.test_e2e_file_registry import only

pytest_plugins = ["tests.harness.fixtures"]

pytestmark = pytest.mark.timeout(120)

WAIT = 10.0
NODE = "envoy-consul"


class ConsulMesh:
    """The emulator, an xds-server watching it, and the way to Envoy's listener."""

    def __init__(self, emu: ConsulEmulator, server: XdsServerProcess, listener_port: int):
        self.emu = emu
        self.server = server
        self.listener_port = listener_port
        self.agent = consul.Consul(host="127.0.0.1", port=emu.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener_port}/"

    def register(self, name: str, backend: HttpBackend, **kwargs: Any) -> str:
        sid = f"{name}-{backend.port}"
        self.agent.agent.service.register(
            name,
            service_id=sid,
            address="127.0.0.1",
            port=backend.port,
            check={"CheckID": f"service:{sid}", "TTL": "60s", "Status": "passing"},
            **kwargs,
        )
        return sid

    def wait_endpoints(self, service: str, count: int) -> None:
        """Until the server's snapshot holds `count` endpoints of `service`: registrations
        take a blocking query's return to arrive, and a proxy started before that would
        rightly answer 404 for a while."""

        def held() -> bool:
            counts = self.server.endpoint_counts()
            return count == sum(n for c, n in counts.items() if c.startswith(f"{service}.default:"))

        wait_for(held, WAIT, message=f"{count} endpoints of {service} in the snapshot")

    def source(self) -> dict[str, Any]:
        (src,) = self.server.get("/debug/sources")
        return dict(src)

    def envoy(
        self, envoy_factory: Callable[..., EnvoyProcess], delta: bool = False
    ) -> EnvoyProcess:
        boot = bootstrap(self.server.xds_port, free_port(), NODE, delta=delta)
        return envoy_factory(boot, name=NODE, wait="ready", timeout=WAIT)

    def pushes(self) -> float:
        return sum(v for k, v in self.server.metrics().items() if k.startswith("xds_pushes_total{"))

    def versions(self) -> dict[str, str]:
        snap = json.loads(self.server.xdsctl("snapshot", "--node", NODE, "-o", "json").stdout)
        return dict(snap["versions"])


@pytest.fixture
def emulator() -> Iterator[ConsulEmulator]:
    with ConsulEmulator() as emu:
        yield emu


@pytest.fixture
def consul_mesh(
    emulator: ConsulEmulator, xds_server_factory: Callable[..., XdsServerProcess]
) -> Callable[..., ConsulMesh]:
    def start(*extra: str) -> ConsulMesh:
        port = free_port()
        server = xds_server_factory(
            "--consul", "--consul-address", emulator.url, "--consul-wait", "5s",
            "--http-listener-port", str(port), *extra,
        )  # fmt: skip
        return ConsulMesh(emulator, server, port)

    return start


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_consul_registrations_and_health_move_real_traffic(
    delta: bool, consul_mesh, envoy_factory, http_backend_factory, request_loop_factory
) -> None:
    v1: HttpBackend = http_backend_factory("web-v1")
    v2: HttpBackend = http_backend_factory("web-v2")
    api: HttpBackend = http_backend_factory("api")
    mesh: ConsulMesh = consul_mesh()
    web_v1 = mesh.register("web", v1)
    mesh.wait_endpoints("web", 1)
    env = mesh.envoy(envoy_factory, delta)
    web: RequestLoop = request_loop_factory(mesh.url, "web")
    web.wait_for_body("web-v1", WAIT, since=0)
    # Consul DNS names route too.
    assert http_get(mesh.url, host="web.service.consul") == (200, "web-v1")

    # Register → traffic reaches the new instance.
    web_v2 = mesh.register("web", v2)
    web.wait_for_body("web-v2", WAIT)
    web.wait_for_body("web-v1", WAIT)

    # Health check critical → traffic avoids it; passing → back.
    mesh.agent.agent.check.ttl_fail(f"service:{web_v1}")
    only(web, "web-v2")
    mesh.agent.agent.check.ttl_pass(f"service:{web_v1}")
    web.wait_for_body("web-v1", WAIT)

    # Deregister → gone.
    mesh.agent.agent.service.deregister(web_v2)
    only(web, "web-v1")
    assert env.endpoints(f"web.default:{v1.port}") == [("127.0.0.1", v1.port)]

    # A new service: 404 until it exists, then 200; deregistered: 404, never a 503.
    probe: RequestLoop = request_loop_factory(mesh.url, "api")
    wait_for_status(probe, 404, since=0)
    mark = probe.mark()
    api_id = mesh.register("api", api)
    first_ok = probe.wait_for_body("api", WAIT, since=mark)
    mark = probe.mark()
    mesh.agent.agent.service.deregister(api_id)
    first_404 = wait_for_status(probe, 404, since=mark)
    probe.wait_for_requests(20, WAIT)
    seen = outcomes(probe, first_ok)
    assert set(seen) <= {200, 404}, runs(seen)
    assert set(outcomes(probe, first_404)) == {404}, runs(seen)
    wait_for(
        lambda: env.cluster_names(dynamic_only=True) == [f"web.default:{v1.port}"],
        WAIT,
        message=f"Envoy's clusters: {env.cluster_names(dynamic_only=True)}",
    )

    summary = web.stop()
    assert summary.failed == 0, summary
    assert env.stat(CDS_REJECTED) == 0 and env.stat(LDS_REJECTED) == 0


def test_consul_outage_serves_the_last_good_state_and_recovery_repushes_nothing(
    consul_mesh, envoy_factory, http_backend_factory, request_loop_factory
) -> None:
    v1: HttpBackend = http_backend_factory("web-v1")
    v2: HttpBackend = http_backend_factory("web-v2")
    mesh: ConsulMesh = consul_mesh()
    mesh.register("web", v1)
    mesh.register("web", v2)
    mesh.wait_endpoints("web", 2)
    env = mesh.envoy(envoy_factory)
    web: RequestLoop = request_loop_factory(mesh.url, "web")
    web.wait_for_body("web-v1", WAIT, since=0)
    web.wait_for_body("web-v2", WAIT, since=0)
    wait_for(lambda: mesh.pushes() > 0 and mesh.server.ready(), WAIT)
    versions = mesh.versions()
    pushes = mesh.pushes()

    # Consul down for 10 s while requests keep flowing through Envoy.
    mark = web.mark()
    mesh.emu.pause()
    source = wait_for(lambda: (s := mesh.source())["stale"] and s, WAIT, message="stale")
    assert f"cannot reach Consul at {mesh.emu.url}" in source["error"], source
    assert source["synced"] is True
    status, body = http_get(f"{mesh.server.admin_url}/readyz")
    assert status == 200 and "warning: source consul (consul) is stale" in body, body
    metrics = mesh.server.metrics()
    assert metrics['xds_source_stale{source="consul"}'] == 1
    sources_table = mesh.server.xdsctl("sources").stdout
    assert "cannot reach Consul" in sources_table, sources_table
    time.sleep(10.0)
    during = web.snapshot(mark)
    assert during.failed == 0 and set(during.bodies) == {"web-v1", "web-v2"}, during
    assert mesh.versions() == versions

    # Consul back with what it had: the watches resume where they were (blocking
    # queries from their last index) and nothing is pushed again.
    mesh.emu.clear_request_log()
    mesh.emu.resume()
    wait_for(lambda: not mesh.source()["stale"], 20.0, message="fresh again")
    time.sleep(1.0)
    assert mesh.pushes() == pushes
    assert mesh.versions() == versions
    health = [r for r in mesh.emu.request_log() if r.path == "/v1/health/service/web"]
    assert health and all(int(r.query["index"][0]) > 1 for r in health), health
    assert mesh.server.metrics()['xds_source_stale{source="consul"}'] == 0

    # And changes flow again.
    v3: HttpBackend = http_backend_factory("web-v3")
    mesh.register("web", v3)
    web.wait_for_body("web-v3", WAIT)
    summary = web.stop()
    assert summary.failed == 0, summary
    assert env.stat(CDS_REJECTED) == 0


def test_consul_not_reachable_at_startup_is_not_ready_then_syncs(
    emulator: ConsulEmulator,
    xds_server_factory: Callable[..., XdsServerProcess],
    http_backend_factory,
) -> None:
    v1: HttpBackend = http_backend_factory("web-v1")
    emulator.pause()
    server = xds_server_factory("--consul", "--consul-address", emulator.url, wait_ready=False)

    def not_ready() -> str | None:
        status, body = http_get(f"{server.admin_url}/readyz")
        return body if status == 503 and "cannot reach Consul" in body else None

    body = wait_for(not_ready, WAIT, message="503 naming the Consul error")
    assert "source consul (consul) has not synced yet" in body
    emulator.resume()
    ConsulMesh(emulator, server, 0).register("web", v1)
    wait_for(server.ready, 20.0, message="ready once Consul answers")
    (src,) = server.get("/debug/sources")
    assert src["services"] == 1 and src["error"] is None, src


def test_consul_and_file_registries_combine(
    emulator: ConsulEmulator,
    xds_server_factory: Callable[..., XdsServerProcess],
    http_backend_factory,
    tmp_path,
) -> None:
    in_consul: HttpBackend = http_backend_factory("web-consul")
    in_file: HttpBackend = http_backend_factory("web-file")
    api: HttpBackend = http_backend_factory("api")
    ConsulMesh(emulator, None, 0).register("web", in_consul)  # type: ignore[arg-type]
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "services:\n"
        f"  - name: web\n    ports: [{{port: {in_consul.port}}}]\n"
        f"    endpoints: [{{address: 127.0.0.1, port: {in_file.port}}}]\n"
        "  - name: api\n    ports: [{port: 80}]\n"
        f"    endpoints: [{{address: 127.0.0.1, port: {api.port}}}]\n"
    )
    server = xds_server_factory(
        "--file", str(registry), "--consul", "--consul-address", emulator.url
    )
    sources = {s["name"]: s for s in server.get("/debug/sources")}
    assert sources["file"]["services"] == 2 and sources["consul"]["services"] == 1, sources
    snap = json.loads(server.xdsctl("snapshot", "--type", "endpoints", "-o", "json").stdout)
    ports = {
        r["name"]: sorted(
            lb["endpoint"]["address"]["socket_address"]["port_value"]
            for locality in r["resource"]["endpoints"]
            for lb in locality["lb_endpoints"]
        )
        for r in snap["resources"]
    }
    # One service "web" with the endpoints of both registries.
    assert ports == {
        f"web.default:{in_consul.port}": sorted([in_consul.port, in_file.port]),
        "api.default:80": [api.port],
    }, ports


def test_an_external_service_in_consul_is_resolved_by_envoy(
    consul_mesh, envoy_factory, http_backend_factory, request_loop_factory
) -> None:
    # Registered as consul-esm does: a node whose address is a DNS name (`localhost`
    # keeps the traffic on loopback).
    backend: HttpBackend = http_backend_factory("outside")
    mesh: ConsulMesh = consul_mesh()
    mesh.agent.catalog.register(
        "external-node", "localhost", service={"Service": "outside", "Port": backend.port}
    )
    cluster = f"outside.default:{backend.port}"
    wait_for(lambda: cluster in mesh.server.cluster_names(), WAIT, message=cluster)
    env = mesh.envoy(envoy_factory)
    loop: RequestLoop = request_loop_factory(mesh.url, "outside.service.consul")
    loop.wait_for_body("outside", WAIT, since=0)
    dump = json.loads(env.admin_get("/config_dump?resource=dynamic_active_clusters"))
    (held,) = [c["cluster"] for c in dump["configs"]]
    assert held["type"] == "LOGICAL_DNS"
    summary = loop.stop()
    assert summary.failed == 0, summary
