"""The push-provenance event log, sans-IO: bounds, attribution, pending, percentiles.

Driven directly, with a fake clock: what the controller (`record`, `applied`) and the
sessions (`connect`, `carry`, `answered`, `settle`, `disconnect`) would call.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.xds_util import CDS, EDS
from xds_server import events_report
from xds_server.cache import Prepared
from xds_server.events import EventLog
from xds_server.events_changes import NAMES_KEPT, Changes
from xds_server.snapshot import Snapshot, TypeSnapshot

G = "envoy"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def changes(source: str = "registry.yaml", *added: str) -> Changes:
    c = Changes(source)
    for name in added or ("web.default",):
        c.add("services_added", name)
    return c


class World:
    """One group's snapshots as the controller would install them, and the log."""

    def __init__(self, history: int = 10) -> None:
        self.clock = Clock()
        self.log = EventLog(history, clock=self.clock, wall=lambda: 1_000_000.0)
        self.types: dict[str, TypeSnapshot] = {}
        self.snapshot = Snapshot()

    def change(self, *type_urls: str, source: str = "registry.yaml") -> int:
        """One event, applied to the group, changing these types; its id."""
        (eid,) = self.log.record([changes(source)], self.clock.now)
        self.install(type_urls, (eid,))
        return eid

    def install(self, type_urls: tuple[str, ...], ids: tuple[int, ...]) -> None:
        new = dict(self.types)
        for t in type_urls:
            new[t] = TypeSnapshot(t, ())
        base = Snapshot(self.types) if self.types else None
        self.log.applied(G, Prepared(base, new), ids)
        self.log.finished(ids)
        self.types = new
        self.snapshot = Snapshot(new)

    def push(self, stream: int, type_url: str, mark: int = 0) -> tuple[tuple[int, ...], int]:
        return self.log.carry(stream, type_url, self.snapshot.types.get(type_url), mark)

    def doc(self, eid: int) -> dict[str, Any]:
        (event,) = [e for e in self.log.events() if e.id == eid]
        return events_report.event_doc(event)


def test_history_is_bounded_and_the_oldest_goes_first() -> None:
    w = World(history=3)
    w.log.connect(1, "envoy-1", G)
    ids = [w.change(CDS) for _ in range(5)]
    assert [e.id for e in w.log.events()] == ids[-3:]
    assert len(w.log) == 3
    # The evicted events are no longer followed for the stream, nor kept on the chain.
    assert w.log._streams[1].involved == set(ids[-3:])
    assert all(link.ids[-1] >= ids[-3] for link in w.log._chains[(G, CDS)])
    # Carried now: only the events still in the history.
    carried, _mark = w.push(1, CDS)
    assert carried == tuple(reversed(ids[-3:]))


def test_events_list_since_and_limit() -> None:
    w = World()
    ids = [w.change(CDS) for _ in range(4)]
    assert [e.id for e in w.log.events(since=ids[1])] == ids[2:]
    assert [e.id for e in w.log.events(limit=1)] == ids[-1:]
    with pytest.raises(ValueError, match="at least 1"):
        EventLog(0, clock=Clock(), wall=Clock())


def test_a_push_carries_the_events_since_the_streams_last_version_of_that_type() -> None:
    w = World()
    w.log.connect(1, "envoy-1", G)
    e1 = w.change(CDS)
    e2 = w.change(EDS)
    carried, mark = w.push(1, CDS)
    assert carried == (e1,)
    assert w.push(1, CDS, mark) == ((), mark)  # nothing new for clusters
    eds, eds_mark = w.push(1, EDS)
    assert eds == (e2,)
    e3 = w.change(CDS, EDS)
    assert w.push(1, CDS, mark)[0] == (e3,)
    assert w.push(1, EDS, eds_mark)[0] == (e3,)


def test_a_push_of_an_older_snapshot_carries_nothing_yet() -> None:
    """Between an install and the stream's wake-up its session still holds the previous
    snapshot: what it sends then does not carry the new event; the next push does."""
    w = World()
    w.log.connect(1, "envoy-1", G)
    w.change(CDS)
    old = w.snapshot
    e2 = w.change(CDS)
    carried, mark = w.log.carry(1, CDS, old.types[CDS], 0)
    assert carried == () and mark == 0
    assert w.push(1, CDS, mark)[0] == (e2, e2 - 1)


def test_a_stream_that_connects_later_is_not_counted_for_earlier_events() -> None:
    w = World()
    w.log.connect(1, "envoy-1", G)
    e1 = w.change(CDS)
    w.log.connect(2, "envoy-2", G)
    assert w.push(2, CDS) == ((), w.log._streams[2].start)
    assert w.doc(e1)["proxies"]["total"] == 1
    e2 = w.change(CDS)
    assert w.push(2, CDS)[0] == (e2,)


