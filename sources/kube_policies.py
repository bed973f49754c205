"""Traffic policy from Kubernetes: Istio VirtualServices and DestinationRules,
AuthorizationPolicies and PeerAuthentications (`security.istio.io`), Gateway API
HTTPRoutes and GRPCRoutes, by list + watch (`sources.kube_listwatch`, the loops the
registry source uses: bookmarks, resume, 410 relist, backoff, one outage prober).

- Istio's kinds are read as `networking.istio.io/v1` (`security.istio.io/v1`), or
  `v1beta1` where the cluster
  serves only that (probed: a list of v1 that gets 404 tries v1beta1); the Gateway
  API's as `gateway.networking.k8s.io/v1`.
- Every object becomes a `PolicyObject` (the parsers of `sources.istio` and
  `sources.gateway_api`, as for policy files), origin ``kubernetes:<namespace>/<name>``,
  published with `catalog.replace_policies` under a catalog source of its own
  (``<source>-policies``, kind kubernetes), so the registry source's service count and
  readiness stay its own. An object whose spec did not change (a status write, a
  relist) keeps its parsed value, and an unchanged set is not published again, so a
  relist of an unchanged cluster pushes nothing.
- Nothing is published before every kind has listed once (readiness waits for it).
- A kind the cluster does not serve (404: its CRD is not installed) counts as listed
  with no objects: a note in `xdsctl sources`, logged once, listed again every
  `recheck` seconds; not an error, and the other kinds work as usual.
- The raw HTTPRoute and GRPCRoute objects stay available (`routes()`), and `on_routes`
  is called whenever they changed, for the route status writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sources import gateway_api
from sources.base import Backoff, Catalog
from sources.istio import PolicyError, is_supported_kind, parse_policy
from sources.istio.security import SECURITY_GROUP, is_security_kind, parse_security
from sources.kube_api import DEFAULT_TIMING, Kind, NotFound, Resource, Timing
from sources.kube_config import KubeConnection
from sources.kube_listwatch import ListWatchSource
from sources.kube_mapping import object_key
from sources.policy_parse import policy_object
from sources.yaml_positions import render_path
from xds_server.model import DEFAULT_NAMESPACE, PolicyKey, PolicyObject

log = logging.getLogger("sources.kubernetes")

KIND = "kubernetes"
ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1")  # in order of preference
GATEWAY_GROUP = gateway_api.API_GROUP
DEFAULT_RECHECK = 300.0

# plural -> (kind, group, versions in order of preference)
CRDS: dict[Kind, tuple[str, str, tuple[str, ...]]] = {
    "virtualservices": ("VirtualService", ISTIO_GROUP, ISTIO_VERSIONS),
    "destinationrules": ("DestinationRule", ISTIO_GROUP, ISTIO_VERSIONS),
    "httproutes": ("HTTPRoute", GATEWAY_GROUP, ("v1",)),
    "grpcroutes": ("GRPCRoute", GATEWAY_GROUP, ("v1",)),
    "authorizationpolicies": ("AuthorizationPolicy", SECURITY_GROUP, ISTIO_VERSIONS),
    "peerauthentications": ("PeerAuthentication", SECURITY_GROUP, ISTIO_VERSIONS),
}
ROUTES = frozenset({"httproutes", "grpcroutes"})

# (plural, namespace, name)
ObjectKey = tuple[str, str, str]


@dataclass
class CustomResource(Resource):
    """A custom resource's loop: the paths of its versions, in order of preference."""

    paths: tuple[str, ...] = ()
    absent: bool = False  # the cluster serves none of `paths`


def crd_paths(plural: Kind, namespace: str | None) -> tuple[str, ...]:
    _, group, versions = CRDS[plural]
    scope = f"/namespaces/{namespace}" if namespace else ""
    return tuple(f"/apis/{group}/{v}{scope}/{plural}" for v in versions)


