"""service-router: ordered routes, each an HTTP match and a destination.

Consul's write-time rules: at most one of PathExact/PathPrefix/PathRegex, paths start
with "/", PrefixRewrite only with a path prefix or exact match, one string match per
header (Present/Exact/Prefix/Suffix/Regex) and query parameter (Present/Exact/Regex),
known methods, retry conditions from Consul's list. A route without `Match` matches
every request. Retries are Consul's: none unless the destination asks for them, and
`NumRetries` 0 with a retry condition set means one retry (Envoy's default)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sources.istio.checks import header_name, query_name_problem, regex
from sources.istio.report import Context, Path, PolicyError
from sources.istio.values import (
    boolean,
    checked,
    count,
    each,
    integer,
    items,
    one_of,
    optional,
    strings,
)
from xds_server.model import HeaderMatch, PolicyKey, QueryMatch, RequestMatch, Retry, StringMatch

from .kinds import Route, ServiceRouter
from .read import ENVELOPE, header_ops, known, seconds, target

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE")
RETRY_ON = (
    "5xx", "gateway-error", "reset", "connect-failure", "envoy-ratelimited", "retriable-4xx",
    "refused-stream", "cancelled", "deadline-exceeded", "internal", "resource-exhausted",
    "unavailable",
)  # fmt: skip
_PATHS = ("PathExact", "PathPrefix", "PathRegex")
_DESTINATION = (
    "Service", "ServiceSubset", "Namespace", "Partition", "PrefixRewrite", "RequestTimeout",
    "NumRetries", "RetryOnConnectFailure", "RetryOnStatusCodes", "RetryOn", "RequestHeaders",
    "ResponseHeaders",
)  # fmt: skip


def parse_router(obj: Mapping[str, Any], key: PolicyKey, ctx: Context) -> ServiceRouter:
    body = known(obj, (), ctx, (*ENVELOPE, "Routes"))
    routes = each(body.get("Routes", []), ("Routes",), lambda r, p: _route(r, p, ctx))
    return ServiceRouter(key, tuple(routes))


def _route(value: object, path: Path, ctx: Context) -> Route:
    route = known(value, path, ctx, ("Match", "Destination"))
    match: RequestMatch | None = None
    path_kind: str | None = None
    if "Match" in route:
        mp = (*path, "Match")
        http = known(route["Match"], mp, ctx, ("HTTP",)).get("HTTP")
        if http is not None:
            match, path_kind = _http_match(http, (*mp, "HTTP"), ctx)
    dp = (*path, "Destination")
    dest = known(route.get("Destination", {}), dp, ctx, _DESTINATION, ("IdleTimeout",))
    rewrite = optional(dest, "PrefixRewrite", dp, lambda v, p: checked(v, p, query_name_problem))
    if rewrite is not None and path_kind not in ("PathExact", "PathPrefix"):
        raise PolicyError(
            (*dp, "PrefixRewrite"), "requires Match.HTTP.PathPrefix or Match.HTTP.PathExact"
        )
    return Route(
        match=match,
        target=target(dest, dp, ctx),
        prefix_rewrite=rewrite,
        timeout=seconds(dest, "RequestTimeout", dp),
        retry=_retry(dest, dp),
        headers=header_ops(dest, dp, ctx),
    )


def _http_match(value: object, path: Path, ctx: Context) -> tuple[RequestMatch, str | None]:
    http = known(value, path, ctx, (*_PATHS, "Header", "QueryParam", "Methods"))
    which = one_of(http, path, _PATHS)
    uri: StringMatch | None = None
    if which is not None:
        where = (*path, which)
        if which == "PathRegex":
            uri = StringMatch("regex", regex(http[which], where))
        else:
            text = checked(http[which], where, query_name_problem)
            if not text.startswith("/"):
                raise PolicyError(where, f"{which} doesn't start with '/': {text!r}")
            uri = StringMatch("exact" if which == "PathExact" else "prefix", text)
    headers = tuple(
        each(http.get("Header", []), (*path, "Header"), lambda h, p: _header(h, p, ctx))
    )
    query = tuple(
        each(http.get("QueryParam", []), (*path, "QueryParam"), lambda q, p: _query(q, p, ctx))
    )
    method: StringMatch | None = None
    methods = strings(http.get("Methods", []), (*path, "Methods"))
    for i, m in enumerate(methods):
        if m not in METHODS:
            raise PolicyError(
                (*path, "Methods", i), f"invalid method {m!r} (one of {', '.join(METHODS)})"
            )
        if m in methods[:i]:
            raise PolicyError((*path, "Methods", i), f"method {m!r} is listed twice")
    if len(methods) == 1:
        method = StringMatch("exact", methods[0])
    elif methods:
        method = StringMatch("regex", "|".join(methods))
    return RequestMatch(uri=uri, method=method, headers=headers, query=query), which


def _header(value: object, path: Path, ctx: Context) -> HeaderMatch:
    kinds = ("Present", "Exact", "Prefix", "Suffix", "Regex")
    h = known(value, path, ctx, ("Name", *kinds, "Invert"))
    name = header_name(h.get("Name", ""), (*path, "Name"))
    h = {k: v for k, v in h.items() if not (k == "Present" and v is False)}
    which = one_of(h, path, kinds)
    match = _string_match(h, which, path) if which else StringMatch("present")
    return HeaderMatch(name, match, boolean(h.get("Invert", False), (*path, "Invert")))


def _query(value: object, path: Path, ctx: Context) -> QueryMatch:
    kinds = ("Present", "Exact", "Regex")
    q = known(value, path, ctx, ("Name", *kinds))
    name = checked(q.get("Name", ""), (*path, "Name"), query_name_problem)
    if not name:
        raise PolicyError((*path, "Name"), "missing required Name field")
    q = {k: v for k, v in q.items() if not (k == "Present" and v is False)}
    which = one_of(q, path, kinds)
    if which is None:
        raise PolicyError(path, "one of Present, Exact or Regex is required")
    return QueryMatch(name, _string_match(q, which, path))


def _string_match(obj: Mapping[str, Any], which: str, path: Path) -> StringMatch:
    where = (*path, which)
    if which == "Present":
        boolean(obj[which], where)
        return StringMatch("present")
    if which == "Regex":
        return StringMatch("regex", regex(obj[which], where))
    text = checked(obj[which], where, query_name_problem)
    if which == "Suffix":  # the model has no suffix match: the same test as an RE2 regex
        return StringMatch("regex", ".*" + re.escape(text))
    return StringMatch("exact" if which == "Exact" else "prefix", text)


def _retry(dest: Mapping[str, Any], path: Path) -> Retry:
    attempts = optional(dest, "NumRetries", path, count) or 0
    on: list[str] = []
    if optional(dest, "RetryOnConnectFailure", path, boolean):
        on.append("connect-failure")
    for i, token in enumerate(strings(dest.get("RetryOn", []), (*path, "RetryOn"))):
        if token not in RETRY_ON:
            raise PolicyError((*path, "RetryOn", i), f"unsupported retry condition {token!r}")
        if token not in on:
            on.append(token)
    codes = tuple(
        integer(c, (*path, "RetryOnStatusCodes", i), 100, 599)
        for i, c in enumerate(
            items(dest.get("RetryOnStatusCodes", []), (*path, "RetryOnStatusCodes"))
        )
    )
    if not (attempts or on or codes):
        return Retry(attempts=0)  # Consul sets no retry policy: Envoy does not retry
    return Retry(attempts=attempts or 1, retry_on=tuple(on), status_codes=codes)
