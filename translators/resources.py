"""Pure builders of the Envoy resources this control plane emits.

Small, registry-neutral constructors (cluster, endpoints, listener, routes) shared by
the translators, the tests and the benchmarks. They produce what both Envoy and
proxyless gRPC accept (DESIGN §4.12): EDS clusters over ADS, a locality and a
load-balancing weight on every locality, router filter last, literal IPs.

For traffic policy: the HTTP filters per-route policy needs (`policy_http_filters`: fault,
and CORS for Envoy, before the router), load assignments with locality priorities and
weights (`grouped_load_assignment`), and a TCP proxy over weighted clusters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from xds_server.model import Endpoint, Locality

from .policy_common import Client, duration

HCM = hcm_pb2.HttpConnectionManager
ROUTER_FILTER = "envoy.filters.http.router"
# Per-route policy (Route.typed_per_filter_config) is keyed by these filter names.
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HEALTH = {
    "healthy": health_check_pb2.HEALTHY,
    "unhealthy": health_check_pb2.UNHEALTHY,
    "draining": health_check_pb2.DRAINING,
    "unknown": health_check_pb2.UNKNOWN,
}


def _any(message: object) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(message)
    return a


def pack(message: object) -> any_pb2.Any:
    """`message` in an Any (typed_config, typed_per_filter_config, ...)."""
    return _any(message)


def ads_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def socket_address(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=ip, port_value=port)
    )


def eds_cluster(
    name: str,
    *,
    connect_timeout: float = 1.0,
    http2: bool = False,
    lb_policy: int = cluster_pb2.Cluster.ROUND_ROBIN,
) -> cluster_pb2.Cluster:
    """An EDS cluster fed over ADS; its endpoints are the ClusterLoadAssignment `name`."""
    c = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads_source()),
        connect_timeout=duration_pb2.Duration(
            seconds=int(connect_timeout), nanos=int((connect_timeout % 1) * 1e9)
        ),
        lb_policy=lb_policy,
    )
    if http2:
        _use_http2(c)
    return c


def aggregate_cluster(name: str, clusters: Iterable[str], client: Client) -> cluster_pb2.Cluster:
    """Envoy's aggregate cluster: `clusters` in priority order, the next used only when
    the earlier ones have no healthy endpoint (gRFC A37 for proxyless gRPC).

    Envoy refuses it without lb_policy CLUSTER_PROVIDED; gRPC NACKs that value (it
    balances within the chosen cluster by that cluster's own policy)."""
    c = cluster_pb2.Cluster(
        name=name,
        cluster_type=cluster_pb2.Cluster.CustomClusterType(
            name="envoy.clusters.aggregate",
            typed_config=pack(aggregate_pb2.ClusterConfig(clusters=list(clusters))),
        ),
    )
    if client == "envoy":
        c.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    return c


def dns_cluster(
    name: str, host: str, port: int, *, connect_timeout: float = 1.0, http2: bool = False
) -> cluster_pb2.Cluster:
    """A cluster Envoy resolves itself: LOGICAL_DNS on `host`:`port`, IPv4 preferred.

    LOGICAL_DNS, not STRICT_DNS: it is the DNS type proxyless gRPC accepts too (gRFC A37),
    and for a name outside the mesh connecting to the first address is what clients
    of that name do anyway.
    """
    c = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.LOGICAL_DNS,
        dns_lookup_family=cluster_pb2.Cluster.V4_PREFERRED,
        connect_timeout=duration_pb2.Duration(
            seconds=int(connect_timeout), nanos=int((connect_timeout % 1) * 1e9)
        ),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )
    c.load_assignment.cluster_name = name
    c.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.CopyFrom(
        socket_address(host, port)
    )
    if http2:
        _use_http2(c)
    return c


def _use_http2(c: cluster_pb2.Cluster) -> None:
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo

    opts = hpo.HttpProtocolOptions(
        explicit_http_config=hpo.HttpProtocolOptions.ExplicitHttpConfig(http2_protocol_options={})
    )
    c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(_any(opts))


@dataclass(frozen=True)
class LocalityGroup:
    """The endpoints of one locality at one priority (0 is tried first), with the
    locality's load-balancing weight (None: the sum of its endpoints' weights)."""

    locality: Locality
    endpoints: tuple[Endpoint, ...]
    priority: int = 0
    weight: int | None = None


def locality_groups(endpoints: Iterable[Endpoint]) -> list[LocalityGroup]:
    """`endpoints` grouped by locality, in locality order, all at priority 0."""
    groups: dict[Locality, list[Endpoint]] = {}
    for ep in endpoints:
        groups.setdefault(ep.locality, []).append(ep)
    return [LocalityGroup(loc, tuple(groups[loc])) for loc in sorted(groups)]


def load_assignment(name: str, endpoints: Iterable[Endpoint]) -> endpoint_pb2.ClusterLoadAssignment:
    """Endpoints grouped by locality; each locality has a locality and a weight (§4.12)."""
    return grouped_load_assignment(name, locality_groups(endpoints))


