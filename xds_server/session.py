"""Sans-IO xDS session state shared by SotW and delta: one session per gRPC stream.

A session turns a request (or a new snapshot) into the responses to send; it never
touches a socket, so every rule of DESIGN §4 is unit-testable. The gRPC layer feeds it
requests and snapshot notifications and writes out `Response.encode()`. The two
protocols' request handling lives in `session_sotw` and `session_delta`.

The model, per resource type on a stream:

* the *subscription* (wildcard flag and explicit names);
* `known`, the view the client has acknowledged (or claimed on reconnect);
* at most one response *in flight*; the next one is computed from the latest snapshot
  when the ACK arrives, so a slow client holds one pending update per type (§4.13);
* `last_version`, the last content offered, so a NACKed version is never resent (§4.4).

On ADS streams pushes follow CDS → EDS → LDS → RDS (§4.9): EDS waits until CDS has been
sent, LDS/RDS wait until clusters and endpoints are acknowledged, and clusters the proxy
holds are kept (make-before-break) until listeners and routes are in sync without them.

Responses are encoded once per transition and shared by the streams that make it
(`xds_server.response`); a plan says what its content depends on so it can be shared.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from google.protobuf import descriptor_pool

from xds_server import response, types
from xds_server.cache import SnapshotCache
from xds_server.response import Response
from xds_server.session_state import Inflight, Plan, TypeState, metrics_of
from xds_server.snapshot import (
    EMPTY_SNAPSHOT,
    Diff,
    Encoded,
    Resource,
    Snapshot,
    TypeSnapshot,
    View,
)
from xds_server.status import ProxyRegistry, ProxyStatus

__all__ = ["ProtocolError", "Response", "Session"]

log = logging.getLogger(__name__)


class ProtocolError(Exception):
    """A request the server refuses; the stream ends with this gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


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
        # Set by the transport: wakes this stream when its identity's secrets change
        # (a renewal or a CA rotation; xds_server.secrets).
        self.wake: Callable[[], None] | None = None

    # -- entry points -------------------------------------------------------------

    def on_snapshot(self, snapshot: Snapshot) -> list[Response]:
        self.snapshot = snapshot
        return self._pending()

    def close(self) -> None:
        if self.registry is not None:
            self.registry.remove(self.status)
        if self.cache.events is not None:
            self.cache.events.disconnect(self.status.stream_id)
        if self.cache.secrets is not None:
            self.cache.secrets.detach(self)

    def _type_snapshot(self, type_url: str) -> TypeSnapshot:
        """Where a type's resources come from: the group's shared snapshot, except
        secrets, which are this stream's identity's own (xds_server.secrets)."""
        if type_url == types.SECRET:
            store = self.cache.secrets
            return store.secrets_for(self) if store is not None else EMPTY_SNAPSHOT.get(type_url)
        return self.snapshot.get(type_url)

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
        if self.cache.events is not None:
            self.cache.events.connect(st.stream_id, node.id, group)

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
            ts = self.states[type_url] = TypeState(
                type_url, self.status.type_status(type_url), metrics_of(type_url)
            )
        return ts

    def _ack(self, ts: TypeState, error: str | None) -> None:
        inflight = ts.inflight
        assert inflight is not None
        ts.inflight = None
        if inflight.events and self.cache.events is not None:
            self.cache.events.answered(self.status.stream_id, inflight.events, ts.type_url, error)
        # Envoy sends every subscription of a resumed stream before its first ACK.
        self.resuming = False
        now = self.clock()
        m = ts.metrics
        m.ack_latency.observe(max(0.0, now - inflight.sent_at))
        st = ts.status
        if error is None:
            if inflight.changed_at is not None:
                m.convergence.observe(max(0.0, now - inflight.changed_at))
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
        m.nacks.inc()
        log.warning(
            "NACK from node %r (%s) for %s version %s: %s",
            self.status.node_id,
            self.status.kind,
            types.short_name(ts.type_url),
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
        tsnap = self._type_snapshot(ts.type_url)
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

    def _plan(self, ts: TypeState) -> Plan | None:
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
            self._settle_events()
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
        self._settle_events()
        return out

    def _settle_events(self) -> None:
        """Push provenance: with nothing in flight, the stream holds all it needs of the
        events it was following (xds_server.events.EventLog.settle)."""
        events = self.cache.events
        if events is None or not events.involved(self.status.stream_id):
            return
        if all(ts.inflight is None for ts in self.states.values()):
            events.settle(self.status.stream_id, self.snapshot)

    @staticmethod
    def _may_send(type_url: str, idle: dict[str, bool], unsent: dict[str, bool]) -> bool:
        if type_url == types.ENDPOINT:
            return not unsent[types.CLUSTER]
        if type_url == types.LISTENER:
            return idle[types.CLUSTER] and idle[types.ENDPOINT]
        if type_url == types.ROUTE:
            return idle[types.CLUSTER] and idle[types.ENDPOINT] and not unsent[types.LISTENER]
        return True

    def _commit(self, ts: TypeState, plan: Plan) -> Response:
        now = self.clock()
        # Only updates of content this stream already had measure a registry change's
        # journey; a first push to a new proxy is not one.
        changed_at = self.snapshot.changed_at if ts.last_version is not None else None
        # Recorded before the write is awaited (the caller writes after this returns):
        # the ACK can arrive first (§4.3).
        ts.last_version = plan.target.version
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
        enc = self._encoded(ts, plan)
        ts.nonce = enc.nonce
        carried: tuple[int, ...] = ()
        if self.cache.events is not None:  # push provenance: the events this response carries
            tsnap = self.snapshot.types.get(ts.type_url)
            carried, ts.event_mark = self.cache.events.carry(
                self.status.stream_id, ts.type_url, tsnap, ts.event_mark
            )
        ts.inflight = Inflight(enc.nonce, plan.target, now, changed_at, carried)
        resp = Response(
            ts.type_url,
            plan.target.version,
            enc.nonce,
            plan.resources,
            plan.removed + plan.absent,
            self.delta,
            enc.data,
        )
        st = ts.status
        st.sent_version, st.sent_nonce, st.sent_at = plan.target.version, enc.nonce, time.time()
        m = ts.metrics
        m.pushes.inc()
        m.push_bytes.inc(len(enc.data))
        if changed_at is not None:
            m.push_latency.observe(max(0.0, now - changed_at))
        return resp

    def _encoded(self, ts: TypeState, plan: Plan) -> Encoded:
        """The response for `plan`: the one already encoded for its view or diff if
        another stream (or this one before) needed it, else a new one, memoised there.

        A stream never sends one encoding twice in a row: after a NACK the same
        transition can come up again, and its old nonce would make a request the client
        sent before receiving the resend look like that resend's ACK (§4.3, §4.5)."""
        holder = plan.share
        if holder is not None:
            # Delta plans share diffs only (their removals depend on what was held).
            enc = holder.delta_msg if isinstance(holder, Diff) and self.delta else holder.sotw_msg
            if enc is not None and enc.nonce != ts.nonce:
                return enc
        enc = response.encode(
            self.delta,
            ts.type_url,
            plan.target.version,
            plan.resources,
            plan.removed + plan.absent,
        )
        if isinstance(holder, Diff) and self.delta:
            holder.delta_msg = enc
        elif holder is not None:
            holder.sotw_msg = enc
        return enc

    def _silently_adopt(self, ts: TypeState, target: View) -> None:
        """Nothing the client must hear (e.g. a pure unsubscribe): just move on."""
        ts.known = target
        ts.last_version = target.version
        ts.force.clear()
        ts.status.acked_version = target.version
        ts.status.sent_version = target.version
