"""Istio's API names, its value vocabularies, and the limits Envoy, gRPC and Istio enforce."""

from __future__ import annotations

from xds_server.model.policy import PolicyKind

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
