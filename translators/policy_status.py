"""What operators are told about policy beyond accept/reject: the parts proxyless gRPC
clients cannot apply, and subsets that select no endpoints.

Both are warnings: the object applies, but not everywhere, or not to anything yet.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import replace

from envoy.config.cluster.v3 import cluster_pb2

from xds_server.model import (
    Destination,
    DestinationPolicy,
    HttpRule,
    PolicyKey,
    RoutePolicy,
    Service,
    ServiceEntry,
    ServiceKey,
)

from .names import cluster_name
from .policy_clusters import apply_traffic_policy, subset_endpoints
from .policy_common import NotApplied, RouteTarget
from .policy_resolve import PolicyStatus, Resolution, ServicePolicy
from .policy_routes import http_routes


def _target(service: ServicePolicy, destination: Destination, *, port: int) -> RouteTarget:
    return service.target(destination, port)


# Memoised: every policy change resolves every object again, but most are unchanged
# (the policy benchmark measured 50 ms per edit at 1,000 VirtualServices without it).
@functools.lru_cache(maxsize=8192)
def _routing_notes(policy: RoutePolicy, service: ServicePolicy) -> tuple[NotApplied, ...]:
    notes: list[NotApplied] = []
    ports = sorted({port for (_, port), _ in service.targets})
    for port in ports:
        resolve = functools.partial(_target, service, port=port)
        _, more = http_routes(
            policy.http, port=port, resolve=resolve, client="grpc", subject=str(policy.key)
        )
        notes += more
    return tuple(notes)


@functools.lru_cache(maxsize=8192)
def _destination_notes(policy: DestinationPolicy, service: Service) -> tuple[NotApplied, ...]:
    notes: list[NotApplied] = []
    levels = [(p.port, "") for p in service.ports]
    levels += [(p.port, s.name) for p in service.ports for s in policy.subsets]
    for port, subset in levels:
        traffic = policy.for_port(port, subset)
        probe = cluster_pb2.Cluster(name=cluster_name(service, service.ports[0]))
        _, more = apply_traffic_policy(probe, traffic, "grpc", str(policy.key))
        notes += more
    return tuple(notes)


def _by_writer(routing: RoutePolicy | None) -> list[RoutePolicy]:
    """`routing` as the objects that wrote it: itself, or when it merges the rules of
    several (Gateway API routes, `HttpRule.route`), one policy per route with its rules,
    so that each route's status names what gRPC clients do not apply of it."""
    if routing is None or not routing.http:
        return []
    if all(r.route is None for r in routing.http):
        return [routing]
    groups: dict[PolicyKey, list[HttpRule]] = {}
    for rule in routing.http:
        groups.setdefault(rule.route or routing.key, []).append(rule)
    return [replace(routing, key=key, http=tuple(rules)) for key, rules in groups.items()]


def grpc_not_applied(
    resolution: Resolution, catalog: Mapping[ServiceKey, ServiceEntry]
) -> list[PolicyStatus]:
    """The statuses, each applied object's warned of what gRPC clients will not apply."""
    notes: dict[PolicyKey, list[str]] = {}
    for consumers in resolution.consumers.values():  # what callers of one namespace get
        for service in consumers.values():
            for policy in _by_writer(service.routing):
                found = _routing_notes(policy, service)
                notes.setdefault(policy.key, []).extend(f"{n.subject}: {n.what}" for n in found)
    for key, service in resolution.services.items():
        for policy in _by_writer(service.routing):
            found = _routing_notes(policy, service)
            notes.setdefault(policy.key, []).extend(f"{n.subject}: {n.what}" for n in found)
        entry = catalog.get(key)
        if service.destination is not None and entry is not None and entry.service.ports:
            found = _destination_notes(service.destination, entry.service)
            notes.setdefault(service.destination.key, []).extend(
                f"{n.subject}: {n.what}" for n in found
            )
    out = []
    for status in resolution.statuses:
        more = list(dict.fromkeys(notes.get(status.key, ())))  # once each, in order
        if more:
            state = "WARNING" if status.state == "ACCEPTED" else status.state
            status = replace(status, state=state, reasons=(*status.reasons, *more))
        out.append(status)
    return out


def subset_warnings(
    policies: Mapping[ServiceKey, ServicePolicy], catalog: Mapping[ServiceKey, ServiceEntry]
) -> dict[PolicyKey, list[str]]:
    """Per DestinationRule, its subsets that select no endpoint of the service now."""
    out: dict[PolicyKey, list[str]] = {}
    for key, service in policies.items():
        dr, entry = service.destination, catalog.get(key)
        if dr is None or entry is None or entry.service.external_name:
            continue
        for subset in dr.subsets:
            if not subset_endpoints(entry.endpoints, subset.labels):
                labels = ",".join(f"{k}={v}" for k, v in subset.labels)
                out.setdefault(dr.key, []).append(
                    f"subset {subset.name} ({labels}) of service {key} selects no endpoints"
                )
    return out
