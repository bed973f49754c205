"""Request matching as Envoy (and proxyless gRPC) does it, for `xdsctl explain`.

Sans-IO, on the protobuf resources: which virtual host a host picks (Envoy's order:
exact domain, then the longest ``*suffix`` wildcard, then the longest ``prefix*``
wildcard, then ``*``; case-insensitive; the wildcard never matches the empty string),
and whether a route matches a request, with the reason when it does not.

Regexes are RE2, as in Envoy and gRPC, and match the whole value. Envoy fails a header
value match on a missing header (even inverted) unless `treat_missing_header_as_empty`;
`present_match` compares presence, then `invert_match` flips it. Path matchers see the
path without its query string.
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import re2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import string_pb2

Client = Literal["envoy", "grpc"]


@dataclass(frozen=True, slots=True)
class Request:
    """What is matched: `host` (the :authority, or the gRPC target name), `path` (with
    any query string), `method`, and `headers` by lower-case name."""

    host: str
    path: str = "/"
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    client: Client = "envoy"

    def header(self, name: str) -> str | None:
        """A header's value as Envoy's route matcher sees it, pseudo-headers included."""
        name = name.lower()
        if name == ":authority":
            return self.host
        if name == "host":
            return None  # HTTP/1 Host becomes :authority: Envoy's header map has no "host"
        if name == ":path":
            return self.path
        if name == ":method":
            return self.method if self.client == "envoy" else "POST"
        if name == ":scheme":
            return self.headers.get(":scheme", "http")
        if self.client == "grpc" and name.endswith("-bin"):
            return None  # gRPC C-core shows no binary header to routing
        if self.client == "grpc" and name == "content-type":
            return "application/grpc"  # what gRPC C-core matches, whatever was sent
        return self.headers.get(name)

    @property
    def path_only(self) -> str:
        return self.path.split("?", 1)[0].split("#", 1)[0]

    @property
    def query(self) -> dict[str, str]:
        """The first value of each query parameter, decoded (as Envoy's matcher reads them)."""
        _, _, raw = self.path.partition("?")
        out: dict[str, str] = {}
        for name, value in urllib.parse.parse_qsl(raw.split("#", 1)[0], keep_blank_values=True):
            out.setdefault(name, value)
        return out


# ------------------------------------------------------------------- virtual hosts


def domain_kind(domain: str) -> str:
    if domain == "*":
        return "default"
    if domain.startswith("*"):
        return "suffix"
    if domain.endswith("*"):
        return "prefix"
    return "exact"


def find_virtual_host(
    config: route_pb2.RouteConfiguration, host: str
) -> tuple[rc.VirtualHost | None, str]:
    """The virtual host `host` selects, and which domain (and kind of match) chose it."""
    host = host.lower()
    exact: dict[str, tuple[rc.VirtualHost, str]] = {}
    suffixes: list[tuple[int, str, rc.VirtualHost, str]] = []
    prefixes: list[tuple[int, str, rc.VirtualHost, str]] = []
    default: tuple[rc.VirtualHost, str] | None = None
    for vhost in config.virtual_hosts:
        for domain in vhost.domains:
            d = domain.lower()
            kind = domain_kind(d)
            if kind == "default":
                default = default or (vhost, domain)
            elif kind == "suffix":
                suffixes.append((len(d) - 1, d[1:], vhost, domain))
            elif kind == "prefix":
                prefixes.append((len(d) - 1, d[:-1], vhost, domain))
            else:
                exact.setdefault(d, (vhost, domain))
    if host in exact:
        vhost, domain = exact[host]
        return vhost, f"exact domain {domain}"
    # Longest first; a wildcard must stand for at least one character.
    for length, suffix, vhost, domain in sorted(suffixes, key=lambda s: -s[0]):
        if length < len(host) and host.endswith(suffix):
            return vhost, f"suffix wildcard {domain}"
    for length, prefix, vhost, domain in sorted(prefixes, key=lambda s: -s[0]):
        if length < len(host) and host.startswith(prefix):
            return vhost, f"prefix wildcard {domain}"
    if default is not None:
        return default[0], "default domain *"
    return None, ""


# ------------------------------------------------------------------------ strings


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> Any:  # re2 has no type hints
    return re2.compile(pattern)


def regex_full_match(pattern: str, value: str) -> bool:
    """RE2, matching the whole value (Envoy's and gRPC's safe_regex semantics)."""
    return _compiled(pattern).fullmatch(value) is not None


def describe_string(m: string_pb2.StringMatcher) -> str:
    kind = m.WhichOneof("match_pattern") or "exact"
    value = m.safe_regex.regex if kind == "safe_regex" else getattr(m, kind)
    text = f"{'regex' if kind == 'safe_regex' else kind} {value!r}"
    return text + (" (ignore case)" if m.ignore_case and kind != "safe_regex" else "")


def string_matches(m: string_pb2.StringMatcher, value: str) -> bool:
    kind = m.WhichOneof("match_pattern") or "exact"
    if kind == "safe_regex":
        return regex_full_match(m.safe_regex.regex, value)
    want = str(getattr(m, kind))
    if m.ignore_case:
        want, value = want.lower(), value.lower()
    if kind == "exact":
        return value == want
    if kind == "prefix":
        return value.startswith(want)
    if kind == "suffix":
        return value.endswith(want)
    if kind == "contains":
        return want in value
    return False  # a kind this explainer does not know (e.g. custom): say no


# ------------------------------------------------------------------------- routes


def _path_mismatch(match: rc.RouteMatch, request: Request) -> str | None:
    kind = match.WhichOneof("path_specifier")
    sensitive = not match.HasField("case_sensitive") or match.case_sensitive.value
    path = request.path_only

    def fold(s: str) -> str:
        return s if sensitive else s.lower()

    case = "" if sensitive else " (case-insensitive)"
    if kind == "prefix":
        if fold(path).startswith(fold(match.prefix)):
            return None
        return f"path {path!r} does not start with prefix {match.prefix!r}{case}"
    if kind == "path":
        if fold(path) == fold(match.path):
            return None
        return f"path {path!r} is not exactly {match.path!r}{case}"
    if kind == "safe_regex":
        if regex_full_match(match.safe_regex.regex, path):
            return None
        return f"path {path!r} does not match regex {match.safe_regex.regex!r}"
    if kind == "path_separated_prefix":
        want, got = fold(match.path_separated_prefix), fold(path)
        if got == want or got.startswith(want + "/"):
            return None
        return (
            f"path {path!r} is not {match.path_separated_prefix!r} or under"
            f" {match.path_separated_prefix + '/'!r}{case}"
        )
    if kind is None:
        return "the route has no path matcher (Envoy would reject it)"
    return f"path matcher {kind} is not evaluated by explain: taken as no match"


def header_mismatch(h: rc.HeaderMatcher, request: Request) -> str | None:
    """Why header matcher `h` fails for `request`, or None when it matches."""
    name = h.name
    value = request.header(name)
    kind = h.WhichOneof("header_match_specifier")
    why = _header_why(h, value, kind)
    if why is not None and request.client == "grpc" and name.lower().endswith("-bin"):
        return f"{why} (gRPC hides binary -bin headers from routing)"
    return why


def _header_why(h: rc.HeaderMatcher, value: str | None, kind: str | None) -> str | None:
    name = h.name
    if kind == "present_match":
        present = value is not None
        ok = (present == h.present_match) != h.invert_match
        if ok:
            return None
        want = "present" if h.present_match != h.invert_match else "absent"
        return f"header {name} is {'present' if present else 'absent'}, wanted {want}"
    if value is None and not h.treat_missing_header_as_empty:
        inverted = " (an inverted match fails too)" if h.invert_match else ""
        return f"header {name} is absent{inverted}"
    got = value if value is not None else ""
    if kind == "string_match":
        what = describe_string(h.string_match)
        ok = string_matches(h.string_match, got)
    elif kind == "exact_match":
        what, ok = f"exact {h.exact_match!r}", got == h.exact_match
    elif kind == "safe_regex_match":
        what = f"regex {h.safe_regex_match.regex!r}"
        ok = regex_full_match(h.safe_regex_match.regex, got)
    elif kind == "prefix_match":
        what, ok = f"prefix {h.prefix_match!r}", got.startswith(h.prefix_match)
    elif kind == "suffix_match":
        what, ok = f"suffix {h.suffix_match!r}", got.endswith(h.suffix_match)
    elif kind == "contains_match":
        what, ok = f"contains {h.contains_match!r}", h.contains_match in got
    elif kind is None:  # no matcher: Envoy matches any present value
        what, ok = "any value", True
    else:
        return f"header {name}: matcher {kind} is not evaluated by explain: taken as no match"
    if ok != h.invert_match:
        return None
    shown = repr(value) if value is not None else "absent (taken as '')"
    if h.invert_match:
        return f"header {name} {shown} matches {what}, and the match is inverted"
    return f"header {name} {shown} does not match {what}"


def _query_mismatch(q: rc.QueryParameterMatcher, request: Request) -> str | None:
    value = request.query.get(q.name)
    if value is None:
        return f"query parameter {q.name} is absent"
    if q.HasField("string_match"):
        if string_matches(q.string_match, value):
            return None
        return (
            f"query parameter {q.name} {value!r} does not match {describe_string(q.string_match)}"
        )
    return None  # present_match


@dataclass(frozen=True, slots=True)
class RouteVerdict:
    """Whether a route matches; `why` lists every failed condition, `notes` what explain
    assumed (a runtime fraction is taken as matching)."""

    matched: bool
    why: Sequence[str] = ()
    notes: Sequence[str] = ()


def match_route(route: rc.Route, request: Request) -> RouteVerdict:
    match = route.match
    why: list[str] = []
    notes: list[str] = []
    path_why = _path_mismatch(match, request)
    if path_why is not None:
        why.append(path_why)
    for h in match.headers:
        h_why = header_mismatch(h, request)
        if h_why is not None:
            why.append(h_why)
    if match.query_parameters and request.client == "grpc":
        why.append("gRPC skips routes that match query parameters")
    else:
        for q in match.query_parameters:
            q_why = _query_mismatch(q, request)
            if q_why is not None:
                why.append(q_why)
    if match.HasField("grpc") and request.client == "envoy":
        content_type = request.header("content-type") or ""
        if not content_type.startswith("application/grpc"):
            why.append("not a gRPC request (content-type is not application/grpc)")
    if match.HasField("runtime_fraction"):
        pct = match.runtime_fraction.default_value
        denominator = {0: 100, 1: 10_000, 2: 1_000_000}.get(pct.denominator, 100)
        notes.append(
            f"runtime_fraction {pct.numerator}/{denominator} of requests: ignored here"
            " (taken as matching)"
        )
    return RouteVerdict(not why, tuple(why), tuple(notes))