def grouped_load_assignment(
    name: str, groups: Iterable[LocalityGroup]
) -> endpoint_pb2.ClusterLoadAssignment:
    """One LocalityLbEndpoints per group, in the order given, each with its locality, its
    priority and a load-balancing weight of at least 1 (gRPC drops a locality without
    one, §4.12); endpoints sorted by address. Callers keep priorities contiguous from 0."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    for g in groups:
        loc = g.locality
        eps = sorted(g.endpoints, key=lambda e: (e.ip, e.port))
        weight = sum(max(1, e.weight) for e in eps) if g.weight is None else g.weight
        group = cla.endpoints.add(
            locality=base_pb2.Locality(region=loc.region, zone=loc.zone, sub_zone=loc.subzone),
            load_balancing_weight=wrappers_pb2.UInt32Value(value=max(1, weight)),
            priority=g.priority,
        )
        for ep in eps:
            group.lb_endpoints.append(
                endpoint_components_pb2.LbEndpoint(
                    endpoint=endpoint_components_pb2.Endpoint(
                        address=socket_address(ep.ip, ep.port)
                    ),
                    health_status=_HEALTH[ep.health],
                    load_balancing_weight=wrappers_pb2.UInt32Value(value=max(1, ep.weight)),
                )
            )
    return cla


@dataclass(frozen=True)
class VirtualHost:
    name: str
    domains: Sequence[str]
    cluster: str
    prefix: str = "/"
    timeout: float | None = None
    extra: Sequence[tuple[str, str]] = field(default_factory=tuple)  # (prefix, cluster)


def route_configuration(name: str, vhosts: Iterable[VirtualHost]) -> route_pb2.RouteConfiguration:
    rc = route_pb2.RouteConfiguration(name=name)
    for vh in vhosts:
        v = rc.virtual_hosts.add(name=vh.name, domains=list(vh.domains))
        for prefix, cluster in (*vh.extra, (vh.prefix, vh.cluster)):
            r = v.routes.add(
                match=route_components_pb2.RouteMatch(prefix=prefix),
                route=route_components_pb2.RouteAction(cluster=cluster),
            )
            if vh.timeout is not None:
                r.route.timeout.FromMilliseconds(int(vh.timeout * 1000))
    return rc


def _router_filter() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=_any(router_pb2.Router()))


def policy_http_filters(client: Client) -> list[hcm_pb2.HttpFilter]:
    """The HTTP filters per-route traffic policy needs, router last.

    The fault filter with an empty config injects nothing by itself; a route's
    ``typed_per_filter_config[FAULT_FILTER]`` turns it on for that route (gRPC supports it,
    gRFC A33). The CORS filter serves per-route CORS policies; Envoy only, and marked
    optional, because gRPC NACKs an HTTP filter it does not know unless it is optional.
    CORS comes before fault so preflight requests are answered without injected faults.
    """
    fault = hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=_any(fault_pb2.HTTPFault()))
    if client == "grpc":
        return [fault, _router_filter()]
    cors = hcm_pb2.HttpFilter(
        name=CORS_FILTER, typed_config=_any(cors_pb2.Cors()), is_optional=True
    )
    return [cors, fault, _router_filter()]


def http_connection_manager(
    route_name: str,
    stat_prefix: str,
    http_filters: Sequence[hcm_pb2.HttpFilter] | None = None,
) -> hcm_pb2.HttpConnectionManager:
    """HCM with routes over RDS/ADS and the router filter last (§4.12).

    `http_filters` (router last) replaces the router-only default, e.g.
    `policy_http_filters(client)`.
    """
    return HCM(
        stat_prefix=stat_prefix,
        codec_type=HCM.AUTO,
        rds=hcm_pb2.Rds(route_config_name=route_name, config_source=ads_source()),
        http_filters=list(http_filters) if http_filters is not None else [_router_filter()],
    )


def _listener(
    name: str, address: str, port: int, filter_name: str, config: object
) -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=name,
        address=socket_address(address, port),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(name=filter_name, typed_config=_any(config))
                ]
            )
        ],
    )


def http_listener(
    name: str,
    port: int,
    route_name: str,
    address: str = "0.0.0.0",
    http_filters: Sequence[hcm_pb2.HttpFilter] | None = None,
) -> listener_pb2.Listener:
    """An Envoy HTTP listener whose routes come from RDS `route_name` (`http_filters`: see
    `http_connection_manager`)."""
    return _listener(
        name,
        address,
        port,
        "envoy.filters.network.http_connection_manager",
        http_connection_manager(route_name, name, http_filters),
    )


def tcp_listener(
    name: str, port: int, cluster: str, address: str = "0.0.0.0"
) -> listener_pb2.Listener:
    return weighted_tcp_listener(name, port, [(cluster, 1)], address)


def weighted_tcp_listener(
    name: str,
    port: int,
    clusters: Sequence[tuple[str, int]],
    address: str = "0.0.0.0",
    idle_timeout: float | None = None,
) -> listener_pb2.Listener:
    """A TCP proxy listener splitting connections over `clusters` (name, weight > 0); one
    cluster is a plain `cluster`. `idle_timeout` None keeps Envoy's default (1 h, as
    Istio's); 0 disables it."""
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=name)
    if len(clusters) == 1:
        proxy.cluster = clusters[0][0]
    else:
        for cluster, weight in clusters:
            proxy.weighted_clusters.clusters.add(name=cluster, weight=weight)
    if idle_timeout is not None:
        proxy.idle_timeout.CopyFrom(duration(idle_timeout))
    return _tcp_proxy_listener(name, address, port, proxy)


def _tcp_proxy_listener(
    name: str, address: str, port: int, proxy: tcp_proxy_pb2.TcpProxy
) -> listener_pb2.Listener:
    return _listener(name, address, port, "envoy.filters.network.tcp_proxy", proxy)


def api_listener(
    name: str, route_name: str, http_filters: Sequence[hcm_pb2.HttpFilter] | None = None
) -> listener_pb2.Listener:
    """A proxyless gRPC client's listener (`xds:///name`): an HCM in `api_listener`
    (`http_filters`: see `http_connection_manager`)."""
    return listener_pb2.Listener(
        name=name,
        api_listener=api_listener_pb2.ApiListener(
            api_listener=_any(http_connection_manager(route_name, name, http_filters))
        ),
    )
