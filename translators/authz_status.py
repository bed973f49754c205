"""Security policy objects (AuthorizationPolicy, PeerAuthentication, Consul
service-intentions) → the policies in force and each object's state. Pure.

- `resolve_security(objects, accepted_before)`: what is in force (a valid object's
  current version; a refused object's last valid version, as for traffic policy: bad
  input keeps the last good state; a never-valid one is not in force, as Istio's webhook
  would have refused it), each object's `PolicyStatus`, and the versions to pass back
  next time (the caller keeps them, like `Resolution.accepted`).
- `security_status(obj)`: one object's state without that memory (what
  `policy_resolve` lists in `xdsctl policies`).

An accepted object is ACCEPTED: the controller enforces what is in force on sidecars'
inbound listeners and proxyless gRPC servers' listeners (xds_server.security_policy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from xds_server.model import SECURITY_KINDS, PolicyKey, PolicyObject, SecurityPolicy

from .policy_resolution import PolicyStatus


@dataclass(frozen=True, slots=True)
class SecurityResolution:
    policies: tuple[SecurityPolicy, ...] = ()  # in force, by key
    statuses: tuple[PolicyStatus, ...] = ()
    accepted: dict[PolicyKey, SecurityPolicy] = field(default_factory=dict)


def security_status(obj: PolicyObject, fallback: SecurityPolicy | None = None) -> PolicyStatus:
    """The status of one security object (`obj.security` set, or `obj.error`); `fallback`:
    its last valid version, served while it is refused."""
    if obj.security is not None and not obj.error:
        if obj.notices:
            return PolicyStatus(obj.key, obj.origin, "WARNING", tuple(obj.notices))
        return PolicyStatus(obj.key, obj.origin, "ACCEPTED", ())
    reasons = [obj.error or "rejected"]
    if fallback is not None:
        reasons.append(f"serving its last valid version ({fallback.origin or obj.origin})")
    return PolicyStatus(obj.key, obj.origin, "REJECTED", tuple(reasons))


def resolve_security(
    objects: Sequence[PolicyObject], accepted_before: Mapping[PolicyKey, SecurityPolicy]
) -> SecurityResolution:
    """See the module docstring; objects of other kinds are left out."""
    policies: list[SecurityPolicy] = []
    statuses: list[PolicyStatus] = []
    accepted: dict[PolicyKey, SecurityPolicy] = {}
    for obj in sorted(objects, key=lambda o: o.key):
        if obj.key.kind not in SECURITY_KINDS:
            continue
        current = obj.security if not obj.error else None
        in_force = current if current is not None else accepted_before.get(obj.key)
        if in_force is not None:
            policies.append(in_force)
            accepted[obj.key] = in_force
        statuses.append(security_status(obj, None if current is not None else in_force))
    return SecurityResolution(tuple(policies), tuple(statuses), accepted)
