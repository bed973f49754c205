"""Istio `security.istio.io` AuthorizationPolicy spec → `model.AuthorizationPolicy`.

Checked as Istio's webhook checks it, and refused (a `PolicyError` naming the field) for
what this server cannot enforce, so that an accepted policy means what it says:
- `action` ALLOW (the default) or DENY; AUDIT and CUSTOM (and `provider`) are refused:
  no audit logger or external authorizer is configured;
- `targetRef`/`targetRefs` (waypoints, gateways) are refused: policies select workloads by
  `selector.matchLabels`;
- `from.source`: principals, namespaces, ipBlocks, serviceAccounts and their `not` forms;
  requestPrincipals (JWT: no RequestAuthentication) and remoteIpBlocks (the original
  client address behind proxies) are refused;
- `to.operation`: hosts, ports, methods, paths and their `not` forms; path templates
  (``{*}``) are refused;
- `when`: ``request.headers[<name>]``, ``source.ip``, ``source.namespace``,
  ``source.principal``, ``destination.port``; other keys are refused.
Strings take Istio's forms: exact, ``prefix*``, ``*suffix``, ``*`` (present).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sources.istio.checks import TOKEN, label_map
from sources.istio.report import Context, Path, PolicyError
from sources.istio.values import fields, items, port_number, string, strings
from xds_server.model import (
    AuthorizationPolicy,
    AuthzAction,
    AuthzRule,
    Condition,
    ConditionKey,
    Operation,
    PolicyKey,
    Source,
    ValueMatch,
)

T = TypeVar("T")
_SPEC = ("selector", "targetRef", "targetRefs", "rules", "action", "provider")
_RULE = ("from", "to", "when")
_SOURCE = (
    "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals",
    "namespaces", "notNamespaces", "ipBlocks", "notIpBlocks", "remoteIpBlocks",
    "notRemoteIpBlocks", "serviceAccounts", "notServiceAccounts",
)  # fmt: skip
_OPERATION = (
    "hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths"
)  # fmt: skip
_WHEN = ("key", "values", "notValues")
_REFUSED_SOURCE = {
    "requestPrincipals": "JWT request principals need RequestAuthentication, not supported",
    "notRequestPrincipals": "JWT request principals need RequestAuthentication, not supported",
    "remoteIpBlocks": "the original client address (X-Forwarded-For) is not trusted here; "
    "use ipBlocks",
    "notRemoteIpBlocks": "the original client address (X-Forwarded-For) is not trusted here; "
    "use notIpBlocks",
}
_HEADER_KEY = re.compile(r"request\.headers\[([^\]]+)\]")
_WHEN_KEYS: dict[str, ConditionKey] = {
    k: k for k in ("source.ip", "source.namespace", "source.principal", "destination.port")
}
_SERVICE_ACCOUNT = re.compile(
    r"(?:([a-z0-9]([-a-z0-9]*[a-z0-9])?)/)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
)


def authorization_policy(
    ctx: Context, spec: object, path: Path, key: PolicyKey, origin: str
) -> AuthorizationPolicy:
    obj = fields(spec, path, _SPEC)
    for name in ("targetRef", "targetRefs"):
        if obj.get(name):
            raise PolicyError(
                (*path, name),
                "not supported: this server selects workloads with selector.matchLabels",
            )
    action = obj.get("action", "ALLOW")
    if action in ("AUDIT", "CUSTOM"):
        why = "no audit logger" if action == "AUDIT" else "no external authorizer (provider)"
        raise PolicyError(
            (*path, "action"), f"action {action} is not supported: {why} is configured"
        )
    if action not in ("ALLOW", "DENY"):
        raise PolicyError((*path, "action"), f"unknown action {action!r} (ALLOW or DENY)")
    if obj.get("provider"):
        raise PolicyError((*path, "provider"), "only valid with action CUSTOM, not supported")
    rules = tuple(
        _rule(item, (*path, "rules", i), ctx.namespace)
        for i, item in enumerate(items(obj.get("rules", []), (*path, "rules")))
    )
    return AuthorizationPolicy(key, _action(action), rules, selector(obj, path), origin)


def _action(text: str) -> AuthzAction:
    return "DENY" if text == "DENY" else "ALLOW"


def selector(obj: Mapping[str, Any], path: Path) -> tuple[tuple[str, str], ...] | None:
    """`selector.matchLabels` (None when unset or empty: every workload)."""
    if "selector" not in obj:
        return None
    sel = fields(obj["selector"], (*path, "selector"), ("matchLabels",))
    labels = label_map(sel.get("matchLabels", {}), (*path, "selector", "matchLabels"))
    return labels or None


def _rule(value: object, path: Path, namespace: str) -> AuthzRule:
    obj = fields(value, path, _RULE)
    sources = _wrapped(obj, "from", "source", path, lambda v, p: _source(v, p, namespace))
    operations = _wrapped(obj, "to", "operation", path, _operation)
    conditions = tuple(
        _condition(item, (*path, "when", i))
        for i, item in enumerate(items(obj.get("when", []), (*path, "when")))
    )
    return AuthzRule(tuple(sources), tuple(operations), conditions)


def _wrapped(
    obj: Mapping[str, Any], name: str, inner: str, path: Path, parse: Callable[[Any, Path], T]
) -> list[T]:
    """`from: [{source: ...}]` and `to: [{operation: ...}]`: each item's one field parsed."""
    out = []
    for i, item in enumerate(items(obj.get(name, []), (*path, name))):
        where = (*path, name, i)
        holder = fields(item, where, (inner,))
        if inner not in holder:
            raise PolicyError((*where, inner), "required")
        out.append(parse(holder[inner], (*where, inner)))
    return out


