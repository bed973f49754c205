"""Leader election on a `coordination.k8s.io/v1` Lease, the decisions only (sans-IO).

The rules are client-go's `leaderelection` package's, so an operator reads our Lease as
they read kube-controller-manager's:

- a Lease held by another identity is taken only once it has not changed for
  `leaseDurationSeconds` *as this replica observed it* (the time the record last changed
  on our monotonic clock, not the `renewTime` written by another machine's clock, so
  clock skew between nodes cannot make two replicas leaders);
- the holder renews every `retry_period`; taking over increments `leaseTransitions`
  and sets `acquireTime`, a renewal keeps both;
- the holder counts itself leader only until `renew_deadline` after its last
  successful write (shorter than the lease), so it stops writing before any other
  replica can have taken over;
- every write carries the resourceVersion read, so of two replicas racing for an
  expired Lease the API server lets exactly one win (409 Conflict for the other).

`LeaderElection` is fed what the I/O side read and wrote (`observed`, `written`) and
says what to do next (`plan`); `sources.kube_lease_client` does the HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

LEASE_NAME = "xds-server-status"
LEASE_DURATION = 15.0
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 5.0


def micro_time(at: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, in UTC."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    """The Lease's spec, as client-go's LeaderElectionRecord holds it."""

    holder: str = ""
    duration: int = int(LEASE_DURATION)
    acquire_time: str = ""
    renew_time: str = ""
    transitions: int = 0

    @classmethod
    def from_lease(cls, obj: Mapping[str, Any]) -> LeaseRecord:
        spec = obj.get("spec")
        spec = spec if isinstance(spec, Mapping) else {}
        duration = spec.get("leaseDurationSeconds")
        transitions = spec.get("leaseTransitions")
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration=duration if isinstance(duration, int) and duration > 0 else 0,
            acquire_time=str(spec.get("acquireTime") or ""),
            renew_time=str(spec.get("renewTime") or ""),
            transitions=transitions if isinstance(transitions, int) else 0,
        )

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration,
            "leaseTransitions": self.transitions,
        }
        if self.acquire_time:
            out["acquireTime"] = self.acquire_time
        if self.renew_time:
            out["renewTime"] = self.renew_time
        return out


@dataclass(frozen=True)
class Create:
    """No Lease exists: create it holding `record`."""

    record: LeaseRecord


@dataclass(frozen=True)
class Update:
    """Write `record` over the Lease read at `resource_version`."""

    record: LeaseRecord
    resource_version: str


@dataclass(frozen=True)
class Wait:
    """Another replica holds a valid Lease: ask again later."""

    holder: str


Action = Create | Update | Wait


class LeaderElection:
    """One replica's view of the Lease and its own leadership (see the module doc).

    Times: `now` is monotonic seconds (for every decision), `wall` the UTC time written
    into the record for people and other tools to read."""

    def __init__(
        self,
        identity: str,
        lease_duration: float = LEASE_DURATION,
        renew_deadline: float = RENEW_DEADLINE,
        retry_period: float = RETRY_PERIOD,
    ) -> None:
        if not identity:
            raise ValueError("leader election needs a non-empty identity")
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("leader election needs retry period < renew deadline < lease")
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.record: LeaseRecord | None = None  # the last record read or written
        self.resource_version: str | None = None
        self.observed_at = 0.0  # when `record` last changed, monotonic
        self.renewed_at: float | None = None  # our last successful write, monotonic

    # --- what the I/O side reports ----------------------------------------------------

    def observed(
        self, record: LeaseRecord | None, resource_version: str | None, now: float
    ) -> None:
        """A read of the Lease (None: there is none). The expiry clock restarts only when
        the record changed, as client-go compares the raw record."""
        if record != self.record:
            self.observed_at = now
        self.record, self.resource_version = record, resource_version

    def written(self, record: LeaseRecord, resource_version: str | None, now: float) -> None:
        """Our create or update succeeded."""
        self.record, self.resource_version = record, resource_version
        self.observed_at = now
        self.renewed_at = now if record.holder == self.identity else None

    def released(self) -> None:
        """We gave the Lease up (or must consider it lost)."""
        self.renewed_at = None

    # --- decisions ---------------------------------------------------------------------

    def holds(self) -> bool:
        """The last record seen names us."""
        return self.record is not None and self.record.holder == self.identity

    def is_leader(self, now: float) -> bool:
        """We hold the Lease and renewed it within the renew deadline."""
        return (
            self.holds()
            and self.renewed_at is not None
            and now - self.renewed_at < self.renew_deadline
        )

    def expired(self, now: float) -> bool:
        """The record is free to take: empty holder, or unchanged for its duration."""
        if self.record is None or not self.record.holder:
            return True
        duration = self.record.duration or self.lease_duration
        return now - self.observed_at >= duration

    def plan(self, now: float, wall: datetime) -> Action:
        """After `observed`: create, renew, take over, or wait."""
        stamp = micro_time(wall)
        mine = LeaseRecord(self.identity, int(self.lease_duration), stamp, stamp, 0)
        if self.record is None:
            return Create(mine)
        assert self.resource_version is not None, "a Lease read without a resourceVersion"
        if self.holds():
            renewed = replace(
                mine,
                acquire_time=self.record.acquire_time or stamp,
                transitions=self.record.transitions,
            )
            return Update(renewed, self.resource_version)
        if not self.expired(now):
            return Wait(self.record.holder)
        return Update(replace(mine, transitions=self.record.transitions + 1), self.resource_version)

    def release(self, wall: datetime) -> Update | None:
        """On shutdown, as client-go's ReleaseOnCancel: an empty holder with a 1 s lease
        lets another replica take over at once instead of after the lease expires."""
        if not self.holds() or self.record is None or self.resource_version is None:
            return None
        stamp = micro_time(wall)
        record = replace(self.record, holder="", duration=1, renew_time=stamp, acquire_time=stamp)
        return Update(record, self.resource_version)
