"""Per-group builders of listeners and routes. They read services and the policy that
applies to them (no endpoints), so endpoint changes never rebuild them.

A service without a VirtualService gets one route to its cluster, with Istio's
defaults (no timeout, the default retry policy); with one, its virtual hosts carry the
VirtualService's rules (`policy_routes.http_routes`), and its TCP listeners its
weighted TCP routes.

Conflicts that arise from combining services (two services claiming one domain,
listener port or gRPC target name) are resolved deterministically: services are taken
in (namespace, name) order, the first claimant keeps the contested item and every
later one is reported as `Skipped`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from xds_server.model import HashOn, Port, Service, ServiceKey

from . import resources as rb
from .group import Kind
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
from .policy_actions import default_retry_policy
from .policy_common import RouteTarget
from .policy_resolve import ServicePolicy
from .policy_routes import default_route, http_routes, tcp_target
from .report import Claims, Skipped, who

Policies = Mapping[ServiceKey, ServicePolicy]
# Every Envoy virtual host's retry policy; routes that keep the default carry none.
DEFAULT_RETRY = default_retry_policy()
NO_POLICY: Policies = {}


def _ordered(services: Iterable[Service]) -> list[Service]:
    return sorted(services, key=lambda s: s.key)


def _hash_on(policy: ServicePolicy | None, port: Port) -> HashOn | None:
    dr = policy.destination if policy is not None else None
    lb = dr.for_port(port.port).load_balancer if dr is not None else None
    return lb.hash if lb is not None else None


def service_routes(
    service: Service, port: Port, policies: Policies, client: Kind
) -> list[route_pb2.Route]:
    """The routes of `service`'s virtual host for `port`: its VirtualService's rules for
    that port, else one route to its own cluster."""
    policy = policies.get(service.key)
    routing = policy.routing if policy is not None else None
    if policy is None or routing is None or not routing.http:
        target = RouteTarget(cluster_name(service, port), _hash_on(policy, port))
        return [default_route(target, client)]
    routes, _ = http_routes(
        routing.http,
        port=port.port,
        resolve=lambda d: policy.target(d, port.port),
        client=client,
        subject=str(routing.key),
    )
    return routes


def _tcp_idle_timeout(service: Service, port: Port, policies: Policies) -> float | None:
    """The service's DestinationRule `connectionPool.tcp.idleTimeout` for `port`."""
    policy = policies.get(service.key)
    dr = policy.destination if policy is not None else None
    pool = dr.for_port(port.port).connection_pool if dr is not None else None
    return pool.tcp_idle_timeout if pool is not None else None


def _tcp_clusters(service: Service, port: Port, policies: Policies) -> list[tuple[str, int]]:
    """The weighted clusters a TCP listener for `port` proxies to."""
    policy = policies.get(service.key)
    routing = policy.routing if policy is not None else None
    if policy is not None and routing is not None and routing.tcp:
        weighted = tcp_target(
            routing.tcp, port=port.port, resolve=lambda d: policy.target(d, port.port)
        )
        if weighted:
            return weighted
    return [(cluster_name(service, port), 1)]


def _virtual_hosts(service: Service) -> list[tuple[str, list[str], Port]]:
    """(name, wanted domains, port) per http-like port of `service`.

    The first http-like port answers to the base domains and to each with ``:<port>``;
    every further http-like port answers to the base domains with ``:<its port>``.
    """
    bases = base_domains(service)
    out = []
    for i, port in enumerate(http_like_ports(service)):
        ported = [with_port(d, port) for d in bases]
        domains = [*bases, *ported] if i == 0 else ported
        out.append((virtual_host_name(service, port, i == 0), domains, port))
    return out


def http_route_configuration(
    services: Iterable[Service], name: str, policies: Policies = NO_POLICY
) -> tuple[route_pb2.RouteConfiguration, list[Skipped]]:
    """The Envoy HTTP listener's routes: a virtual host per http-like service port.

    Envoy rejects a route configuration in which two virtual hosts share a domain
    (compared case-insensitively) or a name: the first claimant keeps it.
    """
    skipped: list[Skipped] = []
    names: Claims[str] = Claims()
    domains: Claims[str] = Claims()
    rc = route_pb2.RouteConfiguration(name=name)
    for service in _ordered(services):
        for vh_name, wanted, port in _virtual_hosts(service):
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
                routes = service_routes(service, port, policies, "envoy")
                rc.virtual_hosts.add(
                    name=vh_name, domains=kept, routes=routes, retry_policy=DEFAULT_RETRY
                )
            else:
                skipped.append(Skipped(subject, "dropped: every domain of it is used elsewhere"))
    return rc, skipped


def envoy_listeners(
    services: Iterable[Service], http_listener_port: int, policies: Policies = NO_POLICY
) -> tuple[list[listener_pb2.Listener], list[Skipped]]:
    """The HTTP listener (routes over RDS, `http_route_name`) on `http_listener_port`,
    then a TCP proxy listener on 0.0.0.0:<port> per tcp service port."""
    http_name = http_listener_name(http_listener_port)
    # The fault (and CORS) filters are always there, so a policy that starts using them
    # changes routes only, never the listener (which would drain connections).
    filters = rb.policy_http_filters("envoy")
    route = http_route_name(http_listener_port)
    listeners = [rb.http_listener(http_name, http_listener_port, route, http_filters=filters)]
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
                weighted = _tcp_clusters(service, port, policies)
                name = tcp_listener_name(port.port)
                idle = _tcp_idle_timeout(service, port, policies)
                listeners.append(
                    rb.weighted_tcp_listener(name, port.port, weighted, idle_timeout=idle)
                )
            else:
                skipped.append(
                    Skipped(
                        f"listener {tcp_listener_name(port.port)} for cluster {cluster}",
                        f"port {port.port} already used by {holder}",
                    )
                )
    return listeners, skipped


def grpc_listeners(
    services: Iterable[Service], policies: Policies = NO_POLICY
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
            listeners.append(rb.api_listener(target, target, rb.policy_http_filters("grpc")))
            rc = route_pb2.RouteConfiguration(name=target)
            vh_routes = service_routes(service, port, policies, "grpc")
            rc.virtual_hosts.add(name=target, domains=[target], routes=vh_routes)
            routes.append(rc)
    return listeners, routes, skipped
