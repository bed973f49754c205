"""Push provenance: each registry or policy change as an event, followed to every ACK.

Sans-IO: the controller and the sessions call it, it never touches a socket or a clock of
its own (both are injected). The journey of an event:

* **seen** (`record`): the controller takes a batch of catalog changes; each source that
  changed something becomes one event (`events_changes.Changes`).
* **applied** (`applied`, just before a group's snapshot is installed): every stream of
  that group becomes *pending* on the event, and the event joins the *chain* of each
  resource type it changed in that group; `finished` once every group is installed.
* **pushed** (`carry`, when a session commits a response): the events on that type's chain
  since the version this stream last got for it ride on the response; the ids go with
  the response in flight. O(events carried), never O(history).
* **ACKed / NACKed** (`answered`): a NACK is final for that stream, with Envoy's error;
  an ACK counts once the stream has nothing in flight and holds the latest snapshot
  (`settle`), so an event that changed clusters and routes waits for both. A stream that
  reaches the latest snapshot without needing a push (its named subscription did not
  change) is no longer pending: the event did not concern it.
* A closed stream is dropped from every event it was pending on (`disconnect`).

Memory stays flat: `history` events at most (the oldest is dropped first, with its chain
entries), convergence samples as a packed array of doubles, NACK details capped.
Streams are counted as proxies (an ADS proxy has one stream).
"""

from __future__ import annotations

import itertools
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from xds_server import metrics
from xds_server.cache import Prepared
from xds_server.events_changes import Changes, policy_changes, service_changes
from xds_server.model import PolicyObject, ServiceEntry, ServiceKey
from xds_server.snapshot import Snapshot, TypeSnapshot

DEFAULT_HISTORY: Final = 1000
NACKS_KEPT: Final = 20  # NACK details kept per event (the count is exact)
GROUPS_KEPT: Final = 20


@dataclass(slots=True)
class _Track:
    """One stream's progress on one event."""

    node: str
    outstanding: int = 0  # responses carrying the event not yet answered
    pushed: bool = False
    last_ack: float | None = None


@dataclass(slots=True)
class Nack:
    node: str
    stream: int
    type_url: str
    error: str
    at: float


@dataclass(slots=True)
class Event:
    id: int
    changes: Changes
    seen_at: float  # clock time (monotonic) the change was first seen
    seen_wall: float
    applied_at: float | None = None
    pushed_at: float | None = None
    last_ack_at: float | None = None
    groups: list[str] = field(default_factory=list)
    tracks: dict[int, _Track] = field(default_factory=dict)  # stream id -> progress
    proxies: int = 0  # streams that needed it (acked + nacked + still tracked)
    acked: int = 0
    nacked: int = 0
    convergence: array[float] = field(default_factory=lambda: array("d"))
    nacks: list[Nack] = field(default_factory=list)


@dataclass(slots=True)
class _Stream:
    node: str
    group: str
    start: int  # the chain mark when it connected: earlier events are not its own
    involved: set[int] = field(default_factory=set)  # events tracking it


@dataclass(frozen=True, slots=True)
class _Link:
    """A chain entry: at `mark`, events `ids` changed this (group, type)."""

    mark: int
    ids: tuple[int, ...]


