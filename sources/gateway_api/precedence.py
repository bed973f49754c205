"""The routes attached to one Service, merged into one `RoutePolicy` in the Gateway API's
order of precedence (GEP-1294 for who sees which route, the HTTPRoute spec for the order).

Every match alternative becomes its own rule (precedence is per match, not per rule),
ordered by: exact path, then path prefix, then RE2 path (as Istio ranks them), each the
longest first; a method match; the most header matches; the most query parameter
matches; then the oldest route (creationTimestamp), then ``namespace/name``; then rule
and match order within a route. Each rule keeps its route in `HttpRule.route`, for status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from sources.gateway_api.constants import GRPC_ROUTE
from sources.gateway_api.objects import ParsedRoute, on_ports
from xds_server.model import HttpRule, PolicyKey, RequestMatch, RoutePolicy

_PATH_RANK = {"exact": 0, "path_prefix": 1, "prefix": 1, "regex": 2}
_NEVER = datetime.max.replace(tzinfo=UTC)  # an unknown creation time sorts last


def merge_attached(
    service: str,
    namespace: str,
    routes: Sequence[ParsedRoute],
    callers: str | None = None,
    service_ports: Sequence[int] = (),
) -> RoutePolicy:
    """The policy of Service `namespace/service` (whose ports are `service_ports`) for
    the callers in namespace `callers` (None: callers in any namespace with no consumer
    route of their own).

    Producer routes (written in the Service's namespace) apply to every caller; consumer
    routes (written elsewhere) only to callers in their own namespace, and for those
    callers they take the place of the producer routes (GEP-1426 "Multiple routes for a
    Service"). A route not attached to this Service is left out, and so is an HTTPRoute
    on a port a GRPCRoute of the same group claims (`kind_conflicts` reports it)."""
    group = _group(_attached(service, namespace, routes), namespace, callers)
    entries: list[tuple[tuple[object, ...], HttpRule]] = []
    for route, ports in _without_conflicts(group, service_ports)[0]:
        key = route.policy.key
        age = (_created(route.created), f"{key.namespace}/{key.name}")
        for i, rule in enumerate(route.rules):
            for j, match in enumerate(rule.matches):
                single = on_ports(replace(rule, matches=(match,), route=key), ports)
                entries.append(((*match_rank(match), *age, i, j), single))
    entries.sort(key=lambda e: e[0])
    return RoutePolicy(
        PolicyKey("Service", namespace, service),
        (f"{service}.{namespace}",),
        tuple(rule for _, rule in entries),
        callers=callers,
    )


def kind_conflicts(
    service: str, namespace: str, routes: Sequence[ParsedRoute], service_ports: Sequence[int] = ()
) -> dict[PolicyKey, str]:
    """The HTTPRoutes attached to this Service that lose to a GRPCRoute of the same
    group (producer, or one consumer namespace) on every port they attach to: GEP-1426
    lets one route kind apply per Service and port, GRPCRoute first. Their status is
    Accepted False, reason Conflicted, with the message given here."""
    attached = _attached(service, namespace, routes)
    out: dict[PolicyKey, str] = {}
    for group_ns in {r.policy.key.namespace for r, _ in attached}:
        group = [(r, p) for r, p in attached if r.policy.key.namespace == group_ns]
        for route in _without_conflicts(group, service_ports)[1]:
            out[route.policy.key] = (
                f"a GRPCRoute attached to Service {namespace}/{service} takes precedence "
                "over HTTPRoutes on the same port"
            )
    return out


_ALL = (0,)  # stands for "every port" while ports are compared


def _attached(
    service: str, namespace: str, routes: Sequence[ParsedRoute]
) -> list[tuple[ParsedRoute, tuple[int, ...]]]:
    out = []
    for route in routes:
        ports = _ports_for(route, service, namespace) if route.applies else None
        if ports is not None:
            out.append((route, ports))
    return out


def _group(
    attached: list[tuple[ParsedRoute, tuple[int, ...]]], namespace: str, callers: str | None
) -> list[tuple[ParsedRoute, tuple[int, ...]]]:
    own = [(r, p) for r, p in attached if r.policy.key.namespace == namespace]
    if callers is not None and callers != namespace:
        consumer = [(r, p) for r, p in attached if r.policy.key.namespace == callers]
        return consumer or own
    return own


def _without_conflicts(
    group: list[tuple[ParsedRoute, tuple[int, ...]]], service_ports: Sequence[int]
) -> tuple[list[tuple[ParsedRoute, tuple[int, ...]]], list[ParsedRoute]]:
    """The routes of one group with their ports once GRPCRoutes have taken their ports
    from HTTPRoutes, and the HTTPRoutes left with no port. Without `service_ports`, an
    HTTPRoute on every port loses whole to a GRPCRoute on some port (it cannot be
    limited to "the other ports")."""
    claimed: set[int] = set()
    for route, ports in group:
        if route.policy.key.kind == GRPC_ROUTE:
            claimed.update(ports or _ALL)
    if not claimed:
        return group, []
    kept, lost = [], []
    for route, ports in group:
        if route.policy.key.kind == GRPC_ROUTE:
            kept.append((route, ports))
            continue
        if _ALL[0] in claimed:
            lost.append(route)
            continue
        left = tuple(p for p in (ports or tuple(service_ports)) if p not in claimed)
        if left:
            kept.append((route, left))
        else:
            lost.append(route)
    return kept, lost


def match_rank(match: RequestMatch) -> tuple[int, int, int, int, int]:
    """Sorts the most specific match first (smaller is more specific): exact path, then
    path prefix, then RE2 path (Istio's ranking; the spec leaves regex to
    implementations), each longest first; then method, header and query counts."""
    uri = match.uri
    kind = uri.kind if uri is not None else "path_prefix"
    value = uri.value if uri is not None else "/"
    return (
        _PATH_RANK.get(kind, 3),
        -len(value),
        0 if match.method is not None else 1,
        -len(match.headers),
        -len(match.query),
    )


def _ports_for(route: ParsedRoute, service: str, namespace: str) -> tuple[int, ...] | None:
    """The ports the route is limited to on this Service (() for all), None if unattached."""
    ports = [p.port for p in route.parents if (p.name, p.namespace) == (service, namespace)]
    if not ports:
        return None
    if None in ports:
        return ()
    return tuple(sorted({p for p in ports if p is not None}))


def _created(stamp: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return _NEVER
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
