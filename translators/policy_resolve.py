"""Which policy applies to which service: policy objects resolved against the catalog.

Pure: (catalog, policy objects, the versions accepted before) → per service, the
`ServicePolicy` the renderers apply, and per object its status (ACCEPTED, WARNING,
REJECTED with the reason). Nothing here can make a proxy NACK or answer 503:

- a host resolves to a service as Istio resolves it: a short name in the object's
  namespace, ``name.namespace``, ``name.namespace.svc[.cluster.local]``, or any hostname
  the registry gives the service; a host that names no service yet is a warning;
- a destination must name a service, a port it has (of the rule's protocol) and a subset
  the service's DestinationRule defines, else the object is rejected;
- one VirtualService and one DestinationRule per service: the first by namespace/name
  wins, a later one is rejected naming the winner;
- a rejected object's last accepted version (`accepted_before`) stays in force if it
  still resolves; otherwise the object applies to nothing;
- a destination whose DestinationPolicy has a `failover` (Consul's resolver Failover)
  is routed to an aggregate cluster: its own cluster, then the failover targets' (a
  target naming no service, or no port of the route's kind, is left out).

Subset clusters are only built for subsets some route or mirror references. Gateway API
routes (HTTPRoute, GRPCRoute) are grouped by the Service they attach to and merged:
`policy_resolve_gateway`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from xds_server.model import (
    DESTINATION_KINDS,
    ROUTE_KINDS,
    SECURITY_KINDS,
    Destination,
    DestinationPolicy,
    FieldPath,
    Policy,
    PolicyKey,
    PolicyObject,
    RoutePolicy,
    ServiceEntry,
    ServiceKey,
)

from .authz_status import security_status
from .policy_common import RouteTarget
from .policy_owners import Owners, Rule, Scope, rule_of
from .policy_resolution import (
    HostIndex,
    PolicyStatus,
    Rejected,
    Resolution,
    ServicePolicy,
    State,
    TargetKey,
)
from .policy_resolve_gateway import (
    GATEWAY_ROUTE_KINDS,
    RouteError,
    attach,
    attachable,
    merge,
)
from .policy_targets import Destinations, port_of, target_order

__all__ = [
    "HostIndex",
    "PolicyStatus",
    "Rejected",
    "Resolution",
    "ServicePolicy",
    "State",
    "policy_origin",
    "resolve_policies",
]

# Applies one version of an object: the services it governs and its warnings, or Rejected.
_Apply = Callable[[Policy], tuple[tuple[ServiceKey, ...], list[str]]]


def resolve_policies(
    catalog: Mapping[ServiceKey, ServiceEntry],
    objects: Sequence[PolicyObject],
    accepted_before: Mapping[PolicyKey, Policy],
    registries: Mapping[str, str] | None = None,
) -> Resolution:
    """Resolve every object against the catalog (see the module docstring).
    `registries`: the registry of each catalog source name (`Catalog.registries`), for
    who owns a service that several registries configure (`policy_owners`)."""
    return _Resolver(catalog, accepted_before, registries or {}).run(objects)


@dataclass(slots=True)
class _Routing:
    """The routing of the services one caller namespace's consumer routes route."""

    vss: dict[ServiceKey, RoutePolicy] = field(default_factory=dict)
    vs_owner: dict[ServiceKey, PolicyKey] = field(default_factory=dict)
    targets: dict[ServiceKey, dict[TargetKey, RouteTarget]] = field(default_factory=dict)
    depends: dict[ServiceKey, set[ServiceKey]] = field(default_factory=dict)