class EventLog:
    def __init__(
        self,
        history: int = DEFAULT_HISTORY,
        *,
        clock: Callable[[], float],
        wall: Callable[[], float],
    ) -> None:
        if history < 1:
            raise ValueError("events history must be at least 1")
        self.history = history
        self.clock = clock
        self.wall = wall
        self._ids = itertools.count(1)
        self._events: deque[Event] = deque()
        self._by_id: dict[int, Event] = {}
        self._mark = 0
        self._chains: dict[tuple[str, str], deque[_Link]] = {}
        self._latest: dict[str, Mapping[str, TypeSnapshot]] = {}  # group -> its types now
        self._streams: dict[int, _Stream] = {}
        self._members: dict[str, dict[int, str]] = {}  # group -> stream id -> node
        self._policies: dict[str, tuple[PolicyObject, ...]] = {}  # per source, last seen

    # -- the controller's side ------------------------------------------------------

    def record(self, changes: Iterable[Changes], seen_at: float | None) -> tuple[int, ...]:
        """New events, one per source's `Changes`, first seen at `seen_at` (clock time)."""
        now = self.clock()
        seen = now if seen_at is None else seen_at
        wall = self.wall() - (now - seen)
        ids = []
        for c in changes:
            event = Event(next(self._ids), c, seen, wall)
            self._events.append(event)
            self._by_id[event.id] = event
            ids.append(event.id)
            metrics.EVENTS.labels(c.source).inc()
        while len(self._events) > self.history:
            self._evict(self._events.popleft())
        return tuple(ids)

    def _evict(self, event: Event) -> None:
        del self._by_id[event.id]
        for sid in event.tracks:
            stream = self._streams.get(sid)
            if stream is not None:
                stream.involved.discard(event.id)
        event.tracks.clear()

    def observe(
        self,
        before: Mapping[ServiceKey, ServiceEntry],
        after: Mapping[ServiceKey, ServiceEntry],
        dirty: Iterable[ServiceKey],
        policies: Mapping[str, tuple[PolicyObject, ...]] | None,
        seen_at: float | None,
    ) -> tuple[int, ...]:
        """The controller's rebuild: the merged view `before` → `after` (keys `dirty`
        changed) and every policy source's objects if any changed (else None). The new
        events' ids, one per source that changed something."""
        found: dict[str, Changes] = {}
        service_changes(before, after, dirty, found)
        if policies is not None:
            policy_changes(self._policies, policies, found)
            self._policies = dict(policies)
        return self.record([found[s] for s in sorted(found)], seen_at)

    def applied(self, group: str, prepared: Prepared, ids: Sequence[int]) -> None:
        """`group`'s snapshot is about to become `prepared`, carrying events `ids`.
        Called for every install, with or without events, so `settle` and `carry` know
        which snapshot is the latest."""
        types = prepared.types
        before = prepared.base.types if prepared.base is not None else {}
        self._latest[group] = types
        live = [self._by_id[i] for i in ids if i in self._by_id]
        if not live:
            return
        changed = [t for t in types.keys() | before.keys() if types.get(t) is not before.get(t)]
        if not changed:
            return
        self._mark += 1
        link = _Link(self._mark, tuple(e.id for e in live))
        oldest = self._events[0].id if self._events else 0
        for type_url in changed:
            chain = self._chains.setdefault((group, type_url), deque())
            chain.append(link)
            while chain and (chain[0].ids[-1] < oldest or len(chain) > self.history):
                chain.popleft()
        members = self._members.get(group, {})
        for event in live:
            if len(event.groups) < GROUPS_KEPT:
                event.groups.append(group)
            for sid, node in members.items():
                if sid not in event.tracks:
                    event.tracks[sid] = _Track(node)
                    event.proxies += 1
                    self._streams[sid].involved.add(event.id)

    def finished(self, ids: Iterable[int]) -> None:
        """The controller installed every group's snapshot carrying these events."""
        now = self.clock()
        for eid in ids:
            event = self._by_id.get(eid)
            if event is not None and event.applied_at is None:
                event.applied_at = now

    def forget_group(self, group: str) -> None:
        """The controller stopped building `group` (no stream watches it)."""
        self._latest.pop(group, None)
        for key in [k for k in self._chains if k[0] == group]:
            del self._chains[key]

    # -- the sessions' side ---------------------------------------------------------

    def connect(self, stream: int, node: str, group: str) -> None:
        self._streams[stream] = _Stream(node, group, self._mark)
        self._members.setdefault(group, {})[stream] = node

    def disconnect(self, stream: int) -> None:
        """A closed stream is pending on nothing any more."""
        s = self._streams.pop(stream, None)
        if s is None:
            return
        members = self._members.get(s.group)
        if members is not None:
            members.pop(stream, None)
            if not members:
                del self._members[s.group]
        for eid in s.involved:
            event = self._by_id.get(eid)
            if event is not None and event.tracks.pop(stream, None) is not None:
                event.proxies -= 1

    def carry(
        self, stream: int, type_url: str, tsnap: TypeSnapshot | None, mark: int
    ) -> tuple[tuple[int, ...], int]:
        """The events a response of `type_url` built from `tsnap` carries to `stream`,
        given the stream's mark for that type; and its new mark. O(events carried)."""
        s = self._streams.get(stream)
        if s is None:
            return (), mark
        start = max(mark, s.start)
        chain = self._chains.get((s.group, type_url))
        if not chain or chain[-1].mark <= start:
            return (), start
        latest = self._latest.get(s.group)
        if latest is None or latest.get(type_url) is not tsnap:
            # An older snapshot than the last installed: its events ride on the next push.
            return (), mark
        carried: list[int] = []
        now = self.clock()
        for link in reversed(chain):
            if link.mark <= start:
                break
            for eid in link.ids:
                event = self._by_id.get(eid)
                track = event.tracks.get(stream) if event is not None else None
                if event is None or track is None:
                    continue  # evicted, or this stream is done with it
                track.outstanding += 1
                track.pushed = True
                if event.pushed_at is None:
                    event.pushed_at = now
                carried.append(eid)
        return tuple(carried), chain[-1].mark

    def answered(self, stream: int, ids: Sequence[int], type_url: str, error: str | None) -> None:
        """The ACK (error None) or NACK of a response that carried `ids`."""
        now = self.clock()
        for eid in ids:
            event = self._by_id.get(eid)
            track = event.tracks.get(stream) if event is not None else None
            if event is None or track is None:
                continue
            if error is None:
                track.outstanding = max(0, track.outstanding - 1)
                track.last_ack = now
                continue
            del event.tracks[stream]
            self._streams[stream].involved.discard(eid)
            event.nacked += 1
            metrics.EVENT_NACKS.inc()
            if len(event.nacks) < NACKS_KEPT:
                event.nacks.append(Nack(track.node, stream, type_url, error, self.wall()))

    def involved(self, stream: int) -> bool:
        s = self._streams.get(stream)
        return s is not None and bool(s.involved)

    def settle(self, stream: int, snapshot: Snapshot) -> None:
        """`stream` has nothing in flight and holds `snapshot`: if that is its group's
        latest, every event still tracking it is done (ACKed, or not its concern)."""
        s = self._streams.get(stream)
        if s is None or not s.involved:
            return
        latest = self._latest.get(s.group)
        if latest is None or len(latest) != len(snapshot.types):
            return
        for t, tsnap in latest.items():
            if snapshot.types.get(t) is not tsnap:
                return
        kept: set[int] = set()
        for eid in s.involved:
            event = self._by_id.get(eid)
            track = event.tracks.pop(stream, None) if event is not None else None
            if event is None or track is None:
                continue
            if track.outstanding:  # not expected with nothing in flight: keep waiting
                event.tracks[stream] = track
                kept.add(eid)
                continue
            if not track.pushed or track.last_ack is None:
                event.proxies -= 1  # the change did not concern this stream
                continue
            event.acked += 1
            delay = max(0.0, track.last_ack - event.seen_at)
            event.convergence.append(delay)
            metrics.EVENT_CONVERGENCE.observe(delay)
            if event.last_ack_at is None or track.last_ack > event.last_ack_at:
                event.last_ack_at = track.last_ack
        s.involved = kept

    # -- reading ----------------------------------------------------------------------

    def events(self, since: int = 0, limit: int | None = None) -> list[Event]:
        """Events with id > `since`, oldest first (the newest `limit` of them)."""
        out = [e for e in self._events if e.id > since]
        return out[-limit:] if limit else out

    def node_of(self, stream: int) -> str:
        s = self._streams.get(stream)
        return s.node if s is not None else ""

    def __len__(self) -> int:
        return len(self._events)
