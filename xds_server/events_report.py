"""Push-provenance events as documents: `/debug/events`, `xdsctl events` and the status page.

Stdlib only (xdsctl imports the table formatting, and it starts without protobuf). One
event's document says where it is on its way, seen → pushed → ACKed by n of m proxies,
with convergence percentiles (seen → ACK, per proxy), NACKs with Envoy's error and the
proxies still pending.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from xds_server.events import Event, EventLog

PENDING_LISTED: Final = 50


def percentile(sorted_samples: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of already sorted samples; None if empty."""
    if not sorted_samples:
        return None
    rank = max(1, math.ceil(q * len(sorted_samples)))
    return sorted_samples[min(rank, len(sorted_samples)) - 1]


def state(doc: dict[str, Any]) -> str:
    """SEEN (not applied yet), PENDING (proxies still to ACK), NACKED (done, some
    rejected), CONVERGED (done, every proxy ACKed) or NO_PROXY (no proxy needed it)."""
    p = doc["proxies"]
    if doc["applied_at"] is None:
        return "SEEN"
    if p["pending"]:
        return "PENDING"
    if p["nacked"]:
        return "NACKED"
    return "CONVERGED" if p["acked"] else "NO_PROXY"


def event_doc(event: Event) -> dict[str, Any]:
    """One event as `/debug/events` shows it (times: wall clock, seconds since the epoch;
    durations: seconds since the change was seen)."""
    samples = sorted(event.convergence)
    offset = event.seen_wall - event.seen_at  # clock time -> wall time

    def wall(at: float | None) -> float | None:
        return None if at is None else at + offset

    def after(at: float | None) -> float | None:
        return None if at is None else round(max(0.0, at - event.seen_at), 6)

    pending = sorted(t.node for t in event.tracks.values())
    pushed = sum(1 for t in event.tracks.values() if t.pushed)
    doc: dict[str, Any] = {
        "id": event.id,
        "source": event.changes.source,
        "summary": event.changes.summary(),
        "changes": event.changes.as_dict(),
        "seen_at": event.seen_wall,
        "applied_at": wall(event.applied_at),
        "pushed_at": wall(event.pushed_at),
        "last_ack_at": wall(event.last_ack_at),
        "pushed_after": after(event.pushed_at),
        "groups": list(event.groups),
        "proxies": {
            "total": event.proxies,
            "acked": event.acked,
            "nacked": event.nacked,
            "pending": len(pending),
            "pushed_pending": pushed,
        },
        "convergence": {
            "p50": percentile(samples, 0.5),
            "p99": percentile(samples, 0.99),
            "max": samples[-1] if samples else None,
        },
        "nacks": [
            {
                "node": n.node,
                "stream_id": n.stream,
                "type_url": n.type_url,
                "error": n.error,
                "at": n.at,
            }
            for n in event.nacks
        ],
        "pending": pending[:PENDING_LISTED],
    }
    doc["state"] = state(doc)
    return doc


def events_doc(log: EventLog, since: int = 0, limit: int | None = None) -> dict[str, Any]:
    return {
        "history": log.history,
        "events": [event_doc(e) for e in log.events(since, limit)],
    }


# -- text, for xdsctl (no server imports) --------------------------------------------------


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def row(doc: dict[str, Any]) -> tuple[str, ...]:
    """ID, SOURCE, STATE, ACKED (n/m), PUSHED (after seen), P50, P99, MAX, CHANGES."""
    p, c = doc["proxies"], doc["convergence"]
    return (
        str(doc["id"]),
        str(doc["source"]),
        str(doc["state"]),
        f"{p['acked']}/{p['total']}",
        seconds(doc.get("pushed_after")),
        seconds(c["p50"]),
        seconds(c["p99"]),
        seconds(c["max"]),
        str(doc["summary"]),
    )


HEADERS: Final = ("ID", "SOURCE", "STATE", "ACKED", "PUSHED", "P50", "P99", "MAX", "CHANGES")
# `xdsctl events --follow` prints rows one by one: fixed widths keep them under the header.
WIDTHS: Final = (5, 14, 9, 7, 7, 7, 7, 7)


def follow_line(cells: Sequence[str]) -> str:
    padded = [c.ljust(w) for c, w in zip(cells, WIDTHS, strict=False)]
    return "  ".join([*padded, *cells[len(WIDTHS) :]]).rstrip()


def notes(doc: dict[str, Any]) -> list[str]:
    """The lines under an event's row: each NACK with its error (on one line: Envoy's
    can span several), then who is pending."""
    out = [
        f"    NACK {n['node']} ({n['type_url'].rsplit('.', 1)[-1]}): {' '.join(n['error'].split())}"
        for n in doc["nacks"]
    ]
    pending = doc["pending"]
    if pending:
        more = doc["proxies"]["pending"] - len(pending)
        out.append(f"    pending: {', '.join(pending)}" + (f" (+{more} more)" if more else ""))
    return out
