"""Per-proxy status records: what each connected proxy was sent, acked and rejected.

Sessions update these as plain attribute writes; the admin API and `xdsctl` read them.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xds_server import metrics, types

if TYPE_CHECKING:
    from xds_server.snapshot import Snapshot


@dataclass
class TypeStatus:
    type_url: str
    wildcard: bool = False
    subscribed: int = 0
    names: frozenset[str] = frozenset()  # the named subscription (shared, interned)
    sent_version: str = ""
    sent_nonce: str = ""
    sent_at: float | None = None
    acked_version: str = ""
    acked_at: float | None = None
    nacks: int = 0
    last_error: str | None = None
    error_version: str | None = None
    error_at: float | None = None

    def state(self, target_version: str | None = None) -> str:
        """SYNCED / STALE / NACKED / NOT_SENT, the operator's one-word summary."""
        if not self.sent_version and not self.acked_version:
            return "NOT_SENT"
        if self.last_error is not None and self.error_version == self.sent_version:
            return "NACKED"
        if self.acked_version != self.sent_version:
            return "STALE"
        if target_version is not None and target_version != self.acked_version:
            return "STALE"
        return "SYNCED"

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": types.short_name(self.type_url),
            "type_url": self.type_url,
            "wildcard": self.wildcard,
            "subscribed": self.subscribed,
            "sent_version": self.sent_version,
            "sent_nonce": self.sent_nonce,
            "sent_at": self.sent_at,
            "acked_version": self.acked_version,
            "acked_at": self.acked_at,
            "nacks": self.nacks,
            "last_error": self.last_error,
            "error_version": self.error_version,
            "error_at": self.error_at,
            "state": self.state(),
        }


_stream_ids = itertools.count(1)


@dataclass
class ProxyStatus:
    kind: str
    peer: str = ""
    stream_id: int = field(default_factory=lambda: next(_stream_ids))
    node_id: str = ""
    cluster: str = ""
    group: str = ""
    user_agent: str = ""
    connected_since: float = field(default_factory=time.time)
    types: dict[str, TypeStatus] = field(default_factory=dict)

    def type_status(self, type_url: str) -> TypeStatus:
        ts = self.types.get(type_url)
        if ts is None:
            ts = self.types[type_url] = TypeStatus(type_url)
        return ts

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "kind": self.kind,
            "peer": self.peer,
            "node_id": self.node_id,
            "cluster": self.cluster,
            "group": self.group,
            "user_agent": self.user_agent,
            "connected_since": self.connected_since,
            "types": {types.short_name(t): s.as_dict() for t, s in sorted(self.types.items())},
        }


class ProxyRegistry:
    """Every open stream's status, keyed by stream id."""

    def __init__(self) -> None:
        self._proxies: dict[int, ProxyStatus] = {}

    def add(self, status: ProxyStatus) -> None:
        self._proxies[status.stream_id] = status
        metrics.CONNECTED.labels(status.kind).inc()

    def remove(self, status: ProxyStatus) -> None:
        if self._proxies.pop(status.stream_id, None) is not None:
            metrics.CONNECTED.labels(status.kind).dec()

    def all(self) -> list[ProxyStatus]:
        return list(self._proxies.values())

    def by_node(self, node_id: str) -> list[ProxyStatus]:
        return [p for p in self._proxies.values() if p.node_id == node_id]

    def __len__(self) -> int:
        return len(self._proxies)


def target_version(snap: Snapshot, ts: TypeStatus) -> str:
    """The version the server would send this subscriber now (`TypeStatus.state`'s target).

    A wildcard subscriber gets the group's whole set, a named subscription its subset
    (the status records the names). Shared by /debug/proxies and CSDS so both say the
    same about a proxy.
    """
    if ts.type_url == types.SECRET:
        # Per identity, not in the group's snapshot (xds_server.secrets); a stream is
        # woken and sent its identity's new secrets at once, so what it was sent last
        # is what it would get now.
        return ts.sent_version
    tsnap = snap.get(ts.type_url)
    if ts.wildcard:
        return tsnap.version
    return tsnap.subset(ts.names).version
