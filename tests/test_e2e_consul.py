"""End-to-end: `xds-server --consul` (a real subprocess) on the Consul HTTP API emulator,
driving a real Envoy.

Services are registered, health-checked and deregistered through Consul's agent API
with py-consul, as an operator's tooling would. What a user sees is asserted: HTTP
traffic through Envoy's listener (Host = service name), Envoy's admin API, the
server's /readyz, /metrics and `xdsctl`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import consul
import pytest

from sources.consul import BACKOFF_CAP
from tests.consul_emulator import ConsulEmulator
from tests.harness import e2e
from tests.harness.backends import HttpBackend, RequestLoop, http_get
from tests.harness.e2e import WAIT, Mesh
from tests.harness.envoy import EnvoyProcess
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for

pytest_plugins = ["tests.harness.fixtures"]

pytestmark = pytest.mark.timeout(120)

NODE = "envoy-consul"


class ConsulMesh(Mesh):
    """The emulator, an xds-server watching it, and the way to Envoy's listener."""

    def __init__(
        self,
        emu: ConsulEmulator,
        server: XdsServerProcess,
        listener_port: int,
        token: str | None = None,
    ):
        super().__init__(server, listener_port, NODE)
        self.emu = emu
        self.agent = consul.Consul(host="127.0.0.1", port=emu.port, token=token)

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

    def source(self) -> dict[str, Any]:
        """The status of the Consul source's services (its config entries are a source
        of their own, `consul-config`)."""
        return self.sources()["consul"]

    def wait_endpoints(self, service: str, count: int) -> None:
        """Until the server's snapshot holds `count` endpoints of `service`: registrations
        take a blocking query's return to arrive, and a proxy started before that would
        rightly answer 404 for a while."""

        def held() -> bool:
            counts = self.server.endpoint_counts()
            return count == sum(n for c, n in counts.items() if c.startswith(f"{service}.default:"))

        wait_for(held, WAIT, message=f"{count} endpoints of {service} in the snapshot")

    def two_instance_web(
        self, envoy_factory: Any, request_loop_factory: Any, v1: HttpBackend, v2: HttpBackend
    ) -> tuple[EnvoyProcess, RequestLoop, str]:
        """web on v1 and v2, an Envoy and a request loop that has seen both answer; the
        loop, and v1's service id."""
        web_v1 = self.register("web", v1)
        self.register("web", v2)
        self.wait_endpoints("web", 2)
        env = self.envoy(envoy_factory)
        web: RequestLoop = request_loop_factory(self.url, "web")
        web.wait_for_body("web-v1", WAIT, since=0)
        web.wait_for_body("web-v2", WAIT, since=0)
        return env, web, web_v1


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
    v1, v2, api = e2e.backends(http_backend_factory, "web-v1", "web-v2", "api")
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
    e2e.only(web, "web-v2")
    mesh.agent.agent.check.ttl_pass(f"service:{web_v1}")
    web.wait_for_body("web-v1", WAIT)

    # Deregister → gone.
    mesh.agent.agent.service.deregister(web_v2)
    e2e.only(web, "web-v1")
    assert env.endpoints(f"web.default:{v1.port}") == [("127.0.0.1", v1.port)]

    # A new service: 404 until it exists, then 200; deregistered: 404. Never a 503: not
    # from ordering (Envoy's "no_cluster"), and not "no healthy upstream" when the last
    # instance goes (the health watch's empty answer waits for the catalog's removal).
    probe: RequestLoop = request_loop_factory(mesh.url, "api", interval=0.0)
    e2e.wait_for_status(probe, 404, since=0)
    mark = probe.mark()
    api_id = mesh.register("api", api)
    first_ok = e2e.wait_for_switch(probe, mark, 404, 200)
    assert probe.snapshot(first_ok).bodies.keys() == {"api"}, probe.snapshot(first_ok)
    mark = probe.mark()
    mesh.emu.slow(1.0, "/v1/catalog/services")  # the health watch's answer comes first
    mesh.agent.agent.service.deregister(api_id)
    e2e.wait_for_switch(probe, mark, 200, 404)
    mesh.emu.slow(0, "/v1/catalog/services")
    wait_for(
        lambda: env.cluster_names(dynamic_only=True) == [f"web.default:{v1.port}"],
        WAIT,
        message=f"Envoy's clusters: {env.cluster_names(dynamic_only=True)}",
    )

    e2e.finish(env, web)


