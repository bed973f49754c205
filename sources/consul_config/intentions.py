"""Consul `service-intentions` config entries → the security model's AuthorizationPolicies.

Pure: the entries `GET /v1/config/service-intentions` returns in, one `PolicyObject` per
entry out (kind ``service-intentions``, its `security` the compiled policy, or its error
``consul config entry service-intentions/<name>: <field>: <why>``).

Consul's semantics, kept:
- an entry's `Name` is the destination service (``*``: every service of its namespace
  without an entry of its own); each of its `Sources` is an intention from a service
  (`Name`, ``*`` any; `Namespace`, default the entry's), with an `Action` (allow/deny, L4)
  or `Permissions` (L7: the first permission whose `HTTP` match holds decides; none:
  the default);
- for a caller, only the intention of highest precedence that matches it counts (Consul's
  table: exact source over ``*`` source, exact destination over ``*``): lower ones
  exclude the sources of higher ones (`Source.not_principals`/`not_namespaces`), and an
  L7 permission excludes the earlier permissions of the other action (`AuthzRule.unless`);
- callers no intention matches get the default: allow, as Consul without ACLs (or with
  ACL default policy allow) does; `default_allow=False` is Consul's default-deny (ACL
  default policy deny). Default allow compiles to DENY policies, default deny to ALLOW
  policies (an ALLOW policy with no rule denies every caller).

Identity: the caller's SPIFFE ID is the one this server's CA issues to a sidecar of
service `S` in namespace `N`, ``spiffe://<td>/ns/N/sa/S`` (a source `Name` is the service
account); the rendered principal is ``*/ns/N/sa/S`` (any trust domain).

Refused (with the field): `Peer`, `SamenessGroup`, a `Partition` other than ``default``,
JWT requirements, a source with both or neither of `Action` and `Permissions`, a source
namespace ``*`` with a named source, duplicate sources, and a permission match with more
than one path field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sources.istio.checks import header_name, regex
from sources.istio.report import Context, Path, PolicyError
from sources.istio.values import boolean, each, items, nonempty, one_of, string, strings
from xds_server.model import (
    DEFAULT_NAMESPACE,
    AuthorizationPolicy,
    AuthzRule,
    HeaderCondition,
    Operation,
    PolicyKey,
    PolicyObject,
    Source,
    ValueMatch,
)

from .read import ENVELOPE, known

INTENTIONS_KIND = "service-intentions"
# Where the default-deny policy of a namespace without a "*" entry comes from.
DEFAULT_DENY_ORIGIN = "consul default intention (deny: ACL default policy)"
Action = Literal["allow", "deny"]
_SOURCE = ("Name", "Namespace", "Action", "Permissions", "Precedence", "Type", "Description",
           "Peer", "Partition", "SamenessGroup", "LegacyID", "LegacyMeta",
           "LegacyCreateTime", "LegacyUpdateTime")  # fmt: skip
_HTTP = ("PathExact", "PathPrefix", "PathRegex", "Methods", "Header")
_HEADER = ("Name", "Present", "Exact", "Prefix", "Suffix", "Regex", "Invert")


@dataclass(frozen=True, slots=True)
class Intention:
    """One source of an entry: who (`namespace`, `name`, ``*`` any), and the L4 `action`
    or the L7 `permissions` (action, HTTP match) in order."""

    namespace: str
    name: str
    action: Action | None
    permissions: tuple[tuple[Action, Operation], ...] = ()

    def precedence(self, exact_destination: bool) -> int:
        """Consul's precedence (9 highest) for a destination in the same namespace."""
        exact = 2 if self.name != "*" else 1 if self.namespace != "*" else 0
        return (7 if exact_destination else 4) + exact

    def source(self) -> Source:
        if self.name != "*":
            return Source(principals=(f"*/ns/{self.namespace}/sa/{self.name}",))
        if self.namespace != "*":
            return Source(namespaces=(self.namespace,))
        return Source()


@dataclass(frozen=True, slots=True)
class IntentionsEntry:
    key: PolicyKey  # the destination: key.name ("*": any service), key.namespace
    intentions: tuple[Intention, ...]


def _action(value: object, path: Path) -> Action:
    text = string(value, path)
    if text == "allow":
        return "allow"
    if text == "deny":
        return "deny"
    raise PolicyError(path, f"invalid action {text!r} (allow or deny)")


