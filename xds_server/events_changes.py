"""What one registry or policy change applied: the payload of a push-provenance event.

Pure: the controller hands it the merged view before and after a rebuild, the keys the
catalog marked dirty and the policy objects before and after, per source; it answers one
`Changes` per source that changed something (services added, removed or changed, services
whose endpoints alone changed, policy objects added, removed or changed). Name lists are
capped (`NAMES_KEPT`) with the full counts kept, so an initial sync of thousands of
services costs an event a few hundred bytes (`xds_server.events` keeps a bounded history).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from xds_server.model import PolicyKey, PolicyObject, ServiceEntry, ServiceKey

NAMES_KEPT: Final = 20  # names listed per kind of change; the count is always exact

KINDS: Final = (
    "services_added",
    "services_removed",
    "services_changed",
    "endpoints_changed",
    "policies_added",
    "policies_removed",
    "policies_changed",
)


@dataclass(slots=True)
class Changes:
    """One source's share of a rebuild: per kind of change, its count and first names."""

    source: str
    counts: dict[str, int] = field(default_factory=dict)
    names: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, name: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        listed = self.names.setdefault(kind, [])
        if len(listed) < NAMES_KEPT:
            listed.append(name)

    def summary(self) -> str:
        """One line: "services_added=1 (web.default), endpoints_changed=2 (a, b)"."""
        parts = []
        for kind in KINDS:
            n = self.counts.get(kind)
            if n:
                names = self.names.get(kind, [])
                more = f", +{n - len(names)}" if n > len(names) else ""
                parts.append(f"{kind}={n} ({', '.join(names)}{more})")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            kind: {"count": self.counts[kind], "names": list(self.names.get(kind, []))}
            for kind in KINDS
            if self.counts.get(kind)
        }


def _source_of(entry: ServiceEntry) -> str:
    return entry.service.source or "unknown"


def service_changes(
    before: Mapping[ServiceKey, ServiceEntry],
    after: Mapping[ServiceKey, ServiceEntry],
    dirty: Iterable[ServiceKey],
    into: dict[str, Changes],
) -> None:
    """Classify each dirty key (added, removed, service changed, only endpoints changed)
    under the source that published it. O(dirty)."""
    for key in sorted(dirty, key=str):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if old is None:
            assert new is not None
            source, kind = _source_of(new), "services_added"
        elif new is None:
            source, kind = _source_of(old), "services_removed"
        elif old.service != new.service:
            source, kind = _source_of(new), "services_changed"
        else:
            source, kind = _source_of(new), "endpoints_changed"
        changes = into.get(source)
        if changes is None:
            changes = into[source] = Changes(source)
        changes.add(kind, str(key))


def policy_changes(
    before: Mapping[str, tuple[PolicyObject, ...]],
    after: Mapping[str, tuple[PolicyObject, ...]],
    into: dict[str, Changes],
) -> None:
    """Policy objects added, removed or changed, per policy source."""
    for source in sorted(before.keys() | after.keys()):
        old: dict[PolicyKey, PolicyObject] = {o.key: o for o in before.get(source, ())}
        new: dict[PolicyKey, PolicyObject] = {o.key: o for o in after.get(source, ())}
        if old == new:
            continue
        for key in sorted(old.keys() | new.keys(), key=str):
            o, n = old.get(key), new.get(key)
            if o == n:
                continue
            kind = "policies_added" if o is None else "policies_removed" if n is None else None
            changes = into.get(source)
            if changes is None:
                changes = into[source] = Changes(source)
            changes.add(kind or "policies_changed", str(key))
