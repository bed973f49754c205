"""Routing rules (the model's `HttpRule`s and `TcpRule`s) rendered as Envoy routes, for
Envoy proxies or for proxyless gRPC clients.

Istio's semantics (pilot/pkg/networking/core/route/route.go): rules are tried in order
and the first match wins; each match alternative of a rule becomes one route with the
rule's action; nothing follows a catch-all route; there is no implicit catch-all. Unset
fields take Istio's defaults, not Envoy's: no route timeout (Envoy's 15 s would cut long
streams) and Istio's default retry policy.

gRPC clients get what grpcio accepts (research digest §3), and every part of a rule they
cannot apply is reported as `NotApplied`: routes they would skip (query parameter
matches) or fail on (redirect, direct response) are left out of their routes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from google.protobuf import wrappers_pb2

from xds_server.model import (
    Destination,
    DirectResponse,
    HeaderMatch,
    HttpRule,
    Redirect,
    RequestMatch,
    TcpRule,
    WeightedDestination,
)

from .names import DEFAULT_ROUTE_NAME, policy_route_name, policy_rule_subject
from .policy_actions import (
    add_header_ops,
    cors_policy,
    hash_policies,
    http_fault,
    retry_policy,
    set_timeout,
)
from .policy_common import (
    Client,
    NotApplied,
    RouteTarget,
    fractional_percent,
    not_for_grpc,
    regex_matcher,
    string_matcher,
)
from .resources import CORS_FILTER, FAULT_FILTER, pack

Resolve = Callable[[Destination], RouteTarget]

_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}
_DEFAULT_PORTS = {"http": 80, "https": 443}


# ----------------------------------------------------------------------------- HTTP


def http_routes(
    rules: Sequence[HttpRule],
    *,
    port: int,
    resolve: Resolve,
    client: Client,
    subject: str,
) -> tuple[list[rc.Route], list[NotApplied]]:
    """The routes of `rules` for a service port `port` (in rule order), and what `client`
    cannot apply of them.

    A rule gives one route per match alternative whose `port` is unset or `port`; a rule
    without alternatives matches every request. Rules after a catch-all are dropped, as
    Istio does (they could never match).
    """
    routes: list[rc.Route] = []
    notes: list[NotApplied] = []
    for index, rule in enumerate(rules):
        rule_subject = policy_rule_subject(subject, index, rule.name)
        alternatives = _alternatives_on_port(rule, port)
        if not alternatives:
            continue
        template = _rule_route(rule, resolve, client, rule_subject, notes)
        catch_all = False
        for j, alternative in enumerate(alternatives):
            match = _route_match(alternative)
            catch_all = _is_catch_all(match)
            name = policy_route_name(rule_subject, j, alternative.name, len(alternatives))
            if template is not None and client == "grpc" and match.query_parameters:
                # grpcio silently skips such a route; leaving it out says so honestly.
                notes.append(not_for_grpc(name, "query parameter match", "route left out"))
            elif template is not None:
                for path_match, replace_prefix in _path_variants(match, alternative, rule, client):
                    for variant in _client_matches(path_match, client):
                        route = rc.Route()
                        route.CopyFrom(template)
                        route.name = name
                        route.match.CopyFrom(variant)
                        if replace_prefix is not None:
                            _set_prefix_rewrite(route, replace_prefix)
                        routes.append(route)
            # A catch-all ends the rules even when this client got no route for it.
            if catch_all:
                break
        if catch_all:
            break
    return routes, notes


def default_route(target: RouteTarget, client: Client) -> rc.Route:
    """The route of a service no routing rule covers: everything (prefix ``/``) to
    `target`, with Istio's defaults: no timeout, the default retry policy, and the hash
    policy of the target's consistent-hash load balancer."""
    action = rc.RouteAction(cluster=target.cluster)
    set_timeout(action, None, client)
    hashing = [target] if target.hash_on is not None else []
    action.hash_policy.extend(hash_policies(hashing, client))
    policy = retry_policy(None, client, hashing=bool(hashing), subject="", notes=[])
    if policy is not None:
        action.retry_policy.CopyFrom(policy)
    return rc.Route(name=DEFAULT_ROUTE_NAME, match=rc.RouteMatch(prefix="/"), route=action)


# ------------------------------------------------------------------------------ TCP


