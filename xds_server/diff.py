"""What a proxy has acknowledged versus what it would get now, resource by resource:
`/debug/diff` and `xdsctl diff`, so a STALE or NACKED type explains itself.

Sans-IO: from the views each open stream holds (`csds.of_session`, the same records
CSDS reads) and the group's current snapshot. Per type, the newest stream of the node
that carries it is compared, as CSDS does; "now" is the subscription's view of the
snapshot (`status.target_version`'s view), before any make-before-break holdover.
`compare` runs on the event loop and only compares versions; `describe` decodes the
changed resources and lists the fields that differ (run it off the loop).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from xds_server import types
from xds_server.csds import Held, StreamState
from xds_server.snapshot import Resource, Snapshot, Versioned, View
from xds_server.status import TypeStatus

ADDED: Final = "added"
REMOVED: Final = "removed"
CHANGED: Final = "changed"
_ABSENT: Final = object()  # a field one side lacks


@dataclass(frozen=True, slots=True)
class Change:
    """One resource the proxy holds differently from what it would get now."""

    type_url: str
    name: str
    change: str  # ADDED (it would get it), REMOVED (it would lose it) or CHANGED
    acked: Versioned | None
    now: Resource | None
    in_flight: bool  # `now` has been sent and waits for the proxy's ACK (or NACK)


@dataclass(frozen=True, slots=True)
class NodeDiff:
    node_id: str
    group: str
    types: dict[str, dict[str, Any]]  # short type name -> versions and state
    changes: list[Change]


def target_view(snap: Snapshot, ts: TypeStatus) -> View:
    """The view the server would send this subscription now."""
    tsnap = snap.get(ts.type_url)
    return tsnap.full if ts.wildcard else tsnap.subset(ts.names)


def _newest_per_type(streams: Sequence[StreamState]) -> Iterator[tuple[StreamState, str]]:
    newest: dict[str, StreamState] = {}
    for stream in sorted(streams, key=lambda s: s.status.stream_id):
        for type_url in stream.status.types:
            newest[type_url] = stream
    for type_url in sorted(newest, key=types.push_rank):
        yield newest[type_url], type_url


def compare(
    streams: Sequence[StreamState], snap: Snapshot, only: Collection[str] | None = None
) -> NodeDiff:
    """One node's streams (at least one) against its group's snapshot `snap`; only the
    type URLs `only`, if given."""
    newest = max(streams, key=lambda s: s.status.stream_id)
    doc: dict[str, dict[str, Any]] = {}
    changes: list[Change] = []
    for stream, type_url in _newest_per_type(streams):
        if only is not None and type_url not in only:
            continue
        ts = stream.status.types[type_url]
        held = stream.held.get(type_url, Held())
        now = target_view(snap, ts)
        if type_url == types.SECRET:
            # Per identity, never in the group's snapshot (xds_server.secrets); a stream
            # is sent its identity's new secrets at once: the newest sent is "now".
            now = held.sent if held.sent is not None else held.acked
        doc[types.short_name(type_url)] = {
            "state": ts.state(now.version),
            "acked_version": ts.acked_version or None,
            "now_version": now.version,
            "in_flight_version": held.sent.version if held.sent is not None else None,
        }
        changes.extend(_type_changes(type_url, held, now))
    return NodeDiff(newest.node.id, newest.status.group, doc, changes)


def _type_changes(type_url: str, held: Held, now: View) -> Iterator[Change]:
    acked: Mapping[str, Versioned] = held.acked.resources
    target: Mapping[str, Versioned] = now.resources
    sent: Mapping[str, Versioned] = held.sent.resources if held.sent is not None else {}
    for name in sorted({*acked, *target}):
        old, new = acked.get(name), target.get(name)
        if old is not None and new is not None and old.version == new.version:
            continue
        kind = ADDED if old is None else REMOVED if new is None else CHANGED
        fresh = new if isinstance(new, Resource) else None
        pending = sent.get(name)
        if new is None:
            in_flight = held.sent is not None and pending is None
        else:
            in_flight = pending is not None and pending.version == new.version
        yield Change(type_url, name, kind, old, fresh, in_flight)


def field_paths(old: Any, new: Any, path: str = "") -> list[str]:
    """The paths (`a.b[2].c`) at which two JSON documents differ, in document order."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in [*old, *(k for k in new if k not in old)]:
            sub = f"{path}.{key}" if path else str(key)
            out += field_paths(old.get(key, _ABSENT), new.get(key, _ABSENT), sub)
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            a = old[i] if i < len(old) else _ABSENT
            b = new[i] if i < len(new) else _ABSENT
            out += field_paths(a, b, f"{path}[{i}]")
        return out
    return [] if old == new else [path or "."]


def _lines(doc: Any) -> list[str]:
    if doc is None:
        return []
    # Every line ends with a newline, so a patch followed by more output stays apart.
    return [line + "\n" for line in json.dumps(doc, indent=2).splitlines()]


def describe(change: Change, as_json: Callable[[Resource], dict[str, Any]]) -> dict[str, Any]:
    """A change as /debug/diff shows it: the fields that differ and a unified diff of the
    two resources as Envoy JSON (`as_json`, e.g. `admin.envoy_json`)."""
    short = types.short_name(change.type_url)
    doc: dict[str, Any] = {
        "type": short,
        "name": change.name,
        "change": change.change,
        "acked_version": change.acked.version if change.acked is not None else None,
        "now_version": change.now.version if change.now is not None else None,
        "in_flight": change.in_flight,
    }
    if change.acked is not None and not isinstance(change.acked, Resource):
        # A delta client that reconnected listed only versions (initial_resource_versions).
        doc["fields"] = None
        doc["note"] = "the proxy reported only the version it holds: its content is unknown"
        return doc
    try:
        old = as_json(change.acked) if change.acked is not None else None
        new = as_json(change.now) if change.now is not None else None
    except Exception as exc:  # e.g. an Any whose type is not in the descriptor pool
        doc["fields"] = None
        doc["note"] = f"cannot render as JSON: {exc}"
        return doc
    doc["fields"] = field_paths(old, new) if change.change == CHANGED else []
    doc["patch"] = "".join(
        difflib.unified_diff(
            _lines(old), _lines(new), f"acked/{short}/{change.name}", f"now/{short}/{change.name}"
        )
    )
    return doc


def render(diff: NodeDiff, as_json: Callable[[Resource], dict[str, Any]]) -> bytes:
    """The /debug/diff document, encoded (CPU-bound: run it off the event loop)."""
    doc = {
        "node": diff.node_id,
        "group": diff.group,
        "types": diff.types,
        "changes": [describe(c, as_json) for c in diff.changes],
    }
    return json.dumps(doc, indent=2).encode()
