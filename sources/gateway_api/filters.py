"""Route filters → the model: header modifiers, mirrors, URL rewrite and redirect, with the
CRD's rules (one filter field, matching its `type`; each type at most once except
RequestMirror; never URLRewrite with RequestRedirect; ReplacePrefixMatch only with a single
PathPrefix match)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sources.gateway_api.backends import Ref, backend_ref
from sources.gateway_api.constants import (
    EXTENDED_REDIRECT_CODES,
    MAX_FILTERS,
    MAX_HEADER_MODIFIERS,
    REDIRECT_CODES,
)
from sources.gateway_api.values import (
    absolute_path,
    capped,
    gateway_header_name,
    gateway_header_value,
    kind_of,
    required,
)
from sources.istio.checks import host_name
from sources.istio.report import Path, PolicyError
from sources.istio.values import fields, integer, port_number, string
from xds_server.model import HeaderOps, Redirect, Rewrite

HTTP_FILTERS = (
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "RequestRedirect",
    "URLRewrite",
    "ExtensionRef",
    "CORS",
    "ExternalAuth",
)
GRPC_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "ExtensionRef")
BACKEND_FILTERS = frozenset(("RequestHeaderModifier", "ResponseHeaderModifier"))
SUPPORTED = frozenset(
    ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "RequestRedirect",
     "URLRewrite")
)  # fmt: skip
_MIRROR_FIELDS = ("backendRef", "percent", "fraction")
_BACKEND_REF_FIELDS = ("group", "kind", "name", "namespace", "port")


def _field_of(kind: str) -> str:
    """The field holding a filter's settings: its type in lowerCamelCase (URLRewrite is
    urlRewrite, CORS is cors)."""
    head = len(kind) - len(kind.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    head = head - 1 if 1 < head < len(kind) else head
    return kind[:head].lower() + kind[head:]


@dataclass
class Filters:
    """What a rule's (or a backendRef's) filters say."""

    headers: HeaderOps = field(default_factory=HeaderOps)
    authority: str | None = None
    mirrors: list[tuple[Ref, float]] = field(default_factory=list)
    rewrite: Rewrite | None = None
    redirect: Redirect | None = None
    prefix_replaced: Path | None = None  # where a ReplacePrefixMatch is (it needs a PathPrefix)


def filters(
    value: object,
    path: Path,
    namespace: str,
    allowed: tuple[str, ...],
    supported: frozenset[str] = SUPPORTED,
    where_said: str = "",
) -> Filters:
    """The filters of a rule (or, `where_said` " on a backendRef", of a backend): the
    types the route kind `allowed`, of which this server applies the `supported`."""
    out = Filters()
    seen: dict[str, Path] = {}
    for i, raw in enumerate(capped(value or [], path, MAX_FILTERS)):
        where = (*path, i)
        names = tuple(_field_of(k) for k in HTTP_FILTERS)
        obj = fields(raw, where, ("type", *names))
        if "type" not in obj:
            raise PolicyError((*where, "type"), "required")
        kind = kind_of(obj, where, allowed, "")
        body_field = _field_of(kind)
        for other in names:
            if other != body_field and other in obj:
                raise PolicyError((*where, other), f"must not be set when type is {kind}")
        if body_field not in obj:
            raise PolicyError((*where, body_field), f"required when type is {kind}")
        if kind not in supported:
            raise PolicyError((*where, "type"), f"filter type {kind}{where_said} is not supported")
        if kind != "RequestMirror" and kind in seen:
            raise PolicyError((*where, "type"), f"{kind} filter cannot be repeated")
        seen[kind] = where
        body = obj[body_field]
        at = (*where, body_field)
        if kind == "RequestHeaderModifier":
            out.headers, out.authority = _modifier(body, at, out.headers, "request")
        elif kind == "ResponseHeaderModifier":
            out.headers, _ = _modifier(body, at, out.headers, "response")
        elif kind == "RequestMirror":
            out.mirrors.append(_mirror(body, at, namespace))
        elif kind == "URLRewrite":
            out.rewrite = _rewrite(body, at, out)
        else:
            out.redirect = _redirect(body, at, out)
    if "URLRewrite" in seen and "RequestRedirect" in seen:
        raise PolicyError(
            seen["URLRewrite"], "may specify either RequestRedirect or URLRewrite, but not both"
        )
    return out


def _modifier(value: object, path: Path, ops: HeaderOps, side: str) -> tuple[HeaderOps, str | None]:
    """HTTPHeaderFilter: `set` and `add` ({name, value} lists, names unique), `remove`.
    Setting Host on requests is an authority rewrite (Envoy cannot modify Host)."""
    obj = fields(value, path, ("set", "add", "remove"))
    authority = None
    parts: dict[str, Any] = {}
    for verb in ("set", "add"):
        pairs: dict[str, str] = {}
        for i, raw in enumerate(capped(obj.get(verb, []), (*path, verb), MAX_HEADER_MODIFIERS)):
            where = (*path, verb, i)
            entry = required(fields(raw, where, ("name", "value")), where, "name", "value")
            name = gateway_header_name(entry["name"], (*where, "name"))
            if name in pairs or (name == "host" and authority is not None):
                raise PolicyError((*where, "name"), f"duplicate header {name!r}")
            _modifiable(name, (*where, "name"), side, verb)
            if name == "host":
                authority = host_name(entry["value"], (*where, "value"))
                continue
            pairs[name] = gateway_header_value(entry["value"], (*where, "value"))
        parts[verb] = tuple(sorted(pairs.items()))
    removed: set[str] = set()
    for i, raw in enumerate(capped(obj.get("remove", []), (*path, "remove"), MAX_HEADER_MODIFIERS)):
        where = (*path, "remove", i)
        name = gateway_header_name(raw, where)
        _modifiable(name, where, side, "remove")
        if name in removed:
            raise PolicyError(where, f"duplicate header {name!r}")
        removed.add(name)
    values = {f: getattr(ops, f) for f in HeaderOps.__slots__}
    values[f"{side}_set"] = parts["set"]
    values[f"{side}_add"] = parts["add"]
    values[f"{side}_remove"] = tuple(sorted(removed))
    return HeaderOps(**values), authority


def _modifiable(name: str, path: Path, side: str, verb: str) -> None:
    if name == "host" and not (side == "request" and verb == "set"):
        raise PolicyError(path, "the host header can only be set (on requests)")


def _mirror(value: object, path: Path, namespace: str) -> tuple[Ref, float]:
    obj = fields(value, path, _MIRROR_FIELDS)
    if "backendRef" not in obj:
        raise PolicyError((*path, "backendRef"), "required")
    ref = backend_ref(obj["backendRef"], (*path, "backendRef"), namespace, _BACKEND_REF_FIELDS)
    if "percent" in obj and "fraction" in obj:
        raise PolicyError(path, "only one of percent or fraction may be specified")
    share = 100.0
    if "percent" in obj:
        share = float(integer(obj["percent"], (*path, "percent"), 0, 100))
    elif "fraction" in obj:
        where = (*path, "fraction")
        frac = fields(obj["fraction"], where, ("numerator", "denominator"))
        if "numerator" not in frac:
            raise PolicyError((*where, "numerator"), "required")
        numerator = integer(frac["numerator"], (*where, "numerator"))
        denominator = integer(frac.get("denominator", 100), (*where, "denominator"), 1)
        if numerator > denominator:
            raise PolicyError(where, "numerator must be less than or equal to denominator")
        share = 100.0 * numerator / denominator
    return ref, share


def _path_modifier(value: object, path: Path, out: Filters) -> tuple[str, str]:
    """HTTPPathModifier → ("full", path) or ("prefix", replacement)."""
    obj = fields(value, path, ("type", "replaceFullPath", "replacePrefixMatch"))
    if "type" not in obj:
        raise PolicyError((*path, "type"), "required")
    kind = kind_of(obj, path, ("ReplaceFullPath", "ReplacePrefixMatch"), "")
    wanted = "replaceFullPath" if kind == "ReplaceFullPath" else "replacePrefixMatch"
    for name in ("replaceFullPath", "replacePrefixMatch"):
        if name != wanted and name in obj:
            raise PolicyError((*path, name), f"must not be set when type is {kind}")
    if wanted not in obj:
        raise PolicyError((*path, wanted), f"required when type is {kind}")
    if kind == "ReplaceFullPath":
        return "full", absolute_path(obj[wanted], (*path, wanted))
    out.prefix_replaced = (*path, wanted)
    return "prefix", absolute_path(obj[wanted], (*path, wanted), empty_ok=True)


def _rewrite(value: object, path: Path, out: Filters) -> Rewrite:
    obj = fields(value, path, ("hostname", "path"))
    authority = None
    if "hostname" in obj:
        authority = host_name(obj["hostname"], (*path, "hostname"))
    if "path" not in obj:
        return Rewrite(authority=authority)
    kind, text = _path_modifier(obj["path"], (*path, "path"), out)
    if kind == "full":
        return Rewrite(authority=authority, path=text)
    return Rewrite(uri=text, authority=authority)


def _redirect(value: object, path: Path, out: Filters) -> Redirect:
    obj = fields(value, path, ("scheme", "hostname", "path", "port", "statusCode"))
    scheme = None
    if "scheme" in obj:
        scheme = string(obj["scheme"], (*path, "scheme"))
        if scheme not in ("http", "https"):
            raise PolicyError((*path, "scheme"), f"unsupported value {scheme!r} (http or https)")
    code = integer(obj.get("statusCode", 302), (*path, "statusCode"), 0, 999)
    if code not in REDIRECT_CODES + EXTENDED_REDIRECT_CODES:
        codes = ", ".join(map(str, REDIRECT_CODES + EXTENDED_REDIRECT_CODES))
        raise PolicyError((*path, "statusCode"), f"unsupported value {code} (one of {codes})")
    port = port_number(obj["port"], (*path, "port")) if "port" in obj else None
    uri = prefix = None
    if "path" in obj:
        kind, text = _path_modifier(obj["path"], (*path, "path"), out)
        uri, prefix = (text, None) if kind == "full" else (None, text)
    return Redirect(
        uri=uri,
        authority=host_name(obj["hostname"], (*path, "hostname")) if "hostname" in obj else None,
        scheme=scheme,
        port=port,
        code=code,
        prefix=prefix,
        # The spec: with a scheme, its well-known port unless `port` says; with neither,
        # the request's (the Service's) port.
        derive_port=scheme is not None or port is not None,
    )