def test_ack_then_settle_converges_with_the_time_seen_to_ack() -> None:
    w = World()
    w.log.connect(1, "envoy-1", G)
    e = w.change(CDS, EDS)
    w.clock.now += 0.25
    cds, _ = w.push(1, CDS)
    eds, _ = w.push(1, EDS)
    assert w.doc(e)["pushed_after"] == 0.25
    w.clock.now += 0.5
    w.log.answered(1, cds, CDS, None)
    w.log.settle(1, w.snapshot)  # EDS still in flight: the session would not call this
    w.clock.now += 0.25
    w.log.answered(1, eds, EDS, None)
    assert w.doc(e)["state"] == "PENDING"  # answered, not settled yet
    w.log.settle(1, w.snapshot)
    found = w.doc(e)
    assert found["state"] == "CONVERGED"
    assert found["convergence"] == {"p50": 1.0, "p99": 1.0, "max": 1.0}  # the last ACK
    assert found["seen_at"] == 1_000_000.0


def test_settle_on_an_older_snapshot_changes_nothing() -> None:
    w = World()
    w.log.connect(1, "envoy-1", G)
    w.change(CDS)
    old = w.snapshot
    e2 = w.change(CDS)
    w.log.settle(1, old)
    assert w.doc(e2)["pending"] == ["envoy-1"]
    w.log.settle(1, w.snapshot)  # never pushed: the change was not its concern
    assert w.doc(e2)["proxies"]["total"] == 0 and w.doc(e2)["state"] == "NO_PROXY"


def test_nack_is_final_for_that_stream_with_its_error() -> None:
    w = World()
    w.log.connect(1, "envoy-1", G)
    w.log.connect(2, "envoy-2", G)
    e = w.change(CDS)
    ok, _ = w.push(1, CDS)
    bad, _ = w.push(2, CDS)
    w.log.answered(2, bad, CDS, "malformed IP address: not-an-ip")
    w.log.answered(1, ok, CDS, None)
    w.log.settle(1, w.snapshot)
    w.log.settle(2, w.snapshot)
    found = w.doc(e)
    assert found["state"] == "NACKED"
    assert found["proxies"] == {
        "total": 2, "acked": 1, "nacked": 1, "pending": 0, "pushed_pending": 0
    }  # fmt: skip
    assert [(n["node"], n["stream_id"], n["error"]) for n in found["nacks"]] == [
        ("envoy-2", 2, "malformed IP address: not-an-ip")
    ]


def test_disconnect_removes_the_stream_from_pending() -> None:
    w = World()
    w.log.connect(1, "envoy-1", G)
    w.log.connect(2, "envoy-2", G)
    e = w.change(CDS)
    w.push(2, CDS)
    assert w.doc(e)["pending"] == ["envoy-1", "envoy-2"]
    w.log.disconnect(2)
    w.log.disconnect(2)  # twice, or never connected: nothing happens
    w.log.disconnect(99)
    found = w.doc(e)
    assert found["pending"] == ["envoy-1"] and found["proxies"]["total"] == 1
    assert w.log._members[G] == {1: "envoy-1"}
    # Answers of a closed stream are ignored.
    w.log.answered(2, (e,), CDS, None)
    assert w.doc(e)["proxies"]["acked"] == 0


def test_percentiles_are_nearest_rank_over_every_proxy() -> None:
    w = World()
    n = 100
    for sid in range(1, n + 1):
        w.log.connect(sid, f"envoy-{sid}", G)
    e = w.change(CDS)
    pushed = {sid: w.push(sid, CDS)[0] for sid in range(1, n + 1)}
    start = w.clock.now
    for sid in range(1, n + 1):
        w.clock.now = start + sid / 100  # proxy k ACKs after k/100 s
        w.log.answered(sid, pushed[sid], CDS, None)
        w.log.settle(sid, w.snapshot)
    c = w.doc(e)["convergence"]
    assert c == pytest.approx({"p50": 0.5, "p99": 0.99, "max": 1.0})
    assert events_report.percentile([], 0.5) is None
    assert events_report.percentile([3.0], 0.99) == 3.0


def test_change_names_are_capped_and_counted() -> None:
    c = changes("k8s", *(f"svc{i}.default" for i in range(NAMES_KEPT + 5)))
    doc = c.as_dict()["services_added"]
    assert doc["count"] == NAMES_KEPT + 5 and len(doc["names"]) == NAMES_KEPT
    assert c.summary().endswith(", +5)")


def test_events_of_a_forgotten_group_are_not_carried() -> None:
    w = World()
    w.log.connect(1, "envoy-1", G)
    w.change(CDS)
    w.log.forget_group(G)
    assert w.push(1, CDS)[0] == ()
