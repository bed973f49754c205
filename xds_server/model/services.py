"""Services, their ports and endpoints, as immutable values.

Every source (file, Consul, Kubernetes) turns its registry into these values; the
catalog merges them and the translators read them. They are frozen and hashable so
"did this service change?" is an equality check and built resources can be cached by
their input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Protocol = Literal["http", "http2", "grpc", "tcp"]
Health = Literal["healthy", "unhealthy", "draining", "unknown"]

PROTOCOLS: tuple[Protocol, ...] = ("http", "http2", "grpc", "tcp")
HEALTH_VALUES: tuple[Health, ...] = ("healthy", "unhealthy", "draining", "unknown")
# Ports Envoy reaches through the HTTP connection manager (routes, virtual hosts).
HTTP_LIKE: frozenset[str] = frozenset({"http", "http2", "grpc"})
DEFAULT_NAMESPACE = "default"

Labels = tuple[tuple[str, str], ...]


def labels(mapping: dict[str, str] | None = None) -> Labels:
    """A label mapping in its canonical, hashable form (sorted pairs)."""
    return tuple(sorted((mapping or {}).items()))


@dataclass(frozen=True, slots=True, order=True)
class Locality:
    region: str = ""
    zone: str = ""
    subzone: str = ""


@dataclass(frozen=True, slots=True)
class Port:
    """A service port. `name` ties endpoints to it (an endpoint's `port_name`)."""

    name: str
    port: int
    protocol: Protocol = "http"

    @property
    def http_like(self) -> bool:
        return self.protocol in HTTP_LIKE


@dataclass(frozen=True, slots=True)
class Sidecar:
    """The sidecar proxy in front of one instance port: callers reach the instance at
    `address` (empty: the endpoint's own) on `port`; the sidecar forwards to the
    application at `local_ip`:`local_port` (Consul's `LocalServiceAddress`/
    `LocalServicePort`; empty/0: the endpoint's own address and port)."""

    port: int
    local_ip: str = ""
    local_port: int = 0
    address: str = ""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A service's inbound request rate limit: `requests_per_second` refilled every
    second into a bucket of `burst` tokens (Envoy's local rate limit token bucket)."""

    requests_per_second: int
    burst: int


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One instance address serving one named port of a service.

    A source that knows a single port per instance (Consul) sets `port_name` to the
    service's only port; Kubernetes gives one Endpoint per (address, slice port).
    """

    ip: str
    port: int
    port_name: str = ""
    health: Health = "healthy"
    locality: Locality = Locality()
    weight: int = 1
    labels: Labels = ()
    # Set when a sidecar proxy fronts this instance port (the service mesh).
    sidecar: Sidecar | None = None

    @property
    def reached_at(self) -> tuple[str, int]:
        """Where callers connect: the sidecar's port when it has one, else its own."""
        if self.sidecar is None:
            return (self.ip, self.port)
        return (self.sidecar.address or self.ip, self.sidecar.port)


@dataclass(frozen=True, slots=True)
class Service:
    """A service as one source sees it. `hostnames` are the registry's FQDNs for it.

    `external_name` (a Kubernetes ExternalName) makes it a service outside the registry:
    Envoy resolves that DNS name itself and connects to it on each port; such a service
    has no endpoints.

    `service_accounts` are the identities its sidecars present (SPIFFE
    ``ns/<namespace>/sa/<account>``; none given: the service's name, as Consul's service
    identities); `rate_limit` limits requests its sidecars accept.
    """

    name: str
    namespace: str = DEFAULT_NAMESPACE
    ports: tuple[Port, ...] = ()
    hostnames: tuple[str, ...] = ()
    labels: Labels = ()
    source: str = ""
    external_name: str = ""
    service_accounts: tuple[str, ...] = ()
    rate_limit: RateLimit | None = None

    @property
    def key(self) -> ServiceKey:
        return ServiceKey(self.namespace, self.name)

    @property
    def identities(self) -> tuple[str, ...]:
        """The service accounts its instances run as (`service_accounts`, else its name)."""
        return self.service_accounts or (self.name,)

    def port_named(self, name: str) -> Port | None:
        for p in self.ports:
            if p.name == name:
                return p
        return None


@dataclass(frozen=True, slots=True, order=True)
class ServiceKey:
    """Identity of a service across sources: the same key in two registries is one service."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.name}.{self.namespace}"


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """A service and its endpoints, the unit a source publishes and the catalog merges."""

    service: Service
    endpoints: tuple[Endpoint, ...] = field(default=())

    @property
    def key(self) -> ServiceKey:
        return self.service.key
