"""A sidecar's inbound side: the listener callers reach its instance at, forwarding to the
local application (a static cluster), with mutual TLS as PeerAuthentication says.

The instance is the proxy group's `SidecarOf` (node metadata SIDECAR_FOR + INSTANCE_IPS)
resolved in the catalog: the endpoints of that service at those addresses that carry a
`Sidecar` (the registry says where its sidecar listens; the addresses are the
sidecar's, which are the instance's unless the registry says otherwise). Each such
endpoint gets

- a listener ``inbound_<sidecar port>`` on 0.0.0.0:<sidecar port>;
- a STATIC cluster ``inbound|<sidecar port>|<name.namespace>`` to the application
  (`Sidecar.local_ip`/`local_port`, else the endpoint's own address and port);
- HTTP services: an HTTP connection manager (inline route to that cluster; the local
  rate limit; the authorization filters, `InboundPolicy.http_authz`; router) that sets
  ``x-forwarded-client-cert`` to the caller's verified SPIFFE ID and drops any sent by
  the caller; TCP services: a TCP proxy behind `InboundPolicy.tcp_authz`'s filters.

Mutual TLS (the proxy holds a workload identity and the CA is on; translators.mesh_tls):
STRICT serves only TLS with a client certificate; PERMISSIVE tells TLS and plaintext
apart with the TLS inspector and serves both; DISABLE serves plaintext. Without mutual
TLS available the listener is plaintext whatever the mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import duration_pb2

from xds_server.model import Endpoint, Port, Service, ServiceEntry, ServiceKey

from . import resources as rb
from .group_mesh import SidecarOf
from .inbound_ratelimit import local_rate_limit_filter
from .mesh_tls import downstream_transport_socket
from .names import service_id
from .report import Skipped

MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
MTLS_MODES: tuple[MtlsMode, ...] = ("STRICT", "PERMISSIVE", "DISABLE")
# Istio's mesh default when no PeerAuthentication applies: mutual TLS offered, plaintext
# still accepted, so sidecars can be added one service at a time.
DEFAULT_MTLS_MODE: Final[MtlsMode] = "PERMISSIVE"
TLS_INSPECTOR: Final = "envoy.filters.listener.tls_inspector"
HCM_FILTER: Final = "envoy.filters.network.http_connection_manager"
TCP_PROXY_FILTER: Final = "envoy.filters.network.tcp_proxy"

# (service, the endpoint being fronted) -> the PeerAuthentication mode for it; the
# resolver of PeerAuthentication objects plugs in here: the namespace is the service's,
# the workload labels the endpoint's, and `portLevelMtls` keys on the endpoint's port
# (the application's, as a Kubernetes targetPort).
ModeOf = Callable[[Service, Endpoint], MtlsMode]
# The authorization hook: the RBAC filters for the inbound listener of an instance
# (`Endpoint`: its labels select the workload, as a pod's do in Istio) on a service
# port, HTTP (before the router) and network (before the TCP proxy); none by default.
HttpAuthz = Callable[[Service, Endpoint, Port], list[hcm_pb2.HttpFilter]]
TcpAuthz = Callable[[Service, Endpoint, Port], list[listener_components_pb2.Filter]]


def _no_http_authz(service: Service, endpoint: Endpoint, port: Port) -> list[hcm_pb2.HttpFilter]:
    return []


def _no_tcp_authz(
    service: Service, endpoint: Endpoint, port: Port
) -> list[listener_components_pb2.Filter]:
    return []


def mesh_mode(mode: MtlsMode = DEFAULT_MTLS_MODE) -> ModeOf:
    """One mode for every instance (the mesh-wide default)."""

    def of(service: Service, endpoint: Endpoint) -> MtlsMode:
        return mode

    return of


_MESH_DEFAULT = mesh_mode()


@dataclass(frozen=True, slots=True)
class InboundPolicy:
    """What decides an inbound listener beyond the registry: PeerAuthentication's mode
    and the authorization filters."""

    mode_of: ModeOf = _MESH_DEFAULT
    http_authz: HttpAuthz = _no_http_authz
    tcp_authz: TcpAuthz = _no_tcp_authz


DEFAULT_INBOUND = InboundPolicy()


@dataclass(frozen=True, slots=True)
class Instance:
    """The instance a sidecar fronts: its service and its sidecar-fronted endpoints."""

    service: Service
    endpoints: tuple[Endpoint, ...]


def find_instance(
    catalog: Mapping[ServiceKey, ServiceEntry], sidecar: SidecarOf | None
) -> Instance | None:
    """The instance `sidecar` names, or None (no such service, or none of its endpoints
    at those addresses has a sidecar). ``name.namespace`` wins over a bare name."""
    if sidecar is None:
        return None
    name, _, namespace = sidecar.service.rpartition(".")
    exact = catalog.get(ServiceKey(namespace, name)) if name else None
    # ``name.namespace`` is a key lookup; only a bare (or dotted) name needs the scan.
    candidates = (
        [exact]
        if exact is not None
        else [
            e
            for e in catalog.values()
            if sidecar.service in (service_id(e.service), e.service.name)
        ]
    )
    candidates.sort(key=lambda e: (service_id(e.service) != sidecar.service, e.key))
    for entry in candidates:
        eps = tuple(
            sorted(
                (
                    ep
                    for ep in entry.endpoints
                    if ep.sidecar is not None and ep.reached_at[0] in sidecar.ips
                ),
                key=lambda ep: ep.reached_at,
            )
        )
        if eps:
            return Instance(entry.service, eps)
    return None


def listener_name(port: int) -> str:
    return f"inbound_{port}"


def local_cluster_name(service: Service, port: int) -> str:
    return f"inbound|{port}|{service_id(service)}"


def inbound_resources(
    instance: Instance,
    *,
    mtls: bool,
    policy: InboundPolicy = DEFAULT_INBOUND,
    taken: Mapping[int, str] | None = None,
) -> tuple[list[listener_pb2.Listener], list[cluster_pb2.Cluster], list[Skipped]]:
    """The inbound listeners and local clusters of `instance`, with what was skipped.

    `mtls`: the proxy can hold its workload certificate (identity, CA on). `taken`: the
    ports the proxy's other listeners use (port → who), which an inbound listener may
    not take."""
    listeners: list[listener_pb2.Listener] = []
    clusters: list[cluster_pb2.Cluster] = []
    skipped: list[Skipped] = []
    claimed = dict(taken or {})
    service = instance.service
    for ep in instance.endpoints:
        assert ep.sidecar is not None  # find_instance keeps only these
        port = service.port_named(ep.port_name)
        if port is None:
            continue
        number = ep.sidecar.port
        name = listener_name(number)
        holder = claimed.get(number)
        if holder is not None:
            skipped.append(Skipped(f"listener {name}", f"port {number} already used by {holder}"))
            continue
        claimed[number] = f"the inbound listener of {service_id(service)}"
        cluster = local_cluster_name(service, number)
        clusters.append(_local_cluster(cluster, ep, port))
        mode = policy.mode_of(service, ep) if mtls else "DISABLE"
        filters = _filters(service, ep, port, cluster, policy)
        listeners.append(_listener(name, number, filters, mode))
    return listeners, clusters, skipped


def _local_cluster(name: str, ep: Endpoint, port: Port) -> cluster_pb2.Cluster:
    sidecar = ep.sidecar
    assert sidecar is not None
    ip, number = sidecar.local_ip or ep.ip, sidecar.local_port or ep.port
    cluster = rb.eds_cluster(name, http2=port.protocol in ("http2", "grpc"))
    cluster.ClearField("eds_cluster_config")
    cluster.type = cluster_pb2.Cluster.STATIC
    cluster.load_assignment.CopyFrom(rb.load_assignment(name, [Endpoint(ip, number)]))
    return cluster


def _filters(
    service: Service, ep: Endpoint, port: Port, cluster: str, policy: InboundPolicy
) -> list[listener_components_pb2.Filter]:
    prefix = f"inbound_{port.port}"
    if not port.http_like:
        proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=prefix, cluster=cluster)
        return [
            *policy.tcp_authz(service, ep, port),
            listener_components_pb2.Filter(name=TCP_PROXY_FILTER, typed_config=rb.pack(proxy)),
        ]
    http_filters = []
    if service.rate_limit is not None:
        http_filters.append(local_rate_limit_filter(service.rate_limit, prefix))
    http_filters += policy.http_authz(service, ep, port)
    http_filters.append(
        hcm_pb2.HttpFilter(name=rb.ROUTER_FILTER, typed_config=rb.pack(router_pb2.Router()))
    )
    route = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/"),
        # No timeout: the caller's sidecar enforces the route's (Istio's inbound default).
        route=route_components_pb2.RouteAction(
            cluster=cluster, timeout=duration_pb2.Duration(seconds=0)
        ),
    )
    hcm = rb.HCM(
        stat_prefix=prefix,
        codec_type=rb.HCM.AUTO,
        route_config=route_pb2.RouteConfiguration(
            name=prefix,
            virtual_hosts=[
                route_components_pb2.VirtualHost(name=prefix, domains=["*"], routes=[route])
            ],
        ),
        http_filters=http_filters,
        # The backend learns who called: the verified client certificate's URI SAN;
        # an x-forwarded-client-cert the caller sent itself is dropped.
        forward_client_cert_details=rb.HCM.SANITIZE_SET,
        set_current_client_cert_details=rb.HCM.SetCurrentClientCertDetails(uri=True),
    )
    return [listener_components_pb2.Filter(name=HCM_FILTER, typed_config=rb.pack(hcm))]


def _listener(
    name: str, port: int, filters: list[listener_components_pb2.Filter], mode: MtlsMode
) -> listener_pb2.Listener:
    listener = listener_pb2.Listener(name=name, address=rb.socket_address("0.0.0.0", port))
    if mode == "DISABLE":
        listener.filter_chains.add(filters=filters)
        return listener
    tls = listener_components_pb2.FilterChainMatch(transport_protocol="tls")
    listener.filter_chains.add(
        name="mtls",
        filter_chain_match=tls if mode == "PERMISSIVE" else None,
        filters=filters,
        transport_socket=downstream_transport_socket(),
    )
    if mode == "PERMISSIVE":
        listener.listener_filters.add(
            name=TLS_INSPECTOR, typed_config=rb.pack(tls_inspector_pb2.TlsInspector())
        )
        listener.filter_chains.add(
            name="plaintext",
            filter_chain_match=listener_components_pb2.FilterChainMatch(
                transport_protocol="raw_buffer"
            ),
            filters=filters,
        )
    return listener
