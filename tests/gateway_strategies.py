"""Hypothesis strategies for Gateway API routes attached to Service shop/web: every
match, filter and backend form, values at the limits, and some the parser refuses (the
property keeps what it accepts)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tests.gateway_objects import route
from tests.policy_strategies.values import HEADER_VALUES, LIKELY, REGEXES, TEXT, maybe

Draw = Any
Object = dict[str, Any]

SEGMENT = st.from_regex(r"[-A-Za-z0-9._~!$&'()*+,;=:@]{1,12}|%[0-9a-fA-F]{2}", fullmatch=True)
PATHS = st.one_of(
    st.just("/"),
    st.lists(SEGMENT, min_size=1, max_size=4).map(lambda s: "/" + "/".join(s)),
    st.lists(SEGMENT, min_size=1, max_size=2).map(lambda s: "/" + "/".join(s) + "/"),
    st.just("/" + "a" * 1023),
)
HEADER_NAMES = st.sampled_from(["x-user", "X-Env", "accept", "x_under", "x~tilde", "a" * 256])
SERVICES = st.sampled_from(["web", "web-v1", "web-v2"])
METHODS = st.sampled_from(["GET", "POST", "PATCH", "TRACE", "CONNECT"])
GRPC_SERVICES = st.sampled_from(["shop.Cart", ".shop.v1.Cart", "Echo", "a" * 60])
GRPC_METHODS = st.sampled_from(["Add", "Get", "List_all", "x"])
MODIFIER_VALUES = HEADER_VALUES.filter(bool)


def unique_names(
    strategy: st.SearchStrategy[Object], query: bool = False
) -> st.SearchStrategy[list[Object]]:
    """A list of name/value matches whose names differ (headers: case-insensitively)."""
    return st.lists(
        strategy, max_size=2, unique_by=lambda m: m["name"] if query else m["name"].lower()
    )


@st.composite
def value_match(draw: Draw, name: st.SearchStrategy[str], longest: int = 4096) -> Object:
    if draw(LIKELY):
        return {
            "name": draw(name),
            "value": draw(st.one_of(TEXT.filter(bool), st.just("v" * longest))),
        }
    return {"type": "RegularExpression", "name": draw(name), "value": draw(REGEXES)}


@st.composite
def http_match(draw: Draw) -> Object:
    out: Object = {}
    kind = draw(st.sampled_from(["PathPrefix", "Exact", "RegularExpression", None]))
    if kind == "RegularExpression":
        out["path"] = {"type": kind, "value": draw(REGEXES)}
    elif kind is not None:
        out["path"] = {"type": kind, "value": draw(PATHS)}
    maybe(draw, out, "method", METHODS)
    maybe(draw, out, "headers", unique_names(value_match(HEADER_NAMES)))
    queries = unique_names(value_match(st.sampled_from(["q", "Q", "id"]), 1024), query=True)
    maybe(draw, out, "queryParams", queries)
    return out


@st.composite
def grpc_match(draw: Draw) -> Object:
    out: Object = {}
    if draw(LIKELY):
        method: Object = {}
        if draw(st.booleans()):
            method["type"] = "RegularExpression"
            maybe(draw, method, "method", st.sampled_from(["Get|Put", ".*", "L[a-z]+"]))
            if "method" not in method or draw(st.booleans()):
                method["service"] = draw(st.sampled_from(["shop\\..*", "a|b", "[a-z]{40}"]))
        else:
            maybe(draw, method, "method", GRPC_METHODS)
            if "method" not in method or draw(st.booleans()):
                method["service"] = draw(GRPC_SERVICES)
        out["method"] = method
    maybe(draw, out, "headers", unique_names(value_match(HEADER_NAMES)))
    return out


@st.composite
def header_modifier(draw: Draw, request: bool = True) -> Object:
    out: Object = {}
    for verb in ("set", "add"):
        pairs = draw(st.dictionaries(HEADER_NAMES, MODIFIER_VALUES, max_size=3))
        if pairs:
            out[verb] = [{"name": k, "value": v} for k, v in pairs.items()]
    maybe(draw, out, "remove", st.lists(HEADER_NAMES, max_size=3, unique=True))
    if request and draw(st.integers(0, 5)) == 0:
        out.setdefault("set", []).append({"name": "Host", "value": "web.example.com"})
    return out


def backend_ref(draw: Draw) -> Object:
    return {"name": draw(SERVICES), "port": draw(st.sampled_from([80, 8080]))}


@st.composite
def rule(draw: Draw, grpc: bool) -> Object:
    out: Object = {}
    matches = draw(st.lists(grpc_match() if grpc else http_match(), max_size=2))
    if matches:
        out["matches"] = matches
    filters: list[Object] = []
    if draw(st.booleans()):
        filters.append(
            {"type": "RequestHeaderModifier", "requestHeaderModifier": draw(header_modifier())}
        )
    if draw(st.booleans()):
        filters.append(
            {
                "type": "ResponseHeaderModifier",
                "responseHeaderModifier": draw(header_modifier(request=False)),
            }
        )
    if draw(st.booleans()):
        mirror: Object = {"backendRef": backend_ref(draw)}
        share = draw(st.sampled_from([None, "percent", "fraction"]))
        if share == "percent":
            mirror["percent"] = draw(st.integers(0, 100))
        elif share == "fraction":
            mirror["fraction"] = {"numerator": draw(st.integers(0, 3)), "denominator": 3}
        filters.append({"type": "RequestMirror", "requestMirror": mirror})
    redirect = False
    if not grpc:
        one_prefix = len(matches) == 1 and matches[0].get("path", {}).get("type") == "PathPrefix"
        path: Object | None = None
        if draw(st.booleans()):
            full = not one_prefix or draw(st.booleans())
            path = ({"type": "ReplaceFullPath", "replaceFullPath": draw(PATHS)} if full else
                    {"type": "ReplacePrefixMatch",
                     "replacePrefixMatch": draw(st.one_of(st.just(""), PATHS))})  # fmt: skip
        action = draw(st.sampled_from(["rewrite", "redirect", None]))
        if action == "rewrite":
            rewrite: Object = {"path": path} if path else {}
            maybe(draw, rewrite, "hostname", st.sampled_from(["api.internal", "web"]))
            filters.append({"type": "URLRewrite", "urlRewrite": rewrite})
        elif action == "redirect":
            redirect = True
            target: Object = {"path": path} if path else {}
            maybe(draw, target, "scheme", st.sampled_from(["http", "https"]))
            maybe(draw, target, "hostname", st.sampled_from(["example.com", "a.b.c"]))
            maybe(draw, target, "port", st.sampled_from([80, 443, 8443]))
            maybe(draw, target, "statusCode", st.sampled_from([301, 302, 303, 307, 308]))
            filters.append({"type": "RequestRedirect", "requestRedirect": target})
        if draw(st.booleans()):
            out["timeouts"] = draw(st.fixed_dictionaries({}, optional={
                "request": st.sampled_from(["0s", "10s", "1h30m", "99999h"]),
                "backendRequest": st.sampled_from(["0s", "500ms", "5s"])}))  # fmt: skip
    if filters:
        out["filters"] = filters
    if not redirect:
        refs = []
        for _ in range(draw(st.integers(0, 3))):
            ref = backend_ref(draw)
            maybe(draw, ref, "weight", st.sampled_from([0, 1, 7, 1_000_000]))
            if draw(st.integers(0, 4)) == 0:
                ops = draw(header_modifier(request=False))
                ref["filters"] = [{"type": "RequestHeaderModifier", "requestHeaderModifier": ops}]
            refs.append(ref)
        if refs:
            out["backendRefs"] = refs
    return out


@st.composite
def routes(draw: Draw) -> Object:
    """An HTTPRoute or GRPCRoute for Service shop/web (on port 80, or every port)."""
    grpc = draw(st.booleans())
    parent: Object = {"group": "", "kind": "Service", "name": "web"}
    maybe(draw, parent, "port", st.just(80), likely=True)
    rules = draw(st.lists(rule(grpc), min_size=1, max_size=2))
    kind = "GRPCRoute" if grpc else "HTTPRoute"
    return route(*rules, kind=kind, name=f"r{draw(st.integers(0, 9))}", parents=[parent])
