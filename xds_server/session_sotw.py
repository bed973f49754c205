"""The state-of-the-world xDS session (DiscoveryRequest / DiscoveryResponse).

What is SotW's own: a request's nonce must be the last one sent or it is ignored
(§4.5), the legacy wildcard (§4.6), full-state LDS/CDS responses (§4.8), and a client
that repeats its whole subscription on every ACK (compared as bytes, see `NamesKey`).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError

from xds_server import types, wire
from xds_server.response import Response
from xds_server.session import ProtocolError, Session
from xds_server.session_state import Plan, TypeState, intern_names
from xds_server.snapshot import Resource

_KEY_CLEAR = ("version_info", "node", "type_url", "response_nonce", "error_detail")


class NamesKey:
    """A SotW subscription's `resource_names`, serialised, shared by every stream that
    sent the same names.

    Every stream keeps the key of its last request to tell, per ACK, whether the
    subscription changed. An Envoy's EDS key names every cluster (~130 KB for 5,000),
    so one copy per stream was the bulk of SotW's per-stream memory; the streams of a
    group send equal names, and interning makes them hold one object. The table is
    weak-valued, so a key lives only while some stream uses it (bytes cannot be weakly
    referenced, hence this holder).
    """

    __slots__ = ("__weakref__", "data")

    def __init__(self, data: bytes):
        self.data = data


_NO_NAMES = NamesKey(b"")
_names_keys: weakref.WeakValueDictionary[bytes, NamesKey] = weakref.WeakValueDictionary()


def _names_key(req: discovery_pb2.DiscoveryRequest) -> bytes:
    """`resource_names` serialised (a C-level copy, ~15 µs for 1,000 names, against
    ~140 µs to build and intern a frozenset of them)."""
    if not req.resource_names:
        return b""
    probe = discovery_pb2.DiscoveryRequest()
    probe.CopyFrom(req)
    for name in _KEY_CLEAR:
        probe.ClearField(name)
    key: bytes = probe.SerializeToString()
    return key


def _raw_names(raw: bytes, req: discovery_pb2.DiscoveryRequest) -> bytes | None:
    """The bytes of `raw` between its version and its type_url and nonce, if it is laid
    out as protobuf encoders lay out a DiscoveryRequest without node or error (fields in
    number order): then they are its `resource_names`. None otherwise.

    A slice and two comparisons instead of `_names_key`'s copy and re-serialisation.
    When these bytes equal a stream's held key (a canonical, self-delimiting run of
    field-3 entries) the request's names are exactly the held ones: the bytes before are
    one whole version field and those after one type_url and one nonce field."""
    if req.HasField("node") or req.HasField("error_detail"):
        return None
    head = wire.field_str(1, req.version_info)
    tail = wire.field_str(4, req.type_url) + wire.field_str(5, req.response_nonce)
    if len(raw) < len(head) + len(tail) or not raw.startswith(head) or not raw.endswith(tail):
        return None
    return raw[len(head) : len(raw) - len(tail)]


def _intern_key(data: bytes) -> NamesKey:
    """The shared holder of `data`: hashing it is paid only when a stream's names
    change, never on a plain ACK (which compares against the held bytes)."""
    if not data:
        return _NO_NAMES
    key = _names_keys.get(data)
    if key is None:
        key = _names_keys[data] = NamesKey(data)
    return key


class SotwSession(Session):
    """State-of-the-world xDS (DiscoveryRequest / DiscoveryResponse)."""

    delta = False

    def on_request(self, req: discovery_pb2.DiscoveryRequest | bytes) -> list[Response]:
        """A request, parsed or as received (the gRPC layer passes the bytes, so an
        unchanged subscription is recognised without re-serialising it)."""
        raw = None
        if isinstance(req, bytes):
            raw = req
            try:
                req = discovery_pb2.DiscoveryRequest.FromString(raw)
            except DecodeError as exc:
                raise ProtocolError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"cannot parse DiscoveryRequest: {exc}"
                ) from exc
        if self.node is None:
            self._start(req.node if req.HasField("node") else None)
        ts = self._state(self._resolve_type(req.type_url))
        nonce = req.response_nonce
        if nonce and ts.nonce:
            if nonce != ts.nonce:
                return []  # §4.5: a stale nonce is ignored in SotW
            if ts.inflight is not None and ts.inflight.nonce == nonce:
                self._ack(ts, req.error_detail.message if req.HasField("error_detail") else None)
        first = not ts.subscribed
        held = ts.names_key
        # A SotW ACK repeats the whole subscription (thousands of EDS names for an
        # Envoy); compare it as bytes rather than rebuild a set per ACK (DESIGN §5).
        if first or held is None or raw is None or _raw_names(raw, req) != held.data:
            key = _names_key(req)
            if first or held is None or key != held.data:
                ts.names_key = _intern_key(key)
                self._subscribe(ts, req.resource_names, first)
        if first and req.version_info:
            # A reconnecting proxy names the version it holds (§4.11): equal content
            # is not sent again.
            target = self._target(ts)
            if target.version == req.version_info:
                self._silently_adopt(ts, target)
        return self._pending()

    def _subscribe(self, ts: TypeState, requested: Sequence[str], first: bool) -> None:
        ts.subscribed = True
        if requested:
            ts.names_ever = True
        names = [n for n in requested if n != types.WILDCARD]
        # §4.6: explicit "*", or legacy empty names until a name has been sent.
        ts.wildcard = types.WILDCARD in requested or (
            not ts.names_ever and ts.type_url in types.LEGACY_WILDCARD_TYPES
        )
        new = intern_names(names)
        ts.status.wildcard, ts.status.subscribed, ts.status.names = ts.wildcard, len(new), new
        if new is ts.names:
            return
        added = new - ts.names
        dropped = ts.names - new
        ts.names = new
        if dropped and not ts.wildcard:
            self._forget(ts, dropped)
        if added and not first:
            # §4.7: a newly named resource is sent again even if it was sent before.
            ts.force.update(added)

    def _plan(self, ts: TypeState) -> Plan | None:
        target = self._target(ts)
        forced = [n for n in ts.force if n in target.resources] if ts.force else []
        if ts.last_version == target.version and not forced:
            return None
        diff = target.diff_from(ts.known)
        if ts.type_url in types.FULL_STATE_TYPES or (
            ts.type_url == types.SECRET and target.resources
        ):
            # §4.8: LDS/CDS carry the full subscribed state; absence means deletion.
            # So do secrets (two per identity) once there are any: the digest's §3.
            # The same for every stream at this target, whatever it held before.
            return Plan(target, target.listed, diff.changed, share=target)
        if not forced:
            if not diff.changed:
                self._silently_adopt(ts, target)
                return None
            # The content is the diff's: listed, encoded and shared once for the group.
            return Plan(target, target.changed_resources(diff), diff.changed, share=diff)
        table = target.resources
        send = sorted(set(diff.changed).union(forced))
        resources = [r for n in send if isinstance(r := table[n], Resource)]
        return Plan(target, resources, diff.changed)
