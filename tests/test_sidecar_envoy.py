"""Sidecars with real Envoys (issue 13, tests 1 and 3, and the inbound rate limit).

Two sidecar Envoys of the file registry's services: ``web`` (identity sa/web) calls
``api`` through its HTTP listener; the cluster ``api`` dials ``api``'s sidecar port over
mutual TLS (certificate and trust bundle by SDS over ADS, from the server's CA); ``api``'s
sidecar (identity sa/api) accepts on its inbound listener and forwards to the backend,
telling it the caller's SPIFFE ID in ``x-forwarded-client-cert``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from tests.harness.backends import HttpBackend, http_get
from tests.harness.envoy import EnvoyProcess
from tests.harness.mesh import cert_serials, plain_request, web_and_api_sidecars
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for

pytest_plugins = ["tests.harness.fixtures"]

WEB_ID = "spiffe://cluster.local/ns/default/sa/web"
SPOOFED = "URI=spiffe://cluster.local/ns/default/sa/admin"


@dataclass
class Mesh:
    server: XdsServerProcess
    web: EnvoyProcess
    api: EnvoyProcess
    backend: HttpBackend
    web_port: int  # web's outbound listener for api (the HTTP listener, or api's TCP port)
    api_inbound: int  # api's sidecar port
    registry: Path
    ca_dir: Path

    def call_api(self) -> tuple[int, str]:
        return http_get(f"http://127.0.0.1:{self.web_port}/", host="api", timeout=5)


def registry_doc(
    backend: int,
    api_sidecar: int,
    web_sidecar: int,
    api_port: dict[str, object],
    api_labels: dict[str, str] | None = None,
) -> dict[str, object]:
    api: dict[str, object] = {
        "name": "api",
        "labels": api_labels or {},
        "ports": [api_port],
        "endpoints": [{"address": "127.0.0.1", "port": backend, "sidecar_port": api_sidecar}],
    }
    web = {
        "name": "web",
        "ports": [{"port": 80}],
        "endpoints": [{"address": "127.0.0.1", "port": free_port(), "sidecar_port": web_sidecar}],
    }
    return {"services": [api, web]}


def start_mesh(
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory: Callable[..., EnvoyProcess],
    http_backend_factory: Callable[..., HttpBackend],
    *server_args: str,
    delta: bool = False,
    tcp: bool = False,
    api_labels: dict[str, str] | None = None,
) -> Mesh:
    """The server, api's backend, both sidecars, live once web reaches api. `tcp`: api
    is a TCP service (web reaches it on its TCP listener, api's port)."""
    backend = http_backend_factory("api-backend")
    api_inbound, web_inbound = free_port(), free_port()
    api_port: dict[str, object] = {"port": free_port(), "protocol": "tcp"} if tcp else {"port": 80}
    registry = tmp_path / "registry.yaml"
    doc = registry_doc(backend.port, api_inbound, web_inbound, api_port, api_labels)
    registry.write_text(yaml.safe_dump(doc))
    ca_dir = tmp_path / "ca"
    server = xds_server_factory(
        "--file", str(registry), "--file-interval", "0.2", "--ca-dir", str(ca_dir), *server_args
    )
    web, api, web_port = web_and_api_sidecars(server.xds_port, envoy_factory, delta)
    if tcp:
        web_port = int(str(api_port["port"]))
    mesh = Mesh(server, web, api, backend, web_port, api_inbound, registry, ca_dir)
    wait_for(lambda: _ok(mesh), timeout=20, message=lambda: f"web -> api\n{web.log_tail()}")
    return mesh


@pytest.fixture
def mesh_of(
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory: Callable[..., EnvoyProcess],
    http_backend_factory: Callable[..., HttpBackend],
) -> Callable[..., Mesh]:
    """``mesh_of(*server_args, delta=False, tcp=False, api_labels=None)``: `start_mesh`
    in this test."""
    return functools.partial(
        start_mesh, tmp_path, xds_server_factory, envoy_factory, http_backend_factory
    )


def _ok(mesh: Mesh) -> bool:
    try:
        return mesh.call_api()[0] == 200
    except OSError:
        return False


def ca_serial(ca_dir: Path) -> int:
    return x509.load_pem_x509_certificate((ca_dir / "root-cert.pem").read_bytes()).serial_number


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_1_web_reaches_api_over_mutual_tls_and_api_sees_its_spiffe_id(
    mesh_of: Callable[..., Mesh], delta: bool
) -> None:
    mesh = mesh_of(delta=delta)
    status, _ = mesh.call_api()
    assert status == 200
    xfcc = {k.lower(): v for k, v in mesh.backend.last_headers.items()}.get(
        "x-forwarded-client-cert", ""
    )
    assert f"URI={WEB_ID}" in xfcc, mesh.backend.last_headers
    # The hop was TLS, on both ends: handshakes counted on api's inbound listener and on
    # web's cluster api.
    wait_for(
        lambda: (mesh.api.stat(f"listener.0.0.0.0_{mesh.api_inbound}.ssl.handshake") or 0) >= 1,
        timeout=5,
        message=lambda: str(mesh.api.stats("ssl.handshake")),
    )
    assert (mesh.web.stat("cluster.api.default_80.ssl.handshake") or 0) >= 1, mesh.web.stats(
        "ssl.handshake"
    )
    # Both sidecars hold certificates from our CA.
    root = ca_serial(mesh.ca_dir)
    for env in (mesh.web, mesh.api):
        leaves, roots = cert_serials(env)
        assert leaves and {int(s, 16) for s in roots} == {root}, (leaves, roots)


@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE"])
def test_3_strict_refuses_plaintext_permissive_accepts_both(
    mesh_of: Callable[..., Mesh], mode: str
) -> None:
    mesh = mesh_of("--mesh-mtls-mode", mode)
    assert mesh.call_api()[0] == 200  # mutual TLS is accepted in both modes
    plain = plain_request(mesh.api_inbound, {"x-forwarded-client-cert": SPOOFED})
    if mode == "STRICT":
        assert plain != 200, plain
    else:
        assert plain == 200, plain
        # A plaintext caller cannot claim an identity: a client-sent XFCC is dropped.
        assert "x-forwarded-client-cert" not in {k.lower() for k in mesh.backend.last_headers}, (
            mesh.backend.last_headers
        )


def test_inbound_rate_limit_answers_429_once_the_bucket_is_empty(
    mesh_of: Callable[..., Mesh],
) -> None:
    mesh = mesh_of()
    statuses = [mesh.call_api()[0] for _ in range(10)]
    assert statuses == [200] * 10  # no limit yet
    doc = yaml.safe_load(mesh.registry.read_text())
    doc["services"][0]["rate_limit"] = {"requests_per_second": 1, "burst": 2}
    mesh.registry.write_text(yaml.safe_dump(doc))

    def limited() -> bool:
        return 429 in [mesh.call_api()[0] for _ in range(5)]

    wait_for(limited, timeout=20, message=lambda: mesh.api.log_tail())
    time.sleep(1.1)
    burst = [mesh.call_api()[0] for _ in range(6)]
    assert burst.count(200) <= 3 and burst.count(429) >= 3, burst
    rl = mesh.api.stats("http_local_rate_limit.rate_limited")
    assert sum(rl.values()) >= 3, rl


def test_tcp_services_are_mutual_tls_tcp_proxies(
    mesh_of: Callable[..., Mesh],
) -> None:
    mesh = mesh_of("--mesh-mtls-mode", "STRICT", tcp=True)
    assert mesh.call_api()[0] == 200
    stat = f"listener.0.0.0.0_{mesh.api_inbound}.ssl.handshake"
    wait_for(
        lambda: (mesh.api.stat(stat) or 0) >= 1,
        timeout=5,
        message=lambda: f"{mesh.api.stats('ssl')} {mesh.web.stats('ssl')}",
    )
    # A TCP hop carries no caller identity in HTTP headers; the TLS did.
    assert "x-forwarded-client-cert" not in {k.lower() for k in mesh.backend.last_headers}
    assert plain_request(mesh.api_inbound) != 200
