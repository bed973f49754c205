"""Istio `networking.istio.io` VirtualService and DestinationRule objects → the policy model.

Pure: one already-loaded object (a dict, as YAML or Kubernetes JSON gives it) in, a model
value out, or a `PolicyError` naming the field path (`spec.http[0].match[1].uri.regex`).
No I/O and no catalog: the caller maps a path to file:line:col and decides which service
a host names. apiVersion `networking.istio.io/v1`, `v1beta1` and `v1alpha3` share one schema.

What is checked, so that an accepted object never makes Envoy or gRPC NACK:
- the schema, as Kubernetes strict field validation would: unknown fields (`timout`), wrong
  types, missing required fields, values out of range;
- Istio's webhook rules (weights, durations >= 1ms, retry tokens, status codes, percentages,
  redirect codes, locality settings, subset names, ...);
- what Envoy itself rejects: RE2 program size over 100 (`check_regex`), `:`-prefixed or Host
  headers in header operations, header values that are not valid substitution formats,
  direct response bodies over 4 KiB, maglev table sizes that are not prime.

Istio's semantics applied here (the renderers see the result, not the dialect): proto3 zero
values mean "unset" (a connection pool limit of 0 is no limit); a single destination takes
all traffic whatever its weight; zero-weight destinations are dropped; integers in `retryOn`
are retriable status codes; `retries` without `retryOn` retries on Istio's default
conditions; a fault or mirror without a percentage applies to 0 % or 100 % of requests as
Istio documents; setting the `:authority`/`host` request header is an authority rewrite.

Fields this server does not apply are reported as `Notice`s on an accepted object. What
cannot be evaluated per caller is never applied to everyone: a match alternative with
`sourceLabels`, `sourceNamespace` or non-mesh `gateways` is dropped; a VirtualService whose
`gateways` omit `mesh` (or that has no rule left), and a DestinationRule with a
`workloadSelector`, apply to nothing (`Parsed.applies` is False).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeVar

import re2

from sources.yaml_positions import render_path
from xds_server.model import (
    ConnectionPool,
    Cors,
    Destination,
    DestinationPolicy,
    DirectResponse,
    Fault,
    HashOn,
    HeaderMatch,
    HeaderOps,
    HttpRule,
    LoadBalancer,
    LocalityDistribute,
    LocalityFailover,
    LocalityLb,
    Mirror,
    OutlierDetection,
    PolicyKey,
    PortTrafficPolicy,
    QueryMatch,
    Redirect,
    RequestMatch,
    Retry,
    Rewrite,
    RoutePolicy,
    StringMatch,
    Subset,
    TcpRule,
    TrafficPolicy,
    WeightedDestination,
)
from xds_server.model.policy import PolicyKind, SimpleLb

Path = tuple[str | int, ...]

API_GROUP = "networking.istio.io"
API_VERSIONS = frozenset(f"{API_GROUP}/{v}" for v in ("v1", "v1beta1", "v1alpha3"))
KINDS: tuple[PolicyKind, ...] = ("VirtualService", "DestinationRule")
DEFAULT_NAMESPACE = "default"
MESH_GATEWAY = "mesh"

# Envoy rejects a regex whose RE2 program is larger than `re2.max_program_size.error_level`
# (default 100; we never raise it); Istio's webhook caps the pattern length at 1024.
ENVOY_REGEX_PROGRAM_SIZE_LIMIT = 100
MAX_REGEX_LENGTH = 1024
# Envoy's RouteConfiguration.max_direct_response_body_size_bytes default.
MAX_DIRECT_RESPONSE_BODY = 4096
# Envoy's HeaderValue key/value, QueryParameterMatcher name and headers_to_add limits.
MAX_HEADER_BYTES = 16384
MAX_QUERY_NAME_BYTES = 1024
MAX_HEADERS_TO_ADD = 1000
# gRPC (A42) and Envoy cap the ring size at 8M entries; Envoy caps a maglev table at 5000011.
MAX_RING_SIZE = 8_388_608
MAX_MAGLEV_TABLE_SIZE = 5_000_011
# Envoy holds durations as int64 nanoseconds: longer ones are NACKed ("Duration out-of-range").
MAX_DURATION_SECONDS = 9_223_372_035
UINT32_MAX = 2**32 - 1
INT32_MAX = 2**31 - 1

# Istio's default retry conditions (route/retry/retry.go), used when `retryOn` is unset.
DEFAULT_RETRY_ON = (
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
    "retriable-status-codes",
)
# Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on conditions (the set Istio accepts).
RETRY_ON_TOKENS = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
GRPC_STATUS_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
REDIRECT_CODES = (301, 302, 303, 307, 308)  # the codes Envoy's RedirectAction can send
CORS_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*"}
)
# Envoy header-value substitutions we let through (each proven accepted by Envoy in the
# tests, in request and response headers); any other '%' must be written '%%'.
HEADER_VARIABLES = frozenset(
    {
        "HOSTNAME",
        "PROTOCOL",
        "START_TIME",
        "ROUTE_NAME",
        "RESPONSE_CODE",
        "REQUESTED_SERVER_NAME",
        "DOWNSTREAM_REMOTE_ADDRESS",
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
        "DOWNSTREAM_REMOTE_PORT",
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS",
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
        "DOWNSTREAM_LOCAL_ADDRESS",
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
        "DOWNSTREAM_LOCAL_PORT",
        "UPSTREAM_CLUSTER",
        "UPSTREAM_HOST",
        "UPSTREAM_LOCAL_ADDRESS",
        "UPSTREAM_REMOTE_ADDRESS",
        "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    }
)

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: a header name
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_CONTROL = re.compile(r"[\x00\r\n]")  # what Envoy's (non-strict) header value rule refuses
_DURATION = re.compile(r"[-+]?((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+")
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNIT = {
    "ns": Fraction(1, 10**9),
    "us": Fraction(1, 10**6),
    "µs": Fraction(1, 10**6),
    "μs": Fraction(1, 10**6),
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
}
_HEADER_VARIABLE = re.compile(r"%([A-Z_]+)(?:\(([-0-9A-Za-z_.:]+)\))?%")

T = TypeVar("T")


# --------------------------------------------------------------------------- public API


class PolicyError(ValueError):
    """The object is invalid and is rejected whole: `path` names the field, `reason` why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{render_path(path)}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Notice:
    """The object is accepted, but what `path` names is not applied (`message` says why)."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{render_path(self.path)}: {self.message}"


@dataclass(frozen=True)
class Parsed:
    """A parsed object. `applies` is False when it applies to no proxy this server
    configures (a VirtualService for gateways only or with no rule left, a DestinationRule
    with a workloadSelector): the caller shows it as a warning, and it should take part in
    no host conflict with the objects that do apply."""

    policy: RoutePolicy | DestinationPolicy
    notices: tuple[Notice, ...] = ()
    applies: bool = True


def is_supported_kind(obj: Mapping[str, Any]) -> bool:
    """A networking.istio.io VirtualService or DestinationRule (any served version)."""
    if not isinstance(obj, Mapping):
        return False
    version, kind = obj.get("apiVersion"), obj.get("kind")
    return isinstance(version, str) and version in API_VERSIONS and kind in KINDS


def parse_policy(obj: Mapping[str, Any], origin: str = "") -> Parsed:
    """The model value of one VirtualService or DestinationRule; raises PolicyError."""
    return _Parser().parse(obj, origin)


@functools.lru_cache(maxsize=4096)
def check_regex(pattern: str) -> str | None:
    """None if Envoy accepts `pattern` as a safe_regex (RE2, program size <= 100), else why.

    Memoised: the same patterns come back on every re-read of a policy file."""
    if not pattern:
        return "empty regex"
    if len(pattern) > MAX_REGEX_LENGTH:
        return f"regex is {len(pattern)} characters long; the limit is {MAX_REGEX_LENGTH}"
    options = re2.Options()
    options.log_errors = False  # the reason is returned, not printed to stderr
    try:
        size = re2.compile(pattern, options).programsize
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        return f"invalid RE2 regex: {detail}"
    if size > ENVOY_REGEX_PROGRAM_SIZE_LIMIT:
        return (
            f"regex program size {size} exceeds Envoy's limit of {ENVOY_REGEX_PROGRAM_SIZE_LIMIT}"
        )
    return None


def parse_duration(text: str) -> float:
    """Seconds in a Go/Kubernetes duration ("1.5s", "100ms", "1h30m", "0"); ValueError."""
    body = text
    if body in ("0", "-0", "+0"):
        return 0.0
    if not _DURATION.fullmatch(body):
        raise ValueError(f'invalid duration {text!r} (for example "1.5s", "100ms", "1m")')
    total = sum(
        (Fraction(num) * _DURATION_UNIT[unit] for num, unit in _DURATION_PART.findall(body)),
        Fraction(0),
    )
    if body.startswith("-") and total:
        raise ValueError(f"negative duration {text!r}")
    if total > MAX_DURATION_SECONDS:
        raise ValueError(
            f"duration {text!r} is longer than {MAX_DURATION_SECONDS}s (Envoy's limit)"
        )
    return float(total)


def header_value_problem(value: str) -> str | None:
    """None if Envoy accepts `value` in a header operation, else why. Envoy reads a value
    as a substitution format: `%VAR%` must name a known variable and a literal '%' is '%%'."""
    if _CONTROL.search(value):
        return "header value contains a NUL, CR or LF character"
    if len(value.encode()) > MAX_HEADER_BYTES:
        return f"header value is longer than {MAX_HEADER_BYTES} bytes"
    i = 0
    while (i := value.find("%", i)) >= 0:
        if value.startswith("%%", i):
            i += 2
            continue
        var = _HEADER_VARIABLE.match(value, i)
        known = var is not None and (
            var[1] == "REQ" if var[2] is not None else var[1] in HEADER_VARIABLES
        )
        if var is None or not known:
            return (
                f"invalid '%' at position {i} in header value {value!r}: write '%%' for a "
                "literal '%', or use a known variable such as %HOSTNAME% or %REQ(x-name)%"
            )
        i = var.end()
    return None


# --------------------------------------------------------------------------- schema

_VS_FIELDS = ("hosts", "gateways", "http", "tls", "tcp", "exportTo")
_HTTP_FIELDS = (
    "name",
    "match",
    "route",
    "redirect",
    "directResponse",
    "delegate",
    "rewrite",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "mirrors",
    "mirrorPercent",
    "mirror_percent",
    "mirrorPercentage",
    "corsPolicy",
    "headers",
)
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
_TCP_FIELDS = ("match", "route")
_L4_MATCH_FIELDS = (
    "destinationSubnets",
    "port",
    "sourceSubnet",
    "sourceLabels",
    "gateways",
    "sourceNamespace",
)
_STRING_MATCH_FIELDS = ("exact", "prefix", "regex")
_DESTINATION_FIELDS = ("host", "subset", "port")
_ROUTE_DESTINATION_FIELDS = ("destination", "weight", "headers")
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
_DR_FIELDS = ("host", "trafficPolicy", "subsets", "exportTo", "workloadSelector")
_POLICY_COMMON = ("loadBalancer", "connectionPool", "outlierDetection", "tls")
_TRAFFIC_POLICY_FIELDS = (
    *_POLICY_COMMON,
    "portLevelSettings",
    "tunnel",
    "proxyProtocol",
    "retryBudget",
)
_PORT_POLICY_FIELDS = ("port", *_POLICY_COMMON)
_LB_FIELDS = (
    "simple",
    "consistentHash",
    "localityLbSetting",
    "zoneAwareLbSetting",
    "warmupDurationSecs",
    "warmup",
)
_HASH_KEYS = ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName")
_HASH_FIELDS = (*_HASH_KEYS, "ringHash", "maglev", "minimumRingSize")
_TCP_POOL_FIELDS = (
    "maxConnections",
    "connectTimeout",
    "tcpKeepalive",
    "maxConnectionDuration",
    "idleTimeout",
)
_HTTP_POOL_FIELDS = (
    "http1MaxPendingRequests",
    "http2MaxRequests",
    "maxRequestsPerConnection",
    "maxRetries",
    "idleTimeout",
    "h2UpgradePolicy",
    "useClientProtocol",
    "maxConcurrentStreams",
    "http2KeepAlive",
)
_OUTLIER_FIELDS = (
    "consecutiveErrors",
    "splitExternalLocalOriginErrors",
    "consecutiveLocalOriginFailures",
    "consecutiveGatewayErrors",
    "consecutive5xxErrors",
    "interval",
    "baseEjectionTime",
    "maxEjectionPercent",
    "minHealthPercent",
    "outlierDetectionHttpErrorCodes",
)
_SIMPLE_LB: dict[str, SimpleLb | None] = {
    "UNSPECIFIED": None,
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",  # deprecated alias
    "RANDOM": "RANDOM",
}
# Values of unsupported fields that equal the default: nothing is lost, so no notice.
_DEFAULT_VALUES = {"h2UpgradePolicy": "DEFAULT", "unmatchedPreflights": "UNSPECIFIED"}
_NOT_APPLIED = "not supported; ignored"


# --------------------------------------------------------------------------- scalar readers


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value:g}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _wrong(path: Path, want: str, value: object) -> PolicyError:
    return PolicyError(path, f"expected {want}, got {_describe(value)}")


def _unknown(key: str, known: Iterable[str]) -> str:
    camel = re.sub(r"_([a-z0-9])", lambda m: m[1].upper(), key)
    guess = [camel] if camel != key and camel in known else difflib.get_close_matches(key, known, 1)
    return f'unknown field "{key}"' + (f' (did you mean "{guess[0]}"?)' if guess else "")


def _mapping(value: object, path: Path) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _wrong(path, "an object", value)
    for key in value:
        if not isinstance(key, str):
            raise PolicyError(path, f"field names must be strings, got {_describe(key)}")
    return value


def _fields(value: object, path: Path, known: tuple[str, ...]) -> dict[str, Any]:
    """`value` as an object whose fields are all in `known`, null members left out (as
    Kubernetes treats them); an unknown field is an error at its own path."""
    obj = _mapping(value, path)
    for key in obj:
        if key not in known:
            raise PolicyError((*path, key), _unknown(key, known))
    return {k: v for k, v in obj.items() if v is not None}


def _list(value: object, path: Path) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise _wrong(path, "a list", value)
    for i, item in enumerate(value):
        if item is None:
            raise PolicyError((*path, i), "must not be null")
    return list(value)


def _str(value: object, path: Path) -> str:
    if not isinstance(value, str):
        raise _wrong(path, "a string", value)
    return value


def _nonempty(value: object, path: Path) -> str:
    text = _str(value, path)
    if not text:
        raise PolicyError(path, "must not be empty")
    return text


def _bool(value: object, path: Path) -> bool:
    if not isinstance(value, bool):
        raise _wrong(path, "a boolean", value)
    return value


def _int(value: object, path: Path, low: int = 0, high: int = INT32_MAX) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON decoders may give 5.0 for 5
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong(path, "an integer", value)
    if not low <= value <= high:
        raise PolicyError(path, f"{value} is outside {low}-{high}")
    return value


def _count(value: object, path: Path) -> int:
    return _int(value, path, 0, UINT32_MAX)


def _limit(value: object, path: Path) -> int | None:
    """A connection pool limit: Istio reads a proto3 0 as unset (no limit), never as 0."""
    return _int(value, path) or None


def _int_percent(value: object, path: Path) -> int:
    return _int(value, path, 0, 100)


def _number(value: object, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong(path, "a number", value)
    if not math.isfinite(value):
        raise PolicyError(path, f"{value} is not a finite number")
    return float(value)


def _str_list(value: object, path: Path) -> list[str]:
    return [_str(item, (*path, i)) for i, item in enumerate(_list(value, path))]


def _str_map(value: object, path: Path) -> dict[str, str]:
    return {k: _str(v, (*path, k)) for k, v in _mapping(value, path).items()}


def _duration(value: object, path: Path, zero_ok: bool = False) -> float:
    """Seconds; at least 1ms as Istio requires, or exactly 0 where 0 means "off"."""
    text = _str(value, path)
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise PolicyError(path, str(exc)) from None
    if seconds == 0 and zero_ok:
        return 0.0
    if seconds < 0.001:
        raise PolicyError(path, f"duration {text!r} is shorter than 1ms")
    return seconds


def _off_or_duration(value: object, path: Path) -> float:
    """A duration where 0 means "off" (a route timeout, an idle timeout, a cookie TTL)."""
    return _duration(value, path, zero_ok=True)


def _percent(value: object, path: Path) -> float:
    """An Istio Percent ({value: 0-100}): 0, or at least 0.0001 (Envoy's granularity)."""
    obj = _fields(value, path, ("value",))
    pct = _number(obj.get("value", 0.0), (*path, "value"))
    if pct != 0 and not 0.0001 <= pct <= 100:
        raise PolicyError((*path, "value"), f"{pct:g} is neither 0 nor within 0.0001-100")
    return pct


def _port(value: object, path: Path) -> int:
    return _int(value, path, 1, 65535)


def _port_selector(value: object, path: Path) -> int:
    obj = _fields(value, path, ("number",))
    if "number" not in obj:
        raise PolicyError((*path, "number"), "required")
    return _port(obj["number"], (*path, "number"))


def _header_name(value: object, path: Path) -> str:
    name = _str(value, path)
    if not name:
        raise PolicyError(path, "header name must not be empty")
    if not _TOKEN.fullmatch(name.lstrip(":")):
        raise PolicyError(path, f"invalid header name {name!r}")
    if len(name) > MAX_HEADER_BYTES:  # tokens are ASCII: characters are bytes
        raise PolicyError(path, f"header name is longer than {MAX_HEADER_BYTES} bytes")
    return name.lower()


def _checked(value: object, path: Path, problem_of: Callable[[str], str | None]) -> str:
    """A string that `problem_of` finds nothing wrong with."""
    text = _str(value, path)
    problem = problem_of(text)
    if problem is not None:
        raise PolicyError(path, problem)
    return text


def _control_problem(text: str) -> str | None:
    return "contains a NUL, CR or LF character" if _CONTROL.search(text) else None


def _query_name_problem(text: str) -> str | None:
    if len(text.encode()) > MAX_QUERY_NAME_BYTES:
        return f"query parameter name is longer than {MAX_QUERY_NAME_BYTES} bytes"
    return _control_problem(text)


def _header_value(value: object, path: Path) -> str:
    return _checked(value, path, header_value_problem)


def _plain_value(value: object, path: Path) -> str:
    """A string Envoy puts in a header verbatim (authority, redirect path, cookie path)."""
    return _checked(value, path, _control_problem)


def _regex(value: object, path: Path) -> str:
    return _checked(value, path, check_regex)


def _host(value: object, path: Path) -> str:
    host = _str(value, path)
    if host.startswith("*"):
        raise PolicyError(path, f"wildcard hosts are not supported ({host!r})")
    labels = host.removesuffix(".").split(".")
    if (
        not host
        or len(host) > 253
        or labels[-1].isdigit()
        or not all(_DNS_LABEL.fullmatch(label) for label in labels)
    ):
        raise PolicyError(path, f"invalid host {host!r} (a lowercase DNS name)")
    return host


def _dns_label(value: object, path: Path, what: str) -> str:
    text = _str(value, path)
    if not _DNS_LABEL.fullmatch(text):
        raise PolicyError(path, f"invalid {what} {text!r} (a lowercase DNS label)")
    return text


def _label_map(value: object, path: Path) -> tuple[tuple[str, str], ...]:
    """Kubernetes label syntax: `[prefix/]name` keys, values of at most 63 characters."""
    labels = _str_map(value, path)
    for key, val in labels.items():
        prefix, _, name = key.rpartition("/")
        if not _LABEL_NAME.fullmatch(name) or (
            prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix))
        ):
            raise PolicyError((*path, key), f"invalid label key {key!r}")
        if not _LABEL_VALUE.fullmatch(val):
            raise PolicyError((*path, key), f"invalid label value {val!r}")
    return tuple(sorted(labels.items()))


