"""Match alternatives: HTTPRouteMatch (path, headers, query parameters, method) and
GRPCRouteMatch (method as a path on `/service/method`, headers) → `RequestMatch`."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sources.gateway_api.constants import (
    HTTP_METHODS,
    MAX_HEADER_MATCHES,
    MAX_HEADER_VALUE_LENGTH,
    MAX_QUERY_MATCHES,
)
from sources.gateway_api.values import (
    absolute_path,
    capped,
    gateway_header_name,
    header_token,
    kind_of,
    required,
)
from sources.istio.checks import check_regex, regex
from sources.istio.report import Path, PolicyError
from sources.istio.values import fields, string
from xds_server.model import HeaderMatch, QueryMatch, RequestMatch, StringMatch

_STRING_KINDS = ("Exact", "RegularExpression")
_PATH_KINDS = ("Exact", "PathPrefix", "RegularExpression")
_GRPC_SERVICE = re.compile(r"\.?[A-Za-z_][A-Za-z_0-9]*(\.[A-Za-z_][A-Za-z_0-9]*)*")
_GRPC_METHOD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_ANY_SEGMENT = "[^/]+"
MAX_QUERY_VALUE_LENGTH = 1024

EVERYTHING = StringMatch("path_prefix", "/")


def http_match(value: object, path: Path) -> RequestMatch:
    match = fields(value, path, ("path", "headers", "queryParams", "method"))
    method = None
    if "method" in match:
        name = string(match["method"], (*path, "method"))
        if name not in HTTP_METHODS:
            raise PolicyError(
                (*path, "method"), f"unsupported method {name!r} (one of {', '.join(HTTP_METHODS)})"
            )
        method = StringMatch("exact", name)
    return RequestMatch(
        uri=path_match(match.get("path"), (*path, "path")),
        method=method,
        headers=header_matches(match.get("headers"), (*path, "headers")),
        query=query_matches(match.get("queryParams"), (*path, "queryParams")),
    )


def path_match(value: object, path: Path) -> StringMatch:
    """HTTPPathMatch; unset is PathPrefix "/". A PathPrefix keeps no trailing "/" (the
    Gateway API ignores it), so "/foo/" and "/foo" are one match."""
    if value is None:
        return EVERYTHING
    obj = fields(value, path, ("type", "value"))
    kind = kind_of(obj, path, _PATH_KINDS, "PathPrefix")
    where = (*path, "value")
    if kind == "RegularExpression":
        if "value" not in obj:
            raise PolicyError(where, "required")
        return StringMatch("regex", regex(obj["value"], where))
    text = absolute_path(obj.get("value", "/"), where, uri_characters=True)
    if kind == "Exact":
        return StringMatch("exact", text)
    return StringMatch("path_prefix", text.rstrip("/") or "/")


def header_matches(value: object, path: Path) -> tuple[HeaderMatch, ...]:
    """HTTPHeaderMatch / GRPCHeaderMatch list: names unique case-insensitively (header
    names are), sorted by name for stable output."""
    found = _named(
        value, path, MAX_HEADER_MATCHES, gateway_header_name, MAX_HEADER_VALUE_LENGTH, "header"
    )
    # (a header name is never a pseudo-header: the HeaderName pattern has no ':')
    return tuple(HeaderMatch(name, match) for name, match in found)


def query_matches(value: object, path: Path) -> tuple[QueryMatch, ...]:
    """HTTPQueryParamMatch list: names are case-sensitive and unique."""
    found = _named(
        value, path, MAX_QUERY_MATCHES, header_token, MAX_QUERY_VALUE_LENGTH, "query parameter"
    )
    return tuple(QueryMatch(name, match) for name, match in found)


def _named(
    value: object,
    path: Path,
    most: int,
    read_name: Callable[[object, Path], str],
    longest: int,
    what: str,
) -> list[tuple[str, StringMatch]]:
    """{type, name, value} matches (a CRD list map keyed by name), sorted by name."""
    out: dict[str, StringMatch] = {}
    for i, raw in enumerate(capped(value or [], path, most)):
        where = (*path, i)
        entry = required(fields(raw, where, ("type", "name", "value")), where, "name", "value")
        name = read_name(entry["name"], (*where, "name"))
        if name in out:
            raise PolicyError((*where, "name"), f"duplicate {what} {name!r}")
        out[name] = _value_match(entry, where, longest)
    return sorted(out.items())


def _value_match(entry: dict[str, Any], path: Path, longest: int) -> StringMatch:
    kind = kind_of(entry, path, _STRING_KINDS, "Exact")
    where = (*path, "value")
    if kind == "RegularExpression":
        return StringMatch("regex", regex(entry["value"], where))
    text = string(entry["value"], where)
    if not 1 <= len(text) <= longest:
        raise PolicyError(where, f"must have 1-{longest} characters")
    return StringMatch("exact", text)


def grpc_match(value: object, path: Path) -> RequestMatch:
    match = fields(value, path, ("method", "headers"))
    return RequestMatch(
        uri=method_match(match.get("method"), (*path, "method")),
        headers=header_matches(match.get("headers"), (*path, "headers")),
    )


def method_match(value: object, path: Path) -> StringMatch:
    """GRPCMethodMatch as a match on the request path `/service/method` (how gRPC sends
    it); unset (or neither field) matches every method."""
    if value is None:
        return EVERYTHING
    obj = fields(value, path, ("type", "service", "method"))
    kind = kind_of(obj, path, _STRING_KINDS, "Exact")
    service = string(obj.get("service", ""), (*path, "service"))
    method = string(obj.get("method", ""), (*path, "method"))
    if not service and not method:
        raise PolicyError(path, "one or both of service, method must be specified")
    if kind == "Exact":
        for text, field, syntax in (
            (service, "service", _GRPC_SERVICE),
            (method, "method", _GRPC_METHOD),
        ):
            if text and (len(text) > 1024 or not syntax.fullmatch(text)):
                raise PolicyError((*path, field), f"invalid gRPC {field} name {text!r}")
        service = service.removeprefix(".")  # a fully-qualified name; gRPC sends none
        if service and method:
            return StringMatch("exact", f"/{service}/{method}")
        if service:
            return StringMatch("prefix", f"/{service}/")
        return StringMatch("regex", f"/{_ANY_SEGMENT}/{re.escape(method)}")
    for text, field in ((service, "service"), (method, "method")):
        if text:
            regex(text, (*path, field))
    # Grouped, so that an alternation in one part stays within its path segment.
    pattern = f"/(?:{service or _ANY_SEGMENT})/(?:{method or _ANY_SEGMENT})"
    problem = check_regex(pattern)
    if problem is not None:
        raise PolicyError(path, f"the path regex {pattern!r}: {problem}")
    return StringMatch("regex", pattern)
