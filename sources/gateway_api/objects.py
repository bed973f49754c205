"""One HTTPRoute or GRPCRoute → `ParsedRoute` (the shape of the Istio parser's `Parsed`,
plus the route's Service parents, backends and age for merging and status)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from sources.gateway_api.backends import Ref, parent_refs
from sources.gateway_api.constants import (
    API_VERSIONS,
    GRPC_ROUTE,
    KINDS,
    MAX_HOSTNAMES,
    MAX_RULE_MATCHES_TOTAL,
    MAX_RULES,
)
from sources.gateway_api.rules import RuleRefs, http_rule
from sources.gateway_api.values import capped
from sources.istio.objects import Parsed, is_object_of, object_header
from sources.istio.report import Context, Path, PolicyError
from sources.istio.values import fields, string
from xds_server.model import HttpRule, PolicyKey, RoutePolicy

_SPEC_FIELDS = ("parentRefs", "hostnames", "rules")
_HOSTNAME = re.compile(r"(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
HTTP_MAX_MATCHES = 64
GRPC_MAX_MATCHES = 64  # 8 before Gateway API v1.2


@dataclass(frozen=True)
class ParsedRoute(Parsed):
    """`policy` is the route for all its Service parents (hosts ``name.namespace``; the
    rules limited to the parentRefs' ports); `applies` is False when no parentRef names
    a Service (a route for Gateways: not ours).

    `rules` are the rules without port limits, `parents` the Service parentRefs and
    `backends` every backend named (backendRefs and mirrors), for `merge_attached` and
    `route_status`; `created` is metadata.creationTimestamp (RFC 3339, "" if unknown)."""

    rules: tuple[HttpRule, ...] = ()
    parents: tuple[Ref, ...] = ()
    backends: tuple[Ref, ...] = ()
    created: str = ""


def is_supported_kind(obj: Mapping[str, Any]) -> bool:
    """A gateway.networking.k8s.io/v1 HTTPRoute or GRPCRoute."""
    return is_object_of(obj, API_VERSIONS, KINDS)


def parse_route(obj: Mapping[str, Any], origin: str = "") -> ParsedRoute:
    """The model value of one HTTPRoute or GRPCRoute; raises PolicyError."""
    ctx = Context()
    top, kind, name = object_header(ctx, obj, API_VERSIONS, KINDS)
    meta = top.get("metadata", {})
    created = meta.get("creationTimestamp") or ""
    created = created if isinstance(created, str) else str(created)
    spec = fields(top.get("spec", {}), ("spec",), _SPEC_FIELDS)
    key = PolicyKey(kind, ctx.namespace, name)

    parents = parent_refs(spec.get("parentRefs"), ("spec", "parentRefs"), ctx.namespace)
    services = tuple(p for p in parents if p.is_service)
    raw_hostnames = capped(spec.get("hostnames", []), ("spec", "hostnames"), MAX_HOSTNAMES)
    hostnames = [hostname(h, ("spec", "hostnames", i)) for i, h in enumerate(raw_hostnames)]
    if hostnames and services:
        ctx.notice(("spec", "hostnames"), "not used by routes attached to a Service; ignored")
    grpc = kind == GRPC_ROUTE
    refs = RuleRefs([])
    raw_rules = capped(spec.get("rules", []), ("spec", "rules"), MAX_RULES)
    rule = partial(http_rule, ctx, refs=refs, grpc=grpc,
                   max_matches=GRPC_MAX_MATCHES if grpc else HTTP_MAX_MATCHES)  # fmt: skip
    rules = tuple(rule(raw, ("spec", "rules", i)) for i, raw in enumerate(raw_rules))
    for i, named in enumerate(rules):
        if named.name and any(r.name == named.name for r in rules[:i]):
            raise PolicyError(("spec", "rules", i, "name"), f"duplicate rule name {named.name!r}")
    if not rules:  # the CRD's default: one rule, matching everything, with no backend
        rules = (rule({}, ("spec", "rules", 0)),)
    total = sum(len(r.matches) for r in rules)
    if total > MAX_RULE_MATCHES_TOTAL:
        raise PolicyError(
            ("spec", "rules"),
            f"{total} matches across all rules; at most {MAX_RULE_MATCHES_TOTAL} are allowed",
        )
    hosts, ports = _attachment(services)
    callers = _callers(services, ctx.namespace)
    policy = RoutePolicy(
        key, hosts, tuple(on_ports(r, ports) for r in rules), origin=origin, callers=callers
    )
    applies = bool(services)
    if not applies:
        ctx.notice(
            ("spec", "parentRefs"),
            'no parentRef names a Service (group "", kind Service); routes attached to '
            "Gateways are not served by this server; not applied",
        )
    return ParsedRoute(
        policy, tuple(ctx.notices), applies, rules, services, tuple(refs.backends), created
    )


def hostname(value: object, path: Path) -> str:
    """A Hostname: a lowercase DNS name, optionally with a leading ``*.`` label."""
    text = string(value, path)
    if len(text) > 253 or not _HOSTNAME.fullmatch(text):
        raise PolicyError(path, f"invalid hostname {text!r} (a lowercase DNS name, '*.' allowed)")
    return text


def _attachment(services: tuple[Ref, ...]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The hosts (``name.namespace``) and the ports the rules are limited to (none: every
    port). One policy limits every host alike, so every Service parent must name the same
    ports (or none); a route that needs otherwise is split into one route per Service."""
    by_host: dict[str, set[int | None]] = {}
    for ref in services:
        by_host.setdefault(f"{ref.name}.{ref.namespace}", set()).add(ref.port)
    hosts = tuple(by_host)
    # A parentRef without a port attaches to every port: the others add nothing.
    port_sets = [
        frozenset() if None in ps else frozenset(p for p in ps if p is not None)
        for ps in by_host.values()
    ]
    if any(s != port_sets[0] for s in port_sets[1:]):
        first = services[0].path
        raise PolicyError(
            ("spec", "parentRefs"),
            f"Service parents name different ports (see {first[-1]}); this server needs the same "
            "ports (or none) on every Service parent of one route: split it into one route per "
            "Service",
        )
    return hosts, tuple(sorted(port_sets[0])) if port_sets else ()


def _callers(services: tuple[Ref, ...], namespace: str) -> str | None:
    """Producer route (every Service in the route's namespace): every caller. Consumer route
    (every Service elsewhere): the callers in the route's namespace. Mixed is refused."""
    foreign = [s.namespace != namespace for s in services]
    if not any(foreign):
        return None
    if not all(foreign):
        raise PolicyError(
            ("spec", "parentRefs"),
            "a route cannot be a producer route (Service in its namespace) and a consumer "
            "route (Service in another namespace) at once here: split it",
        )
    return namespace


def on_ports(rule: HttpRule, ports: tuple[int, ...]) -> HttpRule:
    """`rule` with every match alternative limited to each of `ports` (unchanged if none)."""
    if not ports:
        return rule
    matches = tuple(replace(m, port=port) for m in rule.matches for port in ports)
    return replace(rule, matches=matches)