def _one_of(obj: Mapping[str, Any], path: Path, names: tuple[str, ...]) -> str | None:
    """The one field of `names` that is set (None if none); two set is an error."""
    found = [n for n in names if n in obj]
    if len(found) > 1:
        raise PolicyError(
            path, f"only one of {', '.join(names)} may be set (got {' and '.join(found)})"
        )
    return found[0] if found else None


def _opt(
    obj: Mapping[str, Any], field: str, path: Path, read: Callable[[Any, Path], T]
) -> T | None:
    """`read` of `obj[field]` at that field's path; None when the field is unset (absent,
    or the proto3 default "")."""
    value = obj.get(field)
    return None if value is None or value == "" else read(value, (*path, field))


def _each(value: object, path: Path, parse: Callable[[Any, Path], T | None]) -> list[T]:
    """`parse(item, item_path)` over a list, leaving out the items it returns None for."""
    out: list[T] = []
    for i, item in enumerate(_list(value, path)):
        parsed = parse(item, (*path, i))
        if parsed is not None:
            out.append(parsed)
    return out


# --------------------------------------------------------------------------- the parser


class _Parser:
    """One parse: the object's namespace and the notices gathered along the way."""

    def __init__(self) -> None:
        self.namespace = DEFAULT_NAMESPACE
        self.notices: list[Notice] = []

    def notice(self, path: Path, message: str) -> None:
        self.notices.append(Notice(path, message))

    def ignore(self, obj: Mapping[str, Any], path: Path, names: Iterable[str]) -> None:
        """Notices for the unsupported fields of `obj` that are set to something."""
        for name in names:
            value = obj.get(name)
            if value in (None, False, 0, "", [], {}) or value == _DEFAULT_VALUES.get(name):
                continue
            self.notice((*path, name), _NOT_APPLIED)

    # ----------------------------------------------------------------- object

    def parse(self, obj: Mapping[str, Any], origin: str) -> Parsed:
        top = _fields(obj, (), ("apiVersion", "kind", "metadata", "spec", "status"))
        version = top.get("apiVersion")
        if not isinstance(version, str) or version not in API_VERSIONS:
            raise PolicyError(
                ("apiVersion",),
                f"unsupported apiVersion {version!r} (one of {', '.join(sorted(API_VERSIONS))})",
            )
        kind = top.get("kind")
        if kind not in KINDS:
            raise PolicyError(
                ("kind",), f"unsupported kind {kind!r} (VirtualService or DestinationRule)"
            )
        meta = _mapping(top.get("metadata", {}), ("metadata",))  # other metadata is not ours
        if meta.get("name") is None:
            raise PolicyError(("metadata", "name"), "required")
        name = _str(meta["name"], ("metadata", "name"))
        if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
            raise PolicyError(
                ("metadata", "name"), f"invalid name {name!r} (a lowercase DNS subdomain)"
            )
        if meta.get("namespace") is not None:
            self.namespace = _dns_label(meta["namespace"], ("metadata", "namespace"), "namespace")
        if "spec" not in top:
            raise PolicyError(("spec",), "required")
        key = PolicyKey(kind, self.namespace, name)
        if kind == "VirtualService":
            route, applies = self.virtual_service(top["spec"], ("spec",), key, origin)
            return Parsed(route, tuple(self.notices), applies)
        dest, applies = self.destination_rule(top["spec"], ("spec",), key, origin)
        return Parsed(dest, tuple(self.notices), applies)

    # ----------------------------------------------------------------- VirtualService

    def virtual_service(
        self, value: object, path: Path, key: PolicyKey, origin: str
    ) -> tuple[RoutePolicy, bool]:
        spec = _fields(value, path, _VS_FIELDS)
        hosts = _each(spec.get("hosts", []), (*path, "hosts"), _host)
        if not hosts:
            raise PolicyError((*path, "hosts"), "at least one host is required")
        for i, host in enumerate(hosts):
            if host in hosts[:i]:
                raise PolicyError((*path, "hosts", i), f"duplicate host {host!r}")
        gateways = _str_list(spec.get("gateways", []), (*path, "gateways"))
        self.ignore(spec, path, ("exportTo",))
        if not any(spec.get(k) for k in ("http", "tcp", "tls")):
            raise PolicyError(path, "at least one of http, tcp, tls is required")
        outer, self.notices = self.notices, []  # rule notices matter only if the VS applies
        http = tuple(_each(spec.get("http", []), (*path, "http"), self.http_rule))
        tcp = tuple(
            rule
            for rules in _each(spec.get("tcp", []), (*path, "tcp"), self.tcp_rules)
            for rule in rules
        )
        self.ignore(spec, path, ("tls",))
        rule_notices, self.notices = self.notices, outer
        applies = not gateways or MESH_GATEWAY in gateways
        if not applies:
            self.notice(
                (*path, "gateways"),
                f"applies only to gateways {', '.join(gateways)}; not applied to the mesh "
                f'(add "{MESH_GATEWAY}" to apply it to sidecars and gRPC clients)',
            )
            http, tcp = (), ()
        else:
            self.notices += rule_notices
            if not http and not tcp:  # every rule was dropped, or there were only TLS rules
                self.notice(path, "no rule is left to apply; not applied")
                applies = False
        return RoutePolicy(key, tuple(hosts), http, tcp, origin), applies

    def dropped_alternative(self, match: Mapping[str, Any], path: Path) -> bool:
        """True (with a notice) when a match alternative applies only to some callers or
        gateways: it cannot be evaluated per caller, so it is not applied to anyone."""
        gateways = _str_list(match.get("gateways", []), (*path, "gateways"))
        if gateways and MESH_GATEWAY not in gateways:
            self.notice((*path, "gateways"), "applies only to gateways; match alternative dropped")
            return True
        for field, what, check in (
            ("sourceLabels", "source workloads", _label_map),
            ("sourceNamespace", "a source namespace", _str),
            ("sourceSubnet", "a source subnet", _str),
            ("destinationSubnets", "destination subnets", _str_list),
        ):
            if match.get(field):
                check(match[field], (*path, field))
                self.notice(
                    (*path, field),
                    f"selecting {what} is not supported; match alternative dropped",
                )
                return True
        return False

    def http_rule(self, value: object, path: Path) -> HttpRule | None:
        rule = _fields(value, path, _HTTP_FIELDS)
        name = _str(rule.get("name", ""), (*path, "name"))
        actions = [
            a for a in ("route", "redirect", "directResponse", "delegate") if rule.get(a, []) != []
        ]
        if not actions:
            raise PolicyError(path, "one of route, redirect, directResponse is required")
        if len(actions) > 1:
            raise PolicyError(
                path,
                "only one of route, redirect, directResponse may be set "
                f"(got {' and '.join(actions)})",
            )
        if "delegate" in rule:
            _fields(rule["delegate"], (*path, "delegate"), ("name", "namespace"))
            self.notice((*path, "delegate"), "delegation is not supported; rule dropped")
            return None
        matches: list[RequestMatch] = []
        raw_matches = _list(rule.get("match", []), (*path, "match"))
        for i, raw in enumerate(raw_matches):
            match = self.http_match(raw, (*path, "match", i))
            if match is not None:
                matches.append(match)
        if raw_matches and not matches:
            self.notice(path, "every match alternative was dropped; rule dropped")
            return None

        forwards = "route" in rule
        if "redirect" in rule:
            for field in ("fault", "rewrite"):
                if field in rule:
                    raise PolicyError((*path, field), "cannot be combined with redirect")
        if "directResponse" in rule and "rewrite" in rule:
            raise PolicyError((*path, "rewrite"), "cannot be combined with directResponse")
        if not forwards:
            for field in ("timeout", "retries", "mirror", "mirrors"):
                if field in rule:
                    self.notice((*path, field), "has no effect without route; ignored")

        headers, authority = self.header_ops(rule.get("headers"), (*path, "headers"))
        rewrite = self.rewrite(rule.get("rewrite"), (*path, "rewrite"))
        destinations: tuple[WeightedDestination, ...] = ()
        if forwards:
            destinations, dest_authority = self.http_destinations(rule["route"], (*path, "route"))
            if authority is None:
                authority = dest_authority  # as Istio: the rule's own setting wins
        if authority is not None:
            if rewrite is not None and rewrite.authority is not None:
                raise PolicyError(
                    (*path, "headers", "request"),
                    "the authority is also set by rewrite.authority; set it in one place",
                )
            rewrite = Rewrite(rewrite.uri if rewrite else None, authority)
        return HttpRule(
            name=name,
            matches=tuple(matches),
            destinations=destinations,
            redirect=_opt(rule, "redirect", path, self.redirect),
            direct_response=_opt(rule, "directResponse", path, self.direct_response),
            timeout=_opt(rule, "timeout", path, _off_or_duration) if forwards else None,
            retry=_opt(rule, "retries", path, self.retry) if forwards else None,
            fault=_opt(rule, "fault", path, self.fault),
            mirrors=self.mirrors(rule, path) if forwards else (),
            rewrite=rewrite,
            cors=_opt(rule, "corsPolicy", path, self.cors),
            headers=headers,
        )

    def http_match(self, value: object, path: Path) -> RequestMatch | None:
        match = _fields(value, path, _HTTP_MATCH_FIELDS)
        self.ignore(match, path, ("statPrefix",))
        if self.dropped_alternative(match, path):
            return None
        uri = self.string_match(match.get("uri"), (*path, "uri"))
        headers = [
            HeaderMatch(name, m, invert)
            for field, invert in (("headers", False), ("withoutHeaders", True))
            for name, m in self.named_matches(match.get(field), (*path, field), header=True)
        ]
        return RequestMatch(
            name=_str(match.get("name", ""), (*path, "name")),
            uri=None if uri is not None and uri.kind == "present" else uri,
            ignore_uri_case=_bool(match.get("ignoreUriCase", False), (*path, "ignoreUriCase")),
            method=self.string_match(match.get("method"), (*path, "method")),
            authority=self.string_match(match.get("authority"), (*path, "authority")),
            scheme=self.string_match(match.get("scheme"), (*path, "scheme")),
            headers=tuple(sorted(headers, key=lambda h: (h.name, h.invert))),
            query=tuple(
                QueryMatch(name, m)
                for name, m in self.named_matches(match.get("queryParams"), (*path, "queryParams"))
            ),
            port=_port(match["port"], (*path, "port")) if match.get("port") else None,
        )

    def string_match(
        self, value: object, path: Path, present_ok: bool = True
    ) -> StringMatch | None:
        """Istio's StringMatch. `{}` (and Istio's legacy `regex: "*"`) means "present"."""
        if value is None:
            return None
        obj = _fields(value, path, _STRING_MATCH_FIELDS)
        kind = _one_of(obj, path, _STRING_MATCH_FIELDS)
        if kind is None or (kind == "regex" and obj["regex"] == "*" and present_ok):
            if not present_ok:
                raise PolicyError(path, "one of exact, prefix, regex is required")
            return StringMatch("present")
        where = (*path, kind)
        if kind == "exact":
            return StringMatch("exact", _str(obj[kind], where))
        if kind == "prefix":
            return StringMatch("prefix", _nonempty(obj[kind], where))
        return StringMatch("regex", _regex(obj[kind], where))

    def named_matches(
        self, value: object, path: Path, header: bool = False
    ) -> list[tuple[str, StringMatch]]:
        """A map of header or query parameter names to StringMatches, sorted by name."""
        if value is None:
            return []
        out: dict[str, StringMatch] = {}
        for raw, match in _mapping(value, path).items():
            where = (*path, raw)
            if header:
                name = _header_name(raw, where)
                if name.startswith(":"):
                    raise PolicyError(
                        where,
                        f"pseudo-header {name!r} cannot be matched here; use uri, method, "
                        "authority or scheme",
                    )
            else:
                name = _checked(_nonempty(raw, where), where, _query_name_problem)
            if name in out:
                raise PolicyError(where, f"duplicate name {name!r}")
            matcher = self.string_match(match if match is not None else {}, where)
            assert matcher is not None  # a mapping always gives a matcher
            out[name] = matcher
        return sorted(out.items())

    def destination(self, value: object, path: Path) -> Destination:
        dest = _fields(value, path, _DESTINATION_FIELDS)
        if "host" not in dest:
            raise PolicyError((*path, "host"), "required")
        return Destination(
            host=_host(dest["host"], (*path, "host")),
            namespace=self.namespace,
            port=_port_selector(dest["port"], (*path, "port")) if "port" in dest else None,
            subset=_dns_label(dest["subset"], (*path, "subset"), "subset name")
            if dest.get("subset")
            else "",
        )

    def destinations(
        self, value: object, path: Path, fields: tuple[str, ...]
    ) -> list[tuple[int, Destination, int, dict[str, Any]]]:
        """Every route destination as (index, destination, weight, its fields)."""
        raw = _list(value, path)
        if not raw:
            raise PolicyError(path, "at least one destination is required")
        out = []
        for i, item in enumerate(raw):
            where = (*path, i)
            entry = _fields(item, where, fields)
            if "destination" not in entry:
                raise PolicyError((*where, "destination"), "required")
            dest = self.destination(entry["destination"], (*where, "destination"))
            out.append((i, dest, _int(entry.get("weight", 0), (*where, "weight")), entry))
        if len(out) > 1:
            total = sum(weight for _, _, weight, _ in out)
            if total == 0:
                raise PolicyError(
                    path, "total weight is zero (give at least one destination a weight)"
                )
            if total > UINT32_MAX:
                raise PolicyError(path, f"total weight {total} exceeds {UINT32_MAX}")
        return out

    @staticmethod
    def weighted(
        entries: list[tuple[int, Destination, int, dict[str, Any]]],
    ) -> list[tuple[int, Destination, int, dict[str, Any]]]:
        """The destinations that take traffic, as Istio reads weights: a single one takes
        all of it whatever its weight; of several, those weighted 0 take none."""
        kept = entries if len(entries) == 1 else [e for e in entries if e[2] > 0]
        if len(kept) == 1:
            i, dest, _, entry = kept[0]
            return [(i, dest, 100, entry)]
        return kept

    def http_destinations(
        self, value: object, path: Path
    ) -> tuple[tuple[WeightedDestination, ...], str | None]:
        """The weighted destinations, and the authority a single destination's headers set
        (Istio turns that into the route's authority rewrite)."""
        entries = self.destinations(value, path, _ROUTE_DESTINATION_FIELDS)
        weights = {i: weight for i, _, weight, _ in self.weighted(entries)}
        out = []
        authority = None
        for i, dest, _, entry in entries:
            ops, dest_authority = self.header_ops(entry.get("headers"), (*path, i, "headers"))
            if i not in weights:
                continue  # checked all the same: an object is valid or not as a whole
            if dest_authority is not None:
                if len(weights) > 1:
                    raise PolicyError(
                        (*path, i, "headers", "request"),
                        "setting the authority per destination is not supported; "
                        "use the rule's rewrite.authority",
                    )
                authority = dest_authority
            out.append(WeightedDestination(dest, weights[i], ops))
        return tuple(out), authority

    def tcp_rules(self, value: object, path: Path) -> list[TcpRule]:
        """One TcpRule per kept match alternative (or one matching every port)."""
        rule = _fields(value, path, _TCP_FIELDS)
        if not rule.get("route"):
            raise PolicyError((*path, "route"), "at least one destination is required")
        entries = self.destinations(rule["route"], (*path, "route"), ("destination", "weight"))
        destinations = tuple(
            WeightedDestination(dest, weight) for _, dest, weight, _ in self.weighted(entries)
        )
        raw_matches = _list(rule.get("match", []), (*path, "match"))
        if not raw_matches:
            return [TcpRule(destinations)]
        ports: list[int | None] = []
        for i, raw in enumerate(raw_matches):
            where = (*path, "match", i)
            match = _fields(raw, where, _L4_MATCH_FIELDS)
            if self.dropped_alternative(match, where):
                continue
            ports.append(_port(match["port"], (*where, "port")) if match.get("port") else None)
        if not ports:
            self.notice(path, "every match alternative was dropped; rule dropped")
        return [TcpRule(destinations, port) for port in ports]

    def header_ops(self, value: object, path: Path) -> tuple[HeaderOps, str | None]:
        """Header operations, and the authority that `request.set`/`add` of `:authority` or
        `host` gives (Envoy cannot modify those headers; Istio rewrites the authority)."""
        if value is None:
            return HeaderOps(), None
        obj = _fields(value, path, ("request", "response"))
        ops: dict[str, Any] = {}
        authority: str | None = None
        for side in ("request", "response"):
            where = (*path, side)
            part = _fields(obj.get(side, {}), where, ("set", "add", "remove"))
            for verb in ("set", "add"):
                pairs: dict[str, str] = {}
                for raw, val in _mapping(part.get(verb, {}), (*where, verb)).items():
                    at = (*where, verb, raw)
                    name = _header_name(raw, at)
                    if side == "request" and name in (":authority", "host"):
                        if authority is not None:
                            raise PolicyError(at, "the authority is set more than once")
                        authority = _plain_value(val, at)
                        continue
                    self.check_modifiable(name, at)
                    if name in pairs:
                        raise PolicyError(at, f"duplicate header {name!r}")
                    pairs[name] = _header_value(val, at)
                ops[f"{side}_{verb}"] = tuple(sorted(pairs.items()))
            if len(ops[f"{side}_set"]) + len(ops[f"{side}_add"]) > MAX_HEADERS_TO_ADD:
                raise PolicyError(where, f"more than {MAX_HEADERS_TO_ADD} headers to set and add")
            removed = set()
            for i, raw in enumerate(_list(part.get("remove", []), (*where, "remove"))):
                at = (*where, "remove", i)
                name = _header_name(raw, at)
                self.check_modifiable(name, at)
                removed.add(name)
            ops[f"{side}_remove"] = tuple(sorted(removed))
        return HeaderOps(**ops), authority

    @staticmethod
    def check_modifiable(name: str, path: Path) -> None:
        if name.startswith(":"):
            raise PolicyError(path, f"pseudo-header {name!r} cannot be modified")
        if name == "host":
            raise PolicyError(path, "the host header cannot be modified here")

    def rewrite(self, value: object, path: Path) -> Rewrite | None:
        if value is None:
            return None
        obj = _fields(value, path, ("uri", "authority", "uriRegexRewrite"))
        if "uriRegexRewrite" in obj:
            raise PolicyError((*path, "uriRegexRewrite"), "not supported")
        uri = _opt(obj, "uri", path, _plain_value)
        authority = _opt(obj, "authority", path, _plain_value)
        if uri is None and authority is None:
            raise PolicyError(path, "one of uri, authority is required")
        return Rewrite(uri, authority)

    def redirect(self, value: object, path: Path) -> Redirect:
        obj = _fields(value, path, _REDIRECT_FIELDS)
        if obj.get("prefixRewrite"):
            raise PolicyError((*path, "prefixRewrite"), "not supported")
        _one_of(obj, path, ("port", "derivePort"))
        derive = _str(obj.get("derivePort", "FROM_PROTOCOL_DEFAULT"), (*path, "derivePort"))
        if derive != "FROM_PROTOCOL_DEFAULT":
            if derive == "FROM_REQUEST_PORT":
                raise PolicyError((*path, "derivePort"), "FROM_REQUEST_PORT is not supported")
            raise PolicyError(
                (*path, "derivePort"),
                f"unknown value {derive!r} (FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT)",
            )
        scheme = _str(obj.get("scheme", ""), (*path, "scheme")) or None
        if scheme not in (None, "http", "https"):
            raise PolicyError((*path, "scheme"), f'invalid scheme {scheme!r} ("http" or "https")')
        code = _int(obj.get("redirectCode", 0), (*path, "redirectCode"), 0, UINT32_MAX) or 301
        if code not in REDIRECT_CODES:
            raise PolicyError(
                (*path, "redirectCode"),
                f"{code} is not a redirect code Envoy can send "
                f"({', '.join(map(str, REDIRECT_CODES))})",
            )
        uri = _opt(obj, "uri", path, _plain_value)
        authority = _opt(obj, "authority", path, _plain_value)
        port = _port(obj["port"], (*path, "port")) if obj.get("port") else None
        if uri is None and authority is None and scheme is None and port is None:
            raise PolicyError(path, "one of uri, authority, scheme, port is required")
        return Redirect(uri, authority, scheme, port, code)

    def direct_response(self, value: object, path: Path) -> DirectResponse:
        obj = _fields(value, path, ("status", "body"))
        if "status" not in obj:
            raise PolicyError((*path, "status"), "required")
        status = _int(obj["status"], (*path, "status"), 200, 599)
        if "body" not in obj:
            return DirectResponse(status)
        where = (*path, "body")
        body = _fields(obj["body"], where, ("string", "bytes"))
        kind = _one_of(body, where, ("string", "bytes"))
        if kind is None:
            raise PolicyError(where, "one of string, bytes is required")
        if kind == "string":
            text = _str(body["string"], (*where, "string"))
            size = len(text.encode())
        else:
            try:
                data = base64.b64decode(_str(body["bytes"], (*where, "bytes")), validate=True)
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

    def retry(self, value: object, path: Path) -> Retry:
        obj = _fields(value, path, _RETRY_FIELDS)
        if obj.get("retryOn") == "":
            del obj["retryOn"]  # proto3: "" is unset
        attempts = _int(obj.get("attempts", 0), (*path, "attempts"))
        self.ignore(obj, path, ("retryRemoteLocalities", "retryIgnorePreviousHosts", "backoff"))
        if attempts == 0:
            for field in ("perTryTimeout", "retryOn", "retryRemoteLocalities"):
                if field in obj:
                    raise PolicyError(
                        (*path, field), "set although attempts is 0 (retries disabled)"
                    )
            return Retry(0)
        tokens, codes = _opt(obj, "retryOn", path, _retry_conditions) or (DEFAULT_RETRY_ON, ())
        return Retry(attempts, _opt(obj, "perTryTimeout", path, _duration), tokens, codes)

    def fault(self, value: object, path: Path) -> Fault | None:
        obj = _fields(value, path, _FAULT_FIELDS)
        if "delay" not in obj and "abort" not in obj:
            raise PolicyError(path, "one of delay, abort is required")
        delay: float | None = None
        delay_pct = 0.0
        if "delay" in obj:
            where = (*path, "delay")
            d = _fields(obj["delay"], where, _DELAY_FIELDS)
            if "exponentialDelay" in d:
                raise PolicyError((*where, "exponentialDelay"), "not supported")
            if "fixedDelay" not in d:
                raise PolicyError((*where, "fixedDelay"), "required")
            delay = _duration(d["fixedDelay"], (*where, "fixedDelay"))
            delay_pct = self.fault_percent(d, where, "no request is delayed")
        abort_http: int | None = None
        abort_grpc: str | None = None
        abort_pct = 0.0
        if "abort" in obj:
            where = (*path, "abort")
            a = _fields(obj["abort"], where, _ABORT_FIELDS)
            kind = _one_of(a, where, ("httpStatus", "grpcStatus", "http2Error"))
            if kind is None:
                raise PolicyError(where, "one of httpStatus, grpcStatus is required")
            if kind == "http2Error":
                raise PolicyError((*where, kind), "not supported")
            if kind == "httpStatus":
                abort_http = _int(a[kind], (*where, kind), 200, 599)
            else:
                abort_grpc = _str(a[kind], (*where, kind))
                if abort_grpc not in GRPC_STATUS_NAMES:
                    raise PolicyError(
                        (*where, kind),
                        f"unknown gRPC status {abort_grpc!r} (a name such as UNAVAILABLE)",
                    )
            abort_pct = self.fault_percent(a, where, "no request is aborted")
        return Fault(delay, delay_pct, abort_http, abort_grpc, abort_pct)

    def fault_percent(self, obj: Mapping[str, Any], path: Path, unset: str) -> float:
        """`percentage`, else the deprecated integer `percent`, else 0 as Istio documents."""
        if "percentage" in obj:
            return _percent(obj["percentage"], (*path, "percentage"))
        if "percent" in obj:
            return float(_int(obj["percent"], (*path, "percent"), 0, 100))
        self.notice(path, f"no percentage set: {unset} (Istio's default is 0%)")
        return 0.0

    def mirrors(self, rule: Mapping[str, Any], path: Path) -> tuple[Mirror, ...]:
        """`mirror` with its percentage (default 100) and `mirrors[]`; 0 % mirrors nothing."""
        out: list[Mirror] = []
        pct = 100.0
        if "mirrorPercentage" in rule:
            pct = _percent(rule["mirrorPercentage"], (*path, "mirrorPercentage"))
        else:
            for legacy in ("mirrorPercent", "mirror_percent"):
                if legacy in rule:
                    pct = float(_int(rule[legacy], (*path, legacy), 0, 100))
        if "mirror" in rule:
            dest = self.destination(rule["mirror"], (*path, "mirror"))
            if pct > 0:
                out.append(Mirror(dest, pct))
        for i, raw in enumerate(_list(rule.get("mirrors", []), (*path, "mirrors"))):
            where = (*path, "mirrors", i)
            entry = _fields(raw, where, ("destination", "percentage"))
            if "destination" not in entry:
                raise PolicyError((*where, "destination"), "required")
            dest = self.destination(entry["destination"], (*where, "destination"))
            share = _opt(entry, "percentage", where, _percent)
            share = 100.0 if share is None else share
            if share > 0:
                out.append(Mirror(dest, share))
        return tuple(out)

    def cors(self, value: object, path: Path) -> Cors:
        obj = _fields(value, path, _CORS_FIELDS)
        self.ignore(obj, path, ("unmatchedPreflights",))
        origins: list[StringMatch] = []
        if "allowOrigins" in obj:
            for i, raw in enumerate(_list(obj["allowOrigins"], (*path, "allowOrigins"))):
                where = (*path, "allowOrigins", i)
                match = self.string_match(raw, where, present_ok=False)
                assert match is not None
                if match.kind == "exact" and not match.value:
                    raise PolicyError((*where, "exact"), "must not be empty")
                origins.append(match)
            if obj.get("allowOrigin"):
                self.notice((*path, "allowOrigin"), "ignored: allowOrigins is set")
        elif "allowOrigin" in obj:
            for i, origin in enumerate(_str_list(obj["allowOrigin"], (*path, "allowOrigin"))):
                origins.append(StringMatch("exact", _nonempty(origin, (*path, "allowOrigin", i))))
        methods = _str_list(obj.get("allowMethods", []), (*path, "allowMethods"))
        for i, method in enumerate(methods):
            if method not in CORS_METHODS:
                raise PolicyError((*path, "allowMethods", i), f"unknown HTTP method {method!r}")
        max_age = None
        if "maxAge" in obj:
            max_age = _duration(obj["maxAge"], (*path, "maxAge"))
            if not max_age.is_integer():
                raise PolicyError((*path, "maxAge"), "must be whole seconds")
        return Cors(
            allow_origins=tuple(origins),
            allow_methods=tuple(methods),
            allow_headers=self.cors_headers(obj, path, "allowHeaders"),
            expose_headers=self.cors_headers(obj, path, "exposeHeaders"),
            max_age=max_age,
            allow_credentials=_opt(obj, "allowCredentials", path, _bool),
        )

    @staticmethod
    def cors_headers(obj: Mapping[str, Any], path: Path, field: str) -> tuple[str, ...]:
        names = _str_list(obj.get(field, []), (*path, field))
        return tuple(
            n if n == "*" else _header_name(n, (*path, field, i)) for i, n in enumerate(names)
        )

    # ----------------------------------------------------------------- DestinationRule

    def destination_rule(
        self, value: object, path: Path, key: PolicyKey, origin: str
    ) -> tuple[DestinationPolicy, bool]:
        spec = _fields(value, path, _DR_FIELDS)
        if "host" not in spec:
            raise PolicyError((*path, "host"), "required")
        host = _host(spec["host"], (*path, "host"))
        self.ignore(spec, path, ("exportTo",))
        policy, ports = self.traffic_policy(spec.get("trafficPolicy"), (*path, "trafficPolicy"))
        subsets: list[Subset] = []
        for i, raw in enumerate(_list(spec.get("subsets", []), (*path, "subsets"))):
            where = (*path, "subsets", i)
            entry = _fields(raw, where, ("name", "labels", "trafficPolicy"))
            if "name" not in entry:
                raise PolicyError((*where, "name"), "required")
            name = _dns_label(entry["name"], (*where, "name"), "subset name")
            if any(s.name == name for s in subsets):
                raise PolicyError((*where, "name"), f"duplicate subset name {name!r}")
            labels = _label_map(entry.get("labels", {}), (*where, "labels"))
            sub_policy, sub_ports = self.traffic_policy(
                entry.get("trafficPolicy"), (*where, "trafficPolicy")
            )
            subsets.append(Subset(name, labels, sub_policy, sub_ports))
        applies = not spec.get("workloadSelector")
        if applies:
            result = DestinationPolicy(key, host, policy, ports, tuple(subsets), origin)
        else:
            _mapping(spec["workloadSelector"], (*path, "workloadSelector"))
            self.notice(
                (*path, "workloadSelector"),
                "applies only to the selected workloads; selecting workloads is not "
                "supported, so it is not applied",
            )
            result = DestinationPolicy(key, host, origin=origin)
        return result, applies

    def traffic_policy(
        self, value: object, path: Path
    ) -> tuple[TrafficPolicy | None, tuple[PortTrafficPolicy, ...]]:
        """The top-level policy (None if nothing applicable is set) and per-port ones."""
        if value is None:
            return None, ()
        obj = _fields(value, path, _TRAFFIC_POLICY_FIELDS)
        if not obj:
            raise PolicyError(path, "must set at least one field")
        self.ignore(obj, path, ("tls", "tunnel", "proxyProtocol", "retryBudget"))
        ports: list[PortTrafficPolicy] = []
        for i, raw in enumerate(
            _list(obj.get("portLevelSettings", []), (*path, "portLevelSettings"))
        ):
            where = (*path, "portLevelSettings", i)
            entry = _fields(raw, where, _PORT_POLICY_FIELDS)
            if "port" not in entry:
                raise PolicyError((*where, "port"), "required")
            number = _port_selector(entry["port"], (*where, "port"))
            if any(p.port == number for p in ports):
                raise PolicyError((*where, "port"), f"duplicate port {number}")
            if not any(f in entry for f in _POLICY_COMMON):
                raise PolicyError(where, f"one of {', '.join(_POLICY_COMMON)} is required")
            self.ignore(entry, where, ("tls",))
            ports.append(PortTrafficPolicy(number, self.policy_parts(entry, where)))
        policy = self.policy_parts(obj, path)
        return (policy if policy != TrafficPolicy() else None), tuple(ports)

    def policy_parts(self, obj: Mapping[str, Any], path: Path) -> TrafficPolicy:
        return TrafficPolicy(
            load_balancer=_opt(obj, "loadBalancer", path, self.load_balancer),
            connection_pool=_opt(obj, "connectionPool", path, self.connection_pool),
            outlier_detection=_opt(obj, "outlierDetection", path, self.outlier),
        )

    def load_balancer(self, value: object, path: Path) -> LoadBalancer | None:
        obj = _fields(value, path, _LB_FIELDS)
        self.ignore(obj, path, ("zoneAwareLbSetting", "warmupDurationSecs", "warmup"))
        kind = _one_of(obj, path, ("simple", "consistentHash"))
        simple: SimpleLb | None = None
        if kind == "simple":
            name = _str(obj["simple"], (*path, "simple"))
            if name == "PASSTHROUGH":
                raise PolicyError((*path, "simple"), "PASSTHROUGH is not supported")
            if name not in _SIMPLE_LB:
                raise PolicyError(
                    (*path, "simple"),
                    f"unknown value {name!r} (ROUND_ROBIN, LEAST_REQUEST, RANDOM)",
                )
            simple = _SIMPLE_LB[name]
        lb = LoadBalancer(
            simple=simple,
            locality=_opt(obj, "localityLbSetting", path, self.locality),
        )
        if kind == "consistentHash":
            lb = self.consistent_hash(obj["consistentHash"], (*path, "consistentHash"), lb)
        return None if lb == LoadBalancer() else lb

    def consistent_hash(self, value: object, path: Path, lb: LoadBalancer) -> LoadBalancer:
        obj = _fields(value, path, _HASH_FIELDS)
        if obj.get("useSourceIp") is False:
            del obj["useSourceIp"]  # false is the proto3 default: nothing chosen
        key = _one_of(obj, path, _HASH_KEYS)
        if key is None:
            raise PolicyError(path, f"one of {', '.join(_HASH_KEYS)} is required")
        where = (*path, key)
        if key == "httpHeaderName":
            hash_on = HashOn(header=_header_name(obj[key], where))
        elif key == "httpQueryParameterName":
            hash_on = HashOn(query_parameter=_nonempty(obj[key], where))
        elif key == "useSourceIp":
            hash_on = HashOn(source_ip=_bool(obj[key], where))
        else:
            cookie = _fields(obj[key], where, ("name", "path", "ttl", "attributes"))
            self.ignore(cookie, where, ("attributes",))
            if "name" not in cookie:
                raise PolicyError((*where, "name"), "required")
            name = _nonempty(cookie["name"], (*where, "name"))
            if not _TOKEN.fullmatch(name):
                raise PolicyError((*where, "name"), f"invalid cookie name {name!r}")
            hash_on = HashOn(
                cookie=name,
                cookie_ttl=_opt(cookie, "ttl", where, _off_or_duration),
                cookie_path=_opt(cookie, "path", where, _plain_value),
            )
        algorithm = _one_of(obj, path, ("ringHash", "maglev"))
        if algorithm and obj.get("minimumRingSize"):
            raise PolicyError(
                (*path, "minimumRingSize"), f"cannot be combined with {algorithm}; use ringHash"
            )
        ring_size: int | None = None
        table_size: int | None = None
        if algorithm == "maglev":
            where = (*path, "maglev")
            maglev = _fields(obj["maglev"], where, ("tableSize",))
            if not maglev.get("tableSize"):
                raise PolicyError((*where, "tableSize"), "required")
            table_size = _int(maglev["tableSize"], (*where, "tableSize"), 1, MAX_MAGLEV_TABLE_SIZE)
            if not _is_prime(table_size):
                raise PolicyError((*where, "tableSize"), f"{table_size} is not a prime number")
        elif algorithm == "ringHash":
            ring = _fields(obj["ringHash"], (*path, "ringHash"), ("minimumRingSize",))
            ring_size = self.ring_size(ring, (*path, "ringHash"))
        else:
            ring_size = self.ring_size(obj, path)
        return LoadBalancer(
            simple=None,
            hash=hash_on,
            maglev=algorithm == "maglev",
            minimum_ring_size=ring_size,
            maglev_table_size=table_size,
            locality=lb.locality,
        )

    @staticmethod
    def ring_size(obj: Mapping[str, Any], path: Path) -> int | None:
        """`minimumRingSize`: 0 or unset is the default (1024)."""
        size = _int(obj.get("minimumRingSize", 0), (*path, "minimumRingSize"), 0, MAX_RING_SIZE)
        return size or None

    def locality(self, value: object, path: Path) -> LocalityLb:
        obj = _fields(value, path, ("distribute", "failover", "failoverPriority", "enabled"))
        self.ignore(obj, path, ("failoverPriority",))
        if obj.get("distribute") and obj.get("failover"):
            raise PolicyError(path, "distribute and failover cannot both be set")
        distribute: list[LocalityDistribute] = []
        origins: list[tuple[str, ...]] = []
        for i, raw in enumerate(_list(obj.get("distribute", []), (*path, "distribute"))):
            where = (*path, "distribute", i)
            entry = _fields(raw, where, ("from", "to"))
            if "from" not in entry:
                raise PolicyError((*where, "from"), "required")
            origin = _str(entry["from"], (*where, "from"))
            _claim(origins, _locality_spec(origin, (*where, "from")), (*where, "from"))
            targets: list[tuple[str, int]] = []
            claimed: list[tuple[str, ...]] = []
            for loc, weight in _mapping(entry.get("to", {}), (*where, "to")).items():
                at = (*where, "to", loc)
                _claim(claimed, _locality_spec(loc, at), at)
                targets.append((loc, _int(weight, at, 1, 100)))
            total = sum(w for _, w in targets)
            if total != 100:
                raise PolicyError((*where, "to"), f"weights add up to {total}, not 100")
            distribute.append(LocalityDistribute(origin, tuple(sorted(targets))))
        failover: list[LocalityFailover] = []
        for i, raw in enumerate(_list(obj.get("failover", []), (*path, "failover"))):
            where = (*path, "failover", i)
            entry = _fields(raw, where, ("from", "to"))
            regions = []
            for end in ("from", "to"):
                if end not in entry:
                    raise PolicyError((*where, end), "required")
                region = _nonempty(entry[end], (*where, end))
                if "/" in region or "*" in region:
                    raise PolicyError((*where, end), f"{region!r} is not a region (no '/' or '*')")
                regions.append(region)
            if regions[0] == regions[1]:
                raise PolicyError(where, "from and to must be different regions")
            failover.append(LocalityFailover(regions[0], regions[1]))
        enabled = _bool(obj.get("enabled", True), (*path, "enabled"))
        return LocalityLb(enabled, tuple(distribute), tuple(failover))

    def connection_pool(self, value: object, path: Path) -> ConnectionPool | None:
        obj = _fields(value, path, ("tcp", "http"))
        if not obj:
            raise PolicyError(path, "one of tcp, http is required")
        tcp = _fields(obj.get("tcp", {}), (*path, "tcp"), _TCP_POOL_FIELDS)
        http = _fields(obj.get("http", {}), (*path, "http"), _HTTP_POOL_FIELDS)
        self.ignore(tcp, (*path, "tcp"), ("tcpKeepalive", "maxConnectionDuration"))
        self.ignore(
            http,
            (*path, "http"),
            ("h2UpgradePolicy", "useClientProtocol", "maxConcurrentStreams", "http2KeepAlive"),
        )

        t, h = (*path, "tcp"), (*path, "http")
        pool = ConnectionPool(
            max_connections=_opt(tcp, "maxConnections", t, _limit),
            connect_timeout=_opt(tcp, "connectTimeout", t, _duration),
            tcp_idle_timeout=_opt(tcp, "idleTimeout", t, _off_or_duration),
            http1_max_pending_requests=_opt(http, "http1MaxPendingRequests", h, _limit),
            http2_max_requests=_opt(http, "http2MaxRequests", h, _limit),
            max_requests_per_connection=_opt(http, "maxRequestsPerConnection", h, _limit),
            max_retries=_opt(http, "maxRetries", h, _limit),
            idle_timeout=_opt(http, "idleTimeout", h, _duration),
        )
        return None if pool == ConnectionPool() else pool

    def outlier(self, value: object, path: Path) -> OutlierDetection:
        obj = _fields(value, path, _OUTLIER_FIELDS)
        self.ignore(
            obj,
            path,
            (
                "consecutiveErrors",
                "splitExternalLocalOriginErrors",
                "consecutiveLocalOriginFailures",
                "outlierDetectionHttpErrorCodes",
            ),
        )

        return OutlierDetection(
            consecutive_5xx_errors=_opt(obj, "consecutive5xxErrors", path, _count),
            consecutive_gateway_errors=_opt(obj, "consecutiveGatewayErrors", path, _count),
            interval=_opt(obj, "interval", path, _duration),
            base_ejection_time=_opt(obj, "baseEjectionTime", path, _duration),
            # Istio reads a maxEjectionPercent of 0 as unset (Envoy's default, 10 %).
            max_ejection_percent=_opt(obj, "maxEjectionPercent", path, _int_percent) or None,
            min_health_percent=_opt(obj, "minHealthPercent", path, _int_percent),
        )


