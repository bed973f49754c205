"""The whole translation: (catalog, policies, proxy group) → the group's Envoy resources."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf.message import Message

from xds_server import types
from xds_server.model import Locality, Service, ServiceEntry, ServiceKey

from .group import Kind, ProxyGroup
from .inbound import DEFAULT_INBOUND, InboundPolicy, find_instance, inbound_resources
from .listeners import (
    NO_POLICY,
    Policies,
    envoy_listeners,
    grpc_listeners,
    http_route_configuration,
)
from .names import http_route_name
from .policy_resolve import ServicePolicy
from .report import Claims, Skipped, who
from .services import service_clusters, service_load_assignments

ClustersOf = Callable[[Service, ServicePolicy | None, Kind], list[cluster_pb2.Cluster]]
LoadAssignmentsOf = Callable[
    [ServiceEntry, ServicePolicy | None, Locality | None], list[endpoint_pb2.ClusterLoadAssignment]
]


@dataclass(frozen=True, slots=True)
class Translation:
    """Resources by type URL (each list sorted by resource name, names unique) and what
    was left out."""

    resources: dict[str, list[Message]] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)


def translate(
    catalog: Mapping[ServiceKey, ServiceEntry],
    group: ProxyGroup,
    *,
    policies: Policies = NO_POLICY,
    clusters_of: ClustersOf = service_clusters,
    load_assignments_of: LoadAssignmentsOf = service_load_assignments,
    mesh_trust_domain: str | None = None,
    inbound: InboundPolicy = DEFAULT_INBOUND,
) -> Translation:
    """Translate the services `group` depends on (every service without dependencies),
    and those their routes send traffic to, with the policy that applies to each.

    `mesh_trust_domain` says the CA is on (workload certificates are served): a group
    of sidecars holding an identity then gets mutual TLS (`sidecar_resources`, and
    clusters dialling sidecars over TLS) under PeerAuthentication's modes (`inbound`).

    `clusters_of` and `load_assignments_of` are the per-service builders; pass memoised
    versions to reuse what an unchanged service built last time.
    Every type URL of `types.PUSH_ORDER` is present, possibly with an empty list.
    """
    entries = in_scope(catalog, group, policies)
    skipped: list[Skipped] = []
    kind = group.kind
    mesh = mesh_trust_domain if group.mesh else None
    if mesh is not None and clusters_of is service_clusters:
        clusters_of = functools.partial(service_clusters, mesh_trust_domain=mesh)
    clusters = _unique(
        types.CLUSTER,
        (
            (e.service, c)
            for e in entries
            for c in clusters_of(e.service, policies.get(e.key), kind)
        ),
        skipped,
    )
    endpoints = _unique(
        types.ENDPOINT,
        (
            (e.service, a)
            for e in entries
            for a in load_assignments_of(e, policies.get(e.key), group.locality)
        ),
        skipped,
    )
    listeners, routes, more = group_resources([e.service for e in entries], group, policies)
    skipped += more
    inbound_listeners, local_clusters, more = sidecar_resources(
        catalog, group, listeners, mtls=mesh is not None, policy=inbound
    )
    listeners += inbound_listeners
    skipped += more
    resources: dict[str, list[Message]] = {
        types.CLUSTER: clusters + list(local_clusters),
        types.ENDPOINT: endpoints,
        types.LISTENER: list(listeners),
        types.ROUTE: list(routes),
    }
    for type_url, items in resources.items():
        items.sort(key=functools.partial(types.resource_name, type_url))
    return Translation(resources, skipped)


def in_scope(
    catalog: Mapping[ServiceKey, ServiceEntry], group: ProxyGroup, policies: Policies = NO_POLICY
) -> list[ServiceEntry]:
    """The entries `group` needs, in (namespace, name) order: the services it depends on
    and, transitively, every service their routes send traffic to (a route must never
    name a cluster the proxy does not have)."""
    return [catalog[k] for k in scope_keys(catalog, group, policies)]


def scope_keys(
    catalog: Mapping[ServiceKey, ServiceEntry], group: ProxyGroup, policies: Policies
) -> list[ServiceKey]:
    """The keys of `in_scope`, in order."""
    keys = {k for k, e in catalog.items() if group.wants(e.service)}
    pending = list(keys)
    while pending:
        policy = policies.get(pending.pop())
        if policy is None:
            continue
        for key in policy.depends:
            if key not in keys and key in catalog:
                keys.add(key)
                pending.append(key)
    return sorted(keys)


def group_resources(
    services: Sequence[Service], group: ProxyGroup, policies: Policies = NO_POLICY
) -> tuple[list[listener_pb2.Listener], list[route_pb2.RouteConfiguration], list[Skipped]]:
    """A group's listeners and routes (each sorted by name), from its services only
    (see `in_scope`), with what was skipped.

    Envoy groups: the HTTP listener with its route configuration, and TCP listeners.
    gRPC groups: an api_listener and a route configuration per target name.
    """
    if group.kind == "grpc":
        listeners, routes, skipped = grpc_listeners(services, policies)
    else:
        port = group.http_listener_port
        listeners, listener_skips = envoy_listeners(services, port, policies)
        route, route_skips = http_route_configuration(services, http_route_name(port), policies)
        routes, skipped = [route], route_skips + listener_skips
    listeners.sort(key=lambda m: m.name)
    routes.sort(key=lambda m: m.name)
    return listeners, routes, skipped


def sidecar_resources(
    catalog: Mapping[ServiceKey, ServiceEntry],
    group: ProxyGroup,
    outbound: Sequence[listener_pb2.Listener],
    *,
    mtls: bool,
    policy: InboundPolicy = DEFAULT_INBOUND,
) -> tuple[list[listener_pb2.Listener], list[cluster_pb2.Cluster], list[Skipped]]:
    """A sidecar group's inbound listeners and local clusters (translators.inbound), none
    for other groups. `outbound` are the group's other listeners, whose ports an
    inbound listener may not take; `mtls`: the group's proxies hold workload
    certificates."""
    instance = find_instance(catalog, group.sidecar) if group.kind == "envoy" else None
    if instance is None:
        return [], [], []
    taken = {
        listener.address.socket_address.port_value: f"listener {listener.name}"
        for listener in outbound
        if listener.HasField("address")
    }
    return inbound_resources(instance, mtls=mtls, policy=policy, taken=taken)


def _unique(
    type_url: str, items: Iterable[tuple[Service, Message]], skipped: list[Skipped]
) -> list[Message]:
    """Drop resources whose name an earlier service already produced (possible only when
    ``name.namespace`` of two services coincide, e.g. ``a.b``/``c`` and ``a``/``b.c``)."""
    claims: Claims[str] = Claims()
    out: list[Message] = []
    for service, message in items:
        name = types.resource_name(type_url, message)
        holder = claims.claim(name, who(service))
        if holder is None:
            out.append(message)
        else:
            skipped.append(
                Skipped(
                    f"{types.short_name(type_url)} {name} of service {who(service)}",
                    f"name already used by service {holder}",
                )
            )
    return out
