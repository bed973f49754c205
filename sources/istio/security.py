"""One `security.istio.io` object (AuthorizationPolicy or PeerAuthentication, v1 or
v1beta1) → `ParsedSecurity`: header checked as for the networking kinds, the spec handed
to `authorization` or `peer_authentication`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sources.istio.authorization import authorization_policy
from sources.istio.objects import is_object_of, object_header
from sources.istio.peer_authentication import peer_authentication
from sources.istio.report import Context, Notice, PolicyError
from xds_server.model import PolicyKey, SecurityPolicy

SECURITY_GROUP = "security.istio.io"
SECURITY_VERSIONS = frozenset(f"{SECURITY_GROUP}/{v}" for v in ("v1", "v1beta1"))
SECURITY_KINDS = ("AuthorizationPolicy", "PeerAuthentication")


@dataclass(frozen=True)
class ParsedSecurity:
    policy: SecurityPolicy
    notices: tuple[Notice, ...] = ()


def is_security_kind(obj: Mapping[str, Any]) -> bool:
    """A security.istio.io AuthorizationPolicy or PeerAuthentication (v1, v1beta1)."""
    return is_object_of(obj, SECURITY_VERSIONS, SECURITY_KINDS)


def parse_security(obj: Mapping[str, Any], origin: str = "") -> ParsedSecurity:
    """The model value of one AuthorizationPolicy or PeerAuthentication; PolicyError."""
    ctx = Context()
    top, kind, name = object_header(ctx, obj, SECURITY_VERSIONS, SECURITY_KINDS)
    spec = top.get("spec", {})  # an empty spec is valid: ALLOW nothing / inherit
    key = PolicyKey(kind, ctx.namespace, name)
    parse = authorization_policy if kind == "AuthorizationPolicy" else peer_authentication
    policy: SecurityPolicy = parse(ctx, spec, ("spec",), key, origin)
    return ParsedSecurity(policy, tuple(ctx.notices))


__all__ = [
    "SECURITY_GROUP",
    "SECURITY_KINDS",
    "SECURITY_VERSIONS",
    "ParsedSecurity",
    "PolicyError",
    "is_security_kind",
    "parse_security",
]
