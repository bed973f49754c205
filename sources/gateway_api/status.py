"""`status.parents[]` of an HTTPRoute or GRPCRoute, for the Service parents this server
serves (a Gateway parent is another controller's to report): `Accepted` and
`ResolvedRefs` with the Gateway API's reasons. Pure: what exists is asked of callables.
`lastTransitionTime` is left to the writer, which keeps it while a condition is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sources.gateway_api.backends import Ref, parent_refs
from sources.gateway_api.constants import (
    ACCEPTED,
    CONTROLLER_NAME,
    REASON_ACCEPTED,
    REASON_BACKEND_NOT_FOUND,
    REASON_CONFLICTED,
    REASON_INVALID_KIND,
    REASON_NO_MATCHING_PARENT,
    REASON_REF_NOT_PERMITTED,
    REASON_RESOLVED,
    REASON_UNSUPPORTED_VALUE,
    RESOLVED_REFS,
)
from sources.gateway_api.objects import ParsedRoute
from sources.istio.report import PolicyError

ServicePorts = Callable[[str, str], frozenset[int] | None]
"""(namespace, name) → the Service's port numbers, or None if there is no such Service."""
Permitted = Callable[[str, Ref], bool]
"""(route namespace, backend) → whether a ReferenceGrant allows the cross-namespace ref."""


def any_namespace(route_namespace: str, ref: Ref) -> bool:
    """GEP-1426: mesh routes reach backends in any namespace without a ReferenceGrant
    (they augment Services the caller can already reach)."""
    return True


def route_status(
    obj: Mapping[str, Any],
    parsed: ParsedRoute | None,
    error: str,
    services: ServicePorts,
    permitted: Permitted = any_namespace,
    conflicts: Mapping[tuple[str, str], str] | None = None,
    controller: str = CONTROLLER_NAME,
) -> list[dict[str, Any]]:
    """One entry per Service parentRef: for a rejected route (`error`), Accepted False
    UnsupportedValue; otherwise Accepted (NoMatchingParent when the Service or its port
    does not exist, Conflicted when `conflicts` has a message for the parent's
    (namespace, name), from `kind_conflicts`) and ResolvedRefs (the first backend that
    is of another kind than Service, not `permitted`, or missing)."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    namespace = str(meta.get("namespace") or "default")
    generation = meta.get("generation")
    parents = list(parsed.parents) if parsed is not None else _lenient_parents(obj, namespace)
    out = []
    for parent in parents:
        lost = (conflicts or {}).get((parent.namespace, parent.name))
        if lost and not error:
            conditions = [_condition(ACCEPTED, False, REASON_CONFLICTED, lost)]
        else:
            conditions = [_accepted(parent, error, services)]
        if parsed is not None and not error:
            conditions.append(_resolved(parsed, namespace, services, permitted))
        if isinstance(generation, int):
            for condition in conditions:
                condition["observedGeneration"] = generation
        out.append(
            {"parentRef": _echo(parent), "controllerName": controller, "conditions": conditions}
        )
    return out


def _accepted(parent: Ref, error: str, services: ServicePorts) -> dict[str, Any]:
    if error:
        return _condition(ACCEPTED, False, REASON_UNSUPPORTED_VALUE, error)
    ports = services(parent.namespace, parent.name)
    if ports is None:
        message = f"Service {parent.namespace}/{parent.name} not found"
        return _condition(ACCEPTED, False, REASON_NO_MATCHING_PARENT, message)
    if parent.port is not None and parent.port not in ports:
        message = f"Service {parent.namespace}/{parent.name} has no port {parent.port}"
        return _condition(ACCEPTED, False, REASON_NO_MATCHING_PARENT, message)
    return _condition(ACCEPTED, True, REASON_ACCEPTED, "Route was valid")


def _resolved(
    parsed: ParsedRoute, namespace: str, services: ServicePorts, permitted: Permitted
) -> dict[str, Any]:
    for ref in parsed.backends:
        where = f"backend {ref.namespace}/{ref.name}"
        if not ref.is_service:
            message = f"{where}: kind {ref.group or 'core'}/{ref.kind} is not supported"
            return _condition(RESOLVED_REFS, False, REASON_INVALID_KIND, message)
        if ref.namespace != namespace and not permitted(namespace, ref):
            message = f"{where}: not permitted by any ReferenceGrant"
            return _condition(RESOLVED_REFS, False, REASON_REF_NOT_PERMITTED, message)
        ports = services(ref.namespace, ref.name)
        if ports is None:
            return _condition(RESOLVED_REFS, False, REASON_BACKEND_NOT_FOUND, f"{where} not found")
        if ref.port is not None and ref.port not in ports:
            message = f"{where} has no port {ref.port}"
            return _condition(RESOLVED_REFS, False, REASON_BACKEND_NOT_FOUND, message)
    return _condition(RESOLVED_REFS, True, REASON_RESOLVED, "Resolved all the Object references")


def _condition(kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}


def _echo(parent: Ref) -> dict[str, Any]:
    ref: dict[str, Any] = {"group": parent.group, "kind": parent.kind, "name": parent.name,
                           "namespace": parent.namespace}  # fmt: skip
    if parent.port is not None:
        ref["port"] = parent.port
    if parent.section:
        ref["sectionName"] = parent.section
    return ref


def _lenient_parents(obj: Mapping[str, Any], namespace: str) -> list[Ref]:
    """The Service parentRefs of a route that was rejected, if they can be read at all."""
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return []
    try:
        return [p for p in parent_refs(spec.get("parentRefs"), (), namespace) if p.is_service]
    except PolicyError:
        return []
