"""Gateway API routes (HTTPRoute, GRPCRoute in mesh mode) resolved against the catalog.

A route applies to the Services its `parentRefs` name, each found like a host
(``name.namespace``); the valid routes of one Service are merged into one `RoutePolicy`
in the Gateway API's precedence, which is then resolved like a VirtualService's:

- a parent that names no Service, or a port it does not have, is not applied
  (the Gateway API's Accepted=False, NoMatchingParent); the route applies to the others;
- a backend (backendRef or mirror) naming no Service or a port it lacks rejects the
  route (ResolvedRefs=False, BackendNotFound); its last valid version stays, as for any
  policy object;
- a Service that a VirtualService routes keeps the VirtualService: Istio turns routes
  into VirtualServices and applies one per host to sidecars (IST0109), so the routes
  attached to it are reported and not applied;
- an HTTPRoute that a GRPCRoute displaces on every port it attaches to is not applied
  (Conflicted);
- consumer routes (written in another namespace than their Service's) apply only to
  callers in their namespace (proxies say it in node metadata ``NAMESPACE``), and for
  them take the place of the routing every other caller gets, a VirtualService's
  included (GEP-1426: the consumer group of routes, else the producer group); they are
  merged per caller namespace (`merge` with `callers`).

The merging itself (precedence) belongs to the dialect: the policy objects carry it
(`AttachableRoute`), as the resolver may not import sources.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeGuard, cast, runtime_checkable

from xds_server.model import (
    Destination,
    FieldPath,
    PolicyKey,
    RoutePolicy,
    ServiceEntry,
    ServiceKey,
)

GATEWAY_ROUTE_KINDS = frozenset({"HTTPRoute", "GRPCRoute"})


@runtime_checkable
class AttachableRoute(Protocol):
    """What a source's route policy offers beyond `RoutePolicy` (sources.gateway_api)."""

    @property
    def parents(self) -> tuple[tuple[str, str, int | None], ...]: ...

    def merge_attached(
        self, routes: Sequence[RoutePolicy], service: str, namespace: str,
        service_ports: Sequence[int] = (), callers: str | None = None,
    ) -> RoutePolicy: ...  # fmt: skip

    def kind_conflicts(
        self, routes: Sequence[RoutePolicy], service: str, namespace: str,
        service_ports: Sequence[int] = (),
    ) -> Mapping[PolicyKey, str]: ...  # fmt: skip


_ATTACHABLE: dict[type, bool] = {}


def attachable(policy: object) -> TypeGuard[AttachableRoute]:
    """``isinstance(policy, AttachableRoute)``, decided once per class: a runtime protocol
    check costs tens of microseconds, and it runs for every route on every resolution
    (5,000 HTTPRoutes: ~100 ms per change). The protocol's members are methods and a
    property, so every instance of a class answers alike."""
    cls = type(policy)
    known = _ATTACHABLE.get(cls)
    if known is None:
        known = _ATTACHABLE[cls] = isinstance(policy, AttachableRoute)
    return known


class RouteError(Exception):
    """A route version that cannot be applied (the resolver turns it into `Rejected`)."""

    def __init__(self, path: FieldPath, reason: str) -> None:
        super().__init__(reason)
        self.path, self.reason = path, reason


Find = Callable[[str, str], ServiceKey | None]


def _nobody_else(key: ServiceKey) -> bool:
    return False


