"""Where a routing rule's destination goes: the service, port and cluster a
`Destination` names (its subset's, or the aggregate cluster of a DestinationRule's
failover), checked against the catalog and the DestinationRules in force. Part of the
resolution (policy_resolve): `Destinations` also collects the failover aggregates and
dependencies the VirtualService being applied adds, kept only if it applies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from xds_server.model import (
    Destination,
    DestinationPolicy,
    FieldPath,
    HashOn,
    Port,
    Service,
    ServiceEntry,
    ServiceKey,
)

from .names import cluster_name, failover_cluster_name, subset_cluster_name
from .policy_common import RouteTarget
from .policy_resolution import HostIndex, Rejected, TargetKey


def port_of(service: Service, number: int) -> Port | None:
    """`service`'s port numbered `number`, if it has one."""
    for p in service.ports:
        if p.port == number:
            return p
    return None


class Destinations:
    """Resolves destinations for one resolution run (`target`), against its catalog
    index and the DestinationRules it accepted."""

    def __init__(
        self,
        index: HostIndex,
        catalog: Mapping[ServiceKey, ServiceEntry],
        drs: Mapping[ServiceKey, DestinationPolicy],
    ) -> None:
        self.index = index
        self.catalog = catalog
        self.drs = drs  # the resolver's, filled before any route is applied
        self.pending_failovers: dict[ServiceKey, dict[tuple[int, str], tuple[str, ...]]] = {}
        self.pending_depends: dict[ServiceKey, set[ServiceKey]] = {}

    def start(self) -> None:
        """A new VirtualService is being applied: nothing pending yet."""
        self.pending_failovers, self.pending_depends = {}, {}

    def service_of(self, d: Destination) -> ServiceKey:
        key = self.index.find(d.host, d.namespace)
        assert key is not None  # target() checked it first
        return key

    def target(
        self,
        d: Destination,
        route_port: int,
        http: bool,
        where: FieldPath,
        subsets: dict[ServiceKey, set[tuple[int, str]]],
    ) -> RouteTarget:
        key = self.index.find(d.host, d.namespace)
        if key is None:
            raise Rejected(where, f"destination host {d.host!r} names no service")
        service = self.catalog[key].service
        port = destination_port(service, d, route_port, http, where)
        base = cluster_name(service, port)
        dr = self.drs.get(key)
        if d.subset:
            if dr is None or dr.subset(d.subset) is None:
                defined = f" (DestinationRule {dr.key.namespace}/{dr.key.name})" if dr else ""
                raise Rejected(
                    where,
                    f"subset {d.subset!r} of service {key} is not defined by a "
                    f"DestinationRule{defined}",
                )
            subsets.setdefault(key, set()).add((port.port, d.subset))
        hash_on: HashOn | None = None
        if dr is not None:
            lb = dr.for_port(port.port, d.subset).load_balancer
            hash_on = lb.hash if lb is not None else None
        cluster = subset_cluster_name(base, d.subset) if d.subset else base
        if dr is not None and dr.failover:
            cluster = self._failover(key, dr, d.subset, cluster, port, http, where, subsets)
        return RouteTarget(cluster=cluster, hash_on=hash_on)

    def _failover(
        self,
        key: ServiceKey,
        dr: DestinationPolicy,
        subset: str,
        primary: str,
        port: Port,
        http: bool,
        where: FieldPath,
        subsets: dict[ServiceKey, set[tuple[int, str]]],
    ) -> str:
        """The aggregate cluster for `primary` when `dr` fails it over (the entry for its
        subset, else the one for every subset), else `primary` itself."""
        chosen = next((f for f in dr.failover if f.subset == subset), None)
        chosen = chosen or next((f for f in dr.failover if f.subset == ""), None)
        if chosen is None:
            return primary
        clusters = [primary]
        for t in chosen.targets:
            tkey = self.index.find(t.host, t.namespace)
            if tkey is None:
                continue  # no such service yet: it would have no endpoints either
            target = self.catalog[tkey].service
            try:
                tport = destination_port(target, replace(t, port=None), port.port, http, where)
            except Rejected:
                continue
            tcluster = cluster_name(target, tport)
            if t.subset:
                tdr = self.drs.get(tkey)
                if tdr is None or tdr.subset(t.subset) is None:
                    reason = f"failover subset {t.subset!r} of service {tkey} is not defined"
                    raise Rejected(where, reason)
                subsets.setdefault(tkey, set()).add((tport.port, t.subset))
                tcluster = subset_cluster_name(tcluster, t.subset)
            if tcluster not in clusters:
                clusters.append(tcluster)
                self.pending_depends.setdefault(key, set()).add(tkey)
        if len(clusters) == 1:
            return primary
        self.pending_failovers.setdefault(key, {})[(port.port, subset)] = tuple(clusters)
        return failover_cluster_name(primary)


def destination_port(
    service: Service, d: Destination, route_port: int, http: bool, where: FieldPath
) -> Port:
    kind = "HTTP" if http else "TCP"
    candidates = [p for p in service.ports if p.http_like == http]
    if d.port is not None:
        port = port_of(service, d.port)
        if port is None:
            raise Rejected(where, f"service {service.key} has no port {d.port}")
        if port.http_like != http:
            raise Rejected(where, f"port {d.port} of service {service.key} is not {kind}")
        return port
    same = port_of(service, route_port)
    if same is not None and same.http_like == http:
        return same
    if not candidates:
        raise Rejected(where, f"service {service.key} has no {kind} port")
    return candidates[0]


def target_order(item: tuple[TargetKey, RouteTarget]) -> tuple[str, str, int, str, int]:
    """A total order: Destination's own would compare a port of None with a number."""
    (d, route_port), _ = item
    return (d.host, d.namespace, -1 if d.port is None else d.port, d.subset, route_port)
