"""What a route does besides choosing its clusters, as Istio renders it: timeout, retry
policy (Istio's default when a rule sets none), consistent-hash keys, fault injection,
CORS and header operations — for Envoy, or within what proxyless gRPC accepts (what it
cannot apply is reported as `NotApplied`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from google.protobuf import wrappers_pb2

from xds_server.model import Cors, Fault, HashOn, HeaderOps, Retry

from .policy_common import (
    Client,
    NotApplied,
    RouteTarget,
    duration,
    fractional_percent,
    not_for_grpc,
    string_matcher,
)
from .resources import pack

# Istio's default retry policy (route/retry/retry.go, with EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY
# on, its default): no retriable status codes of its own.
DEFAULT_RETRY_ON = ("connect-failure", "refused-stream", "unavailable", "cancelled",
                    "retriable-status-codes")  # fmt: skip
DEFAULT_NUM_RETRIES = 2
HOST_SELECTION_RETRY_MAX_ATTEMPTS = 5
# The only retry conditions grpcio honours (gRFC A44); it ignores the others.
GRPC_RETRY_ON = frozenset(
    {"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}
)
GRPC_MAX_RETRIES = 4  # gRPC caps attempts (first try included) at 5
RETRIABLE_STATUS_CODES = "retriable-status-codes"


def set_timeout(action: rc.RouteAction, timeout: float | None, client: Client) -> None:
    """Unset means no timeout (0 disables Envoy's own 15 s default).

    Envoy: without a timeout, a gRPC request's ``grpc-timeout`` header is honoured as
    sent. With one, no max_stream_duration: Envoy ignores the route timeout of a route
    that has one (router.cc finalTimeout, "new timeouts"); Istio sets it only for "no
    timeout" too. gRPC reads only max_stream_duration (gRFC A31).
    """
    action.timeout.CopyFrom(duration(timeout or 0.0))
    if client == "envoy":
        if not timeout:
            action.max_stream_duration.grpc_timeout_header_max.CopyFrom(duration(0.0))
    elif timeout is not None:
        action.max_stream_duration.max_stream_duration.CopyFrom(duration(timeout))


def default_retry_policy() -> rc.RetryPolicy:
    """Istio's default retry policy, as every Envoy virtual host carries it."""
    policy = retry_policy(Retry(DEFAULT_NUM_RETRIES), "envoy", False, "", [])
    assert policy is not None
    return policy


def retry_policy(
    retry: Retry | None,
    client: Client,
    hashing: bool,
    subject: str,
    notes: list[NotApplied],
) -> rc.RetryPolicy | None:
    """Istio's: None → the default policy; 0 attempts → none; otherwise the default with
    the rule's attempts, conditions (status codes add ``retriable-status-codes``) and
    per-try timeout. No ``previous_hosts`` when the destination hashes: a retry must
    stay on the hashed host.

    For Envoy, every virtual host carries the default (`default_retry_policy`), so a
    route that would repeat it carries none (it is half the bytes of a default route),
    and "none" is an explicit empty policy that overrides the virtual host's.
    """
    if client == "envoy" and retry is None and not hashing:
        return None  # the virtual host's default applies
    if retry is not None and retry.attempts <= 0:
        # A route's policy replaces the virtual host's whole: no conditions, no retries.
        if client == "grpc":
            return None
        return rc.RetryPolicy(num_retries=wrappers_pb2.UInt32Value(value=0))
    asked = retry if retry is not None else Retry(DEFAULT_NUM_RETRIES)
    tokens, codes = list(asked.retry_on), asked.status_codes
    if not tokens and not codes:
        tokens = list(DEFAULT_RETRY_ON)
    if codes and RETRIABLE_STATUS_CODES not in tokens:
        tokens.append(RETRIABLE_STATUS_CODES)
    attempts, per_try = asked.attempts, asked.per_try_timeout
    if client == "grpc":
        return grpc_retry_policy(retry, tokens, codes, attempts, per_try, subject, notes)
    policy = rc.RetryPolicy(
        retry_on=",".join(tokens),
        num_retries=wrappers_pb2.UInt32Value(value=attempts),
        host_selection_retry_max_attempts=HOST_SELECTION_RETRY_MAX_ATTEMPTS,
        retriable_status_codes=codes,
    )
    if per_try is not None:
        policy.per_try_timeout.CopyFrom(duration(per_try))
    if not hashing:
        policy.retry_host_predicate.add(
            name="envoy.retry_host_predicates.previous_hosts",
            typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()),
        )
    return policy


