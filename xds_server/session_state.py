"""Per-type state of one xDS stream, and the plan of one response (see `session`).

Kept apart from the state machines so that SotW and delta share one definition of what
a stream remembers per resource type (DESIGN §4): its subscription, what the client
acknowledged, the response in flight, and the metrics children it updates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

from xds_server import metrics, types
from xds_server.snapshot import EMPTY_VIEW, Diff, Resource, View
from xds_server.status import TypeStatus

if TYPE_CHECKING:
    from xds_server.session_sotw import NamesKey


@dataclass(slots=True)
class Inflight:
    nonce: str
    view: View
    sent_at: float
    changed_at: float | None  # the registry change this response carries, if an update
    events: tuple[int, ...] = ()  # push provenance: the events it carries (xds_server.events)


@dataclass(slots=True)
class Plan:
    target: View
    resources: Sequence[Resource]
    changed: Sequence[str]
    removed: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    # What alone decides this response's content, to memoise its encoding on: the
    # target (a full state) or the diff (a change); None when it is this stream's own
    # (forced names, names reported absent).
    share: View | Diff | None = None


@dataclass(frozen=True, slots=True)
class TypeMetrics:
    """One type's labelled metrics, looked up once rather than per push and per ACK."""

    pushes: Counter
    push_bytes: Counter
    push_latency: Histogram
    ack_latency: Histogram
    convergence: Histogram
    nacks: Counter


_type_metrics: dict[str, TypeMetrics] = {}


def metrics_of(type_url: str) -> TypeMetrics:
    m = _type_metrics.get(type_url)
    if m is None:
        short = types.short_name(type_url)
        m = _type_metrics[type_url] = TypeMetrics(
            metrics.PUSHES.labels(short),
            metrics.PUSH_BYTES.labels(short),
            metrics.PUSH_LATENCY.labels(short),
            metrics.ACK_LATENCY.labels(short),
            metrics.CONVERGENCE_LATENCY.labels(short),
            metrics.NACKS.labels(short),
        )
    return m


@dataclass(slots=True)
class TypeState:
    type_url: str
    status: TypeStatus
    metrics: TypeMetrics
    subscribed: bool = False
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    names_ever: bool = False  # SotW legacy wildcard ends once a name has been sent
    known: View = EMPTY_VIEW
    last_version: str | None = None
    inflight: Inflight | None = None
    nonce: str = ""
    force: set[str] = field(default_factory=set)
    told_absent: set[str] = field(default_factory=set)
    held: tuple[View, View, View] | None = None  # (base, known, merged) memo
    names_key: NamesKey | None = None  # SotW: the last request's resource_names
    event_mark: int = 0  # push provenance: how far this type's events were carried


# Interning subscription name sets lets thousands of streams with the same
# subscription share one frozenset and one memoised subset view.
_interned: dict[frozenset[str], frozenset[str]] = {}


def intern_names(names: Iterable[str]) -> frozenset[str]:
    fs = frozenset(names)
    hit = _interned.get(fs)
    if hit is not None:
        return hit
    if len(_interned) > 4096:
        _interned.clear()
    _interned[fs] = fs
    return fs
