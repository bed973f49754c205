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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from xds_server.model import (
    DESTINATION_KINDS,
    ROUTE_KINDS,
    SECURITY_KINDS,
    Destination,
    DestinationPolicy,
    FieldPath,
    HashOn,
    Policy,
    PolicyKey,
    PolicyObject,
    Port,
    RoutePolicy,
    Service,
    ServiceEntry,
    ServiceKey,
)

from .authz_status import security_status
from .names import cluster_name, failover_cluster_name, subset_cluster_name
from .policy_common import RouteTarget
from .policy_resolution import (
    HostIndex,
    PolicyStatus,
    Rejected,
    Resolution,
    ServicePolicy,
    State,
    TargetKey,
)
from .policy_resolve_gateway import GATEWAY_ROUTE_KINDS, RouteError, attach, merge

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
) -> Resolution:
    """Resolve every object against the catalog (see the module docstring)."""
    return _Resolver(catalog, accepted_before).run(objects)


def _port_of(service: Service, number: int) -> Port | None:
    for p in service.ports:
        if p.port == number:
            return p
    return None


class _Resolver:
    def __init__(
        self,
        catalog: Mapping[ServiceKey, ServiceEntry],
        accepted_before: Mapping[PolicyKey, Policy],
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
        # What the VirtualService being applied adds to the two above, kept if it applies.
        self.pending_failovers: dict[ServiceKey, dict[tuple[int, str], tuple[str, ...]]] = {}
        self.pending_depends: dict[ServiceKey, set[ServiceKey]] = {}
        self.attached: dict[ServiceKey, list[RoutePolicy]] = {}  # Gateway API routes

    def run(self, objects: Sequence[PolicyObject]) -> Resolution:
        ordered = sorted(objects, key=lambda o: o.key)
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
                self.out.statuses.append(PolicyStatus(obj.key, obj.origin, state, reasons))
        keys = self.drs.keys() | self.vss.keys() | self.subsets.keys()
        for key in sorted(keys):
            depends = self.depends.get(key, set()) | self.failover_depends.get(key, set())
            self.out.services[key] = ServicePolicy(
                routing=self.vss.get(key),
                destination=self.drs.get(key),
                subsets=tuple(sorted(self.subsets.get(key, ()))),
                targets=tuple(sorted(self.targets.get(key, {}).items(), key=_target_order)),
                depends=tuple(sorted(depends - {key})),
                failovers=tuple(
                    (port, subset, clusters)
                    for (port, subset), clusters in sorted(self.failovers.get(key, {}).items())
                ),
            )
        return self.out

    # -- one object: the current version, else the last accepted one -------------------

    def _one(self, obj: PolicyObject, apply: _Apply) -> None:
        reasons: list[str] = list(obj.notices)
        if obj.policy is not None and not obj.applies:
            # Valid, but for no proxy of ours: shown, and never in a host conflict.
            self.out.accepted[obj.key] = obj.policy
            self.out.statuses.append(
                PolicyStatus(obj.key, obj.origin, "WARNING", (*reasons, "applies to no proxy"))
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
            else:
                state = "WARNING" if warnings or reasons else "ACCEPTED"
            self.out.statuses.append(
                PolicyStatus(obj.key, obj.origin, state, (*reasons, *warnings), services)
            )
            return
        if not reasons:
            reasons.append("rejected")
        self.out.statuses.append(PolicyStatus(obj.key, obj.origin, "REJECTED", tuple(reasons)))

    # -- DestinationRule ---------------------------------------------------------------

    def _apply_dr(self, policy: Policy) -> tuple[tuple[ServiceKey, ...], list[str]]:
        assert isinstance(policy, DestinationPolicy)
        key = self.index.find(policy.host, policy.key.namespace)
        if key is None:
            return (), [f"host {policy.host!r} names no service yet; applies when it appears"]
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
                if _port_of(service, p.port) is None:
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
            elif key not in hosts:
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
        self.pending_failovers, self.pending_depends = {}, {}
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
                        found[(d, port)] = self._target(d, port, True, where, subsets)
                        depends.add(self._service_of(d))
            for i, tcp in enumerate(policy.tcp):
                for port in tcp_ports:
                    if tcp.port is not None and tcp.port != port:
                        continue
                    for wd in tcp.destinations:
                        d, where = wd.destination, ("spec", "tcp", i, "route")
                        found[(d, port)] = self._target(d, port, False, where, subsets)
                        depends.add(self._service_of(d))
        for key in hosts:
            self.vss[key] = policy
            self.vs_owner[key] = policy.key
            self.targets[key] = targets[key]
            self.depends[key] = depends
        for key, pairs in subsets.items():
            self.subsets.setdefault(key, set()).update(pairs)
        for key, aggregates in self.pending_failovers.items():
            self.failovers.setdefault(key, {}).update(aggregates)
        for key, more in self.pending_depends.items():
            self.failover_depends.setdefault(key, set()).update(more)
        return tuple(hosts), warnings

    # -- Gateway API routes (policy_resolve_gateway) ---------------------------------------

    def _apply_route(self, policy: Policy) -> tuple[tuple[ServiceKey, ...], list[str]]:
        assert isinstance(policy, RoutePolicy)
        try:
            services, notes = attach(policy, self.index.find, self.catalog, self.vs_owner)
        except RouteError as exc:
            raise Rejected(exc.path, exc.reason) from None
        for key in services:
            self.attached.setdefault(key, []).append(policy)
        return tuple(services), notes

    def _merge_routes(self) -> None:
        """Each Service's routes merged into its routing, resolved as a VirtualService's;
        what that changes for a route amends its status."""
        notes = merge(self.attached, self.catalog, self._apply_merged)
        for i, status in enumerate(self.out.statuses):
            more = notes.get(status.key) if status.key.kind in GATEWAY_ROUTE_KINDS else None
            if more:
                gone = {k for k, _ in more if k is not None}
                state: State = "WARNING" if status.state == "ACCEPTED" else status.state
                services = tuple(s for s in status.services if s not in gone)
                reasons = (*status.reasons, *(w for _, w in more))
                self.out.statuses[i] = replace(status, state=state, reasons=reasons,
                                               services=services)  # fmt: skip

    def _apply_merged(self, policy: RoutePolicy) -> list[str]:
        try:
            return self._apply_vs(policy)[1]
        except Rejected as exc:  # attach() checked what could fail: a bug, but shown
            raise RouteError(exc.path, exc.reason) from None

    def _service_of(self, d: Destination) -> ServiceKey:
        key = self.index.find(d.host, d.namespace)
        assert key is not None  # _target checked it first
        return key

    def _target(
        self,
        d: Destination,
        route_port: int,
        http: bool,
        where: FieldPath,
        subsets: dict[ServiceKey, set[tuple[int, str]]],
    ) -> RouteTarget:
        key = self.index.find(d.host, d.namespace)
        if key is None:
            raise Rejected(where, f"destination host {d.host!r} names no service")
        service = self.catalog[key].service
        port = self._destination_port(service, d, route_port, http, where)
        base = cluster_name(service, port)
        dr = self.drs.get(key)
        if d.subset:
            if dr is None or dr.subset(d.subset) is None:
                defined = f" (DestinationRule {dr.key.namespace}/{dr.key.name})" if dr else ""
                raise Rejected(
                    where,
                    f"subset {d.subset!r} of service {key} is not defined by a "
                    f"DestinationRule{defined}",
                )
            subsets.setdefault(key, set()).add((port.port, d.subset))
        hash_on: HashOn | None = None
        if dr is not None:
            lb = dr.for_port(port.port, d.subset).load_balancer
            hash_on = lb.hash if lb is not None else None
        cluster = subset_cluster_name(base, d.subset) if d.subset else base
        if dr is not None and dr.failover:
            cluster = self._failover(key, dr, d.subset, cluster, port, http, where, subsets)
        return RouteTarget(cluster=cluster, hash_on=hash_on)

    def _failover(
        self,
        key: ServiceKey,
        dr: DestinationPolicy,
        subset: str,
        primary: str,
        port: Port,
        http: bool,
        where: FieldPath,
        subsets: dict[ServiceKey, set[tuple[int, str]]],
    ) -> str:
        """The aggregate cluster for `primary` when `dr` fails it over (the entry for its
        subset, else the one for every subset), else `primary` itself."""
        chosen = next((f for f in dr.failover if f.subset == subset), None)
        chosen = chosen or next((f for f in dr.failover if f.subset == ""), None)
        if chosen is None:
            return primary
        clusters = [primary]
        for t in chosen.targets:
            tkey = self.index.find(t.host, t.namespace)
            if tkey is None:
                continue  # no such service yet: it would have no endpoints either
            target = self.catalog[tkey].service
            try:
                tport = self._destination_port(
                    target, replace(t, port=None), port.port, http, where
                )
            except Rejected:
                continue
            tcluster = cluster_name(target, tport)
            if t.subset:
                tdr = self.drs.get(tkey)
                if tdr is None or tdr.subset(t.subset) is None:
                    reason = f"failover subset {t.subset!r} of service {tkey} is not defined"
                    raise Rejected(where, reason)
                subsets.setdefault(tkey, set()).add((tport.port, t.subset))
                tcluster = subset_cluster_name(tcluster, t.subset)
            if tcluster not in clusters:
                clusters.append(tcluster)
                self.pending_depends.setdefault(key, set()).add(tkey)
        if len(clusters) == 1:
            return primary
        self.pending_failovers.setdefault(key, {})[(port.port, subset)] = tuple(clusters)
        return failover_cluster_name(primary)

    @staticmethod
    def _destination_port(
        service: Service, d: Destination, route_port: int, http: bool, where: FieldPath
    ) -> Port:
        kind = "HTTP" if http else "TCP"
        candidates = [p for p in service.ports if p.http_like == http]
        if d.port is not None:
            port = _port_of(service, d.port)
            if port is None:
                raise Rejected(where, f"service {service.key} has no port {d.port}")
            if port.http_like != http:
                raise Rejected(where, f"port {d.port} of service {service.key} is not {kind}")
            return port
        same = _port_of(service, route_port)
        if same is not None and same.http_like == http:
            return same
        if not candidates:
            raise Rejected(where, f"service {service.key} has no {kind} port")
        return candidates[0]


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


def _target_order(item: tuple[TargetKey, RouteTarget]) -> tuple[str, str, int, str, int]:
    """A total order: Destination's own would compare a port of None with a number."""
    (d, route_port), _ = item
    return (d.host, d.namespace, -1 if d.port is None else d.port, d.subset, route_port)


def policy_origin(policy: Policy) -> str:
    return policy.origin or str(policy.key)
