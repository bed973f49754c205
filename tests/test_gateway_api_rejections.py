"""Gateway API routes the parser rejects, as the CRD schema and CEL rules, Envoy or our
limits refuse them: every rejection with its field path and reason."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway_objects import WEB, rejection, route, to

FIELD = {"URLRewrite": "urlRewrite"}
BIG = "a" * 97


def f(kind: str, body: Any = None) -> dict[str, Any]:
    """A filter of `kind` with its settings `body`."""
    out: dict[str, Any] = {"type": kind}
    if body is not None:
        out[FIELD.get(kind, kind[0].lower() + kind[1:])] = body
    return out


def m(*matches: dict[str, Any]) -> dict[str, Any]:
    return to("web", matches=list(matches))


def hostmod(verb: str, name: str) -> dict[str, Any]:
    entries = [name] if verb == "remove" else [{"name": name, "value": "v"}]
    return f("RequestHeaderModifier", {verb: entries})


def mirror(**settings: Any) -> dict[str, Any]:
    return f("RequestMirror", {"backendRef": {"name": "s", "port": 80}, **settings})


def filtered(*filters: dict[str, Any]) -> dict[str, Any]:
    """A route whose one rule, to web, has `filters`."""
    return route(to("web", filters=list(filters)))


def with_spec(**spec: Any) -> dict[str, Any]:
    """A route to web with more `spec` fields."""
    obj = route(to("web"))
    obj["spec"].update(spec)
    return obj


def svc(name: str, **kw: Any) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": name, **kw}


EXPECTED = {
    "apiVersion": (
        "apiVersion: unsupported apiVersion 'gateway.networking.k8s.io/v1beta1' (one of"
        " gateway.networking.k8s.io/v1)"
    ),
    "kind": "kind: unsupported kind 'TLSRoute' (HTTPRoute or GRPCRoute)",
    "no name": "metadata.name: required",
    "unknown field": 'spec.rules[0].matchs: unknown field "matchs" (did you mean "matches"?)',
    "relative path": "spec.rules[0].matches[0].path.value: path 'api' must start with '/'",
    "double slash": (
        "spec.rules[0].matches[0].path.value: path '/a//b' must not contain '//', '/./', '/../',"
        " '%2f', '%2F' or '#'"
    ),
    "dot segment": (
        "spec.rules[0].matches[0].path.value: path '/a/../b' must not contain '//', '/./', '/../',"
        " '%2f', '%2F' or '#'"
    ),
    "path type": (
        "spec.rules[0].matches[0].path.type: unsupported value 'Prefix' (one of Exact, PathPrefix,"
        " RegularExpression)"
    ),
    "bad regex": "spec.rules[0].matches[0].path.value: invalid RE2 regex: missing ): a(",
    "big regex": (
        "spec.rules[0].matches[0].path.value: regex program size 101 exceeds Envoy's limit of 100"
    ),
    "header name": (
        "spec.rules[0].matches[0].headers[0].name: invalid name 'x y' (an HTTP token of 1-256"
        " characters)"
    ),
    "header dup": "spec.rules[0].matches[0].headers[1].name: duplicate header 'x-a'",
    "header regex": (
        "spec.rules[0].matches[0].headers[0].value: regex program size 101 exceeds Envoy's limit of"
        " 100"
    ),
    "header value missing": "spec.rules[0].matches[0].headers[0].value: required",
    "query dup": "spec.rules[0].matches[0].queryParams[1].name: duplicate query parameter 'q'",
    "method": (
        "spec.rules[0].matches[0].method: unsupported method 'FETCH' (one of GET, HEAD, POST, PUT,"
        " DELETE, CONNECT, OPTIONS, TRACE, PATCH)"
    ),
    "weight high": "spec.rules[0].backendRefs[0].weight: 1000001 is outside 0-1000000",
    "weight negative": "spec.rules[0].backendRefs[0].weight: -1 is outside 0-1000000",
    "backend port": "spec.rules[0].backendRefs[0].port: required for a Service backend",
    "backends 17": "spec.rules[0].backendRefs: 17 items; at most 16 are allowed",
    "rules 17": "spec.rules: 17 items; at most 16 are allowed",
    "matches 65": "spec.rules[0].matches: 65 items; at most 64 are allowed",
    "matches total": "spec.rules: 150 matches across all rules; at most 128 are allowed",
    "grpc matches 65": "spec.rules[0].matches: 65 items; at most 64 are allowed",
    "filter no type": "spec.rules[0].filters[0].type: required",
    "filter wrong field": (
        "spec.rules[0].filters[0].urlRewrite: must not be set when type is RequestHeaderModifier"
    ),
    "filter missing field": "spec.rules[0].filters[0].urlRewrite: required when type is URLRewrite",
    "filter repeated": (
        "spec.rules[0].filters[1].type: RequestHeaderModifier filter cannot be repeated"
    ),
    "rewrite and redirect": (
        "spec.rules[0].filters[0]: may specify either RequestRedirect or URLRewrite, but not both"
    ),
    "prefix with exact": (
        "spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch: ReplacePrefixMatch is only"
        " compatible with a single PathPrefix match (the rule must have exactly one match, of type"
        " PathPrefix)"
    ),
    "prefix two matches": (
        "spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch: ReplacePrefixMatch is only"
        " compatible with a single PathPrefix match (the rule must have exactly one match, of type"
        " PathPrefix)"
    ),
    "redirect prefix regex": (
        "spec.rules[0].filters[0].requestRedirect.path.replacePrefixMatch: ReplacePrefixMatch is"
        " only compatible with a single PathPrefix match (the rule must have exactly one match, of"
        " type PathPrefix)"
    ),
    "path modifier field": (
        "spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch: must not be set when type is"
        " ReplaceFullPath"
    ),
    "path modifier missing": (
        "spec.rules[0].filters[0].urlRewrite.path.replaceFullPath: required when type is"
        " ReplaceFullPath"
    ),
    "full path relative": (
        "spec.rules[0].filters[0].urlRewrite.path.replaceFullPath: path 'b' must start with '/'"
    ),
    "redirect code": (
        "spec.rules[0].filters[0].requestRedirect.statusCode: unsupported value 304 (one of 301,"
        " 302, 303, 307, 308)"
    ),
    "redirect scheme": (
        "spec.rules[0].filters[0].requestRedirect.scheme: unsupported value 'ftp' (http or https)"
    ),
    "redirect host": (
        "spec.rules[0].filters[0].requestRedirect.hostname: wildcard hosts are not supported"
        " ('*.example.com')"
    ),
    "rewrite host": (
        "spec.rules[0].filters[0].urlRewrite.hostname: invalid host 'Example.com' (a lowercase DNS"
        " name)"
    ),
    "header value percent": (
        "spec.rules[0].filters[0].requestHeaderModifier.set[0].value: invalid '%' at position 3 in"
        " header value '100%': write '%%' for a literal '%', or use a known variable such as"
        " %HOSTNAME% or %REQ(x-name)%"
    ),
    "header value empty": (
        "spec.rules[0].filters[0].responseHeaderModifier.add[0].value: header value must have"
        " 1-4096 characters"
    ),
    "add host": (
        "spec.rules[0].filters[0].requestHeaderModifier.add[0].name: the host header can only be"
        " set (on requests)"
    ),
    "remove host": (
        "spec.rules[0].filters[0].requestHeaderModifier.remove[0]: the host header can only be set"
        " (on requests)"
    ),
    "hostname": "spec.hostnames[0]: invalid hostname 'A.b' (a lowercase DNS name, '*.' allowed)",
    "remove dup": (
        "spec.rules[0].filters[0].requestHeaderModifier.remove[1]: duplicate header 'x-a'"
    ),
    "response host": (
        "spec.rules[0].filters[0].responseHeaderModifier.set[0].name: the host header can only be"
        " set (on requests)"
    ),
    "modifier dup": (
        "spec.rules[0].filters[0].requestHeaderModifier.set[1].name: duplicate header 'x'"
    ),
    "pseudo header": (
        "spec.rules[0].filters[0].requestHeaderModifier.set[0].name: invalid name ':path' (an HTTP"
        " token of 1-256 characters)"
    ),
    "modifier 17": (
        "spec.rules[0].filters[0].requestHeaderModifier.remove: 17 items; at most 16 are allowed"
    ),
    "host twice": (
        "spec.rules[0].filters: the Host header is set by RequestHeaderModifier and"
        " URLRewrite.hostname; set it in one place"
    ),
    "backend host": (
        "spec.rules[0].backendRefs[0].filters: setting the Host header per backend is not"
        " supported; use the rule's filters"
    ),
    "backend filter kind": (
        "spec.rules[0].backendRefs[0].filters[0].type: filter type URLRewrite on a backendRef is"
        " not supported"
    ),
    "mirror percent": "spec.rules[0].filters[0].requestMirror.percent: 101 is outside 0-100",
    "mirror both": (
        "spec.rules[0].filters[0].requestMirror: only one of percent or fraction may be specified"
    ),
    "mirror fraction": (
        "spec.rules[0].filters[0].requestMirror.fraction: numerator must be less than or equal to"
        " denominator"
    ),
    "mirror port": (
        "spec.rules[0].filters[0].requestMirror.backendRef.port: required for a Service backend"
    ),
    "extension": "spec.rules[0].filters[0].type: filter type ExtensionRef is not supported",
    "timeouts order": (
        "spec.rules[0].timeouts.backendRequest: backendRequest timeout cannot be longer than"
        " request timeout"
    ),
    "timeouts format": (
        'spec.rules[0].timeouts.request: invalid duration \'1.5s\' (for example "10s", "1m30s",'
        ' "500ms")'
    ),
    "timeouts short": (
        'spec.rules[0].timeouts.request: invalid duration \'500us\' (for example "10s", "1m30s",'
        ' "500ms")'
    ),
    "parent dup": "spec.parentRefs[1]: duplicate parentRef (same as 0)",
    "parent same no port": (
        "spec.parentRefs[1]: sectionName or port must be specified when parentRefs includes 2 or"
        " more references to the same parent"
    ),
    "parents ports differ": (
        "spec.parentRefs: Service parents name different ports (see 0); this server needs the same"
        " ports (or none) on every Service parent of one route: split it into one route per Service"
    ),
    "producer and consumer": (
        "spec.parentRefs: a route cannot be a producer route (Service in its namespace) and a"
        " consumer route (Service in another namespace) at once here: split it"
    ),
    "parent name": "spec.parentRefs[0].name: invalid name 'Web' (a lowercase DNS subdomain)",
    "parent port": "spec.parentRefs[0].port: 0 is outside 1-65535",
    "grpc method empty": (
        "spec.rules[0].matches[0].method: one or both of service, method must be specified"
    ),
    "grpc service": (
        "spec.rules[0].matches[0].method.service: invalid gRPC service name 'shop/Cart'"
    ),
    "grpc method": "spec.rules[0].matches[0].method.method: invalid gRPC method name 'Get.All'",
    "grpc regex size": (
        "spec.rules[0].matches[0].method: the path regex"
        f" '/(?:{'a' * 60})/(?:{'b' * 40})': regex program size 106 exceeds Envoy's limit of 100"
    ),
    "grpc rewrite": (
        "spec.rules[0].filters[0].type: unsupported value 'URLRewrite' (one of"
        " RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, ExtensionRef)"
    ),
    "grpc timeouts": 'spec.rules[0].timeouts: unknown field "timeouts"',
    "rule name": "spec.rules[0].name: invalid name 'Bad_Name' (a lowercase DNS subdomain)",
    "rule name twice": "spec.rules[2].name: duplicate rule name 'a'",
    "path characters": (
        "spec.rules[0].matches[0].path.value: path '/a<b>' must only contain URI path characters"
        " and %-escapes"
    ),
    "header value empty match": (
        "spec.rules[0].matches[0].headers[0].value: must have 1-4096 characters"
    ),
    "query value empty": (
        "spec.rules[0].matches[0].queryParams[0].value: must have 1-1024 characters"
    ),
    "query name": (
        "spec.rules[0].matches[0].queryParams[0].name: invalid name 'a b' (an HTTP token of 1-256"
        " characters)"
    ),
    "redirect with backends": (
        "spec.rules[0].backendRefs: RequestRedirect filter must not be used together with"
        " backendRefs"
    ),
    "parent kind": "spec.parentRefs[0].kind: invalid kind 'Ser vice' (a CamelCase name)",
    "backend group": (
        "spec.rules[0].backendRefs[0].group: invalid group 'Example.com' (empty, or a DNS"
        " subdomain)"
    ),
    "section name": (
        "spec.parentRefs[0].sectionName: invalid name 'Http_1' (a lowercase DNS subdomain)"
    ),
}

CASES: list[tuple[str, Any]] = [
    ("apiVersion", {**route(to("web")), "apiVersion": "gateway.networking.k8s.io/v1beta1"}),
    ("kind", {**route(to("web")), "kind": "TLSRoute"}),
    ("no name", {**route(to("web")), "metadata": {"namespace": "shop"}}),
    ("unknown field", route({"matchs": []})),
    ("relative path", route(m({"path": {"value": "api"}}))),
    ("double slash", route(m({"path": {"type": "Exact", "value": "/a//b"}}))),
    ("dot segment", route(m({"path": {"value": "/a/../b"}}))),
    ("path type", route(m({"path": {"type": "Prefix", "value": "/a"}}))),
    ("bad regex", route(m({"path": {"type": "RegularExpression", "value": "a("}}))),
    ("big regex", route(m({"path": {"type": "RegularExpression", "value": BIG}}))),
    ("header name", route(m({"headers": [{"name": "x y", "value": "1"}]}))),
    (
        "header dup",
        route(m({"headers": [{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}]})),
    ),
    (
        "header regex",
        route(m({"headers": [{"type": "RegularExpression", "name": "x", "value": BIG}]})),
    ),
    ("header value missing", route(m({"headers": [{"name": "x"}]}))),
    (
        "query dup",
        route(m({"queryParams": [{"name": "q", "value": "1"}, {"name": "q", "value": "2"}]})),
    ),
    ("method", route(m({"method": "FETCH"}))),
    ("weight high", route({"backendRefs": [{"name": "a", "port": 80, "weight": 1000001}]})),
    ("weight negative", route({"backendRefs": [{"name": "a", "port": 80, "weight": -1}]})),
    ("backend port", route({"backendRefs": [{"name": "a"}]})),
    ("backends 17", route(to(*[f"b{i}" for i in range(17)]))),
    ("rules 17", route(*[to("web")] * 17)),
    ("matches 65", route(m(*[{}] * 65))),
    ("matches total", route(*[m(*[{}] * 50)] * 3)),
    ("grpc matches 65", route(m(*[{}] * 65), kind="GRPCRoute")),
    ("filter no type", route(to("web", filters=[{}]))),
    (
        "filter wrong field",
        route(to("web", filters=[{"type": "RequestHeaderModifier", "urlRewrite": {}}])),
    ),
    ("filter missing field", route(to("web", filters=[{"type": "URLRewrite"}]))),
    ("filter repeated", route(to("web", filters=[hostmod("set", "x"), hostmod("set", "y")]))),
    (
        "rewrite and redirect",
        route(to("web", filters=[f("URLRewrite", {}), f("RequestRedirect", {})])),
    ),
    (
        "prefix with exact",
        route(
            to(
                "web",
                matches=[{"path": {"type": "Exact", "value": "/a"}}],
                filters=[
                    f(
                        "URLRewrite",
                        {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/b"}},
                    )
                ],
            )
        ),
    ),
    (
        "prefix two matches",
        route(
            to(
                "web",
                matches=[{"path": {"value": "/a"}}, {"path": {"value": "/b"}}],
                filters=[
                    f(
                        "URLRewrite",
                        {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/b"}},
                    )
                ],
            )
        ),
    ),
    (
        "redirect prefix regex",
        route(
            {
                "matches": [{"path": {"type": "RegularExpression", "value": "/a.*"}}],
                "filters": [
                    f(
                        "RequestRedirect",
                        {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/b"}},
                    )
                ],
            }
        ),
    ),
    (
        "path modifier field",
        route(
            to(
                "web",
                filters=[
                    f(
                        "URLRewrite",
                        {"path": {"type": "ReplaceFullPath", "replacePrefixMatch": "/b"}},
                    )
                ],
            )
        ),
    ),
    (
        "path modifier missing",
        route(to("web", filters=[f("URLRewrite", {"path": {"type": "ReplaceFullPath"}})])),
    ),
    (
        "full path relative",
        route(
            to(
                "web",
                filters=[
                    f("URLRewrite", {"path": {"type": "ReplaceFullPath", "replaceFullPath": "b"}})
                ],
            )
        ),
    ),
    ("redirect code", route({"filters": [f("RequestRedirect", {"statusCode": 304})]})),
    ("redirect scheme", route({"filters": [f("RequestRedirect", {"scheme": "ftp"})]})),
    ("redirect host", route({"filters": [f("RequestRedirect", {"hostname": "*.example.com"})]})),
    ("rewrite host", route(to("web", filters=[f("URLRewrite", {"hostname": "Example.com"})]))),
    (
        "header value percent",
        route(
            to(
                "web",
                filters=[f("RequestHeaderModifier", {"set": [{"name": "x", "value": "100%"}]})],
            )
        ),
    ),
    (
        "header value empty",
        route(
            to("web", filters=[f("ResponseHeaderModifier", {"add": [{"name": "x", "value": ""}]})])
        ),
    ),
    ("add host", route(to("web", filters=[hostmod("add", "Host")]))),
    ("remove host", route(to("web", filters=[hostmod("remove", "host")]))),
    ("hostname", with_spec(hostnames=["A.b"])),
    (
        "remove dup",
        route(to("web", filters=[f("RequestHeaderModifier", {"remove": ["X-A", "x-a"]})])),
    ),
    (
        "response host",
        route(
            to(
                "web",
                filters=[f("ResponseHeaderModifier", {"set": [{"name": "host", "value": "a"}]})],
            )
        ),
    ),
    (
        "modifier dup",
        route(
            to(
                "web",
                filters=[
                    f(
                        "RequestHeaderModifier",
                        {"set": [{"name": "X", "value": "1"}, {"name": "x", "value": "2"}]},
                    )
                ],
            )
        ),
    ),
    ("pseudo header", route(to("web", filters=[hostmod("set", ":path")]))),
    (
        "modifier 17",
        route(
            to(
                "web",
                filters=[f("RequestHeaderModifier", {"remove": [f"h{i}" for i in range(17)]})],
            )
        ),
    ),
    (
        "host twice",
        route(to("web", filters=[hostmod("set", "host"), f("URLRewrite", {"hostname": "a.b"})])),
    ),
    (
        "backend host",
        route({"backendRefs": [{"name": "a", "port": 80, "filters": [hostmod("set", "host")]}]}),
    ),
    (
        "backend filter kind",
        route({"backendRefs": [{"name": "a", "port": 80, "filters": [f("URLRewrite", {})]}]}),
    ),
    ("mirror percent", filtered(mirror(percent=101))),
    ("mirror both", filtered(mirror(percent=1, fraction={"numerator": 1}))),
    ("mirror fraction", filtered(mirror(fraction={"numerator": 3, "denominator": 2}))),
    ("mirror port", route(to("web", filters=[f("RequestMirror", {"backendRef": {"name": "s"}})]))),
    (
        "extension",
        route(to("web", filters=[f("ExtensionRef", {"group": "x", "kind": "y", "name": "z"})])),
    ),
    ("timeouts order", route(to("web", timeouts={"request": "1s", "backendRequest": "2s"}))),
    ("timeouts format", route(to("web", timeouts={"request": "1.5s"}))),
    ("timeouts short", route(to("web", timeouts={"request": "500us"}))),
    ("parent dup", route(to("web"), parents=[WEB, WEB])),
    ("parent same no port", route(to("web"), parents=[WEB, svc("web")])),
    ("parents ports differ", route(to("web"), parents=[WEB, svc("api")])),
    (
        "producer and consumer",
        route(to("web"), parents=[WEB, svc("api", namespace="other", port=80)]),
    ),
    ("parent name", route(to("web"), parents=[svc("Web")])),
    ("parent port", route(to("web"), parents=[svc("web", port=0)])),
    ("grpc method empty", route(m({"method": {}}), kind="GRPCRoute")),
    ("grpc service", route(m({"method": {"service": "shop/Cart"}}), kind="GRPCRoute")),
    ("grpc method", route(m({"method": {"method": "Get.All"}}), kind="GRPCRoute")),
    (
        "grpc regex size",
        route(
            m({"method": {"type": "RegularExpression", "service": "a" * 60, "method": "b" * 40}}),
            kind="GRPCRoute",
        ),
    ),
    ("grpc rewrite", route(to("web", filters=[f("URLRewrite", {})]), kind="GRPCRoute")),
    ("grpc timeouts", route(to("web", timeouts={"request": "1s"}), kind="GRPCRoute")),
    ("rule name", route(to("web", name="Bad_Name"))),
    ("rule name twice", route(to("web", name="a"), to("web"), to("web", name="a"))),
    ("path characters", route(m({"path": {"type": "Exact", "value": "/a<b>"}}))),
    ("header value empty match", route(m({"headers": [{"name": "x", "value": ""}]}))),
    ("query value empty", route(m({"queryParams": [{"name": "q", "value": ""}]}))),
    ("query name", route(m({"queryParams": [{"name": "a b", "value": "1"}]}))),
    ("redirect with backends", route(to("web", filters=[f("RequestRedirect", {})]))),
    ("parent kind", route(to("web"), parents=[svc("web", kind="Ser vice")])),
    ("backend group", route({"backendRefs": [{"group": "Example.com", "kind": "B", "name": "b"}]})),
    ("section name", route(to("web"), parents=[svc("web", sectionName="Http_1")])),
]


def test_every_case_has_its_message() -> None:
    assert [name for name, _ in CASES] == list(EXPECTED)


@pytest.mark.parametrize(("name", "obj"), CASES, ids=[name for name, _ in CASES])
def test_rejected_with_field_path_and_reason(name: str, obj: Any) -> None:
    assert rejection(obj) == EXPECTED[name]
