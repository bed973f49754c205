"""Holding a registry's sudden mass removal of services instead of obeying it at once.

A Consul token that loses `service:read` gets an empty (ACL-filtered) catalog; an API
server that answers a list with nothing empties a Kubernetes view. Applied at once,
either removes every service from every proxy. So the Consul and Kubernetes sources
publish through a `GuardedPublisher`: when one update would remove more than
`threshold` of the services the source has published (0 turns the guard off), the
removals are held — the previous entries stay served — for `period`, the source is
shown HOLDING (catalog.set_holding: `xdsctl sources`, /readyz warnings, metrics), and
when the period ends the source's *current* view decides: what is still gone is
removed, what came back stays. A view restored during the hold ends it with nothing
published. The file registry is exempt: an edit is the operator's intent.

Changes that are not removals (new services, endpoints of the services that remain)
apply at once during a hold: they are the registry's current, positive information,
and holding them would serve stale endpoints for services that are alive. A held
service that shows up again leaves the hold, with its current entry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sources.base import Catalog
from xds_server.model import ServiceEntry, ServiceKey

log = logging.getLogger("sources.hold")

DEFAULT_THRESHOLD = 0.5
DEFAULT_PERIOD = 60.0


@dataclass(frozen=True)
class HoldPolicy:
    """When a removal is held (`threshold`: a fraction of the source's services; 0: never)
    and for how long (`period`, seconds)."""

    threshold: float = DEFAULT_THRESHOLD
    period: float = DEFAULT_PERIOD

    def holds(self, published: int, removing: int) -> bool:
        """Exactly `threshold` of the services is an ordinary removal; more is held."""
        return self.threshold > 0 and removing > 0 and removing > self.threshold * published


DEFAULT_HOLD = HoldPolicy()
Lookup = Callable[[ServiceKey], ServiceEntry | None]


class GuardedPublisher:
    """A source's publications to the catalog, with mass removals held.

    `published` is what the source has handed to the catalog, held entries included.
    `lookup(key)` is the source's current view of one service (None: not there), read
    when a hold ends. `after_hold()` runs once a hold has ended and its removals (if
    any) were published, e.g. so a source can stop watching what is gone.
    """

    def __init__(
        self,
        catalog: Catalog,
        source: str,
        policy: HoldPolicy,
        lookup: Lookup,
        after_hold: Callable[[], None] = lambda: None,
    ) -> None:
        self.catalog = catalog
        self.source = source
        self.policy = policy
        self.lookup = lookup
        self.after_hold = after_hold
        self.published: dict[ServiceKey, ServiceEntry] = {}
        self.held: set[ServiceKey] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._until = 0.0  # when the current hold ends (time.time())

    @property
    def holding(self) -> bool:
        return bool(self.held)

    def replace(self, view: Mapping[ServiceKey, ServiceEntry]) -> None:
        """The source's complete view (a first sync, a relist): catalog.replace, except
        for held removals, whose previous entries are published with it."""
        removing = self.published.keys() - view.keys()  # held keys are published
        entries = dict(view)
        if self._hold(removing):
            entries.update((k, self.published[k]) for k in self.held)
        else:
            self._end_hold()
        self.published = entries
        self.catalog.replace(self.source, entries.values())

    def update(self, changes: Mapping[ServiceKey, ServiceEntry | None]) -> None:
        """Some services' current view (None: gone): catalog.upsert/remove, removals held
        when, with those already held, they are more than the threshold allows."""
        removing = {k for k, e in changes.items() if e is None and k in self.published}
        restored = {k for k, e in changes.items() if e is not None}
        removing |= self.held - restored
        held = self._hold(removing)
        for entry in changes.values():
            if entry is not None:
                self._upsert(entry)
        if not held:
            for key in sorted(removing):
                self._remove(key)
            self._end_hold()

    def close(self) -> None:
        """The source stops: the hold's timer with it (nothing is published)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- internals -------------------------------------------------------------------

    def _hold(self, removing: set[ServiceKey]) -> bool:
        """Whether `removing` is held; starts or updates the hold if so."""
        if not self.policy.holds(len(self.published), len(removing)):
            return False
        first = not self.held
        self.held = removing
        total = len(self.published)
        if first:
            self._timer = asyncio.get_running_loop().call_later(self.policy.period, self._expire)
            self._until = time.time() + self.policy.period
            log.warning(
                "%s: %d of %d services would be removed at once; holding the removal for %gs"
                " (--registry-hold), serving the previous state",
                self.source, len(removing), total, self.policy.period,
            )  # fmt: skip
        reason = (
            f"{len(removing)} of {total} services would be removed at once (more than"
            f" {self.policy.threshold:.0%}); serving the previous state until"
            f" {time.strftime('%H:%M:%S', time.localtime(self._until))}, then applying"
            " what is still gone"
        )
        self.catalog.set_holding(self.source, reason, len(removing))
        return True

    def _end_hold(self) -> None:
        if not self.held and self._timer is None:
            return
        self.close()
        self.held = set()
        self.catalog.set_holding(self.source, None, 0)

    def _expire(self) -> None:
        """The hold's period is over: the source's current view of each held service
        decides (removals that are still true apply; what came back stays)."""
        self._timer = None
        held, removed = self.held, 0
        self.held = set()
        for key in sorted(held):
            entry = self.lookup(key)
            if entry is None:
                removed += 1
                self._remove(key)
            else:
                self._upsert(entry)
        log.warning(
            "%s: hold over: %d of %d held services still gone, removed",
            self.source, removed, len(held),
        )  # fmt: skip
        self.catalog.set_holding(self.source, None, 0)
        self.after_hold()

    def _upsert(self, entry: ServiceEntry) -> None:
        if self.published.get(entry.key) == entry:
            return  # a response is not a change
        self.published[entry.key] = entry
        self.catalog.upsert(self.source, entry)

    def _remove(self, key: ServiceKey) -> None:
        if self.published.pop(key, None) is not None:
            self.catalog.remove(self.source, key)
