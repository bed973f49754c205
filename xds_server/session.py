"""Sans-IO xDS session state machines: one per gRPC stream, SotW or delta.

A session turns a request (or a new snapshot) into the responses to send; it never
touches a socket, so every rule of DESIGN §4 is unit-testable. The gRPC layer feeds it
requests and snapshot notifications and writes out `Response.encode()`.

The model, per resource type on a stream:

* the *subscription* (wildcard flag and explicit names);
* `known`, the view the client has acknowledged (or claimed on reconnect);
* at most one response *in flight*; the next one is computed from the latest snapshot
  when the ACK arrives, so a slow client holds one pending update per type (§4.13);
* `last_version`, the last content offered, so a NACKed version is never resent (§4.4).

On ADS streams pushes follow CDS → EDS → LDS → RDS (§4.9): EDS waits until CDS has been
sent, LDS/RDS wait until clusters and endpoints are acknowledged, and clusters the proxy
holds are kept (make-before-break) until listeners and routes are in sync without them.
"""

from __future__ import annotations

import itertools
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import descriptor_pool

from xds_server import metrics, types, wire
from xds_server.cache import SnapshotCache
from xds_server.snapshot import EMPTY_SNAPSHOT, EMPTY_VIEW, Known, Resource, Snapshot, View
from xds_server.status import ProxyRegistry, ProxyStatus, TypeStatus

log = logging.getLogger(__name__)

CONTROL_PLANE_ID = "xds-server"
_CONTROL_PLANE_SOTW = wire.field_bytes(6, wire.field_str(1, CONTROL_PLANE_ID))
_CONTROL_PLANE_DELTA = wire.field_bytes(7, wire.field_str(1, CONTROL_PLANE_ID))