def _header(value: object, path: Path) -> HeaderCondition:
    obj = known(value, path, Context(), _HEADER)
    if "Name" not in obj:
        raise PolicyError((*path, "Name"), "required")
    name = header_name(obj["Name"], (*path, "Name"))
    which = one_of(obj, path, ("Present", "Exact", "Prefix", "Suffix", "Regex"))
    if which is None:
        raise PolicyError(path, "one of Present, Exact, Prefix, Suffix, Regex is required")
    if which == "Present":
        if not boolean(obj["Present"], (*path, "Present")):
            raise PolicyError((*path, "Present"), "must be true when set")
        match = ValueMatch("present")
    elif which == "Regex":
        match = ValueMatch("regex", regex(obj["Regex"], (*path, "Regex")))
    else:
        text = string(obj[which], (*path, which))
        match = (
            ValueMatch("exact", text) if which == "Exact"
            else ValueMatch("prefix", text) if which == "Prefix"
            else ValueMatch("suffix", text)
        )  # fmt: skip
    invert = boolean(obj.get("Invert", False), (*path, "Invert"))
    return (
        HeaderCondition(name, not_values=(match,))
        if invert
        else HeaderCondition(name, values=(match,))
    )


def _match(value: object, path: Path) -> Operation:
    obj = known(value, path, Context(), ("HTTP", "JWT"))
    if obj.get("JWT"):
        raise PolicyError((*path, "JWT"), "JWT requirements are not supported")
    if "HTTP" not in obj:
        raise PolicyError((*path, "HTTP"), "required")
    where = (*path, "HTTP")
    http = known(obj["HTTP"], where, Context(), _HTTP)
    which = one_of(http, where, ("PathExact", "PathPrefix", "PathRegex"))
    paths: tuple[ValueMatch, ...] = ()
    if which == "PathRegex":
        paths = (ValueMatch("regex", regex(http[which], (*where, which))),)
    elif which is not None:
        text = nonempty(http[which], (*where, which))
        if not text.startswith("/"):
            raise PolicyError((*where, which), f"must begin with '/' (got {text!r})")
        paths = (ValueMatch("exact" if which == "PathExact" else "prefix", text),)
    methods = tuple(strings(http.get("Methods", []), (*where, "Methods")))
    headers = tuple(each(http.get("Header", []), (*where, "Header"), _header))
    if not (paths or methods or headers):
        raise PolicyError(where, "at least one of a path, Methods or Header must be set")
    return Operation(methods=methods, paths=paths, headers=headers)


def _intention(value: object, path: Path, namespace: str) -> Intention:
    obj = known(value, path, Context(), _SOURCE)
    for name, why in (("Peer", "cluster peering"), ("SamenessGroup", "sameness groups")):
        if obj.get(name):
            raise PolicyError((*path, name), f"{why} is not supported")
    if obj.get("Partition", "default") not in ("", "default"):
        raise PolicyError((*path, "Partition"), "admin partitions are not supported")
    if "Name" not in obj:
        raise PolicyError((*path, "Name"), "required")
    name = nonempty(obj["Name"], (*path, "Name"))
    source_ns = obj.get("Namespace") or namespace
    if source_ns == "*" and name != "*":
        raise PolicyError((*path, "Namespace"), "a wildcard namespace needs a wildcard Name")
    if ("Action" in obj) == ("Permissions" in obj):
        raise PolicyError(path, "exactly one of Action and Permissions must be set")
    if "Action" in obj:
        return Intention(source_ns, name, _action(obj["Action"], (*path, "Action")))
    permissions = []
    where = (*path, "Permissions")
    for i, item in enumerate(items(obj["Permissions"], where)):
        perm = known(item, (*where, i), Context(), ("Action", "HTTP", "JWT"))
        if "Action" not in perm:
            raise PolicyError((*where, i, "Action"), "required")
        action = _action(perm["Action"], (*where, i, "Action"))
        permissions.append((action, _match(perm, (*where, i))))
    if not permissions:
        raise PolicyError(where, "must not be empty")
    return Intention(source_ns, name, None, tuple(permissions))


def parse_intentions(raw: object) -> IntentionsEntry:
    """One service-intentions entry; raises PolicyError."""
    obj = known(raw, (), Context(), (*ENVELOPE, "Sources", "JWT"))
    if obj.get("JWT"):
        raise PolicyError(("JWT",), "JWT requirements are not supported")
    name = nonempty(obj.get("Name"), ("Name",))
    namespace = obj.get("Namespace") or DEFAULT_NAMESPACE
    if obj.get("Partition", "default") not in ("", "default"):
        raise PolicyError(("Partition",), "admin partitions are not supported")
    seen: set[tuple[str, str]] = set()
    intentions = []
    for i, item in enumerate(items(obj.get("Sources", []), ("Sources",))):
        intention = _intention(item, ("Sources", i), namespace)
        if (intention.namespace, intention.name) in seen:
            raise PolicyError(("Sources", i, "Name"), f"source {intention.name!r} listed twice")
        seen.add((intention.namespace, intention.name))
        intentions.append(intention)
    return IntentionsEntry(PolicyKey(INTENTIONS_KIND, namespace, name), tuple(intentions))


