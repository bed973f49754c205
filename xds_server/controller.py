"""The controller: catalog changes → translated resources → each proxy group's snapshot.

It owns the proxy groups (proxies that get identical config, see
translators.ProxyGroup) and memoises what it built per service, so a change rebuilds
only what it touches: an endpoint change re-encodes just that service's
ClusterLoadAssignments, and listeners and routes are rebuilt only when the set of
services (not their endpoints) a group sees, or the policy that applies to them, has
changed. Policy objects are resolved against the catalog whenever either changes
(xds_server.controller_policy); an object that stops resolving keeps its last accepted
version in force. The security objects in force become the hooks of sidecars' inbound
listeners and gRPC servers' RBAC (translators.authz_inbound), installed only when they
change. Building runs in a worker
thread so ACKs and new streams keep flowing on the event loop (DESIGN §5); the
snapshots are then installed on the loop, where the sessions live.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from envoy.config.core.v3 import base_pb2
from google.protobuf.message import Message

from translators import ProxyGroup, Skipped
from translators.authz_inbound import inbound_policy, server_rbac
from translators.group import Kind
from translators.grpc_mesh import ProxylessMesh
from translators.inbound import DEFAULT_INBOUND, InboundPolicy, Instance, find_instance
from translators.policy_resolution import policies_for
from translators.policy_resolve import ServicePolicy
from translators.services import service_clusters, service_load_assignments, uses_locality
from translators.translate import group_resources, scope_keys, sidecar_resources
from xds_server import metrics, types
from xds_server.cache import Prepared, SnapshotCache
from xds_server.catalog import Catalog
from xds_server.controller_policy import PolicyState
from xds_server.identity.spiffe import DEFAULT_TRUST_DOMAIN, SpiffeId, SpiffeIdError
from xds_server.model import (
    Locality,
    PolicyObject,
    Service,
    ServiceEntry,
    ServiceKey,
)
from xds_server.snapshot import EMPTY_SNAPSHOT, Resource, Snapshot

log = logging.getLogger(__name__)

Resources = dict[str, list[Resource]]
# A group no proxy has watched for this long is no longer built (a proxy of it coming
# back gets it rebuilt on arrival, like any new group).
GROUP_IDLE_SECONDS = 600.0


@dataclass(slots=True)
class _GroupOutput:
    """A group's listeners and routes, valid while its services are `services`."""

    services: tuple[Service, ...]
    policies: tuple[ServicePolicy | None, ...]
    listeners: list[Resource]
    routes: list[Resource]
    skipped: list[Skipped]
    # A sidecar group's instance and its local clusters (translators.inbound).
    instance: Instance | None = None
    local_clusters: tuple[Resource, ...] = ()


def _resources(type_url: str, messages: Sequence[Message]) -> list[Resource]:
    return [Resource.from_message(type_url, m) for m in messages]


