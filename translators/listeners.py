"""Per-group builders of listeners and routes. They read services only (no endpoints),
so endpoint changes never rebuild them.

Conflicts that arise from combining services (two services claiming one domain,
listener port or gRPC target name) are resolved deterministically: services are taken
in (namespace, name) order, the first claimant keeps the contested item and every
later one is reported as `Skipped`.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from xds_server.model import Service

from . import resources as rb
from .names import (
    base_domains,
    cluster_name,
    grpc_names,
    http_like_ports,
    http_listener_name,
    http_route_name,
    tcp_listener_name,
    virtual_host_name,
    with_port,
)
from .report import Claims, Skipped, who


def _ordered(services: Iterable[Service]) -> list[Service]:
    return sorted(services, key=lambda s: s.key)


def _virtual_hosts(service: Service) -> list[tuple[str, list[str], str]]:
    """(name, wanted domains, cluster) per http-like port of `service`.

    The first http-like port answers to the base domains and to each with ``:<port>``;
    every further http-like port answers to the base domains with ``:<its port>``.
    """
    bases = base_domains(service)
    out = []
    for i, port in enumerate(http_like_ports(service)):
        ported = [with_port(d, port) for d in bases]
        domains = [*bases, *ported] if i == 0 else ported
        out.append((virtual_host_name(service, port, i == 0), domains, cluster_name(service, port)))
    return out


def http_route_configuration(
    services: Iterable[Service], name: str
) -> tuple[route_pb2.RouteConfiguration, list[Skipped]]:
    """The Envoy HTTP listener's routes: a virtual host per http-like service port.

    Envoy rejects a route configuration in which two virtual hosts share a domain
    (compared case-insensitively) or a name: the first claimant keeps it.
    """
    skipped: list[Skipped] = []
    names: Claims[str] = Claims()
    domains: Claims[str] = Claims()
    vhosts: list[rb.VirtualHost] = []
    for service in _ordered(services):
        for vh_name, wanted, cluster in _virtual_hosts(service):
            subject = f"route {name}: virtual host {vh_name}"
            holder = names.claim(vh_name, who(service))
            if holder is not None:
                skipped.append(Skipped(subject, f"name already used by service {holder}"))
                continue
            kept = []
            for domain in wanted:
                holder = domains.claim(domain.lower(), vh_name)
                if holder is None:
                    kept.append(domain)
                else:
                    skipped.append(
                        Skipped(
                            f"{subject}: domain {domain}",
                            f"domain already used by virtual host {holder}",
                        )
                    )
            if kept:
                vhosts.append(rb.VirtualHost(vh_name, kept, cluster))
            else:
                skipped.append(Skipped(subject, "dropped: every domain of it is used elsewhere"))
    return rb.route_configuration(name, vhosts), skipped


def envoy_listeners(
    services: Iterable[Service], http_listener_port: int
) -> tuple[list[listener_pb2.Listener], list[Skipped]]:
    """The HTTP listener (routes over RDS, `http_route_name`) on `http_listener_port`,
    then a TCP proxy listener on 0.0.0.0:<port> per tcp service port."""
    http_name = http_listener_name(http_listener_port)
    listeners = [
        rb.http_listener(http_name, http_listener_port, http_route_name(http_listener_port))
    ]
    skipped: list[Skipped] = []
    ports: Claims[int] = Claims()
    ports.claim(http_listener_port, f"the HTTP listener {http_name}")
    for service in _ordered(services):
        for port in service.ports:
            if port.protocol != "tcp":
                continue
            cluster = cluster_name(service, port)
            holder = ports.claim(port.port, f"cluster {cluster}")
            if holder is None:
                listeners.append(rb.tcp_listener(tcp_listener_name(port.port), port.port, cluster))
            else:
                skipped.append(
                    Skipped(
                        f"listener {tcp_listener_name(port.port)} for cluster {cluster}",
                        f"port {port.port} already used by {holder}",
                    )
                )
    return listeners, skipped


def grpc_listeners(
    services: Iterable[Service],
) -> tuple[list[listener_pb2.Listener], list[route_pb2.RouteConfiguration], list[Skipped]]:
    """Proxyless gRPC: per target name (`names.grpc_names`) an `api_listener` Listener
    and a RouteConfiguration of the same name with one virtual host for that name."""
    listeners: list[listener_pb2.Listener] = []
    routes: list[route_pb2.RouteConfiguration] = []
    skipped: list[Skipped] = []
    claims: Claims[str] = Claims()
    for service in _ordered(services):
        for target, port in grpc_names(service):
            holder = claims.claim(target, who(service))
            if holder is not None:
                skipped.append(
                    Skipped(
                        f"gRPC listener {target} of service {who(service)}",
                        f"name already used by service {holder}",
                    )
                )
                continue
            cluster = cluster_name(service, port)
            listeners.append(rb.api_listener(target, target))
            routes.append(
                rb.route_configuration(target, [rb.VirtualHost(target, [target], cluster)])
            )
    return listeners, routes, skipped
