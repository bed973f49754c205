"""Istio VirtualServices the parser rejects: every rejection with its exact message and
field path."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.istio_objects import http_vs, rejection, to_reviews, vs


def with_top(**changes: Any) -> dict[str, Any]:
    """A valid VirtualService with top-level members replaced (None deletes one)."""
    obj = http_vs(to_reviews())
    for key, value in changes.items():
        if value is None:
            del obj[key]
        else:
            obj[key] = value
    return obj


def with_meta(**changes: Any) -> dict[str, Any]:
    obj = http_vs(to_reviews())
    obj["metadata"] = {k: v for k, v in {**obj["metadata"], **changes}.items() if v is not None}
    return obj


REGEX_TOO_BIG = "a" * 97
BIG = "regex program size 101 exceeds Envoy's limit of 100"


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        # the object
        ([], "expected an object, got a list"),
        (
            with_top(apiVersion="networking.istio.io/v2"),
            "apiVersion: unsupported apiVersion 'networking.istio.io/v2' (one of "
            "networking.istio.io/v1, "
            "networking.istio.io/v1alpha3, networking.istio.io/v1beta1)",
        ),
        (
            with_top(apiVersion=None),
            "apiVersion: unsupported apiVersion None (one of networking.istio.io/v1, "
            "networking.istio.io/v1alpha3, "
            "networking.istio.io/v1beta1)",
        ),
        (
            with_top(kind="Gateway"),
            "kind: unsupported kind 'Gateway' (VirtualService or DestinationRule)",
        ),
        (with_top(extra=1), 'extra: unknown field "extra"'),
        (with_top(spce={}), 'spce: unknown field "spce" (did you mean "spec"?)'),
        (with_top(spec=None), "spec: required"),
        (with_top(spec=[]), "spec: expected an object, got a list"),
        (with_top(metadata="x"), "metadata: expected an object, got string 'x'"),
        (with_meta(name=None), "metadata.name: required"),
        (with_meta(name=5), "metadata.name: expected a string, got integer 5"),
        (
            with_meta(name="Reviews"),
            "metadata.name: invalid name 'Reviews' (a lowercase DNS subdomain)",
        ),
        (with_meta(name="a_b"), "metadata.name: invalid name 'a_b' (a lowercase DNS subdomain)"),
        (
            with_meta(name="a" * 254),
            f"metadata.name: invalid name '{'a' * 254}' (a lowercase DNS subdomain)",
        ),
        (
            with_meta(namespace="a.b"),
            "metadata.namespace: invalid namespace 'a.b' (a lowercase DNS label)",
        ),
        ({**http_vs(to_reviews()), 1: 2}, "field names must be strings, got integer 1"),
        # spec
        (vs({"http": [to_reviews()]}), "spec.hosts: at least one host is required"),
        (vs({"hosts": [], "http": [to_reviews()]}), "spec.hosts: at least one host is required"),
        (
            vs({"hosts": "reviews", "http": [to_reviews()]}),
            "spec.hosts: expected a list, got string 'reviews'",
        ),
        (
            vs({"hosts": ["*.example.com"], "http": [to_reviews()]}),
            "spec.hosts[0]: wildcard hosts are not supported ('*.example.com')",
        ),
        (
            vs({"hosts": ["*"], "http": [to_reviews()]}),
            "spec.hosts[0]: wildcard hosts are not supported ('*')",
        ),
        (
            vs({"hosts": ["a", "Reviews"], "http": [to_reviews()]}),
            "spec.hosts[1]: invalid host 'Reviews' (a lowercase DNS name)",
        ),
        (
            vs({"hosts": ["10.0.0.1"], "http": [to_reviews()]}),
            "spec.hosts[0]: invalid host '10.0.0.1' (a lowercase DNS name)",
        ),
        (
            vs({"hosts": ["a..b"], "http": [to_reviews()]}),
            "spec.hosts[0]: invalid host 'a..b' (a lowercase DNS name)",
        ),
        (
            vs({"hosts": [""], "http": [to_reviews()]}),
            "spec.hosts[0]: invalid host '' (a lowercase DNS name)",
        ),
        (vs({"hosts": [None], "http": [to_reviews()]}), "spec.hosts[0]: must not be null"),
        (
            vs({"hosts": ["a", "b", "a"], "http": [to_reviews()]}),
            "spec.hosts[2]: duplicate host 'a'",
        ),
        (vs({"hosts": ["a"]}), "spec: at least one of http, tcp, tls is required"),
        (vs({"hosts": ["a"], "http": []}), "spec: at least one of http, tcp, tls is required"),
        (vs({"hosts": ["a"], "http": {}, "tcp": [1]}), "spec.http: expected a list, got an object"),
        (
            vs({"hosts": ["a"], "http": [to_reviews()], "gateways": "mesh"}),
            "spec.gateways: expected a list, got string 'mesh'",
        ),
        (
            vs({"hosts": ["a"], "http": [to_reviews()], "tpc": []}),
            'spec.tpc: unknown field "tpc" (did you mean "tcp"?)',
        ),
        # rules
        (http_vs({}), "spec.http[0]: one of route, redirect, directResponse is required"),
        (
            http_vs({"route": []}),
            "spec.http[0]: one of route, redirect, directResponse is required",
        ),
        (
            http_vs(to_reviews(redirect={"uri": "/"})),
            "spec.http[0]: only one of route, redirect, directResponse may be set (got route and "
            "redirect)",
        ),
        (
            http_vs({"redirect": {"uri": "/"}, "directResponse": {"status": 200}}),
            "spec.http[0]: only one of route, redirect, directResponse may be set (got redirect "
            "and "
            "directResponse)",
        ),
        (
            http_vs(to_reviews(delegate={"name": "x"})),
            "spec.http[0]: only one of route, redirect, directResponse may be set (got route and "
            "delegate)",
        ),
        (
            http_vs(to_reviews(timout="1s")),
            'spec.http[0].timout: unknown field "timout" (did you mean "timeout"?)',
        ),
        (
            http_vs(to_reviews(per_try_timeout="1s")),
            'spec.http[0].per_try_timeout: unknown field "per_try_timeout" (did you mean '
            '"timeout"?)',
        ),
        (
            http_vs(to_reviews(retries={"per_try_timeout": "1s"})),
            'spec.http[0].retries.per_try_timeout: unknown field "per_try_timeout" (did you mean '
            '"perTryTimeout"?)',
        ),
        (http_vs(to_reviews(name=3)), "spec.http[0].name: expected a string, got integer 3"),
        (
            http_vs({"redirect": {"uri": "/"}, "fault": {"abort": {"httpStatus": 500}}}),
            "spec.http[0].fault: cannot be combined with redirect",
        ),
        (
            http_vs({"redirect": {"uri": "/"}, "rewrite": {"uri": "/"}}),
            "spec.http[0].rewrite: cannot be combined with redirect",
        ),
        (
            http_vs({"directResponse": {"status": 200}, "rewrite": {"uri": "/"}}),
            "spec.http[0].rewrite: cannot be combined with directResponse",
        ),
        (
            http_vs({"delegate": {"name": "x", "namespace": "y", "extra": 1}}),
            'spec.http[0].delegate.extra: unknown field "extra"',
        ),
        # matches
        (http_vs(to_reviews(match={})), "spec.http[0].match: expected a list, got an object"),
        (
            http_vs(to_reviews(match=[{"uri": {"exact": "/a", "prefix": "/b"}}])),
            "spec.http[0].match[0].uri: only one of exact, prefix, regex may be set (got exact and "
            "prefix)",
        ),
        (
            http_vs(to_reviews(match=[{"uri": {"prefix": ""}}])),
            "spec.http[0].match[0].uri.prefix: must not be empty",
        ),
        (
            http_vs(to_reviews(match=[{"uri": {"regex": ""}}])),
            "spec.http[0].match[0].uri.regex: empty regex",
        ),
        (
            http_vs(to_reviews(match=[{"uri": {"regex": "a("}}])),
            "spec.http[0].match[0].uri.regex: invalid RE2 regex: missing ): a(",
        ),
        (
            http_vs(to_reviews(match=[{"uri": {"regex": REGEX_TOO_BIG}}])),
            f"spec.http[0].match[0].uri.regex: {BIG}",
        ),
        (
            http_vs(to_reviews(match=[{}, {"authority": {"regex": REGEX_TOO_BIG}}])),
            f"spec.http[0].match[1].authority.regex: {BIG}",
        ),
        (
            http_vs(to_reviews(match=[{"method": {"regex": REGEX_TOO_BIG}}])),
            f"spec.http[0].match[0].method.regex: {BIG}",
        ),
        (
            http_vs(to_reviews(match=[{"scheme": {"regex": REGEX_TOO_BIG}}])),
            f"spec.http[0].match[0].scheme.regex: {BIG}",
        ),
        (
            http_vs(to_reviews(match=[{"headers": {"x-a": {"regex": REGEX_TOO_BIG}}}])),
            f'spec.http[0].match[0].headers["x-a"].regex: {BIG}',
        ),
        (
            http_vs(to_reviews(match=[{"withoutHeaders": {"x-a": {"regex": "("}}}])),
            'spec.http[0].match[0].withoutHeaders["x-a"].regex: invalid RE2 regex: missing ): (',
        ),
        (
            http_vs(to_reviews(match=[{"queryParams": {"q": {"regex": REGEX_TOO_BIG}}}])),
            f"spec.http[0].match[0].queryParams.q.regex: {BIG}",
        ),
        (
            http_vs(to_reviews(match=[{"uri": {"exact": 5}}])),
            "spec.http[0].match[0].uri.exact: expected a string, got integer 5",
        ),
        (
            http_vs(to_reviews(match=[{"uri": {"suffix": "x"}}])),
            'spec.http[0].match[0].uri.suffix: unknown field "suffix"',
        ),
        (
            http_vs(to_reviews(match=[{"uri": "/api"}])),
            "spec.http[0].match[0].uri: expected an object, got string '/api'",
        ),
        (
            http_vs(to_reviews(match=[{"headers": {":path": {"exact": "/"}}}])),
            """spec.http[0].match[0].headers[":path"]: pseudo-header ':path' cannot be matched """
            """here; """
            """use uri, method, authority or scheme""",
        ),
        (
            http_vs(to_reviews(match=[{"headers": {"a b": {}}}])),
            """spec.http[0].match[0].headers["a b"]: invalid header name 'a b'""",
        ),
        (
            http_vs(to_reviews(match=[{"headers": {"": {}}}])),
            'spec.http[0].match[0].headers[""]: header name must not be empty',
        ),
        (
            http_vs(to_reviews(match=[{"headers": {"@request.auth.claims.x": {}}}])),
            """spec.http[0].match[0].headers["@request.auth.claims.x"]: invalid header name """
            """'@request.auth.claims.x'""",
        ),
        (
            http_vs(to_reviews(match=[{"headers": {"X-A": {}, "x-a": {}}}])),
            """spec.http[0].match[0].headers["x-a"]: duplicate name 'x-a'""",
        ),
        (
            http_vs(to_reviews(match=[{"headers": {"x": "jason"}}])),
            "spec.http[0].match[0].headers.x: expected an object, got string 'jason'",
        ),
        (
            http_vs(to_reviews(match=[{"headers": ["x"]}])),
            "spec.http[0].match[0].headers: expected an object, got a list",
        ),
        (
            http_vs(to_reviews(match=[{"queryParams": {"": {}}}])),
            'spec.http[0].match[0].queryParams[""]: must not be empty',
        ),
        (
            http_vs(to_reviews(match=[{"queryParams": {"a\nb": {}}}])),
            'spec.http[0].match[0].queryParams["a\nb"]: contains a NUL, CR or LF character',
        ),
        (
            http_vs(to_reviews(match=[{"port": 70000}])),
            "spec.http[0].match[0].port: 70000 is outside 1-65535",
        ),
        (
            http_vs(to_reviews(match=[{"port": "80"}])),
            "spec.http[0].match[0].port: expected an integer, got string '80'",
        ),
        (
            http_vs(to_reviews(match=[{"port": True}])),
            "spec.http[0].match[0].port: expected an integer, got boolean true",
        ),
        (
            http_vs(to_reviews(match=[{"ignoreUriCase": "yes"}])),
            "spec.http[0].match[0].ignoreUriCase: expected a boolean, got string 'yes'",
        ),
        (
            http_vs(to_reviews(match=[{"sourceLabels": {"app": 1}}])),
            "spec.http[0].match[0].sourceLabels.app: expected a string, got integer 1",
        ),
        (http_vs(to_reviews(match=[None])), "spec.http[0].match[0]: must not be null"),
        # destinations
        (http_vs({"route": [{"weight": 1}]}), "spec.http[0].route[0].destination: required"),
        (
            http_vs({"route": [{"destination": {}}]}),
            "spec.http[0].route[0].destination.host: required",
        ),
        (
            http_vs({"route": [{"destination": {"host": "*.x"}}]}),
            "spec.http[0].route[0].destination.host: wildcard hosts are not supported ('*.x')",
        ),
        (
            http_vs({"route": [{"destination": {"host": "a", "subset": "V1"}}]}),
            "spec.http[0].route[0].destination.subset: invalid subset name 'V1' (a lowercase DNS "
            "label)",
        ),
        (
            http_vs({"route": [{"destination": {"host": "a", "port": {}}}]}),
            "spec.http[0].route[0].destination.port.number: required",
        ),
        (
            http_vs({"route": [{"destination": {"host": "a", "port": {"number": 0}}}]}),
            "spec.http[0].route[0].destination.port.number: 0 is outside 1-65535",
        ),
        (
            http_vs({"route": [{"destination": {"host": "a", "port": {"name": "http"}}}]}),
            'spec.http[0].route[0].destination.port.name: unknown field "name" (did you mean '
            '"number"?)',
        ),
        (
            http_vs({"route": [{"destination": {"host": "a"}, "weight": -1}]}),
            "spec.http[0].route[0].weight: -1 is outside 0-2147483647",
        ),
        (
            http_vs({"route": [{"destination": {"host": "a"}, "weight": 2**31}]}),
            "spec.http[0].route[0].weight: 2147483648 is outside 0-2147483647",
        ),
        (
            http_vs({"route": [{"destination": {"host": "a"}, "weight": "50"}]}),
            "spec.http[0].route[0].weight: expected an integer, got string '50'",
        ),
        (
            http_vs({"route": [{"destination": {"host": "a"}, "weight": 1.5}]}),
            "spec.http[0].route[0].weight: expected an integer, got number 1.5",
        ),
        (
            http_vs({"route": [{"destination": {"host": "a"}}, {"destination": {"host": "b"}}]}),
            "spec.http[0].route: total weight is zero (give at least one destination a weight)",
        ),
        (
            http_vs(
                {
                    "route": [
                        {"destination": {"host": "a"}, "weight": 0},
                        {"destination": {"host": "b"}, "weight": 0},
                    ]
                }
            ),
            "spec.http[0].route: total weight is zero (give at least one destination a weight)",
        ),
        (
            http_vs({"route": [{"destination": {"host": "a"}, "weight": 2**31 - 1}] * 3}),
            "spec.http[0].route: total weight 6442450941 exceeds 4294967295",
        ),
        (
            http_vs(
                {
                    "route": [
                        {
                            "destination": {"host": "a"},
                            "headers": {"request": {"set": {"host": "x"}}},
                            "weight": 1,
                        },
                        {"destination": {"host": "b"}, "weight": 1},
                    ]
                }
            ),
            "spec.http[0].route[0].headers.request: setting the authority per destination is not "
            "supported; "
            "use the rule's rewrite.authority",
        ),
        (
            http_vs(
                {
                    "route": [
                        {"destination": {"host": "a"}, "weight": 1},
                        {
                            "destination": {"host": "b"},
                            "weight": 0,
                            "headers": {"request": {"set": {":path": "/"}}},
                        },
                    ]
                }
            ),
            "spec.http[0].route[1].headers.request.set[\":path\"]: pseudo-header ':path' cannot "
            "be modified",
        ),
        # header operations
        (
            http_vs(to_reviews(headers={"request": {"set": {":path": "/x"}}})),
            """spec.http[0].headers.request.set[":path"]: pseudo-header ':path' cannot be """
            """modified""",
        ),
        (
            http_vs(to_reviews(headers={"request": {"remove": ["Host"]}})),
            "spec.http[0].headers.request.remove[0]: the host header cannot be modified here",
        ),
        (
            http_vs(to_reviews(headers={"request": {"remove": [":authority"]}})),
            "spec.http[0].headers.request.remove[0]: pseudo-header ':authority' cannot be modified",
        ),
        (
            http_vs(to_reviews(headers={"response": {"set": {"host": "x"}}})),
            "spec.http[0].headers.response.set.host: the host header cannot be modified here",
        ),
        (
            http_vs(to_reviews(headers={"response": {"add": {":status": "200"}}})),
            """spec.http[0].headers.response.add[":status"]: pseudo-header ':status' cannot be """
            """modified""",
        ),
        (
            http_vs(to_reviews(headers={"response": {"remove": [":status"]}})),
            "spec.http[0].headers.response.remove[0]: pseudo-header ':status' cannot be modified",
        ),
        (
            http_vs(to_reviews(headers={"request": {"set": {"x-a": "50%"}}})),
            "spec.http[0].headers.request.set[\"x-a\"]: invalid '%' at position 2 in header value "
            "'50%': write '%%' for a literal '%', or use a known variable such as %HOSTNAME% or "
            "%REQ(x-name)%",
        ),
        (
            http_vs(to_reviews(headers={"request": {"set": {"x-a": "a\r\nb: c"}}})),
            'spec.http[0].headers.request.set["x-a"]: header value contains a NUL, CR or LF '
            "character",
        ),
        (
            http_vs(to_reviews(headers={"request": {"set": {"x-a": 1}}})),
            'spec.http[0].headers.request.set["x-a"]: expected a string, got integer 1',
        ),
        (
            http_vs(to_reviews(headers={"request": {"set": {"X-A": "1", "x-a": "2"}}})),
            """spec.http[0].headers.request.set["x-a"]: duplicate header 'x-a'""",
        ),
        (
            http_vs(to_reviews(headers={"request": {"set": {"x y": "1"}}})),
            """spec.http[0].headers.request.set["x y"]: invalid header name 'x y'""",
        ),
        (
            http_vs(
                to_reviews(headers={"request": {"set": {"host": "a"}, "add": {":authority": "b"}}})
            ),
            'spec.http[0].headers.request.add[":authority"]: the authority is set more than once',
        ),
        (
            http_vs(to_reviews(headers={"request": {"set": {"host": "a\nb"}}})),
            "spec.http[0].headers.request.set.host: contains a NUL, CR or LF character",
        ),
        (
            http_vs(
                to_reviews(headers={"request": {"set": {"host": "a"}}}, rewrite={"authority": "b"})
            ),
            "spec.http[0].headers.request: the authority is also set by rewrite.authority; set it "
            "in one place",
        ),
        (
            http_vs(to_reviews(headers={"request": {"append": {}}})),
            'spec.http[0].headers.request.append: unknown field "append"',
        ),
        (
            http_vs(to_reviews(headers={"request": {"remove": "x"}})),
            "spec.http[0].headers.request.remove: expected a list, got string 'x'",
        ),
        (
            http_vs(to_reviews(headers={"request": {"set": {"x-a": "v" * 16385}}})),
            'spec.http[0].headers.request.set["x-a"]: header value is longer than 16384 bytes',
        ),
        (
            http_vs(to_reviews(headers={"response": {"remove": ["x" * 16385]}})),
            "spec.http[0].headers.response.remove[0]: header name is longer than 16384 bytes",
        ),
        (
            http_vs(
                to_reviews(
                    headers={
                        "response": {
                            "set": {f"s{i}": "v" for i in range(500)},
                            "add": {f"a{i}": "v" for i in range(501)},
                        }
                    }
                )
            ),
            "spec.http[0].headers.response: more than 1000 headers to set and add",
        ),
        (
            http_vs(to_reviews(match=[{"queryParams": {"q" * 1025: {}}}])),
            f"spec.http[0].match[0].queryParams.{'q' * 1025}: query parameter name is longer "
            "than 1024 bytes",
        ),
        # rewrite, redirect, direct response
        (
            http_vs(to_reviews(rewrite={})),
            "spec.http[0].rewrite: one of uri, authority is required",
        ),
        (
            http_vs(to_reviews(rewrite={"uriRegexRewrite": {"match": "a", "rewrite": "b"}})),
            "spec.http[0].rewrite.uriRegexRewrite: not supported",
        ),
        (
            http_vs(to_reviews(rewrite={"uri": "/a\n"})),
            "spec.http[0].rewrite.uri: contains a NUL, CR or LF character",
        ),
        (
            http_vs({"redirect": {}}),
            "spec.http[0].redirect: one of uri, authority, scheme, port is required",
        ),
        (
            http_vs({"redirect": {"uri": "/", "redirectCode": 300}}),
            "spec.http[0].redirect.redirectCode: 300 is not a redirect code Envoy can send (301, "
            "302, "
            "303, 307, 308)",
        ),
        (
            http_vs({"redirect": {"uri": "/", "redirectCode": 200}}),
            "spec.http[0].redirect.redirectCode: 200 is not a redirect code Envoy can send (301, "
            "302, "
            "303, 307, 308)",
        ),
        (
            http_vs({"redirect": {"scheme": "ftp"}}),
            """spec.http[0].redirect.scheme: invalid scheme 'ftp' ("http" or "https")""",
        ),
        (
            http_vs({"redirect": {"port": 99999}}),
            "spec.http[0].redirect.port: 99999 is outside 1-65535",
        ),
        (
            http_vs({"redirect": {"port": 80, "derivePort": "FROM_REQUEST_PORT"}}),
            "spec.http[0].redirect: only one of port, derivePort may be set (got port and "
            "derivePort)",
        ),
        (
            http_vs({"redirect": {"uri": "/", "derivePort": "FROM_REQUEST_PORT"}}),
            "spec.http[0].redirect.derivePort: FROM_REQUEST_PORT is not supported",
        ),
        (
            http_vs({"redirect": {"uri": "/", "derivePort": "OTHER"}}),
            "spec.http[0].redirect.derivePort: unknown value 'OTHER' (FROM_PROTOCOL_DEFAULT or "
            "FROM_REQUEST_PORT)",
        ),
        (
            http_vs({"redirect": {"uri": "/", "derivePort": 1}}),
            "spec.http[0].redirect.derivePort: expected a string, got integer 1",
        ),
        (
            http_vs({"redirect": {"prefixRewrite": "/v2"}}),
            "spec.http[0].redirect.prefixRewrite: not supported",
        ),
        (http_vs({"directResponse": {}}), "spec.http[0].directResponse.status: required"),
        (
            http_vs({"directResponse": {"status": 199}}),
            "spec.http[0].directResponse.status: 199 is outside 200-599",
        ),
        (
            http_vs({"directResponse": {"status": 600}}),
            "spec.http[0].directResponse.status: 600 is outside 200-599",
        ),
        (
            http_vs({"directResponse": {"status": 200, "body": {}}}),
            "spec.http[0].directResponse.body: one of string, bytes is required",
        ),
        (
            http_vs({"directResponse": {"status": 200, "body": {"string": "a", "bytes": "YQ=="}}}),
            "spec.http[0].directResponse.body: only one of string, bytes may be set (got string "
            "and "
            "bytes)",
        ),
        (
            http_vs({"directResponse": {"status": 200, "body": {"string": "x" * 4097}}}),
            "spec.http[0].directResponse.body.string: body is 4097 bytes; Envoy's limit is 4096",
        ),
        (
            http_vs({"directResponse": {"status": 200, "body": {"string": "é" * 2049}}}),
            "spec.http[0].directResponse.body.string: body is 4098 bytes; Envoy's limit is 4096",
        ),
        (
            http_vs({"directResponse": {"status": 200, "body": {"bytes": "%%%"}}}),
            "spec.http[0].directResponse.body.bytes: not base64",
        ),
        (
            http_vs(
                {
                    "directResponse": {
                        "status": 200,
                        "body": {"bytes": base64.b64encode(b"\xff").decode()},
                    }
                }
            ),
            "spec.http[0].directResponse.body.bytes: not UTF-8 text",
        ),
        (
            http_vs(
                {
                    "directResponse": {
                        "status": 200,
                        "body": {"bytes": base64.b64encode(b"x" * 4097).decode()},
                    }
                }
            ),
            "spec.http[0].directResponse.body.bytes: body is 4097 bytes; Envoy's limit is 4096",
        ),
        # timeout, retries
        (
            http_vs(to_reviews(timeout="0.5ms")),
            "spec.http[0].timeout: duration '0.5ms' is shorter than 1ms",
        ),
        (http_vs(to_reviews(timeout="-1s")), "spec.http[0].timeout: negative duration '-1s'"),
        (
            http_vs(to_reviews(timeout="5")),
            """spec.http[0].timeout: invalid duration '5' (for example "1.5s", "100ms", "1m")""",
        ),
        (http_vs(to_reviews(timeout=5)), "spec.http[0].timeout: expected a string, got integer 5"),
        (
            http_vs(to_reviews(retries={"attempts": -1})),
            "spec.http[0].retries.attempts: -1 is outside 0-2147483647",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 0, "retryOn": "5xx"})),
            "spec.http[0].retries.retryOn: set although attempts is 0 (retries disabled)",
        ),
        (
            http_vs(to_reviews(retries={"perTryTimeout": "1s"})),
            "spec.http[0].retries.perTryTimeout: set although attempts is 0 (retries disabled)",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 0, "retryRemoteLocalities": True})),
            "spec.http[0].retries.retryRemoteLocalities: set although attempts is 0 (retries "
            "disabled)",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 1, "retryOn": "5xx,bogus"})),
            "spec.http[0].retries.retryOn: unknown retry condition 'bogus'",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 1, "retryOn": "5XX"})),
            "spec.http[0].retries.retryOn: unknown retry condition '5XX'",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 1, "retryOn": "600"})),
            "spec.http[0].retries.retryOn: retriable status code 600 is outside 100-599",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 1, "retryOn": "99"})),
            "spec.http[0].retries.retryOn: retriable status code 99 is outside 100-599",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 1, "retryOn": "-503"})),
            "spec.http[0].retries.retryOn: unknown retry condition '-503'",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 1, "retryOn": " , "})),
            "spec.http[0].retries.retryOn: no retry condition given",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 1, "perTryTimeout": "0s"})),
            "spec.http[0].retries.perTryTimeout: duration '0s' is shorter than 1ms",
        ),
        (
            http_vs(to_reviews(retries={"attempts": 1, "retryOn": ["5xx"]})),
            "spec.http[0].retries.retryOn: expected a string, got a list",
        ),
        # fault
        (http_vs(to_reviews(fault={})), "spec.http[0].fault: one of delay, abort is required"),
        (
            http_vs(to_reviews(fault={"delay": {"percentage": {"value": 1}}})),
            "spec.http[0].fault.delay.fixedDelay: required",
        ),
        (
            http_vs(to_reviews(fault={"delay": {"exponentialDelay": "1s"}})),
            "spec.http[0].fault.delay.exponentialDelay: not supported",
        ),
        (
            http_vs(to_reviews(fault={"delay": {"fixedDelay": "0s"}})),
            "spec.http[0].fault.delay.fixedDelay: duration '0s' is shorter than 1ms",
        ),
        (
            http_vs(
                to_reviews(fault={"delay": {"fixedDelay": "1s", "percentage": {"value": 101}}})
            ),
            "spec.http[0].fault.delay.percentage.value: 101 is neither 0 nor within 0.0001-100",
        ),
        (
            http_vs(
                to_reviews(fault={"delay": {"fixedDelay": "1s", "percentage": {"value": 0.00001}}})
            ),
            "spec.http[0].fault.delay.percentage.value: 1e-05 is neither 0 nor within 0.0001-100",
        ),
        (
            http_vs(to_reviews(fault={"delay": {"fixedDelay": "1s", "percentage": {"value": -1}}})),
            "spec.http[0].fault.delay.percentage.value: -1 is neither 0 nor within 0.0001-100",
        ),
        (
            http_vs(
                to_reviews(fault={"delay": {"fixedDelay": "1s", "percentage": {"value": "50"}}})
            ),
            "spec.http[0].fault.delay.percentage.value: expected a number, got string '50'",
        ),
        (
            http_vs(
                to_reviews(
                    fault={"delay": {"fixedDelay": "1s", "percentage": {"value": float("nan")}}}
                )
            ),
            "spec.http[0].fault.delay.percentage.value: nan is not a finite number",
        ),
        (
            http_vs(to_reviews(fault={"delay": {"fixedDelay": "1s", "percentage": 50}})),
            "spec.http[0].fault.delay.percentage: expected an object, got integer 50",
        ),
        (
            http_vs(to_reviews(fault={"delay": {"fixedDelay": "1s", "percent": 101}})),
            "spec.http[0].fault.delay.percent: 101 is outside 0-100",
        ),
        (
            http_vs(to_reviews(fault={"abort": {"percentage": {"value": 1}}})),
            "spec.http[0].fault.abort: one of httpStatus, grpcStatus is required",
        ),
        (
            http_vs(to_reviews(fault={"abort": {"httpStatus": 600}})),
            "spec.http[0].fault.abort.httpStatus: 600 is outside 200-599",
        ),
        (
            http_vs(to_reviews(fault={"abort": {"httpStatus": 199}})),
            "spec.http[0].fault.abort.httpStatus: 199 is outside 200-599",
        ),
        (
            http_vs(to_reviews(fault={"abort": {"grpcStatus": "unavailable"}})),
            "spec.http[0].fault.abort.grpcStatus: unknown gRPC status 'unavailable' (a name such "
            "as "
            "UNAVAILABLE)",
        ),
        (
            http_vs(to_reviews(fault={"abort": {"grpcStatus": 14}})),
            "spec.http[0].fault.abort.grpcStatus: expected a string, got integer 14",
        ),
        (
            http_vs(to_reviews(fault={"abort": {"httpStatus": 500, "grpcStatus": "INTERNAL"}})),
            "spec.http[0].fault.abort: only one of httpStatus, grpcStatus, http2Error may be set "
            "(got "
            "httpStatus and grpcStatus)",
        ),
        (
            http_vs(to_reviews(fault={"abort": {"http2Error": "REFUSED_STREAM"}})),
            "spec.http[0].fault.abort.http2Error: not supported",
        ),
        # mirrors
        (
            http_vs(to_reviews(mirror={"host": "a"}, mirrorPercentage={"value": 100.5})),
            "spec.http[0].mirrorPercentage.value: 100.5 is neither 0 nor within 0.0001-100",
        ),
        (
            http_vs(to_reviews(mirror={"host": "a"}, mirrorPercent=101)),
            "spec.http[0].mirrorPercent: 101 is outside 0-100",
        ),
        (http_vs(to_reviews(mirror={"subset": "v1"})), "spec.http[0].mirror.host: required"),
        (
            http_vs(to_reviews(mirrors=[{"percentage": {"value": 1}}])),
            "spec.http[0].mirrors[0].destination: required",
        ),
        (
            http_vs(
                to_reviews(mirrors=[{"destination": {"host": "a"}, "percentage": {"value": 200}}])
            ),
            "spec.http[0].mirrors[0].percentage.value: 200 is neither 0 nor within 0.0001-100",
        ),
        # CORS
        (
            http_vs(to_reviews(corsPolicy={"allowOrigins": [{}]})),
            "spec.http[0].corsPolicy.allowOrigins[0]: one of exact, prefix, regex is required",
        ),
        (
            http_vs(to_reviews(corsPolicy={"allowOrigins": [{"exact": ""}]})),
            "spec.http[0].corsPolicy.allowOrigins[0].exact: must not be empty",
        ),
        (
            http_vs(to_reviews(corsPolicy={"allowOrigins": [{"regex": REGEX_TOO_BIG}]})),
            f"spec.http[0].corsPolicy.allowOrigins[0].regex: {BIG}",
        ),
        (
            http_vs(to_reviews(corsPolicy={"allowOrigins": [{"regex": "*"}]})),
            "spec.http[0].corsPolicy.allowOrigins[0].regex: invalid RE2 regex: no argument for "
            "repetition "
            "operator: *",
        ),
        (
            http_vs(to_reviews(corsPolicy={"allowOrigin": [""]})),
            "spec.http[0].corsPolicy.allowOrigin[0]: must not be empty",
        ),
        (
            http_vs(to_reviews(corsPolicy={"allowMethods": ["GET", "get"]})),
            "spec.http[0].corsPolicy.allowMethods[1]: unknown HTTP method 'get'",
        ),
        (
            http_vs(to_reviews(corsPolicy={"allowHeaders": ["a b"]})),
            "spec.http[0].corsPolicy.allowHeaders[0]: invalid header name 'a b'",
        ),
        (
            http_vs(to_reviews(corsPolicy={"exposeHeaders": [""]})),
            "spec.http[0].corsPolicy.exposeHeaders[0]: header name must not be empty",
        ),
        (
            http_vs(to_reviews(corsPolicy={"maxAge": "1.5s"})),
            "spec.http[0].corsPolicy.maxAge: must be whole seconds",
        ),
        (
            http_vs(to_reviews(corsPolicy={"allowCredentials": "true"})),
            "spec.http[0].corsPolicy.allowCredentials: expected a boolean, got string 'true'",
        ),
        # tcp
        (
            vs({"hosts": ["db"], "tcp": [{}]}),
            "spec.tcp[0].route: at least one destination is required",
        ),
        (
            vs(
                {
                    "hosts": ["db"],
                    "tcp": [{"route": [{"destination": {"host": "db"}, "headers": {}}]}],
                }
            ),
            'spec.tcp[0].route[0].headers: unknown field "headers"',
        ),
        (
            vs(
                {
                    "hosts": ["db"],
                    "tcp": [
                        {"route": [{"destination": {"host": "a"}}, {"destination": {"host": "b"}}]}
                    ],
                }
            ),
            "spec.tcp[0].route: total weight is zero (give at least one destination a weight)",
        ),
        (
            vs(
                {
                    "hosts": ["db"],
                    "tcp": [{"match": [{"port": 0.5}], "route": [{"destination": {"host": "db"}}]}],
                }
            ),
            "spec.tcp[0].match[0].port: expected an integer, got number 0.5",
        ),
        (
            vs(
                {
                    "hosts": ["db"],
                    "tcp": [{"match": [{"sni": "x"}], "route": [{"destination": {"host": "db"}}]}],
                }
            ),
            'spec.tcp[0].match[0].sni: unknown field "sni"',
        ),
    ],
)
def test_virtual_service_rejections(obj: Any, message: str) -> None:
    assert rejection(obj) == message