class _Resolver:
    def __init__(
        self,
        catalog: Mapping[ServiceKey, ServiceEntry],
        accepted_before: Mapping[PolicyKey, Policy],
        registries: Mapping[str, str],
    ) -> None:
        self.catalog = catalog
        self.before = accepted_before
        self.index = HostIndex(e.service for e in catalog.values())
        self.out = Resolution()
        self.drs: dict[ServiceKey, DestinationPolicy] = {}
        self.dr_owner: dict[ServiceKey, PolicyKey] = {}
        self.vss: dict[ServiceKey, RoutePolicy] = {}
        self.vs_owner: dict[ServiceKey, PolicyKey] = {}
        self.targets: dict[ServiceKey, dict[TargetKey, RouteTarget]] = {}
        self.depends: dict[ServiceKey, set[ServiceKey]] = {}
        self.subsets: dict[ServiceKey, set[tuple[int, str]]] = {}
        self.failovers: dict[ServiceKey, dict[tuple[int, str], tuple[str, ...]]] = {}
        self.failover_depends: dict[ServiceKey, set[ServiceKey]] = {}
        # Where destinations go (policy_targets); it also collects what the VirtualService
        # being applied adds to the two above, kept if it applies.
        self.destinations = Destinations(self.index, catalog, self.drs)
        self.attached: dict[ServiceKey, list[RoutePolicy]] = {}  # Gateway API routes
        # Consumer routes, per caller namespace, and the routing they give those callers.
        self.consumer_attached: dict[str, dict[ServiceKey, list[RoutePolicy]]] = {}
        self.consumer: dict[str, _Routing] = {}
        self.owners = Owners(catalog, registries)
        self.source = ""  # the registry of the object being applied
        self.shadows: list[str] = []  # why it does not apply to some services

    def run(self, objects: Sequence[PolicyObject]) -> Resolution:
        ordered = sorted(objects, key=lambda o: o.key)
        if len({o.source for o in objects if rule_of(o.key.kind)}) > 1:  # else none to shadow
            for obj in ordered:
                self._claim(obj)
        for obj in ordered:
            if obj.key.kind in DESTINATION_KINDS:
                self._one(obj, self._apply_dr)
        for obj in ordered:
            if obj.key.kind in ROUTE_KINDS:
                self._one(obj, self._apply_vs)
        for obj in ordered:
            if obj.key.kind in GATEWAY_ROUTE_KINDS:
                self._one(obj, self._apply_route)
        self._merge_routes()
        for obj in ordered:  # listed, not resolved (e.g. a Consul config entry)
            if obj.key.kind in SECURITY_KINDS:
                self.out.statuses.append(security_status(obj))
            elif obj.key.kind not in DESTINATION_KINDS | ROUTE_KINDS | GATEWAY_ROUTE_KINDS:
                reasons = (obj.error,) if obj.error else obj.notices
                listed: State = "WARNING" if reasons else "ACCEPTED"
                state: State = "REJECTED" if obj.error or obj.policy else listed
                self.out.statuses.append(
                    PolicyStatus(obj.key, obj.origin, state, reasons, source=obj.source)
                )
        keys = self.drs.keys() | self.vss.keys() | self.subsets.keys()
        for key in sorted(keys):
            depends = self.depends.get(key, set()) | self.failover_depends.get(key, set())
            self.out.services[key] = ServicePolicy(
                routing=self.vss.get(key),
                destination=self.drs.get(key),
                subsets=tuple(sorted(self.subsets.get(key, ()))),
                targets=tuple(sorted(self.targets.get(key, {}).items(), key=target_order)),
                depends=tuple(sorted(depends - {key})),
                failovers=tuple(
                    (port, subset, clusters)
                    for (port, subset), clusters in sorted(self.failovers.get(key, {}).items())
                ),
            )
        for namespace, routing in sorted(self.consumer.items()):
            self.out.consumers[namespace] = {
                key: self._consumer_policy(key, routing) for key in sorted(routing.vss)
            }
        return self.out

    def _consumer_policy(self, key: ServiceKey, routing: _Routing) -> ServicePolicy:
        """What callers of one namespace get for `key`: its policy, with the routing of
        their consumer routes."""
        base = self.out.services.get(key) or ServicePolicy(destination=self.drs.get(key))
        depends = routing.depends.get(key, set()) | self.failover_depends.get(key, set())
        return replace(
            base,
            routing=routing.vss[key],
            targets=tuple(sorted(routing.targets.get(key, {}).items(), key=target_order)),
            depends=tuple(sorted(depends - {key})),
        )

    # -- who owns a service when several registries configure it (policy_owners) --------

    def _claim(self, obj: PolicyObject) -> None:
        rule = rule_of(obj.key.kind)
        if rule is None or not obj.applies:
            return
        for policy in (obj.policy, self.before.get(obj.key)):
            if policy is not None:
                self.owners.claim(self._scopes(policy, rule), obj.source, obj.key)

    def _scopes(self, policy: Policy, rule: Rule) -> list[Scope]:
        ns = policy.key.namespace
        if isinstance(policy, DestinationPolicy):
            hosts = [policy.host]
        elif policy.key.kind in GATEWAY_ROUTE_KINDS and attachable(policy):
            hosts = [f"{name}.{parent_ns}" for parent_ns, name, _ in policy.parents]
        else:
            hosts = list(policy.hosts)
        callers = policy.callers if isinstance(policy, RoutePolicy) else None
        found = (self.index.find(h, ns) for h in hosts)
        return [(key, rule, callers) for key in found if key is not None]

    def _shadowed(self, key: ServiceKey, rule: Rule, callers: str | None = None) -> bool:
        """True (and why noted) when another registry owns `key` for `rule`."""
        why = self.owners.shadowed((key, rule, callers), self.source)
        if why is not None:
            self.shadows.append(why)
        return why is not None

    # -- one object: the current version, else the last accepted one -------------------

    def _one(self, obj: PolicyObject, apply: _Apply) -> None:
        reasons: list[str] = list(obj.notices)
        self.source = obj.source
        if obj.policy is not None and not obj.applies:
            # Valid, but for no proxy of ours: shown, and never in a host conflict.
            self.out.accepted[obj.key] = obj.policy
            why = (*reasons, "applies to no proxy")
            self.out.statuses.append(
                PolicyStatus(obj.key, obj.origin, "WARNING", why, source=obj.source)
            )
            return
        current = obj.policy
        fallback = self.before.get(obj.key)
        attempts: list[tuple[str, Policy]] = []
        if current is not None:
            attempts.append(("current", current))
        else:
            reasons.insert(0, obj.error)
        if fallback is not None and fallback != current:
            attempts.append(("last valid", fallback))
        rejected_now = current is None
        for which, policy in attempts:
            self.shadows = []
            try:
                services, warnings = apply(policy)
            except Rejected as exc:
                if which == "current":
                    rejected_now = True
                    reasons.insert(0, _rejection(obj, exc))
                continue
            except Exception as exc:  # a bug here must cost this object, not every rebuild
                if which == "current":
                    rejected_now = True
                    reasons.insert(0, f"{obj.origin}: {obj.key}: internal error: "
                                      f"{type(exc).__name__}: {exc}")  # fmt: skip
                continue
            self.out.accepted[obj.key] = policy
            if rejected_now:
                reasons.append(f"serving its last valid version ({policy_origin(policy)})")
                state: State = "REJECTED"
            elif self.shadows and not services and not warnings:
                state = "SHADOWED"
            else:
                state = "WARNING" if warnings or reasons or self.shadows else "ACCEPTED"
            why = (*reasons, *self.shadows, *warnings)
            self.out.statuses.append(
                PolicyStatus(obj.key, obj.origin, state, why, services, source=obj.source)
            )
            return
        if not reasons:
            reasons.append("rejected")
        self.out.statuses.append(
            PolicyStatus(obj.key, obj.origin, "REJECTED", tuple(reasons), source=obj.source)
        )

    # -- DestinationRule ---------------------------------------------------------------

    def _apply_dr(self, policy: Policy) -> tuple[tuple[ServiceKey, ...], list[str]]:
        assert isinstance(policy, DestinationPolicy)
        key = self.index.find(policy.host, policy.key.namespace)
        if key is None:
            return (), [f"host {policy.host!r} names no service yet; applies when it appears"]
        if self._shadowed(key, "destination"):
            return (), []
        owner = self.dr_owner.get(key)
        if owner is not None:
            raise Rejected(
                ("spec", "host"),
                f"service {key} already has a DestinationRule: {owner} (first by "
                "namespace/name wins)",
            )
        service = self.catalog[key].service
        for level in (policy.ports, *(s.ports for s in policy.subsets)):
            for p in level:
                if port_of(service, p.port) is None:
                    raise Rejected(
                        ("spec", "trafficPolicy", "portLevelSettings"),
                        f"service {key} has no port {p.port}",
                    )
        self.drs[key] = policy
        self.dr_owner[key] = policy.key
        return (key,), []

    # -- VirtualService ----------------------------------------------------------------

    def _apply_vs(self, policy: Policy) -> tuple[tuple[ServiceKey, ...], list[str]]:
        assert isinstance(policy, RoutePolicy)
        warnings: list[str] = []
        hosts: list[ServiceKey] = []
        for host in policy.hosts:
            key = self.index.find(host, policy.key.namespace)
            if key is None:
                warnings.append(f"host {host!r} names no service yet; applies when it appears")
            elif key not in hosts and not (
                policy.key.kind in ROUTE_KINDS and self._shadowed(key, "routing")
            ):  # a merged Gateway API policy was checked route by route (attach)
                hosts.append(key)
        for key in hosts:
            owner = self.vs_owner.get(key)
            if owner is not None:
                raise Rejected(
                    ("spec", "hosts"),
                    f"service {key} already has a VirtualService: {owner} (first by "
                    "namespace/name wins)",
                )
        targets: dict[ServiceKey, dict[TargetKey, RouteTarget]] = {}
        subsets: dict[ServiceKey, set[tuple[int, str]]] = {}
        depends: set[ServiceKey] = set()
        self.destinations.start()
        for key in hosts:
            service = self.catalog[key].service
            http_ports = [p.port for p in service.ports if p.http_like]
            tcp_ports = [p.port for p in service.ports if not p.http_like]
            if policy.http and not http_ports:
                warnings.append(f"service {key} has no HTTP port: http rules not applied")
            if policy.tcp and not tcp_ports:
                warnings.append(f"service {key} has no TCP port: tcp rules not applied")
            found = targets.setdefault(key, {})
            for i, rule in enumerate(policy.http):
                # The field an error points at: the rule's routes, or the rule (mirrors).
                dests: list[tuple[Destination, FieldPath]] = [
                    (d.destination, ("spec", "http", i, "route")) for d in rule.destinations
                ]
                dests += [(m.destination, ("spec", "http", i)) for m in rule.mirrors]
                for port in http_ports:
                    for d, where in dests:
                        found[(d, port)] = self.destinations.target(d, port, True, where, subsets)
                        depends.add(self.destinations.service_of(d))
            for i, tcp in enumerate(policy.tcp):
                for port in tcp_ports:
                    if tcp.port is not None and tcp.port != port:
                        continue
                    for wd in tcp.destinations:
                        d, where = wd.destination, ("spec", "tcp", i, "route")
                        found[(d, port)] = self.destinations.target(d, port, False, where, subsets)
                        depends.add(self.destinations.service_of(d))
        for key in hosts:
            self.vss[key] = policy
            self.vs_owner[key] = policy.key
            self.targets[key] = targets[key]
            self.depends[key] = depends
        for key, pairs in subsets.items():
            self.subsets.setdefault(key, set()).update(pairs)
        for key, aggregates in self.destinations.pending_failovers.items():
            self.failovers.setdefault(key, {}).update(aggregates)
        for key, more in self.destinations.pending_depends.items():
            self.failover_depends.setdefault(key, set()).update(more)
        return tuple(hosts), warnings

    # -- Gateway API routes (policy_resolve_gateway) ---------------------------------------

    def _apply_route(self, policy: Policy) -> tuple[tuple[ServiceKey, ...], list[str]]:
        assert isinstance(policy, RoutePolicy)
        callers = policy.callers

        def shadowed(key: ServiceKey) -> bool:
            return self._shadowed(key, "routing", callers)

        try:
            services, notes = attach(policy, self.index.find, self.catalog, self.vs_owner, shadowed)
        except RouteError as exc:
            raise Rejected(exc.path, exc.reason) from None
        attached = (
            self.attached if callers is None else self.consumer_attached.setdefault(callers, {})
        )
        for key in services:
            attached.setdefault(key, []).append(policy)
        return tuple(services), notes

    def _merge_routes(self) -> None:
        """Each Service's routes merged into its routing, resolved as a VirtualService's
        (consumer routes: into the routing of their namespace's callers); what that
        changes for a route amends its status."""
        notes = merge(self.attached, self.catalog, self._apply_merged)
        for namespace, attached in sorted(self.consumer_attached.items()):
            routing = self.consumer.setdefault(namespace, _Routing())
            apply = functools.partial(self._apply_consumer, routing)
            for route, found in merge(attached, self.catalog, apply, namespace).items():
                notes.setdefault(route, []).extend(found)
        for i, status in enumerate(self.out.statuses):
            more = notes.get(status.key) if status.key.kind in GATEWAY_ROUTE_KINDS else None
            if more:
                gone = {k for k, _ in more if k is not None}
                state: State = "WARNING" if status.state == "ACCEPTED" else status.state
                services = tuple(s for s in status.services if s not in gone)
                reasons = (*status.reasons, *(w for _, w in more))
                self.out.statuses[i] = replace(status, state=state, reasons=reasons,
                                               services=services)  # fmt: skip

    def _apply_consumer(self, routing: _Routing, policy: RoutePolicy) -> list[str]:
        """`_apply_merged` into the routing of one namespace's callers (the subset and
        failover clusters it needs are built for every caller, like any). Its key (and so
        its Envoy route names) says whose it is: ``Service shop/web (callers in a)``."""
        key = policy.key
        name = f"{key.name} (callers in {policy.callers})"
        policy = replace(policy, key=PolicyKey(key.kind, key.namespace, name))
        shared = self.vss, self.vs_owner, self.targets, self.depends
        self.vss, self.vs_owner = routing.vss, routing.vs_owner
        self.targets, self.depends = routing.targets, routing.depends
        try:
            return self._apply_merged(policy)
        finally:
            self.vss, self.vs_owner, self.targets, self.depends = shared

    def _apply_merged(self, policy: RoutePolicy) -> list[str]:
        try:
            return self._apply_vs(policy)[1]
        except Rejected as exc:  # attach() checked what could fail: a bug, but shown
            raise RouteError(exc.path, exc.reason) from None


def _rejection(obj: PolicyObject, exc: Rejected) -> str:
    """``file:line:col: Kind namespace/name: field.path: reason``, the form of every
    policy error, when the source can say where the field is."""
    subject = f"{obj.key.kind} {obj.key.namespace}/{obj.key.name}"
    if obj.locate is not None:
        where, path = obj.locate(exc.path)
    else:
        where = obj.origin
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.path)[1:]
    return f"{where}: {subject}: {path}: {exc.reason}"


def policy_origin(policy: Policy) -> str:
    return policy.origin or str(policy.key)
