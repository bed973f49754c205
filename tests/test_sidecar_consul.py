"""Consul Connect sidecars: the emulator's sidecar registrations and connect health
endpoint, their mapping to the model (sources.consul_connect), and tests 1 and 3 and
the rate limit through ``xds-server --consul`` with real sidecar Envoys."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sources.consul_connect import ProxyRegistration, rate_limit, sidecar_proxies, with_sidecars
from sources.consul_mapping import to_entry
from tests.consul_emulator import ConsulEmulator
from tests.harness.backends import HttpBackend, http_get
from tests.harness.envoy import EnvoyProcess
from tests.harness.mesh import plain_request, web_and_api_sidecars
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import async_wait_for, wait_for
from xds_server.model import RateLimit, Sidecar

pytest_plugins = ["tests.harness.fixtures"]

WEB_ID = "spiffe://cluster.local/ns/default/sa/web"


def put(emu: ConsulEmulator, path: str, body: dict[str, Any]) -> None:
    req = urllib.request.Request(f"{emu.url}{path}", data=json.dumps(body).encode(), method="PUT")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def get(emu: ConsulEmulator, path: str) -> tuple[Any, str]:
    with urllib.request.urlopen(f"{emu.url}{path}", timeout=5) as resp:
        return json.loads(resp.read()), resp.headers["X-Consul-Index"]


def register(
    emu: ConsulEmulator, name: str, port: int, sidecar: dict[str, Any], **extra: Any
) -> None:
    """A service definition with ``connect { sidecar_service { ... } }``, as an operator
    writes it (agent API, snake_case as in HCL)."""
    put(
        emu,
        "/v1/agent/service/register",
        {
            "name": name,
            "id": f"{name}-1",
            "address": "127.0.0.1",
            "port": port,
            "connect": {"sidecar_service": sidecar},
            **extra,
        },
    )


@pytest.fixture
def emu() -> Iterator[ConsulEmulator]:
    with ConsulEmulator() as e:
        yield e


def test_emulator_registers_sidecars_with_consuls_defaults_and_serves_health_connect(
    emu: ConsulEmulator,
) -> None:
    register(emu, "api", 9090, {}, meta={"version": "v1"})
    register(emu, "web", 8080, {"port": 15001, "proxy": {"local_service_port": 18080}})
    services, _ = get(emu, "/v1/catalog/services")
    assert {"api", "api-sidecar-proxy", "web", "web-sidecar-proxy"} <= set(services)
    (api,), index = get(emu, "/v1/health/connect/api")
    svc = api["Service"]
    assert (svc["ID"], svc["Service"], svc["Kind"], svc["Port"]) == (
        "api-1-sidecar-proxy",
        "api-sidecar-proxy",
        "connect-proxy",
        21000,
    )
    assert svc["Meta"] == {"version": "v1"}  # the parent's meta by default
    proxy = svc["Proxy"]
    assert (
        proxy["DestinationServiceName"],
        proxy["DestinationServiceID"],
        proxy["LocalServiceAddress"],
        proxy["LocalServicePort"],
    ) == ("api", "api-1", "127.0.0.1", 9090)
    (web,), _ = get(emu, "/v1/health/connect/web")
    assert web["Service"]["Port"] == 15001
    assert web["Service"]["Proxy"]["LocalServicePort"] == 18080
    # Deregistering the service takes its sidecar along, and moves the connect index.
    put(emu, "/v1/agent/service/deregister/api-1", {})
    gone, after = get(emu, "/v1/health/connect/api")
    assert gone == [] and int(after) > int(index)


def test_sidecar_registrations_map_to_endpoints_reached_through_their_proxies(
    emu: ConsulEmulator,
) -> None:
    register(emu, "api", 9090, {"port": 15006}, meta={"rate-limit-rps": "7"})
    put(  # a second instance without a sidecar
        emu, "/v1/agent/service/register", {"name": "api", "id": "api-2", "port": 9091}
    )
    instances, _ = get(emu, "/v1/health/service/api")
    proxies = sidecar_proxies(get(emu, "/v1/health/service/api-sidecar-proxy")[0])
    assert proxies == (
        ProxyRegistration(emu.node, "api", "api-1", emu.node_address, 15006, "127.0.0.1", 9090),
    ), proxies
    entry = with_sidecars(to_entry("api", instances, source="consul"), instances, proxies)
    assert entry is not None
    by_port = {ep.port: ep for ep in entry.endpoints}
    assert by_port[9090].sidecar == Sidecar(15006, "127.0.0.1", 9090)
    assert by_port[9090].reached_at == ("127.0.0.1", 15006)
    assert by_port[9091].sidecar is None
    assert entry.service.rate_limit == RateLimit(7, 7)
    assert entry.service.identities == ("api",)  # Consul: the service is the identity


def test_rate_limit_meta_needs_a_positive_rate() -> None:
    assert rate_limit({"rate-limit-rps": "5", "rate-limit-burst": "9"}) == RateLimit(5, 9)
    assert rate_limit({"rate-limit-rps": "0"}) is None
    assert rate_limit({"rate-limit-rps": "many"}) is None
    assert rate_limit({}) is None


def _sidecars(watched: Any) -> dict[int, Sidecar | None]:
    entry = watched.entry("api")
    return {ep.port: ep.sidecar for ep in entry.endpoints} if entry else {}


@pytest.mark.timeout(60)
async def test_the_source_follows_sidecars_whichever_answers_first(emu: ConsulEmulator) -> None:
    """A sidecar registered before or after its service, a service whose instances
    change under its sidecar, and a sidecar that goes: the instance follows each time."""
    from tests.test_consul_source import running

    put(emu, "/v1/agent/service/register", {"name": "api", "id": "api-1", "port": 9090})
    async with running(emu) as watched:
        assert _sidecars(watched) == {9090: None}
        register(emu, "api", 9090, {"port": 15006})  # the sidecar comes later
        want = Sidecar(15006, "127.0.0.1", 9090)
        await async_wait_for(lambda: _sidecars(watched) == {9090: want}, 10)
        # The service's own answer changes (new meta): its sidecar stays.
        register(emu, "api", 9090, {"port": 15006}, meta={"rate-limit-rps": "3"})
        await async_wait_for(
            lambda: (e := watched.entry("api")) is not None and e.service.rate_limit is not None,
            10,
        )
        assert _sidecars(watched) == {9090: want}
        # The sidecar deregistered: the instance is reached directly again.
        put(emu, "/v1/agent/service/deregister/api-1-sidecar-proxy", {})
        await async_wait_for(lambda: _sidecars(watched) == {9090: None}, 10)


# -------------------------------------------------------------------- real Envoys


@dataclass
class ConsulSidecars:
    api: EnvoyProcess
    backend: HttpBackend
    web_port: int  # web's outbound HTTP listener
    api_inbound: int  # api's sidecar port (its sidecar_service port)

    def call_api(self) -> int:
        try:
            return http_get(f"http://127.0.0.1:{self.web_port}/", host="api")[0]
        except OSError:
            return 0


@pytest.fixture
def consul_mesh(
    emu: ConsulEmulator,
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory: Callable[..., EnvoyProcess],
    http_backend_factory: Callable[..., HttpBackend],
) -> Callable[..., ConsulSidecars]:
    """``consul_mesh(*server_args, api_meta=None)``: ``api`` and ``web`` registered with
    sidecars, ``xds-server --consul`` with the CA, both sidecar Envoys; live once web
    reaches api."""

    def start(*server_args: str, api_meta: dict[str, str] | None = None) -> ConsulSidecars:
        backend = http_backend_factory("api-backend")
        api_inbound = free_port()
        register(emu, "api", backend.port, {"port": api_inbound}, meta=api_meta or {})
        register(emu, "web", free_port(), {"port": free_port()})
        ca = str(tmp_path / "ca")
        server = xds_server_factory(
            "--consul", "--consul-address", emu.url, "--ca-dir", ca, *server_args
        )
        web, api, web_port = web_and_api_sidecars(server.xds_port, envoy_factory)
        mesh = ConsulSidecars(api, backend, web_port, api_inbound)
        wait_for(
            lambda: mesh.call_api() == 200,
            timeout=20,
            message=lambda: f"web -> api\n{web.log_tail()}",
        )
        return mesh

    return start


@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE"])
def test_consul_sidecars_mutual_tls_and_peer_authentication_modes(
    consul_mesh: Callable[..., ConsulSidecars], mode: str
) -> None:
    mesh = consul_mesh("--mesh-mtls-mode", mode)
    assert mesh.call_api() == 200
    xfcc = {k.lower(): v for k, v in mesh.backend.last_headers.items()}
    assert f"URI={WEB_ID}" in xfcc.get("x-forwarded-client-cert", ""), xfcc
    plain = plain_request(mesh.api_inbound)
    assert (plain != 200) if mode == "STRICT" else (plain == 200), plain


def test_consul_rate_limit_meta_gives_429s(consul_mesh: Callable[..., ConsulSidecars]) -> None:
    mesh = consul_mesh(api_meta={"rate-limit-rps": "1", "rate-limit-burst": "2"})
    statuses = [mesh.call_api() for _ in range(8)]
    assert statuses.count(429) >= 4, statuses
    rl = mesh.api.stats("http_local_rate_limit.rate_limited")
    assert sum(rl.values()) >= 4, rl
