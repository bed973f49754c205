"""Leader election on a Lease, the decisions alone (sources.kube_lease): create when there
is none, renew our own, wait while another's is valid on *our* clock, take an expired one
over (a transition), stop counting as leader after the renew deadline, release."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sources.kube_lease import Create, LeaderElection, LeaseRecord, Update, Wait, micro_time

WALL = datetime(2026, 12, 5, 2, 0, 0, 123456, tzinfo=UTC)
STAMP = "2026-12-05T02:00:00.123456Z"


def election(name: str = "a") -> LeaderElection:
    return LeaderElection(name, lease_duration=15, renew_deadline=10, retry_period=5)


def other(holder: str = "b", transitions: int = 3) -> LeaseRecord:
    return LeaseRecord(
        holder, 15, "2026-12-05T01:00:00.000000Z", "2026-12-05T01:59:59.0Z", transitions
    )


def test_micro_time_is_rfc3339_with_microseconds_in_utc() -> None:
    assert micro_time(WALL) == STAMP


def test_no_lease_creates_one_holding_it() -> None:
    e = election()
    e.observed(None, None, now=100.0)
    action = e.plan(100.0, WALL)
    assert action == Create(LeaseRecord("a", 15, STAMP, STAMP, 0))
    assert not e.is_leader(100.0)  # not before the write succeeded
    e.written(action.record, "7", now=100.0)
    assert e.is_leader(100.0)
    assert e.is_leader(109.9)
    assert not e.is_leader(110.0)  # renew deadline passed without a renewal


def test_a_valid_lease_of_another_is_waited_for_on_our_own_clock() -> None:
    e = election()
    e.observed(other(), "5", now=100.0)
    assert e.plan(100.0, WALL) == Wait("b")
    # Unchanged on later reads: the expiry counts from when we first saw it, whatever
    # renewTime says (another node's clock).
    e.observed(other(), "5", now=114.9)
    assert e.plan(114.9, WALL) == Wait("b")
    e.observed(other(), "5", now=115.0)
    action = e.plan(115.0, WALL)
    assert action == Update(LeaseRecord("a", 15, STAMP, STAMP, 4), "5")
    assert not e.is_leader(115.0)


def test_a_renewal_by_the_holder_restarts_the_expiry_clock() -> None:
    e = election()
    e.observed(other(), "5", now=100.0)
    renewed = LeaseRecord("b", 15, other().acquire_time, "2026-12-05T02:00:10.0Z", 3)
    e.observed(renewed, "6", now=110.0)
    e.observed(renewed, "6", now=124.9)
    assert e.plan(124.9, WALL) == Wait("b")
    e.observed(renewed, "6", now=125.0)
    assert isinstance(e.plan(125.0, WALL), Update)


def test_the_holder_renews_keeping_acquire_time_and_transitions() -> None:
    e = election()
    mine = LeaseRecord("a", 15, "2026-12-05T01:00:00.000000Z", "2026-12-05T01:59:55.0Z", 4)
    e.observed(mine, "9", now=100.0)
    action = e.plan(100.0, WALL)
    assert action == Update(LeaseRecord("a", 15, mine.acquire_time, STAMP, 4), "9")


def test_an_empty_holder_is_taken_at_once() -> None:
    e = election()
    e.observed(LeaseRecord("", 1, "", "", 2), "3", now=100.0)
    assert e.plan(100.0, WALL) == Update(LeaseRecord("a", 15, STAMP, STAMP, 3), "3")


def test_leadership_ends_when_another_holds_the_lease() -> None:
    e = election()
    e.written(LeaseRecord("a", 15, STAMP, STAMP, 0), "1", now=100.0)
    assert e.is_leader(101.0)
    e.observed(other(), "2", now=102.0)  # someone took it (our renewals were failing)
    assert not e.is_leader(102.0)


def test_release_empties_the_holder_with_a_one_second_lease() -> None:
    e = election()
    assert e.release(WALL) is None  # nothing to release
    e.written(LeaseRecord("a", 15, "2026-12-05T01:00:00.000000Z", STAMP, 4), "8", now=100.0)
    action = e.release(WALL)
    assert action == Update(LeaseRecord("", 1, STAMP, STAMP, 4), "8")
    e.released()
    assert not e.is_leader(100.0)


def test_from_lease_reads_the_spec_and_spec_writes_it_back() -> None:
    lease = {"spec": {"holderIdentity": "b", "leaseDurationSeconds": 15,
                      "acquireTime": "t1", "renewTime": "t2", "leaseTransitions": 3}}  # fmt: skip
    record = LeaseRecord.from_lease(lease)
    assert record == LeaseRecord("b", 15, "t1", "t2", 3)
    assert record.spec() == lease["spec"]
    assert LeaseRecord.from_lease({}) == LeaseRecord("", 0, "", "", 0)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="identity"):
        LeaderElection("")
    with pytest.raises(ValueError, match="renew deadline"):
        LeaderElection("a", lease_duration=10, renew_deadline=10, retry_period=2)
