"""The routes attached to one Service, merged into one `RoutePolicy` in the Gateway API's
order of precedence (GEP-1294 for who sees which route, the HTTPRoute spec for the order).

Every match alternative becomes its own rule (precedence is per match, not per rule),
ordered by: exact path, then RE2 path (as Istio ranks it), then the longest path prefix;
a method match; the most header matches; the most query parameter matches; then the
oldest route (creationTimestamp), then ``namespace/name``; then rule and match order
within a route. Each rule keeps its route in `HttpRule.route`, for status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from sources.gateway_api.objects import ParsedRoute, on_ports
from xds_server.model import HttpRule, PolicyKey, RequestMatch, RoutePolicy

_PATH_RANK = {"exact": 0, "regex": 1, "path_prefix": 2, "prefix": 2}
_NEVER = datetime.max.replace(tzinfo=UTC)  # an unknown creation time sorts last


def merge_attached(
    service: str, namespace: str, routes: Sequence[ParsedRoute], callers: str | None = None
) -> RoutePolicy:
    """The policy of Service `namespace/service` for the callers in namespace `callers`
    (None: callers in any namespace with no consumer route of their own).

    Producer routes (written in the Service's namespace) apply to every caller; consumer
    routes (written elsewhere) only to callers in their own namespace, and for those
    callers they take the place of the producer routes (as Istio applies a consumer
    route). A route that is not attached to this Service is left out."""
    attached: list[tuple[ParsedRoute, tuple[int, ...]]] = []
    for route in routes:
        ports = _ports_for(route, service, namespace) if route.applies else None
        if ports is not None:
            attached.append((route, ports))
    own = [(r, p) for r, p in attached if r.policy.key.namespace == namespace]
    if callers is not None and callers != namespace:
        consumer = [(r, p) for r, p in attached if r.policy.key.namespace == callers]
        own = consumer or own
    entries: list[tuple[tuple[object, ...], HttpRule]] = []
    for route, ports in own:
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


def match_rank(match: RequestMatch) -> tuple[int, int, int, int, int]:
    """Sorts the most specific match first (smaller is more specific)."""
    uri = match.uri
    kind = uri.kind if uri is not None else "path_prefix"
    length = len(uri.value) if uri is not None and uri.value != "/" else 0
    return (
        _PATH_RANK.get(kind, 3),
        -length if kind in ("path_prefix", "prefix") else 0,
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
