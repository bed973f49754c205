"""The Gateway API's names, and the limits its CRDs (maxItems, maxLength, CEL) enforce."""

from __future__ import annotations

API_GROUP = "gateway.networking.k8s.io"
API_VERSIONS = frozenset({f"{API_GROUP}/v1"})
HTTP_ROUTE = "HTTPRoute"
GRPC_ROUTE = "GRPCRoute"
KINDS = (HTTP_ROUTE, GRPC_ROUTE)

CORE_GROUPS = ("", "core")  # how a parentRef or backendRef names the core API group
SERVICE = "Service"

MAX_PARENT_REFS = 32
MAX_RULES = 16
MAX_MATCHES = 64  # per rule; with the CEL rule that rules x matches stay <= 128
MAX_RULE_MATCHES_TOTAL = 128
MAX_HEADER_MATCHES = 16
MAX_QUERY_MATCHES = 16
MAX_FILTERS = 16
MAX_BACKEND_REFS = 16
MAX_HEADER_MODIFIERS = 16
MAX_PATH_LENGTH = 1024
MAX_HEADER_NAME_LENGTH = 256
MAX_HEADER_VALUE_LENGTH = 4096
MAX_WEIGHT = 1_000_000
MAX_HOSTNAMES = 16
REDIRECT_CODES = (301, 302)  # the Core codes; 303/307/308 are Extended (accepted too)
EXTENDED_REDIRECT_CODES = (303, 307, 308)
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")

# Condition types and reasons of status.parents[] (apis/v1/shared_types.go).
ACCEPTED = "Accepted"
RESOLVED_REFS = "ResolvedRefs"
REASON_ACCEPTED = "Accepted"
REASON_RESOLVED = "ResolvedRefs"
REASON_NO_MATCHING_PARENT = "NoMatchingParent"
REASON_UNSUPPORTED_VALUE = "UnsupportedValue"
REASON_BACKEND_NOT_FOUND = "BackendNotFound"
REASON_CONFLICTED = "Conflicted"
REASON_INVALID_KIND = "InvalidKind"
REASON_REF_NOT_PERMITTED = "RefNotPermitted"
CONTROLLER_NAME = "xds-server.io/mesh"
