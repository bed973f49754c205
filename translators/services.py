"""Per-service builders: a service's clusters and its endpoints' load assignments.

They take only the service (or the service with its endpoints) and the policy that
applies to it (`ServicePolicy`), so a controller can memoise them per service: an
endpoint change rebuilds only that service's ClusterLoadAssignments, a service change
only its clusters. With policy, each port's cluster carries the DestinationRule's
traffic policy for that port, and every referenced subset gets a cluster of its own
(`names.subset_cluster_name`) whose endpoints are those carrying the subset's labels.

The service mesh (translators.mesh_tls): an endpoint a sidecar fronts is reached at the
sidecar's port and marked so that a mesh caller's cluster (`mesh_trust_domain` given)
dials it over mutual TLS; every caller gets the same endpoints.
"""

from __future__ import annotations

from dataclasses import replace

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from xds_server.model import (
    DestinationPolicy,
    Endpoint,
    Locality,
    LocalityLb,
    Service,
    ServiceEntry,
)

from . import resources as rb
from .group import Kind
from .mesh_tls import mesh_endpoint_metadata, with_mesh_tls
from .names import cluster_name, failover_cluster_name, subset_cluster_name
from .policy_clusters import apply_traffic_policy, locality_load_assignment, subset_endpoints
from .policy_resolve import ServicePolicy

# Upstream protocols Envoy must speak HTTP/2 to.
HTTP2_PROTOCOLS = frozenset({"http2", "grpc"})


def service_clusters(
    service: Service,
    policy: ServicePolicy | None = None,
    client: Kind = "envoy",
    connect_timeout: float = 1.0,
    mesh_trust_domain: str | None = None,
) -> list[cluster_pb2.Cluster]:
    """One EDS cluster (over ADS, round robin unless policy says otherwise) per service
    port, in port order, then one per referenced subset; for a service with an external
    name, one DNS cluster per port on that name instead.

    `mesh_trust_domain` (the caller is a sidecar holding a workload certificate): EDS
    clusters dial sidecar-fronted endpoints over mutual TLS, accepting the service's
    SPIFFE IDs in that trust domain."""
    if service.external_name:
        return [
            rb.dns_cluster(
                cluster_name(service, port),
                service.external_name.rstrip("."),
                port.port,
                connect_timeout=connect_timeout,
                http2=port.protocol in HTTP2_PROTOCOLS,
            )
            for port in service.ports
        ]
    dr = policy.destination if policy is not None else None
    out = []
    wanted = [(port, "") for port in service.ports]
    if policy is not None:
        by_number = {p.port: p for p in service.ports}
        wanted += [(by_number[n], subset) for n, subset in policy.subsets if n in by_number]
    for port, subset in wanted:
        base = cluster_name(service, port)
        cluster = rb.eds_cluster(
            subset_cluster_name(base, subset) if subset else base,
            connect_timeout=connect_timeout,
            http2=port.protocol in HTTP2_PROTOCOLS,
        )
        if dr is not None:
            subject = f"{dr.key} port {port.port}" + (f" subset {subset}" if subset else "")
            cluster, _ = apply_traffic_policy(
                cluster, dr.for_port(port.port, subset), client, subject
            )
        if mesh_trust_domain is not None and client == "envoy":
            cluster = with_mesh_tls(cluster, service, mesh_trust_domain, port.protocol)
        out.append(cluster)
    for _, _, clusters in policy.failovers if policy is not None else ():
        out.append(rb.aggregate_cluster(failover_cluster_name(clusters[0]), clusters, client))
    return out


def uses_locality(policy: ServicePolicy | None) -> bool:
    """Whether the service's DestinationRule sets locality load balancing anywhere, so
    its endpoints' priorities depend on the calling proxy's locality."""
    dr = policy.destination if policy is not None else None
    if dr is None:
        return False
    levels = [dr.policy, *(p.policy for p in dr.ports)]
    for subset in dr.subsets:
        levels += [subset.policy, *(p.policy for p in subset.ports)]
    return any(lv and lv.load_balancer and lv.load_balancer.locality for lv in levels)


def _locality_setting(dr: DestinationPolicy | None, port: int, subset: str) -> LocalityLb | None:
    lb = dr.for_port(port, subset).load_balancer if dr is not None else None
    return lb.locality if lb is not None else None


def service_load_assignments(
    entry: ServiceEntry, policy: ServicePolicy | None = None, client: Locality | None = None
) -> list[endpoint_pb2.ClusterLoadAssignment]:
    """One ClusterLoadAssignment per service port, in port order, holding the endpoints
    whose `port_name` is that port's name, grouped by locality (DESIGN §4.12); then one
    per referenced subset, holding those of the port's endpoints with the subset's labels.

    Where the DestinationRule sets locality load balancing and the calling proxy has a
    locality (`client`), localities get priorities and weights for that client
    (same zone first, then failover; Istio's semantics).

    A port or subset without endpoints gets an empty assignment, so its cluster still
    warms. Endpoints naming no port of the service are left out. A service with an
    external name has none: its DNS clusters carry their own address.
    """
    service = entry.service
    if service.external_name:
        return []
    by_port: dict[str, list[Endpoint]] = {port.name: [] for port in service.ports}
    meshed: set[tuple[str, int]] = set()
    for ep in entry.endpoints:
        bucket = by_port.get(ep.port_name)
        if bucket is not None:
            if ep.sidecar is not None:
                meshed.add(ep.reached_at)
                ep = replace(ep, ip=ep.reached_at[0], port=ep.sidecar.port)
            bucket.append(ep)
    dr = policy.destination if policy is not None else None

    def assignment(
        name: str, port: int, subset: str, members: list[Endpoint]
    ) -> endpoint_pb2.ClusterLoadAssignment:
        setting = _locality_setting(dr, port, subset) if client is not None else None
        if client is not None and setting is not None and setting.enabled:
            return locality_load_assignment(name, members, client, setting)
        return rb.load_assignment(name, members)

    out = [
        assignment(cluster_name(service, port), port.port, "", by_port[port.name])
        for port in service.ports
    ]
    if policy is not None and dr is not None:
        by_number = {p.port: p for p in service.ports}
        for number, name in policy.subsets:
            port, subset = by_number.get(number), dr.subset(name)
            if port is None or subset is None:
                continue
            members = subset_endpoints(by_port[port.name], subset.labels)
            base = cluster_name(service, port)
            out.append(assignment(subset_cluster_name(base, name), number, name, members))
    if meshed:
        _mark_meshed(out, meshed)
    return out


def _mark_meshed(
    assignments: list[endpoint_pb2.ClusterLoadAssignment], meshed: set[tuple[str, int]]
) -> None:
    """Mark the endpoints at `meshed` addresses (sidecars) for the mutual-TLS socket."""
    metadata = mesh_endpoint_metadata()
    for cla in assignments:
        for group in cla.endpoints:
            for lb in group.lb_endpoints:
                address = lb.endpoint.address.socket_address
                if (address.address, address.port_value) in meshed:
                    lb.metadata.CopyFrom(metadata)
