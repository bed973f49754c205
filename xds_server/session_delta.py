"""The incremental xDS session (DeltaDiscoveryRequest / DeltaDiscoveryResponse).

What is delta's own: subscription changes apply even with a stale nonce (§4.5), every
name in `resource_names_subscribe` is answered and subscribed names that do not exist
are reported removed (§4.10), and `initial_resource_versions` of a reconnecting client
are honoured so unchanged resources are not sent again.
"""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2

from xds_server import types
from xds_server.response import Response
from xds_server.session import Session
from xds_server.session_state import Plan, TypeState, intern_names
from xds_server.snapshot import Known, Resource, View


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
            table = self._type_snapshot(ts.type_url).resources
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
            ts.names = intern_names((ts.names | set(add)) - set(drop))
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

    def _plan(self, ts: TypeState) -> Plan | None:
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
        removed = list(diff.removed)
        if not forced and not absent:
            if not diff.changed and not removed:
                self._silently_adopt(ts, target)
                return None
            # The content is the diff's: listed, encoded and shared once for the group.
            shared = target.changed_resources(diff)
            return Plan(target, shared, diff.changed, removed, absent, diff)
        # Names of this stream's own (forced, absent): its own response.
        send = sorted(set(diff.changed).union(forced))
        resources = [r for n in send if isinstance(r := table[n], Resource)]
        return Plan(target, resources, diff.changed, removed, absent)