class Controller:
    def __init__(
        self,
        catalog: Catalog,
        cache: SnapshotCache,
        *,
        http_listener_port: int = 10000,
        group_idle: float = GROUP_IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.catalog = catalog
        self.group_idle = group_idle
        self.clock = clock
        self._last_used: dict[str, float] = {}
        self.cache = cache
        self.http_listener_port = http_listener_port
        self._groups: dict[str, ProxyGroup] = {}
        self._view: dict[ServiceKey, ServiceEntry] = {}
        self._services: dict[ServiceKey, Service] = {}
        # Per service: what its clusters were built from, and the clusters per client kind
        # (and mesh trust domain, for sidecars dialling sidecars over mutual TLS).
        self._clusters: dict[
            ServiceKey,
            tuple[
                tuple[Service, ServicePolicy | None], dict[tuple[Kind, str | None], list[Resource]]
            ],
        ] = {}
        # PeerAuthentication modes and authorization filters of inbound listeners.
        self.inbound: InboundPolicy = DEFAULT_INBOUND
        self._endpoints: dict[
            ServiceKey, tuple[tuple[ServiceEntry, ServicePolicy | None], list[Resource]]
        ] = {}
        # Per (service, client locality): endpoints prioritised for that locality, for
        # services whose DestinationRule sets locality load balancing; built on first use.
        self._local_endpoints: dict[
            tuple[ServiceKey, Locality],
            tuple[tuple[ServiceEntry, ServicePolicy | None], list[Resource]],
        ] = {}
        # The policy objects, what is in force, their statuses (controller_policy).
        self.policy = PolicyState()
        self._outputs: dict[str, _GroupOutput] = {}
        # Bumped when a service (not just its endpoints) appears, changes or goes: until
        # then every group's scope, clusters, listeners and routes stay as built, and an
        # endpoint change touches only the ClusterLoadAssignments.
        self._generation = 0
        self._scopes: dict[str, tuple[int, list[ServiceKey]]] = {}
        self._skipped_logged: set[Skipped] = set()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.builds = 0
        # Proxyless gRPC mTLS clusters and xDS-managed server listeners (A29, A36, A41);
        # `proxyless.rbac_of` is where server-side authorization plugs in.
        self.proxyless: ProxylessMesh[Resource] = ProxylessMesh(_resources, lambda r: r.body)

    # -- proxy groups -------------------------------------------------------------

    def group_of(self, node: base_pb2.Node) -> str:
        """The SnapshotCache hook: a connecting proxy's group, built if it is new."""
        group, warnings = ProxyGroup.parse(node, self.http_listener_port)
        if group.mesh and not self._can_hold_certificate(node):
            group = dataclasses.replace(group, mesh=False)
        for w in warnings:
            log.warning("node %r: %s", node.id, w)
        key = group.key
        self._last_used[key] = self.clock()
        if key not in self._groups:
            self._groups[key] = group
            log.info("new proxy group %s (first proxy: node %r)", key, node.id)
            task = asyncio.get_running_loop().create_task(self._build_group(key))
            # The loop keeps only weak references to tasks.
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return key

    async def snapshot_for(self, key: str) -> Snapshot:
        """A group's snapshot for `xdsctl`, built now if no proxy of it has connected."""
        group = ProxyGroup.from_key(key)  # ValueError for a bad key
        key = group.key
        self._last_used[key] = self.clock()
        self._groups.setdefault(key, group)
        if key not in self.cache.groups():  # new, or its first build is still queued
            await self._build_group(key)
        return self.cache.get(key)

    def groups(self) -> list[str]:
        return sorted(self._groups)

    def not_ready(self) -> list[str]:
        return [] if self.builds else ["resources not built yet"]

    def policy_statuses(self) -> list[dict[str, object]]:
        """Every policy object's status, with warnings about subsets that select no
        endpoints now (for `/debug/policies` and `xdsctl policies`)."""
        return self.policy.status_docs(self._view)

    def subset_labels(self, service: str, subset: str) -> dict[str, str] | None:
        """The labels subset `subset` of `service` (``name.namespace``) selects, from the
        DestinationRule in force (for `/debug/explain`); None when none defines it."""
        return self.policy.subset_labels(service, subset)

    def rule_writer(self, subject: str, index: int) -> tuple[str, str, str] | None:
        """(kind, namespace, name) of the object that wrote rule `index` of the routing
        policy `subject` when that policy merges several (Gateway API routes attached to
        one Service), for `/debug/explain`; None otherwise."""
        return self.policy.rule_writer(subject, index)

    async def set_inbound(self, policy: InboundPolicy) -> None:
        """Replace what decides inbound listeners (PeerAuthentication modes, the
        authorization filters): sidecar groups render them again on the next `rebuild`.
        Their functions are opaque, so a change must come through here to be seen."""
        async with self._lock:
            self._set_inbound(policy)

    def _set_inbound(self, policy: InboundPolicy) -> None:
        self.inbound = policy
        for key, group in self._groups.items():
            if group.sidecar is not None:
                # Outputs are kept per output key, which may not be the group's own.
                self._outputs.pop(self._output_key(group), None)
                self._scopes.pop(key, None)

    # -- building -----------------------------------------------------------------

    async def rebuild(self) -> None:
        """Apply the catalog's pending changes to every group (the debouncer's action)."""
        async with self._lock:
            view, dirty, first = self.catalog.take_changes()
            objects = self.catalog.take_policies()
            events, ids = self.cache.events, tuple[int, ...]()
            if events is not None:  # push provenance: what changed, before it is applied
                by_source = None if objects is None else self.catalog.policies_by_source()
                ids = events.observe(self._view, view, dirty, by_source, first)
            self._forget_idle_groups()
            groups = dict(self._groups)
            started = time.perf_counter()
            built = await asyncio.to_thread(self._compute, view, dirty, groups, objects)
            metrics.TRANSLATE_SECONDS.observe(time.perf_counter() - started)
            for key, prepared in built.items():
                if prepared is not None:
                    if events is not None:
                        events.applied(key, prepared, ids)
                    self.cache.install(key, prepared, changed_at=first)
            if events is not None:
                events.finished(ids)
            self.builds += 1

    def _forget_idle_groups(self) -> None:
        """Stop building groups no proxy has used for `group_idle` seconds: proxies with
        ever-new dependency lists must not make every rebuild slower forever."""
        now = self.clock()
        for key in list(self._groups):
            if self.cache.watched(key):
                self._last_used[key] = now
            elif now - self._last_used.get(key, now) > self.group_idle:
                log.info("forgetting proxy group %s: no proxy for %.0fs", key, self.group_idle)
                shared = self._output_key(self._groups.pop(key))
                self._last_used.pop(key, None)
                # Outputs are kept per output key, which groups differing only by their
                # namespace share: dropped with the last group using it.
                if all(self._output_key(g) != shared for g in self._groups.values()):
                    self._outputs.pop(shared, None)
                self._scopes.pop(key, None)
                self.proxyless.forget(key)
                with contextlib.suppress(KeyError):  # never built
                    metrics.TRANSLATE_SKIPPED.remove(key)
                self.cache.clear(key)
                if self.cache.events is not None:
                    self.cache.events.forget_group(key)

    async def _build_group(self, key: str) -> None:
        async with self._lock:
            group = self._groups.get(key)
            if group is None:  # forgotten while the build was queued
                return
            built = await asyncio.to_thread(self._compute, self._view, set(), {key: group})
            prepared = built[key]
            if prepared is not None:
                if self.cache.events is not None:
                    self.cache.events.applied(key, prepared, ())
                self.cache.install(key, prepared)

    def _compute(
        self,
        view: Mapping[ServiceKey, ServiceEntry],
        dirty: set[ServiceKey],
        groups: Mapping[str, ProxyGroup],
        objects: tuple[PolicyObject, ...] | None = None,
    ) -> dict[str, Prepared | None]:
        """Runs in a worker thread, under the lock: nothing else touches the memos or
        writes these groups' snapshots, so what it prepares can be installed as is."""
        self._view = dict(view)
        services_changed = False
        for key in dirty:
            entry = view.get(key)
            service = entry.service if entry is not None else None
            if service != self._services.get(key):
                services_changed = True
                if service is None:
                    del self._services[key]
                else:
                    self._services[key] = service
        if objects is not None:
            self.policy.objects = objects
            self._enforce_security()
        if services_changed or objects is not None:
            # A service whose policy changed is rebuilt like a changed service.
            dirty = dirty | self._resolve_policies()
        for key in dirty:
            entry = view.get(key)
            if entry is None:
                self._clusters.pop(key, None)
                self._endpoints.pop(key, None)
                for local in [k for k in self._local_endpoints if k[0] == key]:
                    del self._local_endpoints[local]
                continue
            policy = self.policy.services.get(key)
            held = self._clusters.get(key)
            if held is None or held[0] != (entry.service, policy):
                self._clusters[key] = ((entry.service, policy), {})
                services_changed = True
            held_eps = self._endpoints.get(key)
            if held_eps is None or held_eps[0] != (entry, policy):
                built = _resources(types.ENDPOINT, service_load_assignments(entry, policy))
                self._endpoints[key] = ((entry, policy), built)
        if services_changed:
            self._generation += 1
        if dirty:
            self.proxyless.changed()
        out: dict[str, Prepared | None] = {}
        first: dict[str, str] = {}  # output key → the group built for it in this round
        for name, group in groups.items():
            twin = first.setdefault(self._output_key(group), name)
            if twin != name:  # the same resources as `twin`'s: no need to build or compare
                out[name] = self._same_as(name, twin, out[twin])
                continue
            out[name] = self.cache.prepare(name, self._group_snapshot(name, group, dirty))
        return out

    def _same_as(self, key: str, twin: str, prepared: Prepared | None) -> Prepared | None:
        """What installs `twin`'s next snapshot as `key`'s too (None: `key` has it)."""
        types = prepared.types if prepared is not None else dict(self.cache.get(twin).types)
        current = self.cache.get(key)
        if current.types == types:
            return None
        self._scopes.pop(key, None)  # not built itself: built in full if it stops sharing
        return Prepared(None if current is EMPTY_SNAPSHOT else current, types)

    def _resolve_policies(self) -> set[ServiceKey]:
        """Resolve the policy objects against the view; the services whose policy changed."""
        changed, consumers_changed = self.policy.resolve(self._view, self.catalog.registries())
        if consumers_changed:
            self._generation += 1  # every group's scope and routes are looked at again
        return changed

    def _enforce_security(self) -> None:
        """Resolve the security objects; when what is in force changed, sidecars' inbound
        listeners and gRPC servers' listeners are rendered again with it."""
        secrets = self.cache.secrets
        trust_domain = secrets.trust_domain if secrets is not None else DEFAULT_TRUST_DOMAIN
        enforcement = self.policy.security.update(self.policy.objects, trust_domain)
        if enforcement is not None:
            self._set_inbound(inbound_policy(enforcement))
            self.proxyless.rbac_of = server_rbac(enforcement)

    def _endpoint_resources(self, key: ServiceKey, locality: Locality | None) -> list[Resource]:
        """A service's ClusterLoadAssignments as a proxy in `locality` gets them."""
        built, shared = self._endpoints[key]
        entry, policy = built
        if locality is None or not uses_locality(policy):
            return shared
        held = self._local_endpoints.get((key, locality))
        if held is None or held[0] != built:
            local = service_load_assignments(entry, policy, locality)
            held = (built, _resources(types.ENDPOINT, local))
            self._local_endpoints[(key, locality)] = held
        return held[1]

    def _cluster_resources(self, key: ServiceKey, kind: Kind, mesh: str | None) -> list[Resource]:
        """The clusters of one service for one client kind (and mesh trust domain),
        built on first use."""
        (service, policy), by_kind = self._clusters[key]
        built = by_kind.get((kind, mesh))
        if built is None:
            clusters = service_clusters(service, policy, kind, mesh_trust_domain=mesh)
            built = _resources(types.CLUSTER, clusters)
            by_kind[(kind, mesh)] = built
        return built

    def _can_hold_certificate(self, node: base_pb2.Node) -> bool:
        """Whether the CA is on and can issue the node's identity at once: a listener or
        cluster referencing a secret that never comes would warm forever (and stall
        every later CDS update; digest §3)."""
        secrets = self.cache.secrets
        if secrets is None:
            return False
        fields = node.metadata.fields
        try:
            SpiffeId(
                secrets.trust_domain,
                fields["NAMESPACE"].string_value,
                fields["SERVICE_ACCOUNT"].string_value,
            )
        except (SpiffeIdError, KeyError) as exc:
            log.warning("node %r: no mutual TLS with sidecars: %s", node.id, exc)
            return False
        return True

    def _mesh(self, group: ProxyGroup) -> str | None:
        """The trust domain when `group`'s proxies hold workload certificates."""
        secrets = self.cache.secrets
        return secrets.trust_domain if group.mesh and secrets is not None else None

    @staticmethod
    def _fronts(group: ProxyGroup, dirty: set[ServiceKey]) -> bool:
        """Whether a changed service may be the one `group`'s sidecars front."""
        sidecar = group.sidecar
        return sidecar is not None and any(
            sidecar.service in (k.name, f"{k.name}.{k.namespace}") for k in dirty
        )

    def _scope(self, key: str, group: ProxyGroup) -> tuple[list[ServiceKey], bool]:
        """The keys of the services `group` sees, in order, and whether that list (or
        any service in it, or its policy) changed since the group was last built."""
        held = self._scopes.get(key)
        if held is not None and held[0] == self._generation:
            return held[1], False
        keys = scope_keys(self._view, group, self._policies_of(group))
        self._scopes[key] = (self._generation, keys)
        return keys, True

    def _policies_of(self, group: ProxyGroup) -> Mapping[ServiceKey, ServicePolicy]:
        """The policy the group's proxies get: their namespace's consumer routes' first."""
        return policies_for(self.policy.services, self.policy.consumers, group.namespace)

    def _output_key(self, group: ProxyGroup) -> str:
        if group.namespace is None or group.namespace in self.policy.consumers:
            return group.key
        return replace(group, namespace=None).key

    def _group_snapshot(self, key: str, group: ProxyGroup, dirty: set[ServiceKey]) -> Resources:
        """The group's resources of the types that may have changed (the cache keeps
        the other types as they are)."""
        keys, fresh = self._scope(key, group)
        view = self._view
        # The scope, not `group.wants`: a service seen only as a route's destination
        # still needs its endpoint changes.
        scope = set(keys)
        fresh = fresh or self._fronts(group, dirty)
        touched = fresh or any(k in scope for k in dirty)
        # An xDS-managed gRPC server's listeners follow its endpoints, in scope or not.
        server = self._server_listeners(key, group)
        held = self._outputs.get(self._output_key(group))  # outputs are kept per output key
        extra: Resources = {}
        if server is not None and held is not None:
            extra[types.LISTENER] = held.listeners + server
        if not touched:
            return extra
        endpoints: list[Resource] = []
        for k in keys:
            endpoints.extend(self._endpoint_resources(k, group.locality))
        if not fresh:
            return {types.ENDPOINT: endpoints, **extra}
        clusters: list[Resource] = []
        mesh = self._mesh(group)
        trust_domain = self._proxyless_trust_domain(group)
        for k in keys:
            built = self._cluster_resources(k, group.kind, mesh)
            if trust_domain is not None:
                built = self.proxyless.clusters(k, view[k].service, built, trust_domain)
            clusters.extend(built)
        services = tuple(view[k].service for k in keys)
        group_policies = self._policies_of(group)
        policies = tuple(group_policies.get(k) for k in keys)
        instance = find_instance(view, group.sidecar)
        # Groups that differ only by a namespace without consumer routes share the work.
        shared = self._output_key(group)
        out = self._outputs.get(shared)
        if (
            out is None
            or out.services != services
            or out.policies != policies
            or out.instance != instance
        ):
            listeners, routes, skipped = group_resources(services, group, group_policies)
            inbound, local, more = sidecar_resources(
                view, group, listeners, mtls=mesh is not None, policy=self.inbound
            )
            out = _GroupOutput(
                services,
                policies,
                _resources(types.LISTENER, sorted([*listeners, *inbound], key=lambda m: m.name)),
                _resources(types.ROUTE, routes),
                skipped + more,
                instance,
                tuple(_resources(types.CLUSTER, local)),
            )
            self._outputs[shared] = out
            metrics.TRANSLATE_SKIPPED.labels(key).set(len(skipped))
            for s in skipped:
                if s not in self._skipped_logged:
                    self._skipped_logged.add(s)
                    log.warning("group %s: skipped %s", key, s)
        if out.local_clusters:
            clusters = sorted([*clusters, *out.local_clusters], key=lambda r: r.name)
        return {
            types.CLUSTER: clusters,
            types.ENDPOINT: endpoints,
            types.LISTENER: out.listeners + (server or []),
            types.ROUTE: out.routes,
        }

    def _proxyless_trust_domain(self, group: ProxyGroup) -> str | None:
        """The trust domain when `group` is a gRPC group with an identity and the CA is
        on (its calls to mesh TLS services use mTLS); None otherwise."""
        secrets = self.cache.secrets
        if secrets is None or group.kind != "grpc" or not group.identity:
            return None
        return secrets.trust_domain

    def _server_listeners(self, key: str, group: ProxyGroup) -> list[Resource] | None:
        """An xDS-managed gRPC server's Listeners; None for other groups."""
        if not group.instance_ips:
            return None
        tls = self._proxyless_trust_domain(group) is not None
        return self.proxyless.server_listeners(key, group, self._view, self.policy.objects, tls)
