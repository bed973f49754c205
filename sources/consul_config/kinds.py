"""The config entries as parsed: one frozen value per kind, in the model's terms where
the model has them (matches, retries, header operations, pools, load balancers).

A `Target` is a service (and subset) as an entry names it: `service` "" means the
entry's own service, as Consul reads an omitted `Service`."""

from __future__ import annotations

from dataclasses import dataclass, field

from xds_server.model import (
    ConnectionPool,
    HeaderOps,
    Labels,
    LoadBalancer,
    OutlierDetection,
    PolicyKey,
    RequestMatch,
    Retry,
)

L7_PROTOCOLS = frozenset({"http", "http2", "grpc"})
PROTOCOLS = L7_PROTOCOLS | {"tcp"}
CONSUL_DEFAULT_PROTOCOL = "tcp"  # what Consul assumes when nothing sets a protocol
SERVICE_DEFAULTS = "service-defaults"
PROXY_DEFAULTS = "proxy-defaults"
SERVICE_ROUTER = "service-router"
SERVICE_SPLITTER = "service-splitter"
SERVICE_RESOLVER = "service-resolver"
KINDS = (SERVICE_DEFAULTS, PROXY_DEFAULTS, SERVICE_ROUTER, SERVICE_SPLITTER, SERVICE_RESOLVER)
PROXY_DEFAULTS_NAME = "global"  # the only name Consul accepts for proxy-defaults
WEIGHT_SCALE = 100  # Consul's weights have 0.01 precision: integer weights are x100
TOTAL_WEIGHT = 100 * WEIGHT_SCALE


@dataclass(frozen=True, slots=True)
class Target:
    service: str = ""
    subset: str = ""
    namespace: str = ""


@dataclass(frozen=True, slots=True)
class Upstream:
    """What `UpstreamConfig` sets for the callers' clusters of an upstream."""

    pool: ConnectionPool | None = None
    outlier: OutlierDetection | None = None


@dataclass(frozen=True, slots=True)
class ServiceDefaults:
    key: PolicyKey
    protocol: str | None = None
    upstream_defaults: Upstream | None = None
    upstream_overrides: tuple[tuple[str, Upstream], ...] = ()  # (upstream name, config)


@dataclass(frozen=True, slots=True)
class ProxyDefaults:
    key: PolicyKey
    protocol: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    match: RequestMatch | None
    target: Target
    prefix_rewrite: str | None = None
    timeout: float | None = None
    retry: Retry | None = None
    headers: HeaderOps = field(default_factory=HeaderOps)


@dataclass(frozen=True, slots=True)
class ServiceRouter:
    key: PolicyKey
    routes: tuple[Route, ...]


@dataclass(frozen=True, slots=True)
class Split:
    weight: int  # hundredths of a percent
    target: Target
    headers: HeaderOps = field(default_factory=HeaderOps)


@dataclass(frozen=True, slots=True)
class ServiceSplitter:
    key: PolicyKey
    splits: tuple[Split, ...]


@dataclass(frozen=True, slots=True)
class ServiceResolver:
    key: PolicyKey
    default_subset: str = ""
    subsets: tuple[tuple[str, Labels], ...] = ()
    redirect: Target | None = None
    failover: tuple[tuple[str, tuple[Target, ...]], ...] = ()  # ("*" or subset, targets)
    connect_timeout: float | None = None
    request_timeout: float | None = None
    load_balancer: LoadBalancer | None = None

    def has_subset(self, name: str) -> bool:
        return any(n == name for n, _ in self.subsets)


Entry = ServiceDefaults | ProxyDefaults | ServiceRouter | ServiceSplitter | ServiceResolver