# --------------------------------------------------------------------------- helpers


def _retry_conditions(value: object, path: Path) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Istio's `retryOn`: Envoy retry conditions and, as integers, retriable statuses."""
    tokens: list[str] = []
    codes: list[int] = []
    for part in _str(value, path).split(","):
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


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % f for f in range(2, math.isqrt(n) + 1))


def _locality_spec(text: object, path: Path) -> tuple[str, ...]:
    """`region[/zone[/subzone]]`, optionally ending in a `*` segment: the locality prefix
    it covers (`us-east/*` and `us-east` both cover all of us-east)."""
    spec = _nonempty(text, path)
    parts = spec.split("/")
    if len(parts) > 3:
        raise PolicyError(path, f"invalid locality {spec!r} (region/zone/subzone)")
    if parts[-1] == "*":
        parts = parts[:-1]
    if any(not p or "*" in p for p in parts):
        raise PolicyError(
            path, f"invalid locality {spec!r} (no empty parts; '*' only as the last part)"
        )
    return tuple(parts)


def _claim(claimed: list[tuple[str, ...]], prefix: tuple[str, ...], path: Path) -> None:
    """Record a locality prefix; one that overlaps an earlier one is an error."""
    for other in claimed:
        shorter = min(len(other), len(prefix))
        if other[:shorter] == prefix[:shorter]:
            raise PolicyError(
                path, f"locality {'/'.join(prefix) or '*'} overlaps {'/'.join(other) or '*'}"
            )
    claimed.append(prefix)
