"""HTTP match alternatives (Istio's HTTPMatchRequest and StringMatch), and which
alternatives are dropped because they select callers or gateways."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sources.istio.checks import header_name, label_map, query_name_problem, regex
from sources.istio.constants import MESH_GATEWAY
from sources.istio.report import Context, Path, PolicyError
from sources.istio.values import (
    boolean,
    checked,
    fields,
    mapping,
    nonempty,
    one_of,
    port_number,
    string,
    strings,
)
from xds_server.model import HeaderMatch, QueryMatch, RequestMatch, StringMatch

_HTTP_MATCH_FIELDS = (
    "name",
    "uri",
    "scheme",
    "method",
    "authority",
    "headers",
    "port",
    "sourceLabels",
    "gateways",
    "queryParams",
    "ignoreUriCase",
    "withoutHeaders",
    "sourceNamespace",
    "statPrefix",
)
_STRING_MATCH_FIELDS = ("exact", "prefix", "regex")


def dropped_alternative(ctx: Context, match: Mapping[str, Any], path: Path) -> bool:
    """True (with a notice) when a match alternative applies only to some callers or
    gateways: it cannot be evaluated per caller, so it is not applied to anyone."""
    gateways = strings(match.get("gateways", []), (*path, "gateways"))
    if gateways and MESH_GATEWAY not in gateways:
        ctx.notice((*path, "gateways"), "applies only to gateways; match alternative dropped")
        return True
    for field, what, check in (
        ("sourceLabels", "source workloads", label_map),
        ("sourceNamespace", "a source namespace", string),
        ("sourceSubnet", "a source subnet", string),
        ("destinationSubnets", "destination subnets", strings),
    ):
        if match.get(field):
            check(match[field], (*path, field))
            ctx.notice(
                (*path, field),
                f"selecting {what} is not supported; match alternative dropped",
            )
            return True
    return False


def http_match(ctx: Context, value: object, path: Path) -> RequestMatch | None:
    match = fields(value, path, _HTTP_MATCH_FIELDS)
    ctx.ignore(match, path, ("statPrefix",))
    if dropped_alternative(ctx, match, path):
        return None
    uri = string_match(match.get("uri"), (*path, "uri"))
    headers = [
        HeaderMatch(name, m, invert)
        for field, invert in (("headers", False), ("withoutHeaders", True))
        for name, m in named_matches(match.get(field), (*path, field), header=True)
    ]
    return RequestMatch(
        name=string(match.get("name", ""), (*path, "name")),
        uri=None if uri is not None and uri.kind == "present" else uri,
        ignore_uri_case=boolean(match.get("ignoreUriCase", False), (*path, "ignoreUriCase")),
        method=string_match(match.get("method"), (*path, "method")),
        authority=string_match(match.get("authority"), (*path, "authority")),
        scheme=string_match(match.get("scheme"), (*path, "scheme")),
        headers=tuple(sorted(headers, key=lambda h: (h.name, h.invert))),
        query=tuple(
            QueryMatch(name, m)
            for name, m in named_matches(match.get("queryParams"), (*path, "queryParams"))
        ),
        port=port_number(match["port"], (*path, "port")) if match.get("port") else None,
    )


def string_match(value: object, path: Path, present_ok: bool = True) -> StringMatch | None:
    """Istio's StringMatch. `{}` (and Istio's legacy `regex: "*"`) means "present"."""
    if value is None:
        return None
    obj = fields(value, path, _STRING_MATCH_FIELDS)
    kind = one_of(obj, path, _STRING_MATCH_FIELDS)
    if kind is None or (kind == "regex" and obj["regex"] == "*" and present_ok):
        if not present_ok:
            raise PolicyError(path, "one of exact, prefix, regex is required")
        return StringMatch("present")
    where = (*path, kind)
    if kind == "exact":
        return StringMatch("exact", string(obj[kind], where))
    if kind == "prefix":
        return StringMatch("prefix", nonempty(obj[kind], where))
    return StringMatch("regex", regex(obj[kind], where))


def named_matches(value: object, path: Path, header: bool = False) -> list[tuple[str, StringMatch]]:
    """A map of header or query parameter names to StringMatches, sorted by name."""
    if value is None:
        return []
    out: dict[str, StringMatch] = {}
    for raw, match in mapping(value, path).items():
        where = (*path, raw)
        if header:
            name = header_name(raw, where)
            if name.startswith(":"):
                raise PolicyError(
                    where,
                    f"pseudo-header {name!r} cannot be matched here; use uri, method, "
                    "authority or scheme",
                )
        else:
            name = checked(nonempty(raw, where), where, query_name_problem)
        if name in out:
            raise PolicyError(where, f"duplicate name {name!r}")
        matcher = string_match(match if match is not None else {}, where)
        assert matcher is not None  # a mapping always gives a matcher
        out[name] = matcher
    return sorted(out.items())