def _signature(obj: dict[str, Any]) -> dict[str, Any]:
    """What a change is judged by: the object without its resourceVersion and
    managedFields (rewritten by every write, status writes included)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return obj
    meta = {k: v for k, v in meta.items() if k not in ("resourceVersion", "managedFields")}
    return {**obj, "metadata": meta}


def parse_object(obj: dict[str, Any], origin: str) -> PolicyObject:
    """One custom resource as a PolicyObject: parsed, or refused with its reason
    (``origin: Kind namespace/name: field.path: reason``, as in policy files)."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    namespace = str(meta.get("namespace") or DEFAULT_NAMESPACE)
    key = PolicyKey(str(obj.get("kind")), namespace, str(meta.get("name")))
    subject = f"{origin}: {key.kind} {key.namespace}/{key.name}"
    route = gateway_api.is_supported_kind(obj)
    security = is_security_kind(obj)
    if not route and not security and not is_supported_kind(obj):
        error = f"{subject}: apiVersion {obj.get('apiVersion')!r} is not supported"
        return PolicyObject(key, origin, error=error)
    try:
        parsed = (
            parse_security(obj, origin)
            if security
            else gateway_api.parse_route(obj, origin=origin)
            if route
            else parse_policy(obj, origin)
        )
    except PolicyError as exc:
        return PolicyObject(key, origin, error=f"{subject}: {exc}")
    notices = tuple(f"{origin}: {n}" for n in parsed.notices)
    return policy_object(parsed, origin, notices, lambda path: (origin, render_path(path)))


@dataclass(frozen=True, slots=True)
class _Held:
    signature: dict[str, Any]
    policy: PolicyObject
    raw: dict[str, Any] | None  # routes only (for the status writer)


