"""The catalog: every source's last good state, validated and merged into one view.

Sources publish their full state (`replace`) or single services (`upsert`/`remove`)
and report outages (`set_error`); the catalog never drops a source's state because
of an error. Entries are validated on the way in (xds_server.validation), so nothing
downstream sees a value Envoy would reject. The merged view keeps one ServiceEntry
per ServiceKey — the same service in two registries is one service with the
endpoints of both — and records which keys changed since the controller last
looked, so a rebuild only touches those.

Policy sources publish their policy objects (`replace_policies`) next to the services;
the catalog keeps each source's last good set and tells the controller when any changed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from xds_server import metrics
from xds_server.model import Endpoint, PolicyObject, Port, ServiceEntry, ServiceKey
from xds_server.model.objects import registry_of
from xds_server.validation import Rejection, check_entry

log = logging.getLogger(__name__)


@dataclass
class SourceStatus:
    name: str
    kind: str
    synced: bool = False
    error: str | None = None
    error_since: float | None = None
    last_update: float | None = None
    services: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    # A mass removal held back (sources.hold): why, and how many services it would remove.
    holding: str | None = None
    holding_since: float | None = None
    held: int = 0
    # What the source reports that is not an error (a CRD the cluster does not serve).
    notes: tuple[str, ...] = ()

    @property
    def stale(self) -> bool:
        return self.error is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "synced": self.synced,
            "stale": self.stale,
            "error": self.error,
            "error_since": self.error_since,
            "last_update": self.last_update,
            "services": self.services,
            "rejected": [str(r) for r in self.rejections],
            "holding": self.holding is not None,
            "hold_reason": self.holding,
            "holding_since": self.holding_since,
            "held_removals": self.held,
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class _Checked:
    """check_entry's verdict on an entry as a source published it."""

    entry: ServiceEntry
    clean: ServiceEntry | None
    problems: list[Rejection]