class ProtocolError(Exception):
    """A request the server refuses; the stream ends with this gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class Response:
    """One DiscoveryResponse / DeltaDiscoveryResponse, encoded from shared bytes."""

    type_url: str
    version: str
    nonce: str
    resources: Sequence[Resource]
    removed: Sequence[str]
    delta: bool
    body: bytes  # the resources' pre-encoded fields

    def encode(self) -> bytes:
        if self.delta:
            return b"".join(
                (
                    wire.field_str(1, self.version),
                    self.body,
                    wire.field_str(4, self.type_url),
                    wire.field_str(5, self.nonce),
                    *(wire.field_str(6, n) for n in self.removed),
                    _CONTROL_PLANE_DELTA,
                )
            )
        return b"".join(
            (
                wire.field_str(1, self.version),
                self.body,
                wire.field_str(4, self.type_url),
                wire.field_str(5, self.nonce),
                _CONTROL_PLANE_SOTW,
            )
        )

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.resources]


@dataclass(slots=True)
class _Inflight:
    nonce: str
    view: View
    sent_at: float
    changed_at: float | None  # the registry change this response carries, if an update


@dataclass(slots=True)
class _Plan:
    target: View
    resources: list[Resource]
    changed: Sequence[str]
    removed: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)


@dataclass(slots=True)
class TypeState:
    type_url: str
    status: TypeStatus
    subscribed: bool = False
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    names_ever: bool = False  # SotW legacy wildcard ends once a name has been sent
    known: View = EMPTY_VIEW
    last_version: str | None = None
    inflight: _Inflight | None = None
    nonce: str = ""
    force: set[str] = field(default_factory=set)
    told_absent: set[str] = field(default_factory=set)
    held: tuple[View, View, View] | None = None  # (base, known, merged) memo
    names_key: _NamesKey | None = None  # SotW: the last request's resource_names


# Interning subscription name sets lets thousands of streams with the same
# subscription share one frozenset and one memoised subset view.
_interned: dict[frozenset[str], frozenset[str]] = {}


def _intern(names: Iterable[str]) -> frozenset[str]:
    fs = frozenset(names)
    hit = _interned.get(fs)
    if hit is not None:
        return hit
    if len(_interned) > 4096:
        _interned.clear()
    _interned[fs] = fs
    return fs


_KEY_CLEAR = ("version_info", "node", "type_url", "response_nonce", "error_detail")


class _NamesKey:
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


_NO_NAMES = _NamesKey(b"")
_names_keys: weakref.WeakValueDictionary[bytes, _NamesKey] = weakref.WeakValueDictionary()


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


def _intern_key(data: bytes) -> _NamesKey:
    """The shared holder of `data`: hashing it is paid only when a stream's names
    change, never on a plain ACK (which compares against the held bytes)."""
    if not data:
        return _NO_NAMES
    key = _names_keys.get(data)
    if key is None:
        key = _names_keys[data] = _NamesKey(data)
    return key


def _is_known_type(type_url: str) -> bool:
    if type_url in types.MESSAGE_CLASSES:
        return True
    if not type_url.startswith(types.PREFIX):
        return False
    try:
        descriptor_pool.Default().FindMessageTypeByName(type_url.removeprefix(types.PREFIX))
    except KeyError:
        return False
    return True


class Session:
    """State shared by the SotW and delta state machines."""

    delta = False

    def __init__(
        self,
        cache: SnapshotCache,
        *,
        type_url: str | None = None,
        peer: str = "",
        registry: ProxyRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.cache = cache
        self.fixed_type = type_url
        self.ordered = type_url is None  # ADS: one stream carries every type, in order
        self.registry = registry
        self.clock = clock
        mode = "delta" if self.delta else "sotw"
        kind = f"ads-{mode}" if type_url is None else f"{types.short_name(type_url)}-{mode}"
        self.status = ProxyStatus(kind=kind, peer=peer)
        self.node: base_pb2.Node | None = None
        self.group: str | None = None
        self.snapshot: Snapshot = EMPTY_SNAPSHOT
        self.states: dict[str, TypeState] = {}
        # A reconnecting delta client named clusters/endpoints it holds; its listener and
        # route subscriptions follow on the same stream and may still use them (§4.9).
        self.resuming = False
        self._nonces = itertools.count(1)

    # -- entry points -------------------------------------------------------------

    def on_snapshot(self, snapshot: Snapshot) -> list[Response]:
        self.snapshot = snapshot
        return self._pending()

    def close(self) -> None:
        if self.registry is not None:
            self.registry.remove(self.status)

    # -- shared request handling --------------------------------------------------

    def _start(self, node: base_pb2.Node | None) -> None:
        if node is None:
            raise ProtocolError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first request on a stream must carry the node (xDS: node is sent once)",
            )
        if not node.id:
            raise ProtocolError(grpc.StatusCode.INVALID_ARGUMENT, "node.id must not be empty")
        try:
            group = self.cache.group_of(node)
        except Exception as exc:
            raise ProtocolError(
                grpc.StatusCode.INVALID_ARGUMENT, f"cannot place node {node.id!r}: {exc}"
            ) from exc
        self.node = node
        self.group = group
        self.snapshot = self.cache.get(group)
        st = self.status
        st.node_id, st.cluster, st.group = node.id, node.cluster, group
        version = node.user_agent_version
        if not version and node.HasField("user_agent_build_version"):
            v = node.user_agent_build_version.version
            version = f"{v.major_number}.{v.minor_number}.{v.patch}"
        st.user_agent = f"{node.user_agent_name} {version}".strip()
        if self.registry is not None:
            self.registry.add(st)

    def _resolve_type(self, type_url: str) -> str:
        if self.fixed_type is not None:
            if type_url and type_url != self.fixed_type:
                raise ProtocolError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"this service serves {self.fixed_type}, not {type_url}",
                )
            return self.fixed_type
        if not type_url:
            raise ProtocolError(
                grpc.StatusCode.INVALID_ARGUMENT, "type_url is required on an ADS stream"
            )
        if not _is_known_type(type_url):
            raise ProtocolError(
                grpc.StatusCode.INVALID_ARGUMENT, f"unknown resource type_url {type_url!r}"
            )
        return type_url

    def _state(self, type_url: str) -> TypeState:
        ts = self.states.get(type_url)
        if ts is None:
            ts = self.states[type_url] = TypeState(type_url, self.status.type_status(type_url))
        return ts

    def _ack(self, ts: TypeState, error: str | None) -> None:
        inflight = ts.inflight
        assert inflight is not None
        ts.inflight = None
        # Envoy sends every subscription of a resumed stream before its first ACK.
        self.resuming = False
        now = self.clock()
        short = types.short_name(ts.type_url)
        metrics.ACK_LATENCY.labels(short).observe(max(0.0, now - inflight.sent_at))
        st = ts.status
        if error is None:
            if inflight.changed_at is not None:
                metrics.CONVERGENCE_LATENCY.labels(short).observe(
                    max(0.0, now - inflight.changed_at)
                )
            ts.known = inflight.view
            st.acked_version = inflight.view.version
            st.acked_at = time.time()
            st.last_error = None
            return
        # NACK (§4.4): the client keeps what it had; `last_version` stays on the
        # rejected content so it is not offered again until the content changes.
        st.nacks += 1
        st.last_error = error
        st.error_version = inflight.view.version
        st.error_at = time.time()
        metrics.NACKS.labels(short).inc()
        log.warning(
            "NACK from node %r (%s) for %s version %s: %s",
            self.status.node_id,
            self.status.kind,
            short,
            inflight.view.version,
            error,
        )

    def _forget(self, ts: TypeState, names: Iterable[str]) -> None:
        """The client dropped these names: it no longer holds them."""
        gone = [n for n in names if n in ts.known.resources]
        if gone:
            drop = set(gone)
            ts.known = View({n: r for n, r in ts.known.resources.items() if n not in drop})
            ts.last_version = None  # what the client holds changed: re-evaluate from scratch

    def _adopt_claimed(self, ts: TypeState, claimed: View) -> None:
        """A reconnecting delta client lists what it holds (§4.10); equal content is
        not sent again, and sharing the target view keeps later diffs memoised."""
        target = self._target(ts)
        ts.known = target if claimed.version == target.version else claimed
        ts.status.acked_version = ts.known.version
        if self.ordered and ts.type_url in types.HOLDOVER_TYPES and claimed.resources:
            self.resuming = True

    # -- deciding what to send ----------------------------------------------------

    def _target(self, ts: TypeState) -> View:
        tsnap = self.snapshot.get(ts.type_url)
        base = tsnap.full if ts.wildcard else tsnap.subset(ts.names)
        if (
            self.ordered
            and ts.type_url in types.HOLDOVER_TYPES
            and ts.known.resources
            and not self._consumers_synced()
        ):
            removed = base.diff_from(ts.known).removed
            if removed:
                held = ts.held
                if held is not None and held[0] is base and held[1] is ts.known:
                    return held[2]
                merged = dict(base.resources)
                for n in removed:
                    merged[n] = ts.known.resources[n]
                view = View(dict(sorted(merged.items())))  # name order, as everywhere
                ts.held = (base, ts.known, view)
                return view
        return base

    def _consumers_synced(self) -> bool:
        """Listeners and routes are acknowledged at the current snapshot (make-before-break)."""
        for type_url in types.CONSUMER_TYPES:
            ts = self.states.get(type_url)
            if ts is None or not ts.subscribed:
                if self.resuming:
                    return False  # its listeners/routes are not known yet
                continue
            if ts.inflight is not None or ts.known.version != self._target(ts).version:
                return False
        # A client that subscribes to clusters by name (gRPC) learns new cluster names
        # from routes and keeps using its old routes until every cluster they name has
        # arrived; until then the clusters it is leaving are still in use.
        # It also waits for their endpoints (gRFC A74).
        rds, cds = self.states.get(types.ROUTE), self.states.get(types.CLUSTER)
        if rds is not None and cds is not None and not cds.wildcard:
            present = self.snapshot.get(types.CLUSTER).resources
            endpoints = self.snapshot.get(types.ENDPOINT).resources
            eds = self.states.get(types.ENDPOINT)
            has_eds = eds.known.resources if eds is not None else {}
            held = cds.known.resources
            for route in rds.known.resources.values():
                if not isinstance(route, Resource):
                    continue
                for name in route.cluster_refs:
                    cluster = present.get(name)
                    if cluster is None:
                        continue
                    if name not in held:
                        return False
                    if any(n in endpoints and n not in has_eds for n in cluster.eds_names):
                        return False
        return True

    def on_request(self, req: Any) -> list[Response]:
        raise NotImplementedError

    def _plan(self, ts: TypeState) -> _Plan | None:
        raise NotImplementedError

    def _pending(self) -> list[Response]:
        if self.node is None or self.snapshot is EMPTY_SNAPSHOT:
            # Never answer before the group has a snapshot: an empty answer would make
            # a reconnecting proxy drop its working config.
            return []
        out: list[Response] = []
        if not self.ordered:
            for ts in self.states.values():
                if ts.subscribed and ts.inflight is None:
                    plan = self._plan(ts)
                    if plan is not None:
                        out.append(self._commit(ts, plan))
            return out
        idle: dict[str, bool] = {}
        unsent: dict[str, bool] = {}
        order = types.PUSH_ORDER + tuple(sorted(set(self.states) - set(types.PUSH_ORDER)))
        for type_url in order:
            state = self.states.get(type_url)
            if state is None or not state.subscribed:
                idle[type_url], unsent[type_url] = True, False
                continue
            ts = state
            if ts.inflight is not None:
                idle[type_url], unsent[type_url] = False, False
                continue
            plan = self._plan(ts)
            if plan is None:
                idle[type_url], unsent[type_url] = True, False
                continue
            if self._may_send(type_url, idle, unsent):
                out.append(self._commit(ts, plan))
                idle[type_url], unsent[type_url] = False, False
            else:
                idle[type_url], unsent[type_url] = False, True
        return out

    @staticmethod
    def _may_send(type_url: str, idle: dict[str, bool], unsent: dict[str, bool]) -> bool:
        if type_url == types.ENDPOINT:
            return not unsent[types.CLUSTER]
        if type_url == types.LISTENER:
            return idle[types.CLUSTER] and idle[types.ENDPOINT]
        if type_url == types.ROUTE:
            return idle[types.CLUSTER] and idle[types.ENDPOINT] and not unsent[types.LISTENER]
        return True

    def _commit(self, ts: TypeState, plan: _Plan) -> Response:
        nonce = str(next(self._nonces))
        now = self.clock()
        # Only updates of content this stream already had measure a registry change's
        # journey; a first push to a new proxy is not one.
        changed_at = self.snapshot.changed_at if ts.last_version is not None else None
        # Record before the write is awaited: the ACK can arrive first (§4.3).
        ts.inflight = _Inflight(nonce, plan.target, now, changed_at)
        ts.last_version = plan.target.version
        ts.nonce = nonce
        # Forced names that were not sendable are new to the client when they appear,
        # so the diff sends them then; nothing needs remembering.
        ts.force.clear()
        if plan.absent:
            ts.told_absent.update(plan.absent)
        if ts.told_absent and plan.resources:
            ts.told_absent.difference_update(r.name for r in plan.resources)
        if ts.type_url == types.CLUSTER and plan.changed:
            eds = self.states.get(types.ENDPOINT)
            if eds is not None:
                # §4.9: a changed cluster re-warms and waits for its endpoints, even
                # when they are unchanged, so they are sent again after it.
                table = plan.target.resources
                for name in plan.changed:
                    r = table.get(name)
                    if isinstance(r, Resource):
                        eds.force.update(r.eds_names)
        whole = len(plan.resources) == len(plan.target)
        if self.delta:
            # A whole view (a first push) is encoded once and shared by every stream
            # that receives the same view (DESIGN §5).
            body = (
                plan.target.delta_body if whole else b"".join(r.delta_field for r in plan.resources)
            )
        elif ts.type_url in types.FULL_STATE_TYPES or whole:
            # The whole view (e.g. a first EDS/RDS push): its body is encoded once and
            # shared by every stream that holds the same view (DESIGN §5).
            body = plan.target.sotw_body
        else:
            body = b"".join(r.sotw_field for r in plan.resources)
        resp = Response(
            ts.type_url,
            plan.target.version,
            nonce,
            plan.resources,
            plan.removed + plan.absent,
            self.delta,
            body,
        )
        st = ts.status
        st.sent_version, st.sent_nonce, st.sent_at = plan.target.version, nonce, time.time()
        short = types.short_name(ts.type_url)
        metrics.PUSHES.labels(short).inc()
        metrics.PUSH_BYTES.labels(short).inc(len(body))
        if changed_at is not None:
            metrics.PUSH_LATENCY.labels(short).observe(max(0.0, now - changed_at))
        return resp

    def _silently_adopt(self, ts: TypeState, target: View) -> None:
        """Nothing the client must hear (e.g. a pure unsubscribe): just move on."""
        ts.known = target
        ts.last_version = target.version
        ts.force.clear()
        ts.status.acked_version = target.version
        ts.status.sent_version = target.version


class SotwSession(Session):
    """State-of-the-world xDS (DiscoveryRequest / DiscoveryResponse)."""

    delta = False

    def on_request(self, req: discovery_pb2.DiscoveryRequest) -> list[Response]:
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
        key = _names_key(req)
        if first or ts.names_key is None or key != ts.names_key.data:
            # A SotW ACK repeats the whole subscription (thousands of EDS names for an
            # Envoy); compare it as bytes rather than rebuild a set per ACK (DESIGN §5).
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
        new = _intern(names)
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

    def _plan(self, ts: TypeState) -> _Plan | None:
        target = self._target(ts)
        forced = [n for n in ts.force if n in target.resources] if ts.force else []
        if ts.last_version == target.version and not forced:
            return None
        diff = target.diff_from(ts.known)
        if ts.type_url in types.FULL_STATE_TYPES:
            # §4.8: LDS/CDS carry the full subscribed state; absence means deletion.
            resources = [r for r in target.resources.values() if isinstance(r, Resource)]
            return _Plan(target, resources, diff.changed)
        send = set(diff.changed).union(forced)
        if not send:
            self._silently_adopt(ts, target)
            return None
        table = target.resources
        resources = [r for n in sorted(send) if isinstance(r := table[n], Resource)]
        return _Plan(target, resources, diff.changed)


class DeltaSession(Session):
    """Incremental xDS (DeltaDiscoveryRequest / DeltaDiscoveryResponse)."""

    delta = True

    def on_request(self, req: discovery_pb2.DeltaDiscoveryRequest) -> list[Response]:
        if self.node is None:
            self._start(req.node if req.HasField("node") else None)
        ts = self._state(self._resolve_type(req.type_url))
        nonce = req.response_nonce
        if nonce and ts.inflight is not None and ts.inflight.nonce == nonce:
            self._ack(ts, req.error_detail.message if req.HasField("error_detail") else None)
        # §4.5: subscription changes apply even when the nonce is stale.
        first = not ts.subscribed
        self._subscribe(ts, req, first)
        if first and req.initial_resource_versions:
            table = self.snapshot.get(ts.type_url).resources
            claimed: dict[str, Resource | Known] = {}
            for name, version in sorted(req.initial_resource_versions.items()):
                r = table.get(name)
                claimed[name] = (
                    r if r is not None and r.version == version else Known(name, version)
                )
            self._adopt_claimed(ts, View(claimed))
        return self._pending()

    def _subscribe(
        self, ts: TypeState, req: discovery_pb2.DeltaDiscoveryRequest, first: bool
    ) -> None:
        sub = list(req.resource_names_subscribe)
        unsub = list(req.resource_names_unsubscribe)
        ts.subscribed = True
        if first and not sub and ts.type_url in types.LEGACY_WILDCARD_TYPES:
            ts.wildcard = True
        if types.WILDCARD in sub:
            ts.wildcard = True
        if types.WILDCARD in unsub and ts.wildcard:
            ts.wildcard = False
            # Leaving the wildcard drops interest in everything not named explicitly;
            # the client forgets those itself, so no removal is owed (§4.10).
            keep = ts.names.union(n for n in sub if n != types.WILDCARD)
            self._forget(ts, [n for n in ts.known.resources if n not in keep])
        add = [n for n in sub if n != types.WILDCARD]
        drop = [n for n in unsub if n != types.WILDCARD]
        if add or drop:
            ts.names = _intern((ts.names | set(add)) - set(drop))
        if drop:
            # The client dropped them. If a wildcard still covers one, it is owed the
            # resource again (or its removal): forgetting it makes the diff send it.
            self._forget(ts, drop)
            ts.told_absent.difference_update(drop)
        if add and not first:
            # §4.10: every name in resource_names_subscribe is answered.
            ts.force.update(add)
            ts.told_absent.difference_update(add)
        st = ts.status
        st.wildcard, st.subscribed, st.names = ts.wildcard, len(ts.names), ts.names

    def _plan(self, ts: TypeState) -> _Plan | None:
        target = self._target(ts)
        table = target.resources
        forced = [n for n in ts.force if n in table] if ts.force else []
        absent: list[str] = []
        if ts.names:
            missing = target.missing(ts.names)
            if missing:
                # §4.10: subscribed names that do not exist are reported removed, once,
                # even if they were never sent.
                absent = sorted(missing.difference(ts.told_absent, ts.known.resources))
        if ts.last_version == target.version and not forced and not absent:
            return None
        diff = target.diff_from(ts.known)
        send = set(diff.changed).union(forced)
        removed = list(diff.removed)
        if not send and not removed and not absent:
            self._silently_adopt(ts, target)
            return None
        resources = [r for n in sorted(send) if isinstance(r := table[n], Resource)]
        return _Plan(target, resources, diff.changed, removed, absent)
