"""How a security policy object (AuthorizationPolicy, PeerAuthentication, Consul
service-intentions) stands in `xdsctl policies`: REJECTED with its reason, or a warning
saying where it is enforced. Pure; called by `policy_resolve` for the security kinds."""

from __future__ import annotations

from xds_server.model import PolicyObject

from .policy_resolution import PolicyStatus

# Security policy is enforced by a workload's inbound listener (RBAC and mTLS): until a
# proxy this server configures has one, an accepted object is in force nowhere.
NOT_ENFORCED = "enforced on sidecar inbound listeners; no proxy has one yet"


def security_status(obj: PolicyObject) -> PolicyStatus:
    """The status of one security object (`obj.security` set, or `obj.error`)."""
    if obj.error or obj.security is None:
        return PolicyStatus(obj.key, obj.origin, "REJECTED", (obj.error or "rejected",))
    return PolicyStatus(obj.key, obj.origin, "WARNING", (*obj.notices, NOT_ENFORCED))