def grpc_retry_policy(
    retry: Retry | None,
    tokens: Sequence[str],
    codes: Sequence[int],
    attempts: int,
    per_try: float | None,
    subject: str,
    notes: list[NotApplied],
) -> rc.RetryPolicy | None:
    """gRPC retries only on its five status conditions; what a rule asked beyond them is
    reported (the default policy's HTTP-only conditions are not: nobody wrote them)."""
    kept = [t for t in tokens if t in GRPC_RETRY_ON]
    if retry is not None:
        dropped = [t for t in tokens if t not in GRPC_RETRY_ON and t != RETRIABLE_STATUS_CODES]
        if dropped:
            notes.append(not_for_grpc(subject, f"retry on {','.join(dropped)}"))
        if codes:
            listed = ",".join(map(str, codes))
            notes.append(not_for_grpc(subject, f"retry on HTTP status {listed}"))
        if per_try is not None:
            notes.append(not_for_grpc(subject, "per-try timeout"))
        if attempts > GRPC_MAX_RETRIES:
            notes.append(
                not_for_grpc(
                    subject, f"{attempts} retries", f"gRPC retries at most {GRPC_MAX_RETRIES}"
                )
            )
    if not kept:
        return None  # nothing gRPC would retry on; never num_retries 0 (gRPC NACKs it)
    return rc.RetryPolicy(
        retry_on=",".join(kept),
        num_retries=wrappers_pb2.UInt32Value(value=min(attempts, GRPC_MAX_RETRIES)),
    )


def hash_policies(
    targets: Iterable[RouteTarget], client: Client
) -> list[rc.RouteAction.HashPolicy]:
    """One hash policy per distinct key of the hashing targets. gRPC hashes only on a
    header or on its channel (gRFC A42): source-IP hashing becomes the channel (one client,
    one backend); cookie and query hashing are reported with the destination policy."""
    out: list[rc.RouteAction.HashPolicy] = []
    for target in targets:
        policy = hash_policy(target.hash_on, client) if target.hash_on is not None else None
        if policy is not None and policy not in out:
            out.append(policy)
    return out


def hash_policy(on: HashOn, client: Client) -> rc.RouteAction.HashPolicy | None:
    hp = rc.RouteAction.HashPolicy
    if on.header:
        return hp(header=hp.Header(header_name=on.header))
    if on.source_ip:
        if client == "grpc":
            return hp(filter_state=hp.FilterState(key="io.grpc.channel_id"))
        return hp(connection_properties=hp.ConnectionProperties(source_ip=True))
    if client == "grpc":
        return None
    if on.cookie:
        cookie = hp.Cookie(name=on.cookie, path=on.cookie_path or "")
        if on.cookie_ttl is not None:
            cookie.ttl.CopyFrom(duration(on.cookie_ttl))
        return hp(cookie=cookie)
    if on.query_parameter:
        return hp(query_parameter=hp.QueryParameter(name=on.query_parameter))
    return None


def http_fault(fault: Fault) -> fault_pb2.HTTPFault | None:
    out = fault_pb2.HTTPFault()
    if fault.delay:  # Envoy requires a delay above 0; none is no delay
        out.delay.fixed_delay.CopyFrom(duration(fault.delay))
        out.delay.percentage.CopyFrom(fractional_percent(fault.delay_percent))
    if fault.abort_http is not None or fault.abort_grpc is not None:
        if fault.abort_grpc is not None:
            out.abort.grpc_status = grpc.StatusCode[fault.abort_grpc.upper()].value[0]
        else:
            out.abort.http_status = fault.abort_http
        out.abort.percentage.CopyFrom(fractional_percent(fault.abort_percent))
    return out if out.HasField("delay") or out.HasField("abort") else None


def cors_policy(cors: Cors) -> cors_pb2.CorsPolicy:
    out = cors_pb2.CorsPolicy(
        allow_origin_string_match=[string_matcher(o) for o in cors.allow_origins],
        allow_methods=",".join(cors.allow_methods),
        allow_headers=",".join(cors.allow_headers),
        expose_headers=",".join(cors.expose_headers),
    )
    if cors.max_age is not None:
        out.max_age = str(int(cors.max_age))
    if cors.allow_credentials is not None:
        out.allow_credentials.CopyFrom(wrappers_pb2.BoolValue(value=cors.allow_credentials))
    return out


# ------------------------------------------------------------------------ header ops


def add_header_ops(target: Any, ops: HeaderOps, emit: bool = True) -> str | None:
    """Append `ops` to the header lists of `target`, a Route or a weighted cluster (both
    have the same four lists), unless not `emit`; return the authority a request `set` or
    `add` of ``:authority`` or ``host`` asks for (Envoy refuses to modify those headers:
    they become a host rewrite), `set` winning over `add`."""
    if not ops:
        return None
    authority: str | None = None
    for pairs in (ops.request_add, ops.request_set):
        for name, value in pairs:
            if name.lower() in (":authority", "host"):
                authority = value
    if not emit:
        return authority
    overwrite = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    append = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
    target.request_headers_to_add.extend(_header_values(ops.request_set, overwrite))
    target.request_headers_to_add.extend(_header_values(ops.request_add, append))
    target.request_headers_to_remove.extend(n for n in ops.request_remove if not _internal(n))
    target.response_headers_to_add.extend(_header_values(ops.response_set, overwrite))
    target.response_headers_to_add.extend(_header_values(ops.response_add, append))
    target.response_headers_to_remove.extend(n for n in ops.response_remove if not _internal(n))
    return authority


def _header_values(
    pairs: Iterable[tuple[str, str]], action: int
) -> list[base_pb2.HeaderValueOption]:
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=name, value=value), append_action=action
        )
        for name, value in pairs
        if not _internal(name)
    ]


def _internal(name: str) -> bool:
    """Pseudo-headers and Host: Envoy NACKs routes that add, set or remove them."""
    return name.startswith(":") or name.lower() == "host"