def tcp_target(rules: Sequence[TcpRule], *, port: int, resolve: Resolve) -> list[tuple[str, int]]:
    """The weighted clusters of the first TCP rule for `port` (its `port` unset or equal),
    for a TCP proxy; empty when no rule applies (the service's own cluster then).

    Zero weights are dropped (a lone destination's weight does not matter); a cluster named
    twice gets the sum of its weights, as a TCP proxy splits by cluster.
    """
    for rule in rules:
        if rule.port is not None and rule.port != port:
            continue
        weights: dict[str, int] = {}
        for wd in _positive(rule.destinations):
            cluster = resolve(wd.destination).cluster
            weights[cluster] = weights.get(cluster, 0) + max(1, wd.weight)
        return list(weights.items())
    return []


# ---------------------------------------------------------------------------- matches


def _alternatives_on_port(rule: HttpRule, port: int) -> list[RequestMatch]:
    if not rule.matches:
        return [RequestMatch()]
    return [m for m in rule.matches if m.port is None or m.port == port]


def _route_match(m: RequestMatch) -> rc.RouteMatch:
    """One match alternative: path, headers (sorted by name, then the pseudo-headers for
    method, authority and scheme) and query parameters, all ANDed."""
    out = rc.RouteMatch()
    uri = m.uri
    if uri is None or uri.kind == "present" or (uri.kind == "prefix" and not uri.value):
        out.prefix = "/"
    elif uri.kind == "path_prefix":
        # Envoy's path_separated_prefix refuses a trailing "/": the root is a plain prefix.
        if uri.value.rstrip("/"):
            out.path_separated_prefix = uri.value.rstrip("/")
        else:
            out.prefix = "/"
    elif uri.kind == "exact" or (uri.kind == "regex" and not uri.value):
        out.path = uri.value
    elif uri.kind == "prefix":
        out.prefix = uri.value
    else:
        out.safe_regex.CopyFrom(regex_matcher(uri.value))
    if m.ignore_uri_case:
        out.case_sensitive.CopyFrom(wrappers_pb2.BoolValue(value=False))
    headers = sorted(m.headers, key=lambda h: h.name)
    pseudo = ((":method", m.method), (":authority", m.authority), (":scheme", m.scheme))
    headers += [HeaderMatch(name, match) for name, match in pseudo if match is not None]
    out.headers.extend(_header_matcher(h) for h in headers)
    for q in m.query:
        qm = rc.QueryParameterMatcher(name=q.name)
        if q.match.kind == "present":
            qm.present_match = True
        else:
            qm.string_match.CopyFrom(string_matcher(q.match))
        out.query_parameters.append(qm)
    return out


def _header_matcher(h: HeaderMatch) -> rc.HeaderMatcher:
    out = rc.HeaderMatcher(name=h.name, invert_match=h.invert)
    if h.match.kind == "present":
        out.present_match = True
    else:
        out.string_match.CopyFrom(string_matcher(h.match))
        # "must not match" includes "absent": without this Envoy fails an inverted match
        # on a missing header (Istio sets it for withoutHeaders too).
        out.treat_missing_header_as_empty = h.invert
    return out


def _path_variants(
    match: rc.RouteMatch, alternative: RequestMatch, rule: HttpRule, client: Client
) -> list[tuple[rc.RouteMatch, str | None]]:
    """The RouteMatches of a whole-segment prefix ("path_prefix"), each with the path
    prefix replacement (URL rewrite or redirect) that gives the Gateway API's result.

    Envoy gets `path_separated_prefix` when nothing replaces the prefix. Otherwise, and
    always for gRPC (which knows no path_separated_prefix), ``/foo`` becomes two routes:
    the exact path ``/foo`` and the prefix ``/foo/``. Replacing the prefix then needs
    no regex: ``/foo`` → the replacement (or ``/``), ``/foo/…`` → the replacement without
    its trailing ``/`` plus ``/…``, so ``/foo/bar`` with ``/`` gives ``/bar`` and with
    ``/xyz/`` gives ``/xyz/bar`` (the spec's table). None: the template's rewrite stands.
    """
    uri = alternative.uri
    if uri is None or uri.kind != "path_prefix":
        return [(match, None)]
    replacement = _prefix_replacement(rule) if client == "envoy" else None
    base = uri.value.rstrip("/")
    if not base:  # the root: a plain prefix "/"
        return [(match, None if replacement is None else replacement.rstrip("/") + "/")]
    if replacement is None and client == "envoy":
        return [(match, None)]
    exact, under = rc.RouteMatch(), rc.RouteMatch()
    exact.CopyFrom(match)
    exact.path = base
    under.CopyFrom(match)
    under.prefix = base + "/"
    if replacement is None:
        return [(exact, None), (under, None)]
    return [(exact, replacement or "/"), (under, replacement.rstrip("/") + "/")]