class KubePolicySource(ListWatchSource[ObjectKey]):
    """Lists and watches the policy CRDs; publishes their PolicyObjects (module doc)."""

    def __init__(
        self,
        connection: KubeConnection,
        catalog: Catalog,
        *,
        namespaces: Iterable[str] = (),
        name: str = "kubernetes-policies",
        timing: Timing = DEFAULT_TIMING,
        recheck: float = DEFAULT_RECHECK,
        on_routes: Callable[[Sequence[dict[str, Any]]], None] | None = None,
    ) -> None:
        super().__init__(connection, catalog, name, timing)
        self.recheck = recheck
        self.on_routes = on_routes
        scopes: list[str | None] = list(dict.fromkeys(namespaces)) or [None]
        self.resources = [
            CustomResource(plural, ns, paths[0], None, paths=paths)
            for plural in CRDS
            for ns in scopes
            if (paths := crd_paths(plural, ns))
        ]
        self._objects: dict[ObjectKey, _Held] = {}
        self._policies: tuple[PolicyObject, ...] | None = None
        self._routes_changed = False
        self._notes: tuple[str, ...] = ()
        self._writer_notes: tuple[str, ...] = ()  # the route status writer's, shown below ours
        catalog.register(name, KIND)

    # --- what the status writer reads -----------------------------------------------

    def routes(self) -> list[dict[str, Any]]:
        """The current HTTPRoute and GRPCRoute objects, as the API server sent them."""
        return [h.raw for h in self._objects.values() if h.raw is not None]

    def policies(self) -> tuple[PolicyObject, ...]:
        """Every object's PolicyObject, in (kind, namespace, name) order."""
        if self._policies is None:  # built again only after a change
            self._policies = tuple(self._objects[k].policy for k in sorted(self._objects))
        return self._policies

    # --- the loops' hooks --------------------------------------------------------------

    async def _list(self, res: Resource) -> tuple[list[Any], str | None]:
        """The first version of `res` the cluster serves (NotFound when none is)."""
        crd = cast(CustomResource, res)
        # The version in use first: a relist costs no 404 on a v1beta1-only cluster.
        order = (crd.path, *(p for p in crd.paths if p != crd.path))
        for path in order:
            crd.path = path
            try:
                return await super()._list(crd)
            except NotFound:
                if path == order[-1]:
                    raise
        raise AssertionError("a custom resource without paths")

    async def _not_found(self, res: Resource, exc: NotFound, backoff: Backoff) -> bool:
        """The cluster does not serve this kind: no objects of it, a note; asked again
        every `recheck` seconds."""
        crd = cast(CustomResource, res)
        if not crd.absent:
            log.info(
                "%s: not served by the API server (%s); no objects of this kind, "
                "checking again every %gs", res.label, exc, self.recheck,
            )  # fmt: skip
        crd.absent = True
        crd.path = crd.paths[0]
        crd.rv = None
        self._rebuild(crd, [])
        crd.listed = True
        if crd.error is not None:
            crd.error = None
            if all(r.error is None for r in self.resources):
                self._recovered()
        self._update_notes()
        if self._synced or all(r.listed for r in self.resources):
            self._publish_all()
        await asyncio.sleep(self.recheck)
        return True

    def _rebuild(self, res: Resource, objs: list[dict[str, Any]]) -> None:
        fresh = {self._key(res, obj): obj for obj in objs}
        for key in [k for k in self._objects if k[0] == res.kind and res.owns(k[1:])]:
            if key not in fresh:
                self._set(key, None)
        for key, obj in fresh.items():
            self._set(key, obj)

    def _listed(self, res: Resource, items: list[Any], rv: str | None) -> None:
        crd = cast(CustomResource, res)
        if crd.absent:
            log.info("%s: served now (%s)", res.label, crd.path)
            crd.absent = False
            self._update_notes()
        super()._listed(res, items, rv)

    def _apply(self, res: Resource, kind: str, obj: dict[str, Any]) -> set[ObjectKey]:
        key = self._key(res, obj)
        return self._set(key, None if kind == "DELETED" else obj)

    def _publish_all(self) -> None:
        first = not self._synced
        self._synced = True
        # The catalog ignores an unchanged set (no push), and marks the source synced.
        self.catalog.replace_policies(self.name, self.policies())
        self._report_failing()
        if first:
            log.info("%s: synced: %d policy objects", self.name, len(self._objects))
        self._tell_routes(first)

    def _publish(self, keys: set[ObjectKey]) -> None:
        self.catalog.replace_policies(self.name, self.policies())
        self._tell_routes(False)

    def _recovered(self) -> None:
        if self._synced:  # republishing the same set marks the source synced again
            self.catalog.replace_policies(self.name, self.policies())

    # --- state -----------------------------------------------------------------------

    def _key(self, res: Resource, obj: dict[str, Any]) -> ObjectKey:
        kind = CRDS[res.kind][0]
        # Lists of custom resources carry each item's kind and apiVersion; fill them in
        # if a server leaves them out, as typed lists do.
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", res.path.split("/")[2] + "/" + res.path.split("/")[3])
        namespace, name = object_key(obj)
        return (res.kind, namespace, name)

    def _set(self, key: ObjectKey, obj: dict[str, Any] | None) -> set[ObjectKey]:
        old = self._objects.get(key)
        if obj is None:
            if old is None:
                return set()
            del self._objects[key]
            self._policies = None
            self._routes_changed |= old.raw is not None
            return {key}
        signature = _signature(obj)
        if old is not None and old.signature == signature:
            return set()
        route = key[0] in ROUTES
        policy = parse_object(obj, f"kubernetes:{key[1]}/{key[2]}")
        if old is not None and old.policy == policy:
            policy = old.policy  # the same value: the set compares equal at once
        self._objects[key] = _Held(signature, policy, obj if route else None)
        self._policies = None
        self._routes_changed |= route
        # A route's status writer wants every change; the catalog ignores an equal set.
        return {key} if route or old is None or old.policy != policy else set()

    def _tell_routes(self, first: bool) -> None:
        if (self._routes_changed or first) and self.on_routes is not None:
            self.on_routes(self.routes())
        self._routes_changed = False

    def _update_notes(self) -> None:
        absent = sorted({cast(CustomResource, r).kind for r in self.resources
                         if cast(CustomResource, r).absent})  # fmt: skip
        notes = tuple(
            f"{plural}.{CRDS[plural][1]} ({', '.join(CRDS[plural][2])}) is not served by the"
            f" cluster (no CRD): none used; checked again every {self.recheck:g}s"
            for plural in absent
        )
        if notes != self._notes:
            self._notes = notes
            self.catalog.set_notes(self.name, (*notes, *self._writer_notes))

    def set_writer_notes(self, notes: Sequence[str]) -> None:
        """What the route status writer reports (who writes status, routes it could not
        write), shown with this source in `xdsctl sources`."""
        self._writer_notes = tuple(notes)
        self.catalog.set_notes(self.name, (*self._notes, *self._writer_notes))
