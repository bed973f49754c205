"""What the status writer writes, decided without I/O: every route's `status.parents[]`
entries of our controller (`desired_parents`, from `sources.gateway_api.route_status`
with the GRPCRoute-over-HTTPRoute conflicts of each Service), and the object's new
`status.parents` once they are merged into what is there (`merge_parents`).

The merge follows the Gateway API's rules for a list several controllers share: an
entry whose `controllerName` is another's is never touched, ours are replaced whole,
and a condition keeps its `lastTransitionTime` while its `status` is unchanged (as
`meta.SetStatusCondition` does, even if the reason or message changed).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sources.gateway_api import (
    CONTROLLER_NAME,
    ParsedRoute,
    any_namespace,
    kind_conflicts,
    parse_route,
    route_status,
)
from sources.gateway_api.status import Permitted, ServicePorts
from sources.istio.report import PolicyError
from xds_server.model import ServiceEntry, ServiceKey

RouteId = tuple[str, str, str]
"""(kind, namespace, name): `HTTPRoute` or `GRPCRoute`, as the route watch keys them."""

PLURALS = {"HTTPRoute": "httproutes", "GRPCRoute": "grpcroutes"}


def route_id(obj: Mapping[str, Any]) -> RouteId:
    meta = obj.get("metadata") or {}
    return (str(obj.get("kind")), str(meta.get("namespace") or "default"), str(meta.get("name")))


def keyed(
    routes: Mapping[RouteId, Mapping[str, Any]] | Iterable[Mapping[str, Any]],
) -> dict[RouteId, Mapping[str, Any]]:
    """Routes by id, from a mapping already keyed so or from the raw objects."""
    if isinstance(routes, Mapping):
        return dict(routes)
    return {route_id(obj): obj for obj in routes}


def service_ports(merged: Callable[[], Mapping[ServiceKey, ServiceEntry]]) -> ServicePorts:
    """`ServicePorts` over a live view of services (the catalog's `merged`), read at
    each call: a parent or backend is resolved as the policy engine resolves it."""

    def ports(namespace: str, name: str) -> frozenset[int] | None:
        entry = merged().get(ServiceKey(namespace, name))
        return frozenset(p.port for p in entry.service.ports) if entry is not None else None

    return ports


class ParseCache:
    """Parsed routes by id, parsed again only when the spec can have changed: a new
    `metadata.generation` (or, without one, a new resourceVersion). A status write
    bumps the resourceVersion, not the generation, so our own writes cause no parse."""

    def __init__(self) -> None:
        self._parsed: dict[RouteId, tuple[object, ParsedRoute | None, str]] = {}

    def get(self, rid: RouteId, obj: Mapping[str, Any]) -> tuple[ParsedRoute | None, str]:
        meta = obj.get("metadata") or {}
        stamp = (meta.get("uid"), meta.get("generation") or meta.get("resourceVersion"))
        cached = self._parsed.get(rid)
        if cached is not None and cached[0] == stamp and stamp != (None, None):
            return cached[1], cached[2]
        try:
            parsed, error = parse_route(obj, "kubernetes"), ""
        except PolicyError as exc:
            parsed, error = None, str(exc)
        self._parsed[rid] = (stamp, parsed, error)
        return parsed, error

    def keep_only(self, ids: Mapping[RouteId, object]) -> None:
        for rid in [r for r in self._parsed if r not in ids]:
            del self._parsed[rid]


def desired_parents(
    routes: Mapping[RouteId, Mapping[str, Any]],
    services: ServicePorts,
    *,
    cache: ParseCache | None = None,
    permitted: Permitted = any_namespace,
    controller: str = CONTROLLER_NAME,
) -> dict[RouteId, list[dict[str, Any]]]:
    """Our `status.parents[]` entries for every route, without lastTransitionTime."""
    cache = cache if cache is not None else ParseCache()
    parsed: dict[RouteId, tuple[ParsedRoute | None, str]] = {
        rid: cache.get(rid, obj) for rid, obj in routes.items()
    }
    cache.keep_only(routes)
    conflicts = _conflicts([p for p, _ in parsed.values() if p is not None], services)
    return {
        rid: route_status(
            obj, parsed[rid][0], parsed[rid][1], services, permitted, conflicts.get(rid), controller
        )
        for rid, obj in routes.items()
    }


def _conflicts(
    parsed: Sequence[ParsedRoute], services: ServicePorts
) -> dict[RouteId, dict[tuple[str, str], str]]:
    """route → {(Service namespace, name): why it lost that Service to a GRPCRoute}."""
    by_service: dict[tuple[str, str], list[ParsedRoute]] = defaultdict(list)
    for route in parsed:
        for parent in route.parents:
            by_service[(parent.namespace, parent.name)].append(route)
    out: dict[RouteId, dict[tuple[str, str], str]] = defaultdict(dict)
    for (namespace, name), attached in by_service.items():
        kinds = {r.policy.key.kind for r in attached}
        if len(kinds) < 2:
            continue  # a conflict needs both kinds on one Service
        ports = sorted(services(namespace, name) or ())
        for key, why in kind_conflicts(name, namespace, attached, ports).items():
            out[(key.kind, key.namespace, key.name)][(namespace, name)] = why
    return out


def ours(obj: Mapping[str, Any], controller: str = CONTROLLER_NAME) -> list[Mapping[str, Any]]:
    return [e for e in _parents(obj) if e.get("controllerName") == controller]


def _parents(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = obj.get("status")
    parents = status.get("parents") if isinstance(status, Mapping) else None
    return [e for e in parents if isinstance(e, Mapping)] if isinstance(parents, list) else []


def _ref_key(ref: Any) -> tuple[Any, ...]:
    ref = ref if isinstance(ref, Mapping) else {}
    return tuple(ref.get(k) for k in ("group", "kind", "namespace", "name", "port", "sectionName"))


def merge_parents(
    obj: Mapping[str, Any],
    desired: Sequence[Mapping[str, Any]],
    now: datetime,
    controller: str = CONTROLLER_NAME,
) -> list[dict[str, Any]] | None:
    """The object's new `status.parents`: the other controllers' entries as they are,
    then ours as `desired`, stamped; None when ours are already exactly that."""
    old = {_ref_key(e.get("parentRef")): e for e in ours(obj, controller)}
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # metav1.Time: seconds
    stamped = [_stamped(e, old.get(_ref_key(e.get("parentRef"))), stamp) for e in desired]
    if stamped == ours(obj, controller):
        return None
    others = [dict(e) for e in _parents(obj) if e.get("controllerName") != controller]
    return others + stamped


def _stamped(entry: Mapping[str, Any], old: Mapping[str, Any] | None, stamp: str) -> dict[str, Any]:
    before: dict[Any, Mapping[str, Any]] = {}
    if old is not None and isinstance(old.get("conditions"), list):
        before = {c.get("type"): c for c in old["conditions"] if isinstance(c, Mapping)}
    conditions = []
    for condition in entry.get("conditions") or []:
        prior = before.get(condition.get("type"))
        kept = prior.get("lastTransitionTime") if prior is not None else None
        unchanged = prior is not None and prior.get("status") == condition.get("status")
        at = kept if unchanged and kept else stamp
        conditions.append({**condition, "lastTransitionTime": at})
    return {**entry, "conditions": conditions}
