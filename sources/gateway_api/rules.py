"""HTTPRoute and GRPCRoute rules → `HttpRule`s (one per rule; its matches are ORed).

The action follows the Gateway API: a RequestRedirect answers with a redirect; otherwise
the backends with a positive weight share the traffic by weight; with none (no
backendRefs, every weight 0, or only backends of a kind we cannot route to) the rule
answers 500, as the spec requires.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sources.gateway_api.backends import Ref, backend_ref, destination, section_name
from sources.gateway_api.constants import MAX_BACKEND_REFS, MAX_WEIGHT
from sources.gateway_api.filters import BACKEND_FILTERS, GRPC_FILTERS, HTTP_FILTERS, filters
from sources.gateway_api.matches import EVERYTHING, grpc_match, http_match
from sources.gateway_api.values import capped
from sources.istio.report import Context, Path, PolicyError
from sources.istio.values import fields, integer, off_or_duration, string
from xds_server.model import (
    DirectResponse,
    HttpRule,
    Mirror,
    RequestMatch,
    Retry,
    Rewrite,
    WeightedDestination,
)

# Istio's default number of retries: a backendRequest timeout is a per-try timeout of
# the default retry policy (as Istio renders Gateway API routes).
DEFAULT_RETRIES = 2
_HTTP_RULE_FIELDS = (
    "name", "matches", "filters", "backendRefs", "timeouts", "retry", "sessionPersistence"
)  # fmt: skip
_GRPC_RULE_FIELDS = ("name", "matches", "filters", "backendRefs", "sessionPersistence")
_DURATION = re.compile(r"([0-9]{1,5}(h|m|s|ms)){1,4}")
_BACKEND_FIELDS = ("group", "kind", "name", "namespace", "port", "weight", "filters")


@dataclass
class RuleRefs:
    """The backends a route names (backendRefs and mirrors), for ResolvedRefs status."""

    backends: list[Ref]


def http_rule(
    ctx: Context, value: object, path: Path, refs: RuleRefs, grpc: bool, max_matches: int
) -> HttpRule:
    rule = fields(value, path, _GRPC_RULE_FIELDS if grpc else _HTTP_RULE_FIELDS)
    name = section_name(rule["name"], (*path, "name")) if "name" in rule else ""
    ctx.ignore(rule, path, ("retry", "sessionPersistence"))
    read = grpc_match if grpc else http_match
    raw = capped(rule.get("matches", []), (*path, "matches"), max_matches)
    matches = tuple(read(m, (*path, "matches", i)) for i, m in enumerate(raw))
    if not matches:
        matches = (RequestMatch(uri=EVERYTHING),)  # the CRD's default match
    allowed = GRPC_FILTERS if grpc else HTTP_FILTERS
    said = filters(rule.get("filters"), (*path, "filters"), ctx.namespace, allowed)
    if said.prefix_replaced is not None and (
        len(matches) != 1 or matches[0].uri is None or matches[0].uri.kind != "path_prefix"
    ):
        raise PolicyError(
            said.prefix_replaced,
            "ReplacePrefixMatch is only compatible with a single PathPrefix match "
            "(the rule must have exactly one match, of type PathPrefix)",
        )
    refs.backends.extend(ref for ref, _ in said.mirrors)
    backends = rule.get("backendRefs", [])
    destinations = _backends(ctx, backends, (*path, "backendRefs"), refs, allowed)
    timeout, retry = (None, None) if grpc else _timeouts(rule.get("timeouts"), path)
    rewrite = said.rewrite
    if said.authority is not None:
        if rewrite is not None and rewrite.authority is not None:
            raise PolicyError(
                (*path, "filters"),
                "the Host header is set by RequestHeaderModifier and URLRewrite.hostname; "
                "set it in one place",
            )
        rewrite = Rewrite(rewrite.uri if rewrite else None, said.authority,
                          rewrite.path if rewrite else None)  # fmt: skip
    mirrors = tuple(
        Mirror(destination(ref), share) for ref, share in said.mirrors if ref.is_service and share
    )
    if said.redirect is not None:
        if rule.get("backendRefs"):
            raise PolicyError(
                (*path, "backendRefs"),
                "RequestRedirect filter must not be used together with backendRefs",
            )
        return HttpRule(name=name, matches=matches, redirect=said.redirect, headers=said.headers)
    if not destinations:
        return HttpRule(
            name=name, matches=matches, direct_response=DirectResponse(500), headers=said.headers
        )
    return HttpRule(
        name=name,
        matches=matches,
        destinations=destinations,
        timeout=timeout,
        retry=retry,
        mirrors=mirrors,
        rewrite=rewrite,
        headers=said.headers,
    )


def _backends(
    ctx: Context, value: object, path: Path, refs: RuleRefs, allowed: tuple[str, ...]
) -> tuple[WeightedDestination, ...]:
    """The backends that take traffic: Services with a positive weight. Another kind
    cannot be routed to; its share goes to the others (noticed; status InvalidKind)."""
    out: list[WeightedDestination] = []
    for i, raw in enumerate(capped(value, path, MAX_BACKEND_REFS)):
        where = (*path, i)
        ref = backend_ref(raw, where, ctx.namespace, _BACKEND_FIELDS)
        refs.backends.append(ref)
        entry = fields(raw, where, _BACKEND_FIELDS)
        weight = integer(entry.get("weight", 1), (*where, "weight"), 0, MAX_WEIGHT)
        said = filters(entry.get("filters"), (*where, "filters"), ctx.namespace, allowed,
                       BACKEND_FILTERS, " on a backendRef")  # fmt: skip
        if said.authority is not None:
            raise PolicyError(
                (*where, "filters"),
                "setting the Host header per backend is not supported; use the rule's filters",
            )
        if not ref.is_service:
            ctx.notice(where, f"backend kind {ref.group or 'core'}/{ref.kind} is not supported; "
                              "its share of traffic goes to the other backends")  # fmt: skip
            continue
        if weight > 0:
            out.append(WeightedDestination(destination(ref), weight, said.headers))
    return tuple(out)


def _timeouts(value: object, path: Path) -> tuple[float | None, Retry | None]:
    """`timeouts.request` is the route timeout (0s: none); `backendRequest` the per-try
    timeout of the default retry policy, never longer than a non-zero request timeout."""
    if value is None:
        return None, None
    where = (*path, "timeouts")
    obj = fields(value, where, ("request", "backendRequest"))
    request = _gateway_duration(obj.get("request"), (*where, "request"))
    backend = _gateway_duration(obj.get("backendRequest"), (*where, "backendRequest"))
    if request and backend and backend > request:
        raise PolicyError(
            (*where, "backendRequest"),
            "backendRequest timeout cannot be longer than request timeout",
        )
    retry = Retry(DEFAULT_RETRIES, per_try_timeout=backend) if backend else None
    return request, retry


def _gateway_duration(value: object, path: Path) -> float | None:
    """A Gateway API Duration (GEP-2257: 1-4 parts of 1-5 digits with h, m, s or ms)."""
    if value is None:
        return None
    text = string(value, path)
    if not _DURATION.fullmatch(text):
        raise PolicyError(path, f'invalid duration {text!r} (for example "10s", "1m30s", "500ms")')
    return off_or_duration(text, path)  # "0s" turns the timeout off