class Catalog:
    def __init__(self) -> None:
        self._status: dict[str, SourceStatus] = {}
        self._entries: dict[str, dict[ServiceKey, ServiceEntry]] = {}
        self._rejected: dict[str, dict[ServiceKey | None, list[Rejection]]] = {}
        # Per source and key: the entry last validated, and check_entry's verdict on it.
        self._checked: dict[str, dict[ServiceKey, _Checked]] = {}
        self.validations = 0  # check_entry runs (an unchanged entry is not checked again)
        self._merged: dict[ServiceKey, ServiceEntry] = {}
        self._dirty: set[ServiceKey] = set()
        self._first_change: float | None = None
        self._listeners: list[Callable[[], None]] = []
        self._policies: dict[str, tuple[PolicyObject, ...]] = {}
        self._policies_changed = False
        # Per source: id of an object as published → (it, its copy marked with the registry).
        self._marks: dict[str, dict[int, tuple[PolicyObject, PolicyObject]]] = {}

    # -- sources' side ------------------------------------------------------------

    def register(self, source: str, kind: str) -> None:
        if source in self._status:
            raise ValueError(f"source {source!r} registered twice")
        self._status[source] = SourceStatus(source, kind)
        self._entries[source] = {}
        self._rejected[source] = {}
        self._checked[source] = {}
        metrics.SOURCE_SYNCED.labels(source).set(0)
        metrics.SOURCE_STALE.labels(source).set(0)
        metrics.SOURCE_HOLDING.labels(source).set(0)
        metrics.SOURCE_HELD_REMOVALS.labels(source).set(0)

    def replace(self, source: str, entries: Iterable[ServiceEntry]) -> None:
        """The source's complete current state; marks it synced and clears its error."""
        old = self._entries[source]
        new: dict[ServiceKey, ServiceEntry] = {}
        rejected: dict[ServiceKey | None, list[Rejection]] = {}
        last = self._checked[source]
        checked: dict[ServiceKey, _Checked] = {}
        for entry in entries:
            key = entry.key
            if key in new:
                rejected.setdefault(None, []).append(
                    Rejection(source, f"service {key}", "duplicate service; first kept")
                )
                continue
            self._accept(source, entry, new, rejected, last, checked, key)
        self._checked[source] = checked  # the verdicts on entries gone are forgotten
        self._entries[source] = new
        # A file reload republishes every service: most are the very objects kept.
        changed = {k for k, e in new.items() if (o := old.get(k)) is not e and o != e}
        changed.update(k for k in old if k not in new)
        self._set_rejections(source, rejected)
        self._synced(source)
        self._remerge(changed)

    def upsert(self, source: str, entry: ServiceEntry) -> None:
        """Add or change one service of the source (for sources that watch per service)."""
        entries = self._entries[source]
        rejected = dict(self._rejected[source])
        rejected.pop(entry.key, None)
        before = entries.pop(entry.key, None)
        checked = self._checked[source]
        self._accept(source, entry, entries, rejected, checked, checked, entry.key)
        self._set_rejections(source, rejected)
        self._status[source].services = len(entries)
        if entries.get(entry.key) != before:
            self._remerge({entry.key})

    def remove(self, source: str, key: ServiceKey) -> None:
        rejected = self._rejected[source]
        if key in rejected:
            self._set_rejections(source, {k: v for k, v in rejected.items() if k != key})
        self._checked[source].pop(key, None)
        if self._entries[source].pop(key, None) is not None:
            self._status[source].services = len(self._entries[source])
            self._remerge({key})

    def mark_synced(self, source: str) -> None:
        """For sources using upsert/remove: their first full state has been delivered."""
        self._synced(source)

    def replace_policies(self, source: str, objects: Sequence[PolicyObject]) -> None:
        """The source's complete set of policy objects; marks it synced. Each is marked
        with the registry it came from (`PolicyObject.source`)."""
        objects = self._marked(source, objects)
        status = self._status[source]
        self._synced(source)
        status.services = len(objects)
        if self._policies.get(source) == objects:
            return
        self._policies[source] = objects
        self._policies_changed = True
        if self._first_change is None:
            self._first_change = time.monotonic()
        for cb in list(self._listeners):
            cb()

    def _marked(self, source: str, objects: Sequence[PolicyObject]) -> tuple[PolicyObject, ...]:
        """`objects` marked with their registry; an object published again (the same
        one: sources reuse what did not change) gets the very marked copy it got before,
        so what is built from it stays memoised."""
        registry = registry_of(self._status[source].kind)
        before = self._marks.get(source, {})
        marks: dict[int, tuple[PolicyObject, PolicyObject]] = {}
        out = []
        for o in objects:
            held = before.get(id(o))
            if held is None or held[0] is not o:
                held = (o, o if o.source == registry else replace(o, source=registry))
            marks[id(o)] = held  # holds `o`: its id stays its own while kept here
            out.append(held[1])
        self._marks[source] = marks
        return tuple(out)

    def set_error(self, source: str, error: str) -> None:
        """The source cannot read its registry; its last good state stays served."""
        status = self._status[source]
        metrics.SOURCE_ERRORS.labels(source).inc()
        if status.error is None:
            status.error_since = time.time()
            metrics.SOURCE_STALE.labels(source).set(1)
        status.error = error

    def set_holding(self, source: str, reason: str | None, held: int) -> None:
        """The source holds back a mass removal (`reason`), or no longer does (None); its
        previous state stays served meanwhile."""
        status = self._status[source]
        if reason is not None and status.holding is None:
            status.holding_since = time.time()
        elif reason is None:
            status.holding_since = None
        status.holding = reason
        status.held = held if reason is not None else 0
        metrics.SOURCE_HOLDING.labels(source).set(1 if reason is not None else 0)
        metrics.SOURCE_HELD_REMOVALS.labels(source).set(status.held)

    def set_notes(self, source: str, notes: Sequence[str]) -> None:
        """What the source reports that is not an error (shown by `xdsctl sources`)."""
        self._status[source].notes = tuple(notes)

    def _accept(
        self,
        source: str,
        entry: ServiceEntry,
        into: dict[ServiceKey, ServiceEntry],
        rejected: dict[ServiceKey | None, list[Rejection]],
        last: dict[ServiceKey, _Checked],
        checked: dict[ServiceKey, _Checked],
        key: ServiceKey,
    ) -> None:
        """Validate `entry` into `into`/`rejected`, reusing the verdict in `last` when the
        source published this entry before (a file reload republishes every service)."""
        held = last.get(key)
        if held is None or (held.entry is not entry and held.entry != entry):
            clean, problems = check_entry(source, entry)
            self.validations += 1
            metrics.CATALOG_VALIDATIONS.labels(source).inc()
            if clean is not None and clean.service.source != source:
                clean = ServiceEntry(replace(clean.service, source=source), clean.endpoints)
            held = _Checked(entry, clean, problems)
        checked[key] = held
        if held.problems:
            rejected[key] = held.problems
        if held.clean is not None:
            into[key] = held.clean

    def _set_rejections(
        self, source: str, rejected: dict[ServiceKey | None, list[Rejection]]
    ) -> None:
        before = {r for rs in self._rejected[source].values() for r in rs}
        self._rejected[source] = rejected
        now = sorted({r for rs in rejected.values() for r in rs})
        fresh = [r for r in now if r not in before]
        for r in fresh:  # logged once, not on every republish of the same bad entry
            log.warning("skipped %s", r)
        if fresh:
            metrics.REJECTIONS.labels(source).inc(len(fresh))
        metrics.REJECTED_ENTRIES.labels(source).set(len(now))
        self._status[source].rejections = now

    def _synced(self, source: str) -> None:
        status = self._status[source]
        if status.error is not None:
            log.info("source %s recovered (was: %s)", source, status.error)
        status.synced = True
        status.error = None
        status.error_since = None
        status.last_update = time.time()
        status.services = len(self._entries[source])
        metrics.SOURCE_SYNCED.labels(source).set(1)
        metrics.SOURCE_STALE.labels(source).set(0)
        metrics.SOURCE_SERVICES.labels(source).set(status.services)

    def _remerge(self, keys: set[ServiceKey]) -> None:
        changed = False
        for key in keys:
            parts = [e[key] for s, e in self._entries.items() if key in e]
            merged = _merge(parts) if parts else None
            if merged == self._merged.get(key):
                continue
            changed = True
            if merged is None:
                del self._merged[key]
            else:
                self._merged[key] = merged
            self._dirty.add(key)
        if changed:
            if self._first_change is None:
                self._first_change = time.monotonic()
            for cb in list(self._listeners):
                cb()

    # -- consumers' side ----------------------------------------------------------

    def on_change(self, callback: Callable[[], None]) -> None:
        """`callback()` runs (synchronously) whenever the merged view changes."""
        self._listeners.append(callback)

    def merged(self) -> Mapping[ServiceKey, ServiceEntry]:
        return self._merged

    def take_changes(self) -> tuple[dict[ServiceKey, ServiceEntry], set[ServiceKey], float | None]:
        """A copy of the merged view, the keys changed since the last call, and when the
        first of those changes happened (time.monotonic)."""
        dirty, first = self._dirty, self._first_change
        self._dirty, self._first_change = set(), None
        return dict(self._merged), dirty, first

    def take_policies(self) -> tuple[PolicyObject, ...] | None:
        """Every source's policy objects (source order) if any changed since the last
        call, else None."""
        if not self._policies_changed:
            return None
        self._policies_changed = False
        return tuple(o for objects in self._policies.values() for o in objects)

    def policies_by_source(self) -> dict[str, tuple[PolicyObject, ...]]:
        """Each policy source's objects (for push provenance: which source changed what)."""
        return dict(self._policies)

    def policies(self) -> tuple[PolicyObject, ...]:
        return tuple(o for objects in self._policies.values() for o in objects)

    def registries(self) -> dict[str, str]:
        """Each source's registry (`registry_of` its kind), by source name: what
        `Service.source` names ("consul", "file+consul") stands for."""
        return {name: registry_of(s.kind) for name, s in self._status.items()}

    def sources(self) -> list[SourceStatus]:
        return list(self._status.values())

    def stale(self) -> list[str]:
        """Sources serving their last good state because their registry fails."""
        return [
            f"source {s.name} ({s.kind}) is stale, serving its last good state: {s.error}"
            for s in self._status.values()
            if s.synced and s.error is not None
        ]

    def holding(self) -> list[str]:
        """Sources holding back a mass removal, serving their previous state."""
        return [
            f"source {s.name} ({s.kind}) is HOLDING a removal: {s.holding}"
            for s in self._status.values()
            if s.holding is not None
        ]

    def not_ready(self) -> list[str]:
        """Why the catalog is not ready yet: sources that have not synced once."""
        return [
            f"source {s.name} ({s.kind}) has not synced yet" + (f": {s.error}" if s.error else "")
            for s in self._status.values()
            if not s.synced
        ]


