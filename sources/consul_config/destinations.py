"""What callers apply to one service's endpoints, compiled into a `DestinationPolicy`:
its resolver's subsets, load balancer, `ConnectTimeout` and `Failover`, and the
`UpstreamConfig` of service-defaults for it.

`UpstreamConfig` is set by a caller for its upstreams: `Defaults` for all of them, then
`Overrides[]` for the one it names, field by field (`upstream_config`). This server's
proxies share one set of clusters per service and are not Consul services, so for
service X the config applied is that of the first caller (by namespace/name) with an
Override naming X, else of the first caller with `Defaults`.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import TypeVar

from xds_server.model import (
    ConnectionPool,
    Destination,
    DestinationPolicy,
    OutlierDetection,
    PolicyKey,
    ServiceFailover,
    ServiceKey,
    Subset,
    TrafficPolicy,
)

from .chain import ChainCompiler
from .index import EntryIndex
from .kinds import ServiceDefaults, Upstream

RESOLVER_KIND = "discovery-chain-resolver"
T = TypeVar("T", ConnectionPool, OutlierDetection)


def _overlay(base: T | None, top: T | None) -> T | None:
    """`top`'s set fields over `base`'s."""
    if base is None or top is None:
        return top if base is None else base
    changes = {
        f.name: getattr(top, f.name) for f in fields(top) if getattr(top, f.name) is not None
    }
    return replace(base, **changes)


def upstream_config(caller: ServiceDefaults, upstream: str) -> Upstream | None:
    """What `caller`'s UpstreamConfig sets for `upstream`: Defaults, then its Override."""
    override = next((u for n, u in caller.upstream_overrides if n == upstream), None)
    base = caller.upstream_defaults
    if override is None or base is None:
        return override or base
    return Upstream(_overlay(base.pool, override.pool), _overlay(base.outlier, override.outlier))


class SharedUpstreamConfig:
    """What every caller's cluster of an upstream gets (see the module docstring),
    computed once for all upstreams."""

    def __init__(self, index: EntryIndex) -> None:
        self.overridden: dict[str, Upstream] = {}
        self.defaults: Upstream | None = None
        for caller in index.all_defaults():  # by namespace/name: the first one wins
            for name, _ in caller.upstream_overrides:
                found = upstream_config(caller, name)
                if found is not None:
                    self.overridden.setdefault(name, found)
            if self.defaults is None:
                self.defaults = caller.upstream_defaults

    def __call__(self, upstream: ServiceKey) -> Upstream | None:
        return self.overridden.get(upstream.name, self.defaults)


def compile_destination(
    index: EntryIndex,
    chains: ChainCompiler,
    upstreams: SharedUpstreamConfig,
    service: ServiceKey,
) -> DestinationPolicy | None:
    """The policy of `service`, or None when nothing configures it. Failover targets
    go through their own resolvers (`ChainCompiler.failover_target`)."""
    resolver = index.resolver(service)
    upstream = upstreams(service)
    if resolver is None and upstream is None:
        return None
    pool = upstream.pool if upstream else None
    if resolver is not None and resolver.connect_timeout is not None:
        pool = replace(pool or ConnectionPool(), connect_timeout=resolver.connect_timeout)
    traffic = TrafficPolicy(
        load_balancer=resolver.load_balancer if resolver else None,
        connection_pool=pool,
        outlier_detection=upstream.outlier if upstream else None,
    )
    failover: list[ServiceFailover] = []
    for subset, targets in resolver.failover if resolver else ():
        dests: list[Destination] = []
        for i, t in enumerate(targets):
            where = f"service-resolver/{service.name}: Failover[{subset!r}]"
            leaf = chains.failover_target(
                service, t, where + (f".Targets[{i}]" if len(targets) > 1 else "")
            )
            found = Destination(leaf.service.name, leaf.service.namespace, subset=leaf.subset)
            if found not in dests:
                dests.append(found)
        failover.append(ServiceFailover("" if subset == "*" else subset, tuple(dests)))
    if traffic == TrafficPolicy() and not failover and not (resolver and resolver.subsets):
        return None  # a resolver that only redirects: nothing for callers' clusters
    return DestinationPolicy(
        key=PolicyKey(RESOLVER_KIND, service.namespace, service.name),
        host=service.name,
        policy=traffic if traffic != TrafficPolicy() else None,
        subsets=tuple(Subset(n, labels) for n, labels in resolver.subsets) if resolver else (),
        origin=f"consul service-resolver/{service.name}",
        failover=tuple(failover),
    )