def _prefix_replacement(rule: HttpRule) -> str | None:
    if rule.redirect is not None:
        return rule.redirect.prefix
    if rule.rewrite is not None and rule.rewrite.uri is not None:
        return rule.rewrite.uri
    return None


def _set_prefix_rewrite(route: rc.Route, value: str) -> None:
    if route.WhichOneof("action") == "redirect":
        route.redirect.prefix_rewrite = value
    else:
        route.route.prefix_rewrite = value


def _client_matches(match: rc.RouteMatch, client: Client) -> list[rc.RouteMatch]:
    """The RouteMatches that give `client` the semantics of `match`.

    gRPC fails an inverted value match on a missing header (it has no
    treat_missing_header_as_empty), so each such matcher becomes two alternatives:
    header absent, or present and not matching.
    """
    inverted = [
        i
        for i, h in enumerate(match.headers)
        if h.invert_match and h.WhichOneof("header_match_specifier") != "present_match"
    ]
    if client != "grpc" or not inverted:
        return [match]
    out = []
    for choice in itertools.product((False, True), repeat=len(inverted)):
        variant = rc.RouteMatch()
        variant.CopyFrom(match)
        for i, absent in zip(inverted, choice, strict=True):
            if absent:
                variant.headers[i].CopyFrom(
                    rc.HeaderMatcher(name=match.headers[i].name, present_match=False)
                )
            else:
                variant.headers[i].ClearField("treat_missing_header_as_empty")
        out.append(variant)
    return out


def _is_catch_all(match: rc.RouteMatch) -> bool:
    """Matches every request: path prefix ``/`` (or regex ``.*``), no other condition."""
    everything = match.prefix == "/" or (
        match.WhichOneof("path_specifier") == "safe_regex" and match.safe_regex.regex == ".*"
    )
    return everything and not match.headers and not match.query_parameters


# ----------------------------------------------------------------------------- action


def _rule_route(
    rule: HttpRule, resolve: Resolve, client: Client, subject: str, notes: list[NotApplied]
) -> rc.Route | None:
    """The route of `rule` without its match and name (shared by its alternatives), or
    None when `client` gets no route for it."""
    route = rc.Route()
    # gRPC does not rewrite headers: it gets none (reported below).
    emit = client == "envoy"
    authority = add_header_ops(route, rule.headers, emit)
    _add_filter_configs(route, rule, client, subject, notes)
    if rule.redirect is not None:
        return _redirect_route(route, rule.redirect, client, subject, notes)
    if rule.direct_response is not None:
        return _direct_response_route(route, rule.direct_response, client, subject, notes)
    targets = [(wd, resolve(wd.destination)) for wd in _positive(rule.destinations)]
    if not targets:
        notes.append(NotApplied(subject, "no destination with a positive weight: no route"))
        return None
    action = route.route
    if len(targets) == 1:
        wd, target = targets[0]
        action.cluster = target.cluster
        destination_authority = add_header_ops(route, wd.headers, emit)
        # A rule-level authority wins over the destination's (as Istio).
        authority = authority or destination_authority
    else:
        for wd, target in targets:
            cw = action.weighted_clusters.clusters.add(
                name=target.cluster, weight=wrappers_pb2.UInt32Value(value=wd.weight)
            )
            cluster_authority = add_header_ops(cw, wd.headers, emit)
            if cluster_authority is not None and emit:
                cw.host_rewrite_literal = cluster_authority
    set_timeout(action, rule.timeout, client)
    hashing = [t for _, t in targets if t.hash_on is not None]
    action.hash_policy.extend(hash_policies(hashing, client))
    retry = retry_policy(rule.retry, client, bool(hashing), subject, notes)
    if retry is not None:
        action.retry_policy.CopyFrom(retry)
    mirrors = [m for m in rule.mirrors if m.percent > 0]
    rewrite = rule.rewrite
    if rewrite is not None and rewrite.authority:
        authority = rewrite.authority
    if client == "grpc":
        _note_grpc_limits(rule, targets, bool(mirrors), subject, notes)
    else:
        for mirror in mirrors:
            action.request_mirror_policies.add(
                cluster=resolve(mirror.destination).cluster,
                runtime_fraction=base_pb2.RuntimeFractionalPercent(
                    default_value=fractional_percent(mirror.percent)
                ),
            )
        if rewrite is not None and rewrite.uri:
            # Replaces the matched prefix, or the whole path of an exact or regex match.
            action.prefix_rewrite = rewrite.uri
        elif rewrite is not None and rewrite.path is not None:
            # The whole path whatever matched (the query string is kept); a backslash
            # would start a capture-group reference in the substitution.
            action.regex_rewrite.pattern.CopyFrom(regex_matcher("^/.*$"))
            action.regex_rewrite.substitution = rewrite.path.replace("\\", "\\\\")
        if authority is not None:
            action.host_rewrite_literal = authority
    return route