def attach(
    policy: RoutePolicy,
    find: Find,
    catalog: Mapping[ServiceKey, ServiceEntry],
    vs_owner: Mapping[ServiceKey, PolicyKey],
    shadowed: Callable[[ServiceKey], bool] = _nobody_else,
) -> tuple[list[ServiceKey], list[str]]:
    """The Services one route version attaches to, and why it does not attach elsewhere;
    RouteError if it names a backend that is not there. `shadowed(service)`: another
    registry owns its routing (the callback notes why)."""
    route = cast(object, policy)  # the same object, seen through the source's protocol
    if not attachable(route):
        raise RouteError((), "not a Gateway API route policy (internal)")
    namespace = policy.key.namespace
    _check_backends(policy, find, catalog)
    services: list[ServiceKey] = []
    notes: list[str] = []
    for parent_ns, name, port in route.parents:
        key = find(f"{name}.{parent_ns}", namespace)
        entry = catalog.get(key) if key is not None else None
        if key is None or entry is None:
            notes.append(
                f"parentRef Service {parent_ns}/{name} not found (NoMatchingParent): "
                "not applied there; applies when it appears"
            )
            continue
        found = [p for p in entry.service.ports if p.port == port]
        if port is not None and not found:
            notes.append(
                f"parentRef Service {parent_ns}/{name} has no port {port} "
                "(NoMatchingParent): not applied there"
            )
            continue
        if found and not found[0].http_like:
            notes.append(
                f"parentRef Service {parent_ns}/{name} port {port} is not an HTTP port: "
                "not applied there"
            )
            continue
        if shadowed(key):
            continue
        owner = vs_owner.get(key) if policy.callers is None else None
        if owner is not None:
            notes.append(
                f"not applied to Service {key}: {owner} routes it (Conflicted; one route "
                "object per host applies to sidecars, as in Istio, and the VirtualService "
                "keeps it)"
            )
            continue
        if key not in services:
            services.append(key)
    return services, notes


def _check_backends(
    policy: RoutePolicy, find: Find, catalog: Mapping[ServiceKey, ServiceEntry]
) -> None:
    namespace = policy.key.namespace
    for i, rule in enumerate(policy.http):
        named: list[tuple[Destination, FieldPath]] = [
            (d.destination, ("spec", "rules", i, "backendRefs")) for d in rule.destinations
        ]
        named += [(m.destination, ("spec", "rules", i, "filters")) for m in rule.mirrors]
        for d, where in named:
            key = find(f"{d.host}.{d.namespace}", namespace)
            entry = catalog.get(key) if key is not None else None
            what = f"backend Service {d.namespace}/{d.host}"
            if entry is None:
                raise RouteError(where, f"{what} not found (BackendNotFound)")
            port = next((p for p in entry.service.ports if p.port == d.port), None)
            if d.port is not None and port is None:
                raise RouteError(where, f"{what} has no port {d.port} (BackendNotFound)")
            if port is not None and not port.http_like:
                raise RouteError(where, f"{what} port {d.port} is not HTTP (UnsupportedProtocol)")


Notes = dict[PolicyKey, list[tuple[ServiceKey | None, str]]]


def merge(
    attached: Mapping[ServiceKey, list[RoutePolicy]],
    catalog: Mapping[ServiceKey, ServiceEntry],
    apply: Callable[[RoutePolicy], list[str]],
    callers: str | None = None,
) -> Notes:
    """Per Service, its routes merged into one policy and applied (`apply`: its warnings,
    or RouteError); per route, what its status must add: (a Service it is not applied
    to, or None, and why). `callers`: the routes are the consumer routes of that
    namespace (None: producer routes)."""
    notes: Notes = {}
    for key, routes in attached.items():
        first = routes[0]
        assert attachable(first)
        ports = [p.port for p in catalog[key].service.ports]
        for loser, why in first.kind_conflicts(routes, key.name, key.namespace, ports).items():
            notes.setdefault(loser, []).append((key, f"not applied to Service {key}: {why} "
                                                     "(Conflicted)"))  # fmt: skip
        if callers is None:  # as before `callers` existed: a source may not take it
            policy = first.merge_attached(routes, key.name, key.namespace, ports)
        else:
            policy = first.merge_attached(routes, key.name, key.namespace, ports, callers)
        if not policy.http:
            continue
        try:
            found: list[tuple[ServiceKey | None, str]] = [(None, w) for w in apply(policy)]
        except RouteError as exc:
            found = [(key, f"not applied to Service {key}: {exc.reason}")]
        for route in routes:
            notes.setdefault(route.key, []).extend(found)
    return notes
