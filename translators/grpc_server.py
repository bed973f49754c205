"""xDS-managed gRPC servers (gRFC A36): the Listener a proxyless server asks for by name.

A gRPC server started with ``xds=True`` subscribes to one Listener named by its
bootstrap's ``server_listener_resource_name_template`` with ``%s`` replaced by the
address it listens on (``127.0.0.1:50051``, ``[::]:50051``). We know where a server runs
the way Istio does: its node metadata ``INSTANCE_IPS`` (comma-separated) names its IPs,
and every registry endpoint at one of those IPs is an instance it serves, at that
endpoint's port. For each instance we serve a Listener under each of the templates we
support (`TEMPLATES`: gRPC's own example name and Istio's) for the instance's IP and for
the wildcard addresses ``0.0.0.0`` and ``[::]`` (a server bound to every interface asks
for those). gRPC fetches Listeners by name, so the ones it does not name cost nothing
but bytes in its group's snapshot.

The Listener has exactly the shape A36 and gRPC's validation want: ``address`` equal to
the listening address (else gRPC stays "not serving"), no listener filters, one filter
chain whose only filter is an HCM with an inline route configuration: one virtual host
``*`` with one route, ``non_forwarding_action``; HTTP filters: RBAC (gRFC A41; DENY
before ALLOW, as many as given) then the router. With mesh mTLS, the chain's transport
socket is a DownstreamTlsContext with certificate-provider instances
(translators.grpc_tls).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import string_pb2

from xds_server.model import Endpoint, Service, ServiceEntry, ServiceKey

from .grpc_tls import downstream_tls, mesh_tls
from .resources import pack, socket_address

# Node metadata naming a proxyless server's IPs (Istio's key; a comma-separated string).
META_INSTANCE_IPS: Final = "INSTANCE_IPS"
# Listener name templates we serve (``%s`` = ip:port); the bootstrap's
# ``server_listener_resource_name_template`` must be one of them.
GRPC_TEMPLATE: Final = "grpc/server?xds.resource.listening_address=%s"
ISTIO_TEMPLATE: Final = "xds.istio.io/grpc/lds/inbound/%s"
TEMPLATES: Final = (GRPC_TEMPLATE, ISTIO_TEMPLATE)
WILDCARDS: Final = ("0.0.0.0", "::")
RBAC_FILTER: Final = "envoy.filters.http.rbac"
ROUTER_FILTER: Final = "envoy.filters.http.router"
HCM_FILTER: Final = "envoy.filters.network.http_connection_manager"


@dataclass(frozen=True, slots=True)
class ServerInstance:
    """What runs at ip:port: the services with an endpoint there, and those endpoints
    (their labels select authorization policies)."""

    ip: str
    port: int
    services: tuple[Service, ...]
    endpoints: tuple[Endpoint, ...]


# The RBAC filters of an instance's server listener, in order (DENY before ALLOW); the
# authorization translator (AuthorizationPolicy, Consul intentions) provides it.
ServerRbac = Callable[[ServerInstance], Sequence[rbac_pb2.RBAC]]


def no_rbac(instance: ServerInstance) -> list[rbac_pb2.RBAC]:
    """No authorization: every caller is allowed."""
    return []


def allow_principals(principals: Iterable[str]) -> rbac_pb2.RBAC:
    """An ALLOW RBAC letting only callers whose certificate is one of `principals`
    (exact SPIFFE IDs) call anything; the smallest authorization for tests and examples."""
    ids = [
        rbac_config_pb2.Principal(
            authenticated=rbac_config_pb2.Principal.Authenticated(
                principal_name=string_pb2.StringMatcher(exact=p)
            )
        )
        for p in principals
    ]
    policy = rbac_config_pb2.Policy(
        permissions=[rbac_config_pb2.Permission(any=True)],
        principals=[rbac_config_pb2.Principal(or_ids=rbac_config_pb2.Principal.Set(ids=ids))],
    )
    return rbac_pb2.RBAC(
        rules=rbac_config_pb2.RBAC(action=rbac_config_pb2.RBAC.ALLOW, policies={"allow": policy})
    )


def instance_ips(value: str) -> tuple[frozenset[str], list[str]]:
    """The IPs of an ``INSTANCE_IPS`` value (normalised), and what was not an IP."""
    ips: set[str] = set()
    bad: list[str] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            ips.add(str(ipaddress.ip_address(item)))
        except ValueError:
            bad.append(item)
    return frozenset(ips), bad


def index_by_ip(
    view: Mapping[ServiceKey, ServiceEntry],
) -> dict[str, list[tuple[Service, Endpoint]]]:
    """Every endpoint of the view by its IP, for `instances_at` (built once per change,
    so a server group's lookup does not scan the catalog)."""
    out: dict[str, list[tuple[Service, Endpoint]]] = {}
    for key in sorted(view):
        entry = view[key]
        for ep in entry.endpoints:
            out.setdefault(ep.ip, []).append((entry.service, ep))
    return out


def instances_at(
    index: Mapping[str, Sequence[tuple[Service, Endpoint]]], ips: Iterable[str]
) -> tuple[ServerInstance, ...]:
    """The server instances at `ips`, by (ip, port)."""
    found: dict[tuple[str, int], list[tuple[Service, Endpoint]]] = {}
    for ip in sorted(ips):
        for service, ep in index.get(ip, ()):
            found.setdefault((ip, ep.port), []).append((service, ep))
    return tuple(
        ServerInstance(
            ip,
            port,
            tuple(dict.fromkeys(s for s, _ in items)),
            tuple(ep for _, ep in items),
        )
        for (ip, port), items in sorted(found.items())
    )


def host_port(ip: str, port: int) -> str:
    """How gRPC writes a listening address into the template: ``[v6]:port`` or
    ``v4:port``."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def listener_names(ip: str, port: int) -> list[tuple[str, str]]:
    """(listener name, address) pairs a server at ip:port may ask for."""
    out = []
    for address in (ip, *(w for w in WILDCARDS if w != ip)):
        for template in TEMPLATES:
            out.append((template.replace("%s", host_port(address, port)), address))
    return out


def server_listener(
    name: str,
    address: str,
    port: int,
    rbac: Sequence[rbac_pb2.RBAC] = (),
    transport_socket: base_pb2.TransportSocket | None = None,
) -> listener_pb2.Listener:
    """The A36 server Listener (see the module docstring)."""
    route = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/"),
        non_forwarding_action=route_components_pb2.NonForwardingAction(),
    )
    route_config = route_pb2.RouteConfiguration(
        name=f"inbound|{port}",
        virtual_hosts=[
            route_components_pb2.VirtualHost(name=f"inbound|{port}", domains=["*"], routes=[route])
        ],
    )
    filters = [
        # gRPC rejects two HTTP filters with one name.
        hcm_pb2.HttpFilter(name=f"{RBAC_FILTER}.{i}" if i else RBAC_FILTER, typed_config=pack(r))
        for i, r in enumerate(rbac)
    ]
    filters.append(hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router())))
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=f"inbound_{port}",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        route_config=route_config,
        http_filters=filters,
    )
    chain = listener_components_pb2.FilterChain(
        name=f"inbound|{port}",
        filters=[listener_components_pb2.Filter(name=HCM_FILTER, typed_config=pack(hcm))],
    )
    if transport_socket is not None:
        chain.transport_socket.CopyFrom(transport_socket)
    return listener_pb2.Listener(
        name=name, address=socket_address(address, port), filter_chains=[chain]
    )


def server_listeners(
    instances: Iterable[ServerInstance], rbac_of: ServerRbac = no_rbac, tls: bool = False
) -> list[listener_pb2.Listener]:
    """Every Listener the servers at `instances` may ask for, sorted by name. `tls`: the
    server has a workload identity and the CA is on; instances of mesh TLS services
    (translators.grpc_tls.mesh_tls) then require mTLS."""
    out: dict[str, listener_pb2.Listener] = {}
    for inst in instances:
        rbac = list(rbac_of(inst))
        socket = downstream_tls() if tls and any(mesh_tls(s) for s in inst.services) else None
        for name, address in listener_names(inst.ip, inst.port):
            # The same wildcard name from two IPs of one server: the first instance wins.
            out.setdefault(name, server_listener(name, address, inst.port, rbac, socket))
    return [out[n] for n in sorted(out)]