def _covers(higher: Intention, lower: Intention) -> bool:
    """Whether some caller matched by `lower` is matched by `higher` (so `higher` decides)."""
    if lower.name != "*":
        return higher.name in ("*", lower.name) and higher.namespace in ("*", lower.namespace)
    return lower.namespace == "*" or higher.namespace in ("*", lower.namespace)


def _contains(higher: Intention, lower: Intention) -> bool:
    """Whether every caller `lower` matches is matched by `higher`."""
    if higher.name == "*":
        return higher.namespace in ("*", lower.namespace)
    return (higher.namespace, higher.name) == (lower.namespace, lower.name)


def _excluding(intention: Intention, higher: Iterable[Intention]) -> Source:
    base = intention.source()
    not_principals = tuple(f"*/ns/{h.namespace}/sa/{h.name}" for h in higher if h.name != "*")
    not_namespaces = tuple(h.namespace for h in higher if h.name == "*" and h.namespace != "*")
    return Source(
        principals=base.principals, namespaces=base.namespaces,
        not_principals=not_principals, not_namespaces=not_namespaces,
    )  # fmt: skip


def compile_policy(
    entry: IntentionsEntry,
    wildcard: IntentionsEntry | None,
    others: tuple[str, ...],
    default_allow: bool,
    origin: str,
) -> AuthorizationPolicy:
    """The policy of one destination: its intentions, then the ``*`` entry's (lower
    precedence). `others`: for the ``*`` entry, the services with an entry of their own."""
    exact = entry.key.name != "*"
    ranked = [(i.precedence(exact), i) for i in entry.intentions]
    if exact and wildcard is not None:
        ranked += [(i.precedence(False), i) for i in wildcard.intentions]
    ranked.sort(key=lambda pair: -pair[0])
    wanted: Action = "deny" if default_allow else "allow"
    rules: list[AuthzRule] = []
    for n, (rank, intention) in enumerate(ranked):
        higher = [h for r, h in ranked[:n] if r > rank and _covers(h, intention)]
        if any(_contains(h, intention) for h in higher):
            continue  # every caller it matches is decided by a higher one
        source = _excluding(intention, higher)
        if intention.action is not None:
            if intention.action == wanted:
                rules.append(AuthzRule(sources=(source,)))
            continue
        for k, (action, match) in enumerate(intention.permissions):
            if action != wanted:
                continue
            earlier = tuple(m for a, m in intention.permissions[:k] if a != action)
            rules.append(AuthzRule(sources=(source,), operations=(match,), unless=earlier))
    return AuthorizationPolicy(
        entry.key,
        "DENY" if default_allow else "ALLOW",
        tuple(rules),
        services=(entry.key.name,) if exact else None,
        not_services=() if exact else others,
        origin=origin,
    )


def compile_intentions(
    raw_entries: Iterable[object], default_allow: bool = True
) -> list[PolicyObject]:
    """One PolicyObject per entry (see the module docstring); with `default_allow` False,
    a namespace with no ``*`` entry gets one (deny every caller no intention allows)."""
    parsed: dict[PolicyKey, IntentionsEntry] = {}
    out: list[PolicyObject] = []
    for raw in raw_entries:
        key = _entry_key(raw)
        origin = f"consul config entry {INTENTIONS_KIND}/{key.name}"
        try:
            entry = parse_intentions(raw)
        except PolicyError as exc:
            out.append(PolicyObject(key, origin, error=f"{origin}: {exc}"))
            continue
        parsed[entry.key] = entry
    synthesized: set[PolicyKey] = set()
    if not default_allow:  # every namespace gets Consul's default deny, as a "*" entry
        for namespace in sorted({k.namespace for k in parsed} | {DEFAULT_NAMESPACE}):
            wildcard_key = PolicyKey(INTENTIONS_KIND, namespace, "*")
            if wildcard_key not in parsed:
                parsed[wildcard_key] = IntentionsEntry(wildcard_key, ())
                synthesized.add(wildcard_key)
    for key in sorted(parsed):
        wildcard = parsed.get(PolicyKey(INTENTIONS_KIND, key.namespace, "*"))
        others = tuple(
            sorted(k.name for k in parsed if k.namespace == key.namespace and k.name != "*")
        )
        origin = (
            DEFAULT_DENY_ORIGIN
            if key in synthesized
            else f"consul config entry {INTENTIONS_KIND}/{key.name}"
        )
        policy = compile_policy(parsed[key], wildcard, others, default_allow, origin)
        out.append(PolicyObject(key, origin, security=policy))
    return out


def _entry_key(raw: object) -> PolicyKey:
    obj: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    name, ns = obj.get("Name"), obj.get("Namespace")
    return PolicyKey(
        INTENTIONS_KIND,
        ns if isinstance(ns, str) and ns else DEFAULT_NAMESPACE,
        name if isinstance(name, str) and name else "?",
    )
