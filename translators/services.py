"""Per-service builders: a service's clusters and its endpoints' load assignments.

They take only the service (or the service with its endpoints), so a controller can
memoise them per service: an endpoint change rebuilds only that service's
ClusterLoadAssignments, a service change only its clusters.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from xds_server.model import Endpoint, Service, ServiceEntry

from . import resources as rb
from .names import cluster_name

# Upstream protocols Envoy must speak HTTP/2 to.
HTTP2_PROTOCOLS = frozenset({"http2", "grpc"})


def service_clusters(service: Service, connect_timeout: float = 1.0) -> list[cluster_pb2.Cluster]:
    """One EDS cluster (over ADS, round robin) per service port, in port order; for a
    service with an external name, one DNS cluster per port on that name instead."""
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
    return [
        rb.eds_cluster(
            cluster_name(service, port),
            connect_timeout=connect_timeout,
            http2=port.protocol in HTTP2_PROTOCOLS,
        )
        for port in service.ports
    ]


def service_load_assignments(entry: ServiceEntry) -> list[endpoint_pb2.ClusterLoadAssignment]:
    """One ClusterLoadAssignment per service port, in port order, holding the endpoints
    whose `port_name` is that port's name, grouped by locality (DESIGN §4.12).

    A port without endpoints gets an empty assignment, so its cluster still warms.
    Endpoints naming no port of the service are left out. A service with an external
    name has none: its DNS clusters carry their own address.
    """
    service = entry.service
    if service.external_name:
        return []
    by_port: dict[str, list[Endpoint]] = {port.name: [] for port in service.ports}
    for ep in entry.endpoints:
        bucket = by_port.get(ep.port_name)
        if bucket is not None:
            bucket.append(ep)
    return [
        rb.load_assignment(cluster_name(service, port), by_port[port.name])
        for port in service.ports
    ]
