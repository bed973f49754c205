"""The snapshot cache: the current Snapshot of every proxy group, and who watches it.

Writers (the translators' output, or tests) replace a group's resources; unchanged
resources keep their `Resource` object and unchanged types keep their `TypeSnapshot`,
so sessions see identity where content is identical and diffs stay cheap. Watchers are
plain callbacks that set a stream's wake-up flag: a stream then reads the *latest*
snapshot, which is what coalesces bursts for slow proxies (DESIGN §4.13).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from envoy.config.core.v3 import base_pb2
from google.protobuf.message import Message

from xds_server.snapshot import EMPTY_SNAPSHOT, Resource, Snapshot, TypeSnapshot

if TYPE_CHECKING:
    from xds_server.events import EventLog
    from xds_server.secrets import SecretStore

log = logging.getLogger(__name__)

GroupOf = Callable[[base_pb2.Node], str]
Watcher = Callable[[Snapshot], None]


def group_by_cluster(node: base_pb2.Node) -> str:
    """Default grouping: proxies of one Envoy `node.cluster` receive the same config."""
    return str(node.cluster)


class Watch:
    __slots__ = ("_cache", "callback", "group")

    def __init__(self, cache: SnapshotCache, group: str, callback: Watcher):
        self._cache = cache
        self.group = group
        self.callback = callback

    def cancel(self) -> None:
        self._cache._watchers.get(self.group, set()).discard(self)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A group's next types, and the snapshot they were prepared from (None: none yet)."""

    base: Snapshot | None
    types: dict[str, TypeSnapshot]


class SnapshotCache:
    def __init__(self, group_of: GroupOf = group_by_cluster):
        self.group_of = group_of
        self._snapshots: dict[str, Snapshot] = {}
        self._watchers: dict[str, set[Watch]] = {}
        # Push provenance (xds_server.events): the controller records into it what it
        # installs, sessions what they push and what is ACKed. None: not followed.
        self.events: EventLog | None = None
        # Per-identity secrets (SDS), beside the per-group snapshots; None: no CA, so
        # no secrets are served.
        self.secrets: SecretStore | None = None

    def get(self, group: str) -> Snapshot:
        return self._snapshots.get(group, EMPTY_SNAPSHOT)

    def groups(self) -> list[str]:
        return sorted(self._snapshots)

    def watched(self, group: str) -> bool:
        """Whether any stream currently watches `group`."""
        return bool(self._watchers.get(group))

    def watch(self, group: str, callback: Watcher) -> Watch:
        w = Watch(self, group, callback)
        self._watchers.setdefault(group, set()).add(w)
        return w

    def set_snapshot(
        self,
        group: str,
        resources: Mapping[str, Iterable[Message | Resource]],
        changed_at: float | None = None,
    ) -> bool:
        """Replace the given types of `group` (other types are kept). True if anything changed.

        Raises ValueError for duplicate or empty names: a snapshot that would make a
        response repeat a name is refused whole, and the previous one stays.
        """
        prepared = self.prepare(group, resources)
        if prepared is None:
            return False
        self.install(group, prepared, changed_at)
        return True

    def prepare(
        self, group: str, resources: Mapping[str, Iterable[Message | Resource]]
    ) -> Prepared | None:
        """The work of `set_snapshot` without publishing: the group's new types, or None
        if nothing changed. It only reads the current snapshot, so a writer can run it in
        a worker thread and `install` the result on the event loop; it is O(resources),
        which at thousands of services is too long to hold the loop (DESIGN §5)."""
        current = self._snapshots.get(group)
        base = current if current is not None else EMPTY_SNAPSHOT
        new_types: dict[str, TypeSnapshot] = dict(base.types)
        changed = False
        for type_url, items in resources.items():
            old = base.types.get(type_url)
            ts = _build_type(type_url, items, old)
            if ts is not old:
                changed = True
                if ts.resources:
                    new_types[type_url] = ts
                else:
                    new_types.pop(type_url, None)
        if not changed and current is not None:
            return None
        return Prepared(current, new_types)

    def install(self, group: str, prepared: Prepared, changed_at: float | None = None) -> None:
        """Publish what `prepare` built. The group's snapshot must not have been replaced
        in between (one writer per group: the controller, under its lock)."""
        if self._snapshots.get(group) is not prepared.base:
            raise RuntimeError(f"snapshot of group {group!r} replaced while being prepared")
        snap = Snapshot(prepared.types, changed_at)
        self._snapshots[group] = snap
        self._notify(group, snap)

    def clear(self, group: str) -> None:
        if self._snapshots.pop(group, None) is not None:
            self._notify(group, EMPTY_SNAPSHOT)

    def _notify(self, group: str, snap: Snapshot) -> None:
        for w in list(self._watchers.get(group, ())):
            try:
                w.callback(snap)
            except Exception:  # one broken watcher must not starve the others
                log.exception("snapshot watcher for group %r failed", group)

    def describe(self) -> dict[str, Any]:
        return {
            g: {t: s.version for t, s in snap.types.items()} for g, snap in self._snapshots.items()
        }


def _build_type(
    type_url: str, items: Iterable[Message | Resource], old: TypeSnapshot | None
) -> TypeSnapshot:
    previous = old.resources if old is not None else {}
    built: list[Resource] = []
    same = True
    for item in items:
        r = item if isinstance(item, Resource) else Resource.from_message(type_url, item)
        prev = previous.get(r.name)
        if prev is not None and prev.body == r.body:
            r = prev  # keep identity so diffs and memoised bodies stay valid
        else:
            same = False
        built.append(r)
    if old is not None and same and len(built) == len(previous):
        names = {r.name for r in built}
        if len(names) == len(built):
            return old
    return TypeSnapshot(type_url, built)