def _list(
    obj: Mapping[str, Any], name: str, path: Path, check: Callable[[str, Path], str]
) -> tuple[str, ...]:
    if name not in obj:
        return ()
    where = (*path, name)
    values = strings(obj[name], where)
    if not values:
        raise PolicyError(where, "must not be empty when set")
    return tuple(check(v, (*where, i)) for i, v in enumerate(values))


def istio_string(text: str, path: Path) -> str:
    """A string in Istio's forms: a `*` only as its first or last character."""
    if not text:
        raise PolicyError(path, "must not be empty")
    if "*" in text[1:-1] or text == "**":
        raise PolicyError(path, f"invalid value {text!r}: '*' only as a prefix or suffix wildcard")
    return text


def _ip_block(text: str, path: Path) -> str:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise PolicyError(path, f"invalid IP address or CIDR {text!r}") from None
    return text


def _service_account(text: str, path: Path, namespace: str) -> str:
    """``ns/sa`` or ``sa`` (the policy's namespace) → the principal it names."""
    if not _SERVICE_ACCOUNT.fullmatch(text):
        raise PolicyError(path, f"invalid service account {text!r} (<namespace>/<name> or <name>)")
    ns, _, name = text.rpartition("/")
    return f"*/ns/{ns or namespace}/sa/{name}"


def _source(value: object, path: Path, namespace: str) -> Source:
    obj = fields(value, path, _SOURCE)
    for name, why in _REFUSED_SOURCE.items():
        if name in obj:
            raise PolicyError((*path, name), why)
    if not obj:
        raise PolicyError(path, "at least one field must be set")

    def account(text: str, where: Path) -> str:
        return _service_account(text, where, namespace)

    return Source(
        principals=(
            *_list(obj, "principals", path, istio_string),
            *_list(obj, "serviceAccounts", path, account),
        ),
        not_principals=(
            *_list(obj, "notPrincipals", path, istio_string),
            *_list(obj, "notServiceAccounts", path, account),
        ),
        namespaces=_list(obj, "namespaces", path, istio_string),
        not_namespaces=_list(obj, "notNamespaces", path, istio_string),
        ip_blocks=_list(obj, "ipBlocks", path, _ip_block),
        not_ip_blocks=_list(obj, "notIpBlocks", path, _ip_block),
    )


def _port(text: str, path: Path) -> str:
    if not text.isdigit():
        raise PolicyError(path, f"invalid port {text!r} (a number 1-65535)")
    port_number(int(text), path)
    return text


def _method(text: str, path: Path) -> str:
    if not TOKEN.fullmatch(text):
        raise PolicyError(path, f"invalid HTTP method {text!r}")
    return text


def _path(text: str, path: Path) -> str:
    if "{" in text or "}" in text:
        raise PolicyError(path, f"path templates are not supported ({text!r})")
    return istio_string(text, path)


def _operation(value: object, path: Path) -> Operation:
    obj = fields(value, path, _OPERATION)
    if not obj:
        raise PolicyError(path, "at least one field must be set")

    def matches(name: str, check: Callable[[str, Path], str]) -> tuple[ValueMatch, ...]:
        return tuple(ValueMatch.istio(v) for v in _list(obj, name, path, check))

    return Operation(
        hosts=matches("hosts", istio_string),
        not_hosts=matches("notHosts", istio_string),
        ports=tuple(int(p) for p in _list(obj, "ports", path, _port)),
        not_ports=tuple(int(p) for p in _list(obj, "notPorts", path, _port)),
        methods=_list(obj, "methods", path, _method),
        not_methods=_list(obj, "notMethods", path, _method),
        paths=matches("paths", _path),
        not_paths=matches("notPaths", _path),
    )


def _condition(value: object, path: Path) -> Condition:
    obj = fields(value, path, _WHEN)
    if "key" not in obj:
        raise PolicyError((*path, "key"), "required")
    key = string(obj["key"], (*path, "key"))
    header = _HEADER_KEY.fullmatch(key)
    if header is None and key not in _WHEN_KEYS:
        raise PolicyError(
            (*path, "key"),
            f"condition key {key!r} is not supported (request.headers[<name>], "
            f"{', '.join(_WHEN_KEYS)})",
        )
    values = tuple(strings(obj.get("values", []), (*path, "values")))
    not_values = tuple(strings(obj.get("notValues", []), (*path, "notValues")))
    if not values and not not_values:
        raise PolicyError(path, "one of values or notValues must be set")
    check: Callable[[str, Path], str] = istio_string
    if key == "source.ip":
        check = _ip_block
    elif key == "destination.port":
        check = _port
    for name, listed in (("values", values), ("notValues", not_values)):
        for i, v in enumerate(listed):
            check(v, (*path, name, i))
    if header is not None:
        name = header[1]
        if not TOKEN.fullmatch(name):
            raise PolicyError((*path, "key"), f"invalid header name {name!r}")
        return Condition("request.headers", values, not_values, header=name.lower())
    return Condition(_WHEN_KEYS[key], values, not_values)
