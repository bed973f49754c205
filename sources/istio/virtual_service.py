"""A VirtualService spec → RoutePolicy: its hosts and gateways, HTTP rules and TCP rules."""

from __future__ import annotations

from functools import partial

from sources.istio.checks import host_name
from sources.istio.constants import MESH_GATEWAY
from sources.istio.destinations import (
    header_ops,
    http_destinations,
    mirrors,
    route_destinations,
    weighted,
)
from sources.istio.http_actions import (
    cors_policy,
    direct_response,
    fault_injection,
    http_redirect,
    http_retry,
    http_rewrite,
)
from sources.istio.matches import dropped_alternative, http_match
from sources.istio.report import Context, Path, PolicyError
from sources.istio.values import (
    each,
    fields,
    items,
    off_or_duration,
    optional,
    port_number,
    string,
    strings,
)
from xds_server.model import (
    HttpRule,
    PolicyKey,
    RequestMatch,
    Rewrite,
    RoutePolicy,
    TcpRule,
    WeightedDestination,
)

_VS_FIELDS = ("hosts", "gateways", "http", "tls", "tcp", "exportTo")
_HTTP_FIELDS = (
    "name",
    "match",
    "route",
    "redirect",
    "directResponse",
    "delegate",
    "rewrite",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "mirrors",
    "mirrorPercent",
    "mirror_percent",
    "mirrorPercentage",
    "corsPolicy",
    "headers",
)
_TCP_FIELDS = ("match", "route")
_L4_MATCH_FIELDS = (
    "destinationSubnets",
    "port",
    "sourceSubnet",
    "sourceLabels",
    "gateways",
    "sourceNamespace",
)


def virtual_service(
    ctx: Context, value: object, path: Path, key: PolicyKey, origin: str
) -> tuple[RoutePolicy, bool]:
    spec = fields(value, path, _VS_FIELDS)
    hosts = each(spec.get("hosts", []), (*path, "hosts"), host_name)
    if not hosts:
        raise PolicyError((*path, "hosts"), "at least one host is required")
    for i, host in enumerate(hosts):
        if host in hosts[:i]:
            raise PolicyError((*path, "hosts", i), f"duplicate host {host!r}")
    gateways = strings(spec.get("gateways", []), (*path, "gateways"))
    ctx.ignore(spec, path, ("exportTo",))
    if not any(spec.get(k) for k in ("http", "tcp", "tls")):
        raise PolicyError(path, "at least one of http, tcp, tls is required")
    outer, ctx.notices = ctx.notices, []  # rule notices matter only if the VS applies
    http = tuple(each(spec.get("http", []), (*path, "http"), partial(http_rule, ctx)))
    tcp = tuple(
        rule
        for rules in each(spec.get("tcp", []), (*path, "tcp"), partial(tcp_rules, ctx))
        for rule in rules
    )
    ctx.ignore(spec, path, ("tls",))
    rule_notices, ctx.notices = ctx.notices, outer
    applies = not gateways or MESH_GATEWAY in gateways
    if not applies:
        ctx.notice(
            (*path, "gateways"),
            f"applies only to gateways {', '.join(gateways)}; not applied to the mesh "
            f'(add "{MESH_GATEWAY}" to apply it to sidecars and gRPC clients)',
        )
        http, tcp = (), ()
    else:
        ctx.notices += rule_notices
        if not http and not tcp:  # every rule was dropped, or there were only TLS rules
            ctx.notice(path, "no rule is left to apply; not applied")
            applies = False
    return RoutePolicy(key, tuple(hosts), http, tcp, origin), applies


