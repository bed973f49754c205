"""What an HTTP rule does besides routing: URI/authority rewrite, redirect, direct
response, retries, fault injection and CORS."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from sources.istio.checks import header_name, plain_value
from sources.istio.constants import (
    CORS_METHODS,
    DEFAULT_RETRY_ON,
    GRPC_STATUS_NAMES,
    MAX_DIRECT_RESPONSE_BODY,
    REDIRECT_CODES,
    RETRY_ON_TOKENS,
    UINT32_MAX,
)
from sources.istio.matches import string_match
from sources.istio.report import Context, Path, PolicyError
from sources.istio.values import (
    boolean,
    duration,
    fields,
    integer,
    items,
    nonempty,
    one_of,
    optional,
    percent,
    port_number,
    string,
    strings,
)
from xds_server.model import Cors, DirectResponse, Fault, Redirect, Retry, Rewrite, StringMatch

_RETRY_FIELDS = (
    "attempts",
    "perTryTimeout",
    "retryOn",
    "retryRemoteLocalities",
    "retryIgnorePreviousHosts",
    "backoff",
)
_FAULT_FIELDS = ("delay", "abort")
_DELAY_FIELDS = ("fixedDelay", "exponentialDelay", "percentage", "percent")
_ABORT_FIELDS = ("httpStatus", "grpcStatus", "http2Error", "percentage")
_CORS_FIELDS = (
    "allowOrigin",
    "allowOrigins",
    "allowMethods",
    "allowHeaders",
    "exposeHeaders",
    "maxAge",
    "allowCredentials",
    "unmatchedPreflights",
)
_REDIRECT_FIELDS = (
    "uri",
    "authority",
    "port",
    "derivePort",
    "scheme",
    "redirectCode",
    "prefixRewrite",
)


def http_rewrite(value: object, path: Path) -> Rewrite | None:
    if value is None:
        return None
    obj = fields(value, path, ("uri", "authority", "uriRegexRewrite"))
    if "uriRegexRewrite" in obj:
        raise PolicyError((*path, "uriRegexRewrite"), "not supported")
    uri = optional(obj, "uri", path, plain_value)
    authority = optional(obj, "authority", path, plain_value)
    if uri is None and authority is None:
        raise PolicyError(path, "one of uri, authority is required")
    return Rewrite(uri, authority)


def http_redirect(value: object, path: Path) -> Redirect:
    obj = fields(value, path, _REDIRECT_FIELDS)
    if obj.get("prefixRewrite"):
        raise PolicyError((*path, "prefixRewrite"), "not supported")
    one_of(obj, path, ("port", "derivePort"))
    derive = string(obj.get("derivePort", "FROM_PROTOCOL_DEFAULT"), (*path, "derivePort"))
    if derive != "FROM_PROTOCOL_DEFAULT":
        if derive == "FROM_REQUEST_PORT":
            raise PolicyError((*path, "derivePort"), "FROM_REQUEST_PORT is not supported")
        raise PolicyError(
            (*path, "derivePort"),
            f"unknown value {derive!r} (FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT)",
        )
    scheme = string(obj.get("scheme", ""), (*path, "scheme")) or None
    if scheme not in (None, "http", "https"):
        raise PolicyError((*path, "scheme"), f'invalid scheme {scheme!r} ("http" or "https")')
    code = integer(obj.get("redirectCode", 0), (*path, "redirectCode"), 0, UINT32_MAX) or 301
    if code not in REDIRECT_CODES:
        raise PolicyError(
            (*path, "redirectCode"),
            f"{code} is not a redirect code Envoy can send ({', '.join(map(str, REDIRECT_CODES))})",
        )
    uri = optional(obj, "uri", path, plain_value)
    authority = optional(obj, "authority", path, plain_value)
    port = port_number(obj["port"], (*path, "port")) if obj.get("port") else None
    if uri is None and authority is None and scheme is None and port is None:
        raise PolicyError(path, "one of uri, authority, scheme, port is required")
    return Redirect(uri, authority, scheme, port, code)


def direct_response(value: object, path: Path) -> DirectResponse:
    obj = fields(value, path, ("status", "body"))
    if "status" not in obj:
        raise PolicyError((*path, "status"), "required")
    status = integer(obj["status"], (*path, "status"), 200, 599)
    if "body" not in obj:
        return DirectResponse(status)
    where = (*path, "body")
    body = fields(obj["body"], where, ("string", "bytes"))
    kind = one_of(body, where, ("string", "bytes"))
    if kind is None:
        raise PolicyError(where, "one of string, bytes is required")
    if kind == "string":
        text = string(body["string"], (*where, "string"))
        size = len(text.encode())
    else:
        try:
            data = base64.b64decode(string(body["bytes"], (*where, "bytes")), validate=True)
            text = data.decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "not base64"
            raise PolicyError((*where, "bytes"), reason) from None
        size = len(data)
    if size > MAX_DIRECT_RESPONSE_BODY:
        raise PolicyError(
            (*where, kind), f"body is {size} bytes; Envoy's limit is {MAX_DIRECT_RESPONSE_BODY}"
        )
    return DirectResponse(status, text)


def http_retry(ctx: Context, value: object, path: Path) -> Retry:
    obj = fields(value, path, _RETRY_FIELDS)
    if obj.get("retryOn") == "":
        del obj["retryOn"]  # proto3: "" is unset
    attempts = integer(obj.get("attempts", 0), (*path, "attempts"))
    ctx.ignore(obj, path, ("retryRemoteLocalities", "retryIgnorePreviousHosts", "backoff"))
    if attempts == 0:
        for field in ("perTryTimeout", "retryOn", "retryRemoteLocalities"):
            if field in obj:
                raise PolicyError((*path, field), "set although attempts is 0 (retries disabled)")
        return Retry(0)
    tokens, codes = optional(obj, "retryOn", path, _retry_conditions) or (DEFAULT_RETRY_ON, ())
    return Retry(attempts, optional(obj, "perTryTimeout", path, duration), tokens, codes)


def _retry_conditions(value: object, path: Path) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Istio's `retryOn`: Envoy retry conditions and, as integers, retriable statuses."""
    tokens: list[str] = []
    codes: list[int] = []
    for part in string(value, path).split(","):
        token = part.strip()
        if not token:
            continue
        if token.isdigit():
            code = int(token)
            if not 100 <= code <= 599:
                raise PolicyError(path, f"retriable status code {code} is outside 100-599")
            if code not in codes:
                codes.append(code)
        elif token not in RETRY_ON_TOKENS:
            raise PolicyError(path, f"unknown retry condition {token!r}")
        elif token not in tokens:
            tokens.append(token)
    if not tokens and not codes:
        raise PolicyError(path, "no retry condition given")
    if codes and "retriable-status-codes" not in tokens:
        tokens.append("retriable-status-codes")  # as Istio: the codes need it
    return tuple(tokens), tuple(codes)