def test_consul_outage_serves_the_last_good_state_and_recovery_repushes_nothing(
    consul_mesh, envoy_factory, http_backend_factory, request_loop_factory
) -> None:
    v1, v2 = e2e.backends(http_backend_factory, "web-v1", "web-v2")
    mesh: ConsulMesh = consul_mesh()
    env, web, _ = mesh.two_instance_web(envoy_factory, request_loop_factory, v1, v2)
    wait_for(lambda: mesh.pushes() > 0 and mesh.server.ready(), WAIT)
    mesh.wait_synced()  # every push ACKed: a complete baseline
    versions = mesh.versions()
    pushes = mesh.pushes()
    updates = e2e.xds_updates(env)

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
    assert e2e.xds_updates(env) == updates

    # Consul back with what it had: the watches resume where they were (blocking
    # queries from their last index) and nothing is pushed again, to Envoy least of all.
    mesh.emu.clear_request_log()
    mesh.emu.resume()
    wait_for(lambda: not mesh.source()["stale"], 20.0, message="fresh again")
    # Each watch has taken in an answer since, and asked again.
    paths = ("/v1/catalog/services", "/v1/health/service/web")
    wait_for(
        lambda: all(e2e.answered_rounds(mesh.emu.request_log(), p) for p in paths),
        20.0,
        message="a round of each watch after the outage",
    )
    time.sleep(1.0)  # room for any (wrong) push to reach Envoy and be counted
    assert mesh.pushes() == pushes
    assert e2e.xds_updates(env) == updates, "Envoy was sent something again"
    assert mesh.versions() == versions
    health = [r for r in mesh.emu.request_log() if r.path == "/v1/health/service/web"]
    assert health and all(int(r.query["index"][0]) > 1 for r in health), health
    assert mesh.server.metrics()['xds_source_stale{source="consul"}'] == 0

    # And changes flow again.
    v3: HttpBackend = http_backend_factory("web-v3")
    mesh.register("web", v3)
    web.wait_for_body("web-v3", WAIT)
    e2e.finish(env, web)


def test_after_an_outage_a_change_reaches_envoy_within_one_backoff_step(
    consul_mesh, envoy_factory, http_backend_factory, request_loop_factory
) -> None:
    v1, v2 = e2e.backends(http_backend_factory, "web-v1", "web-v2")
    # Blocking queries as long as in production (the default wait is 60 s): a watch that
    # resumed only once another watch's blocking query returned would show here.
    mesh: ConsulMesh = consul_mesh("--consul-wait", "30s")
    env, web, web_v1 = mesh.two_instance_web(envoy_factory, request_loop_factory, v1, v2)

    # Down long enough for the retries to back off to their cap.
    mesh.emu.pause()
    wait_for(lambda: mesh.source()["stale"], WAIT, message="stale")
    time.sleep(2 * BACKOFF_CAP)
    mesh.emu.resume()
    returned = time.monotonic()
    # A health change only: it moves the service's index, not the catalog's.
    mesh.agent.agent.check.ttl_fail(f"service:{web_v1}")
    # One backoff step for the probe to find Consul back, then the push (debounce <= 1 s).
    wait_for(
        lambda: web.last_bodies(10) == ["web-v2"] * 10,
        BACKOFF_CAP + 2.0,
        message=lambda: f"v1 drained {time.monotonic() - returned:.1f}s after Consul returned",
    )
    e2e.only(web, "web-v2")
    wait_for(lambda: not mesh.source()["stale"], WAIT, message="fresh again")
    e2e.finish(env, web)


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
    src = next(s for s in server.get("/debug/sources") if s["name"] == "consul")
    assert src["services"] == 1 and src["error"] is None, src