def http_rule(ctx: Context, value: object, path: Path) -> HttpRule | None:
    rule = fields(value, path, _HTTP_FIELDS)
    name = string(rule.get("name", ""), (*path, "name"))
    actions = [
        a for a in ("route", "redirect", "directResponse", "delegate") if rule.get(a, []) != []
    ]
    if not actions:
        raise PolicyError(path, "one of route, redirect, directResponse is required")
    if len(actions) > 1:
        raise PolicyError(
            path,
            f"only one of route, redirect, directResponse may be set (got {' and '.join(actions)})",
        )
    if "delegate" in rule:
        fields(rule["delegate"], (*path, "delegate"), ("name", "namespace"))
        ctx.notice((*path, "delegate"), "delegation is not supported; rule dropped")
        return None
    matches: list[RequestMatch] = []
    raw_matches = items(rule.get("match", []), (*path, "match"))
    for i, raw in enumerate(raw_matches):
        match = http_match(ctx, raw, (*path, "match", i))
        if match is not None:
            matches.append(match)
    if raw_matches and not matches:
        ctx.notice(path, "every match alternative was dropped; rule dropped")
        return None

    forwards = "route" in rule
    if "redirect" in rule:
        for field in ("fault", "rewrite"):
            if field in rule:
                raise PolicyError((*path, field), "cannot be combined with redirect")
    if "directResponse" in rule and "rewrite" in rule:
        raise PolicyError((*path, "rewrite"), "cannot be combined with directResponse")
    if not forwards:
        for field in ("timeout", "retries", "mirror", "mirrors"):
            if field in rule:
                ctx.notice((*path, field), "has no effect without route; ignored")

    headers, authority = header_ops(rule.get("headers"), (*path, "headers"))
    rewrite = http_rewrite(rule.get("rewrite"), (*path, "rewrite"))
    destinations: tuple[WeightedDestination, ...] = ()
    if forwards:
        destinations, dest_authority = http_destinations(ctx, rule["route"], (*path, "route"))
        if authority is None:
            authority = dest_authority  # as Istio: the rule's own setting wins
    if authority is not None:
        if rewrite is not None and rewrite.authority is not None:
            raise PolicyError(
                (*path, "headers", "request"),
                "the authority is also set by rewrite.authority; set it in one place",
            )
        rewrite = Rewrite(rewrite.uri if rewrite else None, authority)
    return HttpRule(
        name=name,
        matches=tuple(matches),
        destinations=destinations,
        redirect=optional(rule, "redirect", path, http_redirect),
        direct_response=optional(rule, "directResponse", path, direct_response),
        timeout=optional(rule, "timeout", path, off_or_duration) if forwards else None,
        retry=optional(rule, "retries", path, partial(http_retry, ctx)) if forwards else None,
        fault=optional(rule, "fault", path, partial(fault_injection, ctx)),
        mirrors=mirrors(ctx, rule, path) if forwards else (),
        rewrite=rewrite,
        cors=optional(rule, "corsPolicy", path, partial(cors_policy, ctx)),
        headers=headers,
    )


def tcp_rules(ctx: Context, value: object, path: Path) -> list[TcpRule]:
    """One TcpRule per kept match alternative (or one matching every port)."""
    rule = fields(value, path, _TCP_FIELDS)
    if not rule.get("route"):
        raise PolicyError((*path, "route"), "at least one destination is required")
    entries = route_destinations(ctx, rule["route"], (*path, "route"), ("destination", "weight"))
    destinations = tuple(
        WeightedDestination(dest, weight) for _, dest, weight, _ in weighted(entries)
    )
    raw_matches = items(rule.get("match", []), (*path, "match"))
    if not raw_matches:
        return [TcpRule(destinations)]
    ports: list[int | None] = []
    for i, raw in enumerate(raw_matches):
        where = (*path, "match", i)
        match = fields(raw, where, _L4_MATCH_FIELDS)
        if dropped_alternative(ctx, match, where):
            continue
        ports.append(port_number(match["port"], (*where, "port")) if match.get("port") else None)
    if not ports:
        ctx.notice(path, "every match alternative was dropped; rule dropped")
    return [TcpRule(destinations, port) for port in ports]
