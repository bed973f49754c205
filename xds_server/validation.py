"""Checks a registry entry against what Envoy accepts, before anything is translated.

A source hands the catalog whatever its registry holds; an entry that would produce a
resource Envoy rejects would be NACKed and, in SotW, block every other update of that
type for every proxy. So bad values are caught here: a bad service is skipped whole,
a bad endpoint or hostname is dropped from an otherwise good service, and each
decision carries a reason for the log, the metrics and `xdsctl sources`.
"""

from __future__ import annotations

import functools
import re
import socket
from dataclasses import dataclass, replace

from xds_server.model import HEALTH_VALUES, PROTOCOLS, Endpoint, ServiceEntry

# DNS-compatible names (Consul recommends them, Kubernetes requires them); they also
# keep cluster names, stat prefixes and virtual host domains valid in Envoy.
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")
# A namespace is one DNS label (as in Kubernetes), so `<name>.<namespace>` is unique.
_NAMESPACE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_PORT_NAME = re.compile(r"^[A-Za-z0-9._-]{0,63}$")
_HOSTNAME = re.compile(
    r"^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
MAX_WEIGHT = 1_000_000  # keeps a locality's summed weight far below Envoy's uint32 limit


@dataclass(frozen=True, slots=True, order=True)
class Rejection:
    """One skipped registry entry: which source, what (service, endpoint, ...), why."""

    source: str
    subject: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.subject}: {self.reason}"


def dns_name(host: str) -> bool:
    """A DNS name a resolver can look up: no wildcard, and not a malformed IP address
    (a top-level label is never all digits)."""
    labels = host.rstrip(".").rsplit(".", 1)
    return (
        not host.startswith("*")
        and len(host) <= 253
        and bool(_HOSTNAME.match(host))
        and not labels[-1].isdigit()
    )


def _port_ok(port: object) -> bool:
    return isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535


def _service_problem(entry: ServiceEntry) -> str | None:
    svc = entry.service
    if not svc.name:
        return "empty service name"
    if not _NAME.match(svc.name):
        return f"invalid service name {svc.name!r} (letters, digits, '.', '_', '-')"
    if not _NAMESPACE.match(svc.namespace):
        return f"invalid namespace {svc.namespace!r} (one DNS label)"
    if svc.external_name and not dns_name(svc.external_name):
        return f"invalid external name {svc.external_name!r} (a DNS name)"
    if not svc.ports:
        return "no ports"
    names: set[str] = set()
    numbers: set[int] = set()
    for p in svc.ports:
        if not _port_ok(p.port):
            return f"port {p.port!r} outside 1-65535"
        if p.protocol not in PROTOCOLS:
            return f"port {p.port}: unknown protocol {p.protocol!r} (one of {', '.join(PROTOCOLS)})"
        if not _PORT_NAME.match(p.name):
            return f"invalid port name {p.name!r}"
        if p.name in names:
            return f"duplicate port name {p.name!r}"
        if p.port in numbers:
            return f"duplicate port {p.port}"
        names.add(p.name)
        numbers.add(p.port)
    return None


@functools.lru_cache(maxsize=65536)
def valid_ip(ip: str) -> bool:
    """A literal IPv4 or IPv6 address, as Envoy parses one (inet_pton: no leading zeros,
    no hostnames). Memoised: a registry republishes the same addresses over and over."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, ip)
            return True
        except (OSError, ValueError):
            continue
    return False


def _endpoint_problem(ep: Endpoint, port_names: set[str]) -> str | None:
    if not isinstance(ep.ip, str) or not valid_ip(ep.ip):
        return f"invalid IP address {ep.ip!r}"
    if not _port_ok(ep.port):
        return f"port {ep.port!r} outside 1-65535"
    if ep.port_name not in port_names:
        return f"no service port named {ep.port_name!r}"
    if ep.health not in HEALTH_VALUES:
        return f"unknown health {ep.health!r} (one of {', '.join(HEALTH_VALUES)})"
    if not isinstance(ep.weight, int) or not 1 <= ep.weight <= MAX_WEIGHT:
        return f"weight {ep.weight!r} outside 1-{MAX_WEIGHT}"
    return None


def check_entry(source: str, entry: ServiceEntry) -> tuple[ServiceEntry | None, list[Rejection]]:
    """The entry with its bad parts removed (None if the service itself is bad), and why."""
    subject = f"service {entry.service.name}.{entry.service.namespace}"
    problem = _service_problem(entry)
    if problem is not None:
        return None, [Rejection(source, subject, problem)]
    rejections: list[Rejection] = []
    svc = entry.service
    good_hosts = []
    for host in svc.hostnames:
        if _HOSTNAME.match(host) and len(host) <= 253:
            good_hosts.append(host)
        else:
            rejections.append(Rejection(source, subject, f"invalid hostname {host!r} dropped"))
    port_names = {p.name for p in svc.ports}
    endpoints: list[Endpoint] = []
    seen: set[tuple[str, int, str]] = set()
    for ep in entry.endpoints:
        problem = _endpoint_problem(ep, port_names)
        if problem is not None:
            rejections.append(Rejection(source, f"{subject} endpoint {ep.ip}:{ep.port}", problem))
            continue
        ident = (ep.ip, ep.port, ep.port_name)
        if ident in seen:  # the same address listed twice (e.g. in two EndpointSlices)
            continue
        seen.add(ident)
        endpoints.append(ep)
    if not rejections and len(endpoints) == len(entry.endpoints):
        return entry, []
    if len(good_hosts) != len(svc.hostnames):
        svc = replace(svc, hostnames=tuple(good_hosts))
    return ServiceEntry(svc, tuple(endpoints)), rejections