def _merge(parts: list[ServiceEntry]) -> ServiceEntry:
    """One service from its entries in several sources (source order decides conflicts)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0].service
    ports: dict[str, Port] = {}
    hostnames: list[str] = []
    label_map: dict[str, str] = {}
    endpoints: list[Endpoint] = []
    seen: set[tuple[str, int, str]] = set()
    for part in parts:
        svc = part.service
        for p in svc.ports:
            ports.setdefault(p.name, p)
        hostnames.extend(h for h in svc.hostnames if h not in hostnames)
        for k, v in svc.labels:
            label_map.setdefault(k, v)
        for ep in part.endpoints:
            ident = (ep.ip, ep.port, ep.port_name)
            if ident not in seen:
                seen.add(ident)
                endpoints.append(ep)
    numbers: set[int] = set()
    kept: list[Port] = []
    for p in ports.values():  # two sources giving different names to one port number
        if p.port not in numbers:
            numbers.add(p.port)
            kept.append(p)
    kept_names = {p.name for p in kept}
    service = replace(
        first,
        ports=tuple(kept),
        hostnames=tuple(hostnames),
        labels=tuple(sorted(label_map.items())),
        source="+".join(p.service.source for p in parts),
    )
    return ServiceEntry(service, tuple(e for e in endpoints if e.port_name in kept_names))
