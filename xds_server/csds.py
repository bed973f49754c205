"""Client Status Discovery Service (CSDS): what each connected proxy was sent, and its
status, as `envoy.service.status.v3` messages, for tools that speak CSDS rather than our
admin API (istioctl proxy-status style).

Sans-IO: pure functions from the per-stream status records (`xds_server.status`, the
same ones /debug/proxies shows) and the views a stream holds to a
`ClientStatusResponse`; the gRPC layer only gathers the streams and writes the answer.

Per resource (`GenericXdsConfig`), the type's state maps to `config_status` as
/debug/proxies says it (SYNCED → SYNCED, STALE → STALE, NACKED → ERROR, NOT_SENT →
NOT_SENT), and `client_status` says where that resource stands: ACKED (the client
acknowledged this content), REQUESTED (sent, not yet acknowledged), NACKED (the last
response of its type was rejected; `error_state` holds Envoy's error) or DOES_NOT_EXIST
(a name the client asked for that the server does not have).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import re2
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.status.v3 import csds_pb2
from envoy.type.matcher.v3 import node_pb2, string_pb2, struct_pb2, value_pb2
from google.protobuf import struct_pb2 as pb_struct
from google.protobuf import timestamp_pb2

from xds_server import types
from xds_server.session import Session
from xds_server.snapshot import EMPTY_VIEW, Resource, Snapshot, Versioned, View
from xds_server.status import ProxyStatus, TypeStatus, target_version

CONFIG_STATUS: Mapping[str, int] = {
    "SYNCED": csds_pb2.SYNCED,
    "STALE": csds_pb2.STALE,
    "NACKED": csds_pb2.ERROR,
    "NOT_SENT": csds_pb2.NOT_SENT,
}


class MatcherError(ValueError):
    """A node matcher this server cannot evaluate (answered with INVALID_ARGUMENT)."""


@dataclass(frozen=True, slots=True)
class Held:
    """One type on one stream: the view the client acknowledged, and the one in flight."""

    acked: View = EMPTY_VIEW
    sent: View | None = None


@dataclass(frozen=True, slots=True)
class StreamState:
    """One open stream as CSDS reads it: the node, its status record and what it holds."""

    node: base_pb2.Node
    status: ProxyStatus
    held: Mapping[str, Held]


def of_session(session: Session) -> StreamState | None:
    """What CSDS reads of a live session (None before its first request named the node).
    The views are immutable and shared, so this copies nothing."""
    if session.node is None:
        return None
    held = {
        type_url: Held(state.known, state.inflight.view if state.inflight is not None else None)
        for type_url, state in session.states.items()
    }
    return StreamState(session.node, session.status, held)


# -- node matchers ---------------------------------------------------------------------

NodePredicate = Callable[[base_pb2.Node], bool]


def _string_predicate(where: str, m: string_pb2.StringMatcher) -> Callable[[str], bool]:
    kind = m.WhichOneof("match_pattern")
    fold = m.ignore_case
    if kind in ("exact", "prefix", "suffix", "contains"):
        want: str = getattr(m, kind)
        if fold:
            want = want.lower()
        tests: dict[str, Callable[[str, str], bool]] = {
            "exact": lambda v, w: v == w,
            "prefix": str.startswith,
            "suffix": str.endswith,
            "contains": lambda v, w: w in v,
        }
        test = tests[kind]
        return lambda value: test(value.lower() if fold else value, want)
    if kind == "safe_regex":
        # RE2, as Envoy: linear time whatever the pattern, so a request cannot stall us.
        try:
            pattern = re2.compile(m.safe_regex.regex)
        except re2.error as exc:
            raise MatcherError(f"{where}.safe_regex: invalid RE2 regex: {exc}") from exc
        return lambda value: pattern.fullmatch(value) is not None
    raise MatcherError(
        f"{where}: {kind or 'no match_pattern'} is not supported "
        "(use exact, prefix, suffix, contains or safe_regex)"
    )


def _lookup(metadata: pb_struct.Struct, keys: Sequence[str]) -> pb_struct.Value | None:
    value: pb_struct.Value | None = None
    struct: pb_struct.Struct | None = metadata
    for key in keys:
        if struct is None or key not in struct.fields:
            return None
        value = struct.fields[key]
        struct = value.struct_value if value.WhichOneof("kind") == "struct_value" else None
    return value


def _value_predicate(
    where: str, m: value_pb2.ValueMatcher
) -> Callable[[pb_struct.Value | None], bool]:
    kind = m.WhichOneof("match_pattern")
    if kind == "string_match":
        match = _string_predicate(f"{where}.string_match", m.string_match)
        return lambda v: (
            v is not None and v.WhichOneof("kind") == "string_value" and match(v.string_value)
        )
    if kind == "bool_match":
        want = m.bool_match
        return lambda v: (
            v is not None and v.WhichOneof("kind") == "bool_value" and v.bool_value == want
        )
    if kind == "present_match":
        present = m.present_match
        return lambda v: (v is not None) == present
    if kind == "null_match":
        return lambda v: v is not None and v.WhichOneof("kind") == "null_value"
    raise MatcherError(
        f"{where}: {kind or 'no match_pattern'} is not supported "
        "(use string_match, bool_match, present_match or null_match)"
    )


def _struct_predicate(where: str, m: struct_pb2.StructMatcher) -> NodePredicate:
    if not m.path:
        raise MatcherError(f"{where}.path: must name at least one key")
    keys = [segment.key for segment in m.path]
    if not m.HasField("value"):
        raise MatcherError(f"{where}.value: required")
    test = _value_predicate(f"{where}.value", m.value)
    return lambda node: test(_lookup(node.metadata, keys))


def node_predicate(index: int, m: node_pb2.NodeMatcher) -> NodePredicate:
    """One `NodeMatcher`: its node id matcher (if set) and every metadata matcher."""
    where = f"node_matchers[{index}]"
    tests: list[NodePredicate] = []
    if m.HasField("node_id"):
        id_test = _string_predicate(f"{where}.node_id", m.node_id)
        tests.append(lambda node: id_test(node.id))
    for i, sm in enumerate(m.node_metadatas):
        tests.append(_struct_predicate(f"{where}.node_metadatas[{i}]", sm))
    return lambda node: all(t(node) for t in tests)


def selector(matchers: Iterable[node_pb2.NodeMatcher]) -> NodePredicate:
    """The nodes a request asks about: any matcher matches (OR); none given means all.
    Raises `MatcherError` for a matcher this server cannot evaluate, before any lookup."""
    predicates = [node_predicate(i, m) for i, m in enumerate(matchers)]
    if not predicates:
        return lambda node: True
    return lambda node: any(p(node) for p in predicates)


# -- per-resource status -------------------------------------------------------------


def _timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def type_configs(
    ts: TypeStatus, held: Held, snap: Snapshot, *, contents: bool = True
) -> list[csds_pb2.ClientConfig.GenericXdsConfig]:
    """One type on one stream, a `GenericXdsConfig` per resource (name order); a type
    with nothing to list still gets one entry without a name, so its state shows."""
    state = ts.state(target_version(snap, ts))
    config_status = CONFIG_STATUS[state]
    tsnap = snap.get(ts.type_url)
    acked, sent = held.acked.resources, held.sent.resources if held.sent is not None else {}
    missing = [n for n in ts.names if n not in tsnap.resources]
    nacked = state == "NACKED"
    # A rejected response is no longer in flight; the snapshot still holds its content
    # while its version is the one rejected.
    rejected: Mapping[str, Versioned] = {}
    if nacked:
        target = tsnap.full if ts.wildcard else tsnap.subset(ts.names)
        if target.version == ts.error_version:
            rejected = target.resources
    names = sorted({*acked, *sent, *rejected, *missing})
    if not names:
        return [
            csds_pb2.ClientConfig.GenericXdsConfig(
                type_url=ts.type_url, config_status=config_status
            )
        ]
    out = []
    for name in names:
        shown = sent.get(name) or acked.get(name) or rejected.get(name)
        cfg = csds_pb2.ClientConfig.GenericXdsConfig(
            type_url=ts.type_url, name=name, config_status=config_status
        )
        if shown is None:
            cfg.client_status = dump_pb2.DOES_NOT_EXIST
            out.append(cfg)
            continue
        cfg.version_info = shown.version
        if contents and isinstance(shown, Resource):
            cfg.xds_config.CopyFrom(shown.to_any())
        mine = acked.get(name)
        if nacked:
            cfg.client_status = dump_pb2.NACKED
            failure = cfg.error_state
            failure.details = ts.last_error or ""
            failure.version_info = ts.error_version or ""
            if (at := _timestamp(ts.error_at)) is not None:
                failure.last_update_attempt.CopyFrom(at)
            bad = rejected.get(name)
            if contents and isinstance(bad, Resource) and bad is not mine:
                failure.failed_configuration.CopyFrom(bad.to_any())
            when = ts.acked_at if mine is not None else ts.error_at
        elif mine is not None and mine.version == shown.version:
            cfg.client_status = dump_pb2.ACKED
            when = ts.acked_at
        else:
            cfg.client_status = dump_pb2.REQUESTED
            when = ts.sent_at
        if (stamp := _timestamp(when)) is not None:
            cfg.last_updated.CopyFrom(stamp)
        out.append(cfg)
    return out


def client_config(
    streams: Sequence[StreamState], snap: Snapshot, *, contents: bool = True
) -> csds_pb2.ClientConfig:
    """One node's config over its streams (an Envoy may use one per type): per type the
    newest stream that carries it; the node as the newest stream sent it."""
    ordered = sorted(streams, key=lambda s: s.status.stream_id)
    newest: dict[str, StreamState] = {}
    for stream in ordered:
        for type_url in stream.status.types:
            newest[type_url] = stream
    config = csds_pb2.ClientConfig(node=ordered[-1].node)
    for type_url in sorted(newest, key=types.push_rank):
        stream = newest[type_url]
        held = stream.held.get(type_url, Held())
        ts = stream.status.types[type_url]
        config.generic_xds_configs.extend(type_configs(ts, held, snap, contents=contents))
    return config


def client_configs(
    request: csds_pb2.ClientStatusRequest,
    streams: Iterable[StreamState],
    snapshot_of: Callable[[str], Snapshot],
) -> Iterator[csds_pb2.ClientConfig]:
    """The answer to one request, a `ClientConfig` per matching node id in id order, one
    at a time (the caller may let pushes run in between: a fleet's answer is large).
    Raises `MatcherError` (INVALID_ARGUMENT) for a matcher it cannot evaluate, before
    the first config."""
    wanted = selector(request.node_matchers)
    by_node: dict[str, list[StreamState]] = {}
    for stream in streams:
        if wanted(stream.node):
            by_node.setdefault(stream.node.id, []).append(stream)
    contents = not request.exclude_resource_contents
    return (
        client_config(by_node[node_id], snapshot_of(_group(by_node[node_id])), contents=contents)
        for node_id in sorted(by_node)
    )


def _group(streams: Sequence[StreamState]) -> str:
    return max(streams, key=lambda s: s.status.stream_id).status.group


def client_status(
    request: csds_pb2.ClientStatusRequest,
    streams: Iterable[StreamState],
    snapshot_of: Callable[[str], Snapshot],
) -> csds_pb2.ClientStatusResponse:
    """`client_configs` in one response."""
    return csds_pb2.ClientStatusResponse(config=client_configs(request, streams, snapshot_of))