def _add_filter_configs(
    route: rc.Route, rule: HttpRule, client: Client, subject: str, notes: list[NotApplied]
) -> None:
    """Per-route fault injection (both clients, gRFC A33) and CORS (Envoy only), keyed by
    the filter names of `resources.policy_http_filters`."""
    if rule.fault is not None and (fault := http_fault(rule.fault)) is not None:
        route.typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(fault))
    if rule.cors is not None and client == "envoy":
        route.typed_per_filter_config[CORS_FILTER].CopyFrom(pack(cors_policy(rule.cors)))
    elif rule.cors is not None and rule.redirect is None and rule.direct_response is None:
        notes.append(not_for_grpc(subject, "CORS policy"))


def _positive(destinations: Sequence[WeightedDestination]) -> list[WeightedDestination]:
    """Destinations with a positive weight; a lone destination whatever its weight."""
    if len(destinations) == 1:
        return list(destinations)
    return [wd for wd in destinations if wd.weight > 0]


def _note_grpc_limits(
    rule: HttpRule,
    targets: Sequence[tuple[WeightedDestination, RouteTarget]],
    mirrored: bool,
    subject: str,
    notes: list[NotApplied],
) -> None:
    """What of a forwarding rule gRPC clients do not apply (the route itself still works)."""
    if rule.headers or any(wd.headers for wd, _ in targets):
        notes.append(not_for_grpc(subject, "header operations"))
    if mirrored:
        notes.append(not_for_grpc(subject, "mirror"))
    if rule.rewrite is not None and (
        rule.rewrite.uri or rule.rewrite.authority or rule.rewrite.path is not None
    ):
        notes.append(not_for_grpc(subject, "rewrite"))


def _redirect_route(
    route: rc.Route, redirect: Redirect, client: Client, subject: str, notes: list[NotApplied]
) -> rc.Route | None:
    if client == "grpc":
        # grpcio fails every RPC a redirect route matches ("unsupported action").
        notes.append(not_for_grpc(subject, "redirect", "route left out"))
        return None
    code = _REDIRECT_CODES.get(redirect.code)
    if code is None:
        notes.append(NotApplied(subject, f"redirect code {redirect.code}: not supported"))
        return None
    action = route.redirect
    action.response_code = code
    if redirect.uri:
        action.path_redirect = redirect.uri
    elif redirect.prefix is not None:
        # Replaces the matched prefix; a whole-segment prefix sets it per route instead.
        action.prefix_rewrite = redirect.prefix or "/"
    if redirect.authority:
        action.host_redirect = redirect.authority
    if redirect.scheme:
        action.scheme_redirect = redirect.scheme
    well_known = _DEFAULT_PORTS.get(redirect.scheme or "http")
    if redirect.derive_port:
        # Envoy keeps the request's port when none is set, even across a scheme change.
        action.port_redirect = redirect.port or well_known or 0
    elif redirect.port and redirect.port != well_known:
        # No explicit :80 for http or :443 for https (as Istio).
        action.port_redirect = redirect.port
    return route


def _direct_response_route(
    route: rc.Route,
    response: DirectResponse,
    client: Client,
    subject: str,
    notes: list[NotApplied],
) -> rc.Route | None:
    if client == "grpc":
        notes.append(not_for_grpc(subject, "direct response", "route left out"))
        return None
    route.direct_response.status = response.status
    if response.body is not None:
        route.direct_response.body.inline_string = response.body
    return route
