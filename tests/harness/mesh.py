"""Sidecar Envoys for service-mesh tests: a bootstrap whose node says which instance it
fronts (SIDECAR_FOR + INSTANCE_IPS) and who it is (NAMESPACE + SERVICE_ACCOUNT), and
readers of what a sidecar holds (its certificates' serials)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Mapping
from typing import Any

from tests.harness.envoy import EnvoyProcess, bootstrap
from tests.harness.ports import free_port


def sidecar_bootstrap(
    xds_port: int,
    admin_port: int,
    *,
    node_id: str,
    service_account: str,
    http_listener_port: int,
    sidecar_for: str | None = None,
    dependencies: list[str] | None = None,
    namespace: str = "default",
    instance_ip: str = "127.0.0.1",
    delta: bool = False,
) -> dict[str, Any]:
    """An ADS bootstrap (CDS, LDS and SDS over one stream) for a sidecar of
    `sidecar_for`'s instance at `instance_ip` (None: a client-only proxy), holding the
    identity ``ns/<namespace>/sa/<service_account>``."""
    metadata: dict[str, Any] = {
        "NAMESPACE": namespace,
        "SERVICE_ACCOUNT": service_account,
        "http_listener_port": http_listener_port,
    }
    if sidecar_for is not None:
        metadata |= {"SIDECAR_FOR": sidecar_for, "INSTANCE_IPS": instance_ip}
    if dependencies is not None:
        metadata["dependencies"] = dependencies
    return bootstrap(
        xds_port, admin_port, node_id, node_cluster=service_account, delta=delta, metadata=metadata
    )


def cert_serials(env: EnvoyProcess) -> tuple[set[str], set[str]]:
    """(leaf serials, CA serials) of the certificates an Envoy holds (``/certs``)."""
    doc: dict[str, Any] = json.loads(env.admin_get("/certs"))
    entries = doc.get("certificates", [])
    leaves = {c["serial_number"] for e in entries for c in e.get("cert_chain", [])}
    roots = {c["serial_number"] for e in entries for c in e.get("ca_cert", [])}
    return leaves, roots


def web_and_api_sidecars(
    xds_port: int, envoy_factory: Callable[..., EnvoyProcess], delta: bool = False
) -> tuple[EnvoyProcess, EnvoyProcess, int]:
    """Two live sidecar Envoys on 127.0.0.1: ``web``'s (identity sa/web, depends on
    ``api``) and ``api``'s (identity sa/api, depends on nothing); and the port of web's
    outbound HTTP listener. `delta`: incremental xDS."""
    web_port = free_port()
    web = envoy_factory(
        sidecar_bootstrap(
            xds_port,
            free_port(),
            node_id="web-1",
            service_account="web",
            sidecar_for="web",
            http_listener_port=web_port,
            dependencies=["api"],
            delta=delta,
        ),
        name="web",
        wait="ready",
        timeout=30,
    )
    api = envoy_factory(
        sidecar_bootstrap(
            xds_port,
            free_port(),
            node_id="api-1",
            service_account="api",
            sidecar_for="api",
            http_listener_port=free_port(),
            dependencies=[],
            delta=delta,
        ),
        name="api",
        wait="ready",
        timeout=30,
    )
    return web, api, web_port


def plain_request(port: int, headers: Mapping[str, str] | None = None) -> int | str:
    """One plaintext GET straight to a sidecar port on 127.0.0.1 (Host ``api``): the
    status, or the name of the error (a refused handshake, a reset)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", "/", headers={"Host": "api", **(headers or {})})
        return conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        conn.close()
