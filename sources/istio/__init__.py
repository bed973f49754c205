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

Modules: `objects` (the entry points), `virtual_service` with `matches`, `destinations`
and `http_actions`; `destination_rule` with `locality`; `values` (typed readers) and
`checks` (strings Envoy accepts); `report` (errors, notices, the parse context);
`constants`. `security.istio.io` objects (AuthorizationPolicy, PeerAuthentication) have
their own entry point, `security.parse_security`, with `authorization` and
`peer_authentication`; they parse into `model.security`.
"""

from sources.istio.checks import check_regex, header_value_problem
from sources.istio.constants import (
    API_GROUP,
    API_VERSIONS,
    CORS_METHODS,
    DEFAULT_NAMESPACE,
    DEFAULT_RETRY_ON,
    ENVOY_REGEX_PROGRAM_SIZE_LIMIT,
    GRPC_STATUS_NAMES,
    HEADER_VARIABLES,
    INT32_MAX,
    KINDS,
    MAX_DIRECT_RESPONSE_BODY,
    MAX_DURATION_SECONDS,
    MAX_HEADER_BYTES,
    MAX_HEADERS_TO_ADD,
    MAX_MAGLEV_TABLE_SIZE,
    MAX_QUERY_NAME_BYTES,
    MAX_REGEX_LENGTH,
    MAX_RING_SIZE,
    MESH_GATEWAY,
    REDIRECT_CODES,
    RETRY_ON_TOKENS,
    UINT32_MAX,
)
from sources.istio.objects import Parsed, is_supported_kind, parse_policy
from sources.istio.report import Notice, Path, PolicyError
from sources.istio.values import parse_duration
from sources.yaml_positions import render_path

__all__ = [
    "API_GROUP",
    "API_VERSIONS",
    "CORS_METHODS",
    "DEFAULT_NAMESPACE",
    "DEFAULT_RETRY_ON",
    "ENVOY_REGEX_PROGRAM_SIZE_LIMIT",
    "GRPC_STATUS_NAMES",
    "HEADER_VARIABLES",
    "INT32_MAX",
    "KINDS",
    "MAX_DIRECT_RESPONSE_BODY",
    "MAX_DURATION_SECONDS",
    "MAX_HEADERS_TO_ADD",
    "MAX_HEADER_BYTES",
    "MAX_MAGLEV_TABLE_SIZE",
    "MAX_QUERY_NAME_BYTES",
    "MAX_REGEX_LENGTH",
    "MAX_RING_SIZE",
    "MESH_GATEWAY",
    "REDIRECT_CODES",
    "RETRY_ON_TOKENS",
    "UINT32_MAX",
    "Notice",
    "Parsed",
    "Path",
    "PolicyError",
    "check_regex",
    "header_value_problem",
    "is_supported_kind",
    "parse_duration",
    "parse_policy",
    "render_path",
]