TOKEN = "xds-server-token"


def test_a_token_losing_service_read_is_held_then_restored_then_a_lasting_loss_applies(
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory,
    http_backend_factory,
    request_loop_factory,
) -> None:
    web_b, api_b, db_b = e2e.backends(http_backend_factory, "web", "api", "db")
    hold = 6.0
    with ConsulEmulator(acl_tokens={TOKEN}) as emu:
        port = free_port()
        server = xds_server_factory(
            "--consul", "--consul-address", emu.url, "--consul-token", TOKEN,
            "--consul-wait", "1s", "--registry-hold", f"{hold:g}s",
            "--http-listener-port", str(port), wait_ready=False,
        )  # fmt: skip
        mesh = ConsulMesh(emu, server, port, token=TOKEN)
        for name, backend in (("web", web_b), ("api", api_b), ("db", db_b)):
            mesh.register(name, backend)
        for name in ("web", "api", "db"):
            mesh.wait_endpoints(name, 1)
        env = mesh.envoy(envoy_factory)
        web: RequestLoop = request_loop_factory(mesh.url, "web")
        web.wait_for_body("web", WAIT, since=0)
        mesh.wait_synced()
        versions, updates = mesh.versions(), e2e.xds_updates(env)

        # The token's policy loses service:read: Consul answers every query, empty.
        mark = web.mark()
        emu.set_service_read(TOKEN, [])
        source = wait_for(lambda: (s := mesh.source())["holding"] and s, WAIT, message="HOLDING")
        assert source["held_removals"] == 3 and source["stale"] is False, source
        assert "3 of 3 services would be removed at once" in source["hold_reason"], source
        table = mesh.server.xdsctl("sources").stdout.splitlines()
        assert table[1].split()[:3] == ["consul", "consul", "HOLDING"], table
        assert "HOLDING 3 removals: 3 of 3 services would be removed" in table[2], table
        status, body = http_get(f"{mesh.server.admin_url}/readyz")
        assert status == 200, body
        assert "warning: source consul (consul) is HOLDING a removal: 3 of 3" in body, body
        metrics = mesh.server.metrics()
        assert metrics['xds_source_holding{source="consul"}'] == 1
        assert metrics['xds_source_held_removals{source="consul"}'] == 3
        # Every watch answers (filtered) again and again meanwhile; nothing moves.
        time.sleep(2.0)
        during = web.snapshot(mark)
        assert during.failed == 0 and set(during.bodies) == {"web"}, during

        # Restored within the hold: the hold ends and nothing is pushed at all.
        emu.set_service_read(TOKEN, None)
        wait_for(lambda: not mesh.source()["holding"], hold, message="hold ended by the restore")
        time.sleep(2.0)  # further answers of every watch, and room for a (wrong) push
        assert e2e.xds_updates(env) == updates, "Envoy was sent something"
        assert mesh.versions() == versions
        assert mesh.server.metrics()['xds_source_holding{source="consul"}'] == 0
        assert web.snapshot(mark).failed == 0

        # Lost again, for good: served through the hold, removed when it ends.
        mark = web.mark()
        emu.set_service_read(TOKEN, [])
        wait_for(lambda: mesh.source()["holding"], WAIT, message="HOLDING again")
        held_at = time.monotonic()
        e2e.wait_for_switch(web, mark, 200, 404, timeout=hold + WAIT)
        assert time.monotonic() - held_at >= hold - 1.0, "removed before the hold ended"
        wait_for(lambda: env.cluster_names(dynamic_only=True) == [], WAIT, message="clusters gone")
        source = mesh.source()
        assert not source["holding"] and source["services"] == 0, source
        assert e2e.rejected(env) == {}
