"""Consul Connect sidecar registrations → the model's sidecars (pure functions).

A sidecar is registered as its own service (``connect { sidecar_service {} }`` in a
service definition makes ``<name>-sidecar-proxy``) of Kind ``connect-proxy``, on the
same node as the instance it fronts, with ``Proxy.DestinationServiceName`` and
``Proxy.DestinationServiceID`` naming that instance, its own ``Address``/``Port``
(where callers reach it; the address defaults to the node's, as for any service) and
``Proxy.LocalServiceAddress``/``LocalServicePort`` (where it forwards; Consul's
defaults 127.0.0.1 and the instance's port). This is what ``/v1/health/connect/<name>``
returns for the destination; the source reads the same entries from the proxy
service's own ``/v1/health/service/<name>-sidecar-proxy`` watch, which it has anyway
(the catalog lists proxies as services), instead of a second watch per service.

An instance with a sidecar becomes an `Endpoint` with a `Sidecar`; its service's
identity is its name (Consul's SPIFFE IDs name the service); service meta
``rate-limit-rps`` (and ``rate-limit-burst``, default the rate) sets the inbound
local rate limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from xds_server.model import RateLimit, ServiceEntry, Sidecar

CONNECT_PROXY: Final = "connect-proxy"
RATE_LIMIT_RPS: Final = "rate-limit-rps"
RATE_LIMIT_BURST: Final = "rate-limit-burst"
DEFAULT_LOCAL_ADDRESS: Final = "127.0.0.1"  # Consul's LocalServiceAddress default

Instance = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ProxyRegistration:
    """One connect-proxy instance: which instance it fronts and where it listens."""

    node: str
    destination: str  # Proxy.DestinationServiceName
    destination_id: str  # Proxy.DestinationServiceID
    address: str
    port: int
    local_address: str
    local_port: int  # 0: the destination instance's port


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def sidecar_proxies(instances: Sequence[Instance]) -> tuple[ProxyRegistration, ...]:
    """The connect-proxy instances of a health answer, sorted; those without a
    destination or a port are left out."""
    out = []
    for inst in instances:
        svc = inst.get("Service") or {}
        if svc.get("Kind") != CONNECT_PROXY:
            continue
        proxy = svc.get("Proxy") or {}
        node = inst.get("Node") or {}
        destination = str(proxy.get("DestinationServiceName") or "")
        port = _int(svc.get("Port"))
        if not destination or not 0 < port < 65536:
            continue
        out.append(
            ProxyRegistration(
                node=str(node.get("Node") or ""),
                destination=destination,
                destination_id=str(proxy.get("DestinationServiceID") or destination),
                address=str(svc.get("Address") or node.get("Address") or ""),
                port=port,
                local_address=str(proxy.get("LocalServiceAddress") or DEFAULT_LOCAL_ADDRESS),
                local_port=_int(proxy.get("LocalServicePort")),
            )
        )
    return tuple(sorted(out, key=lambda p: (p.destination, p.node, p.destination_id, p.port)))


def with_sidecars(
    entry: ServiceEntry | None,
    instances: Sequence[Instance],
    proxies: Iterable[ProxyRegistration],
) -> ServiceEntry | None:
    """`entry` (to_entry of `instances`) with each instance that a proxy fronts (same
    node, DestinationServiceID = its ID) reached through that proxy, and the rate
    limit its instances' meta sets."""
    if entry is None:
        return None
    by_instance = {(p.node, p.destination_id): p for p in proxies}
    sidecars: dict[tuple[str, int], Sidecar] = {}
    limit: RateLimit | None = None
    for inst in instances:
        svc = inst.get("Service") or {}
        node = inst.get("Node") or {}
        limit = limit or rate_limit(svc.get("Meta") or {})
        proxy = by_instance.get((str(node.get("Node") or ""), str(svc.get("ID") or "")))
        if proxy is None:
            continue
        ip = str(svc.get("Address") or node.get("Address") or "")
        port = _int(svc.get("Port"))
        sidecars[(ip, port)] = Sidecar(
            port=proxy.port,
            local_ip=proxy.local_address,
            local_port=proxy.local_port or port,
            address="" if proxy.address == ip else proxy.address,
        )
    if not sidecars and limit is None:
        return entry
    endpoints = tuple(
        replace(ep, sidecar=sidecars[(ep.ip, ep.port)]) if (ep.ip, ep.port) in sidecars else ep
        for ep in entry.endpoints
    )
    service = entry.service if limit is None else replace(entry.service, rate_limit=limit)
    return ServiceEntry(service, endpoints)


def rate_limit(meta: Mapping[str, Any]) -> RateLimit | None:
    """The rate limit service meta sets (positive integers), else None."""
    rps = _int(meta.get(RATE_LIMIT_RPS))
    if rps <= 0:
        return None
    burst = _int(meta.get(RATE_LIMIT_BURST))
    return RateLimit(rps, burst if burst > 0 else rps)
