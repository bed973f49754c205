"""Benchmark configuration built with ``translators.resources``.

``N`` EDS clusters ``svc-0 … svc-{N-1}``, one ClusterLoadAssignment per cluster with
``E`` endpoints (loopback addresses that are never dialed), one HTTP listener ``http`` on
port 10000 whose routes come from RDS ``routes``, and one RouteConfiguration ``routes``
with one virtual host per service.

An *endpoint change* replaces one endpoint of one cluster (as when a pod is
rescheduled to a new address). ``cla_marker`` fingerprints a ClusterLoadAssignment's
endpoint set (and ``route_marker`` a RouteConfiguration's virtual hosts) so the
simulated proxies can report which version of a cluster's endpoints (or of the routes)
they acknowledged, independently of how the server encodes or versions it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf.message import Message

from translators import resources as r
from xds_server import types
from xds_server.model import Endpoint, Locality

GROUP = "bench"
LISTENER_NAME = "http"
LISTENER_PORT = 10000
ROUTE_NAME = "routes"
BASE_PORT = 8000


def service_name(i: int) -> str:
    return f"svc-{i}"


def endpoint_ip(i: int, j: int) -> str:
    """A distinct loopback address for endpoint j of service i (never dialed)."""
    n = i * 64 + j
    return f"127.{(n >> 16) & 0xFF}.{(n >> 8) & 0xFF}.{n & 0xFF or 1}"


def base_endpoints(i: int, endpoints: int) -> list[Endpoint]:
    return [
        Endpoint(endpoint_ip(i, j), BASE_PORT + j, locality=Locality("local", f"z{j % 3}"))
        for j in range(endpoints)
    ]


def clusters(n: int) -> list[cluster_pb2.Cluster]:
    return [r.eds_cluster(service_name(i)) for i in range(n)]


def load_assignment(i: int, endpoints: int) -> endpoint_pb2.ClusterLoadAssignment:
    return r.load_assignment(service_name(i), base_endpoints(i, endpoints))


def load_assignments(n: int, endpoints: int) -> list[endpoint_pb2.ClusterLoadAssignment]:
    return [load_assignment(i, endpoints) for i in range(n)]


def listeners() -> list[listener_pb2.Listener]:
    return [r.http_listener(LISTENER_NAME, LISTENER_PORT, ROUTE_NAME)]


def route_configurations(n: int) -> list[route_pb2.RouteConfiguration]:
    vhosts = [
        r.VirtualHost(
            name=service_name(i),
            domains=[service_name(i), f"{service_name(i)}.bench.svc"],
            cluster=service_name(i),
        )
        for i in range(n)
    ]
    return [r.route_configuration(ROUTE_NAME, vhosts)]


def snapshot_resources(n: int, endpoints: int) -> dict[str, Sequence[Message]]:
    """Everything the group ``bench`` gets, keyed by type URL (for ``set_snapshot``)."""
    return {
        types.CLUSTER: clusters(n),
        types.ENDPOINT: load_assignments(n, endpoints),
        types.LISTENER: listeners(),
        types.ROUTE: route_configurations(n),
    }


def changed_load_assignment(
    i: int, endpoints: int, generation: int
) -> endpoint_pb2.ClusterLoadAssignment:
    """Service i's endpoints with its first endpoint moved to a new address.

    ``generation`` (≥ 1) makes every change distinct: generation g places the endpoint
    at ``127.255.x.y:(20000 + g % 10000)``.
    """
    eps = base_endpoints(i, endpoints)
    first = eps[0]
    eps[0] = Endpoint(
        f"127.255.{(generation >> 8) & 0xFF}.{generation & 0xFF or 1}",
        20000 + generation % 10000,
        locality=first.locality,
    )
    return r.load_assignment(service_name(i), eps)


def _fingerprint(name: str, items: list[str]) -> str:
    digest = hashlib.blake2b("|".join(sorted(items)).encode(), digest_size=6).hexdigest()
    return f"{name}/{digest}"


def cla_marker(cla: endpoint_pb2.ClusterLoadAssignment) -> str:
    """``name/fingerprint`` of the endpoint addresses, health and weights
    (order-insensitive)."""
    return _fingerprint(
        cla.cluster_name,
        [
            f"{lb.endpoint.address.socket_address.address}:"
            f"{lb.endpoint.address.socket_address.port_value}/{lb.health_status}"
            f"/{lb.load_balancing_weight.value}"
            for loc in cla.endpoints
            for lb in loc.lb_endpoints
        ],
    )


def route_marker(rc: route_pb2.RouteConfiguration) -> str:
    """``name/fingerprint`` of a RouteConfiguration's virtual host names (order-insensitive)."""
    return _fingerprint(rc.name, [vh.name for vh in rc.virtual_hosts])


def sizes(resources: Mapping[str, Sequence[Message]]) -> dict[str, int]:
    """Serialised bytes per type (what one full SotW push of that type carries)."""
    return {types.short_name(t): sum(m.ByteSize() for m in msgs) for t, msgs in resources.items()}