def fault_injection(ctx: Context, value: object, path: Path) -> Fault | None:
    obj = fields(value, path, _FAULT_FIELDS)
    if "delay" not in obj and "abort" not in obj:
        raise PolicyError(path, "one of delay, abort is required")
    delay: float | None = None
    delay_pct = 0.0
    if "delay" in obj:
        where = (*path, "delay")
        d = fields(obj["delay"], where, _DELAY_FIELDS)
        if "exponentialDelay" in d:
            raise PolicyError((*where, "exponentialDelay"), "not supported")
        if "fixedDelay" not in d:
            raise PolicyError((*where, "fixedDelay"), "required")
        delay = duration(d["fixedDelay"], (*where, "fixedDelay"))
        delay_pct = fault_percent(ctx, d, where, "no request is delayed")
    abort_http: int | None = None
    abort_grpc: str | None = None
    abort_pct = 0.0
    if "abort" in obj:
        where = (*path, "abort")
        a = fields(obj["abort"], where, _ABORT_FIELDS)
        kind = one_of(a, where, ("httpStatus", "grpcStatus", "http2Error"))
        if kind is None:
            raise PolicyError(where, "one of httpStatus, grpcStatus is required")
        if kind == "http2Error":
            raise PolicyError((*where, kind), "not supported")
        if kind == "httpStatus":
            abort_http = integer(a[kind], (*where, kind), 200, 599)
        else:
            abort_grpc = string(a[kind], (*where, kind))
            if abort_grpc not in GRPC_STATUS_NAMES:
                raise PolicyError(
                    (*where, kind),
                    f"unknown gRPC status {abort_grpc!r} (a name such as UNAVAILABLE)",
                )
        abort_pct = fault_percent(ctx, a, where, "no request is aborted")
    return Fault(delay, delay_pct, abort_http, abort_grpc, abort_pct)


def fault_percent(ctx: Context, obj: Mapping[str, Any], path: Path, unset: str) -> float:
    """`percentage`, else the deprecated integer `percent`, else 0 as Istio documents."""
    if "percentage" in obj:
        return percent(obj["percentage"], (*path, "percentage"))
    if "percent" in obj:
        return float(integer(obj["percent"], (*path, "percent"), 0, 100))
    ctx.notice(path, f"no percentage set: {unset} (Istio's default is 0%)")
    return 0.0


def cors_policy(ctx: Context, value: object, path: Path) -> Cors:
    obj = fields(value, path, _CORS_FIELDS)
    ctx.ignore(obj, path, ("unmatchedPreflights",))
    origins: list[StringMatch] = []
    if "allowOrigins" in obj:
        for i, raw in enumerate(items(obj["allowOrigins"], (*path, "allowOrigins"))):
            where = (*path, "allowOrigins", i)
            match = string_match(raw, where, present_ok=False)
            assert match is not None
            if match.kind == "exact" and not match.value:
                raise PolicyError((*where, "exact"), "must not be empty")
            origins.append(match)
        if obj.get("allowOrigin"):
            ctx.notice((*path, "allowOrigin"), "ignored: allowOrigins is set")
    elif "allowOrigin" in obj:
        for i, origin in enumerate(strings(obj["allowOrigin"], (*path, "allowOrigin"))):
            origins.append(StringMatch("exact", nonempty(origin, (*path, "allowOrigin", i))))
    methods = strings(obj.get("allowMethods", []), (*path, "allowMethods"))
    for i, method in enumerate(methods):
        if method not in CORS_METHODS:
            raise PolicyError((*path, "allowMethods", i), f"unknown HTTP method {method!r}")
    max_age = None
    if "maxAge" in obj:
        max_age = duration(obj["maxAge"], (*path, "maxAge"))
        if not max_age.is_integer():
            raise PolicyError((*path, "maxAge"), "must be whole seconds")
    return Cors(
        allow_origins=tuple(origins),
        allow_methods=tuple(methods),
        allow_headers=cors_headers(obj, path, "allowHeaders"),
        expose_headers=cors_headers(obj, path, "exposeHeaders"),
        max_age=max_age,
        allow_credentials=optional(obj, "allowCredentials", path, boolean),
    )


def cors_headers(obj: Mapping[str, Any], path: Path, field: str) -> tuple[str, ...]:
    names = strings(obj.get(field, []), (*path, field))
    return tuple(n if n == "*" else header_name(n, (*path, field, i)) for i, n in enumerate(names))
