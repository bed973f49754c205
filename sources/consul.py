"""The Consul source: Consul's catalog, health and config entries, followed by blocking
queries (the loop and its failure rules: sources.consul_watches; the config entries:
sources.consul_entries_watch).

One watch on `/v1/catalog/services` decides which services exist; each selected
service gets its own watch on `/v1/health/service/<name>`, mapped to the model by
sources.consul_mapping. Blocking-query rules (Consul's "Blocking Queries" page and
DESIGN §6), each kept here:

- send `?index=N&wait=…`; the HTTP read timeout is wait * 17/16 plus a margin, since
  Consul adds up to wait/16 of jitter to the wait;
- an index that goes backwards (snapshot restore, a new cluster behind the same
  address) resets the watch to 0: the next query answers at once with fresh data;
- an index of 0 is clamped to 1, so a buggy answer cannot turn the loop into a busy one;
- a response is not a change: the mapped result is compared with what was published;
- each watch waits at least `MIN_INTERVAL` between its queries, and backs off
  exponentially with jitter after errors;
- new watches (startup, or after an outage) start at `watch_rate` per second, so
  thousands of services do not hit the agent at the same instant.

Outages: any failed query marks the source stale (catalog.set_error) and the last good
state stays served. A query that finds Consul unreachable (or leaderless) puts every
watch on the source's shared `Outage`: one prober sends `/v1/status/leader` (cheap, not
blocking, needs no ACL) with exponential backoff, and when it is answered every watch
resumes its blocking query at once — so an agent that is down sees one probe per
backoff step, and a change made after it returns is seen within one backoff step
(`BACKOFF_CAP`), not after a blocking query's whole wait. When Consul answers again
with what it had, nothing is re-published. The first full state is published at once,
when the catalog and every selected service have answered (readiness, DESIGN §6).

Config entries: service-defaults (else proxy-defaults) `Protocol` sets a service's
protocol over its instances' meta `protocol`; the first full state waits for every
kind's first list, so proxies never see a service with the protocol it is about to
lose. A change of entries compiles them again and republishes the services whose
protocol it changes; so does a change of an instance's meta protocol (the chains'
protocol checks read it).

Removals go through sources.hold: one catalog answer that drops more than the
threshold of the services is held. A health answer with no instance at all for a
service the catalog still lists waits for the catalog (Consul moves both indexes when
a service's last instance goes; an ACL-filtered token gets both empty): the service is
removed with the catalog's answer, in one piece and under the hold's rule, rather than
first published with no endpoints ("no healthy upstream" until the catalog catches up).
A second empty health answer in a row confirms the removal on its own.

Connect sidecars (sources.consul_connect): a ``connect-proxy`` service's answer says
which instances its proxies front; those instances are published reached through
their sidecars, and republished when the proxies change.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import consul
import consul.aio

from sources.base import Catalog
from sources.consul_config import WATCHED_KINDS as CONFIG_KINDS
from sources.consul_connect import ProxyRegistration, sidecar_proxies, with_sidecars
from sources.consul_connection import (
    BACKOFF_CAP,
    DEFAULT_ADDRESS,
    BlockingIndex,
    ConsulConfig,
    ConsulConfigError,
    describe,
)
from sources.consul_entries_watch import ConfigEntriesWatch
from sources.consul_mapping import DEFAULT_PROTOCOL, meta_protocol, to_entry, with_protocol
from sources.consul_watches import ConsulWatches
from sources.hold import DEFAULT_HOLD, GuardedPublisher, HoldPolicy
from xds_server import metrics
from xds_server.model import DEFAULT_NAMESPACE, ServiceEntry, ServiceKey

__all__ = [
    "BACKOFF_CAP",
    "DEFAULT_ADDRESS",
    "BlockingIndex",
    "ConsulConfig",
    "ConsulConfigError",
    "ConsulSource",
    "describe",
]

log = logging.getLogger("sources.consul")

KIND = "consul"
_CATALOG = "/v1/catalog/services"
# Consul's own servers register as service "consul" (server RPC, port 8300): not a service
# anyone routes HTTP to.
_SKIPPED = frozenset({"consul"})


@dataclass
class _Watch:
    task: asyncio.Task[None]
    answered: bool = False
    port: int | None = None  # the service's port number so far (consul_mapping.service_port)
    entry: ServiceEntry | None = field(default=None)  # the current view of the service
    empty: bool = False  # the last answer had no instance: waiting for the catalog
    meta_protocol: str | None = None  # what its instances' meta says (consul_mapping)
    # The last answer's instances and what to_entry made of them before sidecars were
    # attached; the connect-proxy instances among them (sources.consul_connect).
    instances: Sequence[Mapping[str, Any]] = ()
    base: ServiceEntry | None = None
    proxies: tuple[ProxyRegistration, ...] = ()


class ConsulSource(ConsulWatches):
    """Publishes the services of one Consul datacenter to the catalog."""

    def __init__(
        self,
        catalog: Catalog,
        config: ConsulConfig,
        *,
        name: str = "consul",
        hold: HoldPolicy = DEFAULT_HOLD,
    ) -> None:
        super().__init__(catalog, config, name)
        self._watches: dict[str, _Watch] = {}
        self._wanted: set[str] = set()  # the services of the catalog's last answer
        self._catalog_answered = False
        self._unanswered = 0  # watches that have not answered once (a count: O(1) per answer)
        self.publisher = GuardedPublisher(catalog, name, hold, self._lookup, self._prune)
        catalog.register(name, KIND)
        self.entries = ConfigEntriesWatch(catalog, name, KIND)
        self.entries.on_change = self._entries_changed
        self.status_names = (name, self.entries.name)
        self._protocols: dict[ServiceKey, str] = {}  # set by config entries
        # Destination service → proxy service → its sidecar registrations.
        self._proxies: dict[str, dict[str, tuple[ProxyRegistration, ...]]] = {}

    async def run(self) -> None:
        """Forever: watch Consul and publish what changed."""
        self._client = client = self._connect()
        log.info("watching Consul at %s (services %s)", self.config.address, self._selection())
        config_watches = [
            asyncio.create_task(self._watch_config(client, kind), name=f"consul:config:{kind}")
            for kind in CONFIG_KINDS
        ]
        try:
            await self._watch_catalog(client)
        finally:
            # Stopping is not deregistering: cancel the watches and publish nothing.
            self.outage.close()
            self.publisher.close()
            tasks = [*config_watches, *(w.task for w in self._watches.values())]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._watches.clear()
            metrics.CONSUL_WATCHES.labels(self.name).set(0)
            await self._client.close()

    def _selection(self) -> str:
        out = ",".join(self.config.services)
        return out + (f" tagged {','.join(self.config.tags)}" if self.config.tags else "")

    # -- the catalog watch -----------------------------------------------------------

    async def _watch_catalog(self, client: consul.aio.Consul) -> None:
        async def query(index: int) -> tuple[str | int | None, Any]:
            return await client.catalog.services(index=index, wait=self.config.wait_param)  # type: ignore[no-any-return]

        def answer(services: Any) -> None:
            self._catalog_answer(client, self._select(services or {}))
            self._catalog_answered = True

        await self.follow(_CATALOG, query, answer)

    async def _watch_config(self, client: consul.aio.Consul, kind: str) -> None:
        async def query(index: int) -> tuple[str | int | None, Any]:
            return await self.entries.query(client, self.config, kind, index)

        await self.follow(
            self.entries.path(kind),
            query,
            lambda entries: self.entries.answer(kind, entries),
            watch=f"config:{kind}",
        )

    def _entries_changed(self) -> None:
        """A kind's config entries changed (every kind has answered)."""
        if self._synced:
            self._recompile()
        else:
            self._maybe_synced()

    def _recompile(self) -> None:
        """Compiles the config entries again; republishes the services whose protocol
        they change."""
        before, self._protocols = self._protocols, self.entries.compile(self._meta_protocols())
        if self._failing:  # publishing marked the config source synced: it is still stale
            self.catalog.set_error(self.entries.name, next(iter(self._failing.values())))
        changed = {k for k in before.keys() | self._protocols.keys()}
        changed = {k for k in changed if before.get(k) != self._protocols.get(k)}
        for key in changed:
            watch = self._watches.get(key.name)
            if watch is not None and watch.entry is not None:
                watch.entry = with_protocol(watch.entry, self._protocol(key.name, watch))
        if self._synced and changed:
            self.publisher.update({k: self._lookup(k) for k in changed})

    def _protocol(self, name: str, watch: _Watch) -> str:
        """A service's protocol: config entries', else its instances' meta, else http."""
        return self._protocols.get(entry_key(name)) or watch.meta_protocol or DEFAULT_PROTOCOL

    def _meta_protocols(self) -> dict[ServiceKey, str]:
        """Each service's protocol without config entries: its meta's, else http. The
        chains compile against the protocol this source serves a service with, and that
        is http (consul_mapping), not Consul's tcp, when nothing sets one."""
        return {
            entry_key(name): w.meta_protocol or DEFAULT_PROTOCOL
            for name, w in self._watches.items()
            if w.answered and name in self._wanted
        }

    def _catalog_answer(self, client: consul.aio.Consul, now_wanted: set[str]) -> None:
        gone, back = self._wanted - now_wanted, now_wanted - self._wanted
        for name in sorted(back):
            if name not in self._watches:  # a held service's watch is still running
                self._start_watch(client, name)
        self._wanted = now_wanted
        changes: dict[ServiceKey, ServiceEntry | None] = {entry_key(n): None for n in gone}
        for name in now_wanted:
            watch = self._watches[name]
            if name in back:  # back while its removal is held: its last instances stand
                if watch.entry is not None:
                    changes[entry_key(name)] = watch.entry
            elif watch.empty and watch.entry is not None:  # the catalog confirms it
                watch.entry = None
                changes[entry_key(name)] = None
        if self._synced and changes:
            self.publisher.update(changes)
        self._prune()

    def _prune(self) -> None:
        """Stop the watches of services that left the catalog, unless their removal is
        held: a held service's watch keeps running, so the view is current when the
        hold ends or the service returns."""
        held = {k.name for k in self.publisher.held}
        for name in [n for n in self._watches if n not in self._wanted and n not in held]:
            self._stop_watch(name)

    def _lookup(self, key: ServiceKey) -> ServiceEntry | None:
        """The current view of one service: the catalog lists it and it has instances."""
        watch = self._watches.get(key.name)
        if watch is None or key.name not in self._wanted:
            return None
        return watch.entry

    def _select(self, services: Mapping[str, Sequence[str] | None]) -> set[str]:
        required = set(self.config.tags)
        return {
            name
            for name, tags in services.items()
            if name not in _SKIPPED
            and any(fnmatch.fnmatchcase(name, p) for p in self.config.services)
            and required <= set(tags or ())
        }

    def _start_watch(self, client: consul.aio.Consul, name: str) -> None:
        task = asyncio.create_task(self._watch_service(client, name), name=f"consul:{name}")
        self._watches[name] = _Watch(task)
        self._unanswered += 1
        metrics.CONSUL_WATCHES.labels(self.name).set(len(self._watches) + 1)

    def _stop_watch(self, name: str) -> None:
        watch = self._watches.pop(name, None)
        if watch is None:
            return
        watch.task.cancel()
        if watch.proxies:
            self._set_proxies(name, watch, ())
        if not watch.answered:
            self._unanswered -= 1
        self._clear_failure(name)
        metrics.CONSUL_WATCHES.labels(self.name).set(len(self._watches) + 1)
        if self._synced and watch.entry is not None:
            log.info("consul: service %s deregistered", name)
        self._maybe_synced()

    # -- one service's watch -----------------------------------------------------------

    async def _watch_service(self, client: consul.aio.Consul, name: str) -> None:
        async def query(index: int) -> tuple[str | int | None, Any]:
            return await client.health.service(  # type: ignore[no-any-return]
                name, index=index, wait=self.config.wait_param, tag=list(self.config.tags) or None
            )

        await self.follow(
            f"/v1/health/service/{name}",
            query,
            lambda instances: self._answer(name, instances or []),
            watch=name,
            paced=True,
        )

    def _answer(self, name: str, instances: Sequence[Mapping[str, Any]]) -> None:
        watch = self._watches.get(name)
        if watch is None:
            return
        first = not watch.answered
        if first:
            watch.answered = True
            self._unanswered -= 1
        if not instances and not first and watch.entry is not None:
            # No instance at all: the catalog's answer decides, unless the catalog lists
            # the service still and this is the second empty answer in a row.
            if not watch.empty or name not in self._wanted:
                watch.empty = True
                return
        watch.empty = False
        meta = meta_protocol(instances)
        recompile = self._synced and (first or meta != watch.meta_protocol)
        watch.meta_protocol = meta
        entry = to_entry(
            name,
            instances,
            source=self.name,
            datacenter=self.config.datacenter or "",
            previous_port=watch.port,
            protocol=self._protocols.get(entry_key(name)),
        )
        if not instances:
            entry = None  # a second empty answer in a row: the service has no instance
        if entry is not None:
            watch.port = entry.service.ports[0].port
        watch.instances, watch.base = instances, entry
        entry = with_sidecars(entry, instances, self._proxies_of(name))
        proxies = sidecar_proxies(instances)
        if proxies != watch.proxies:
            self._set_proxies(name, watch, proxies)
        if entry != watch.entry:  # a response is not a change
            watch.entry = entry
            if self._synced:
                self.publisher.update({entry_key(name): self._lookup(entry_key(name))})
        if recompile:  # the chains' protocol checks read the instances' meta protocol
            self._recompile()

    # -- Connect sidecars --------------------------------------------------------------

    def _proxies_of(self, destination: str) -> list[ProxyRegistration]:
        return [p for regs in self._proxies.get(destination, {}).values() for p in regs]

    def _set_proxies(
        self, name: str, watch: _Watch, proxies: tuple[ProxyRegistration, ...]
    ) -> None:
        """Service `name`'s sidecar registrations are now `proxies`: the services they
        front (before or now) are published again with their sidecars."""
        destinations = {p.destination for p in (*watch.proxies, *proxies)}
        watch.proxies = proxies
        for destination in destinations:
            held = self._proxies.setdefault(destination, {})
            held[name] = tuple(p for p in proxies if p.destination == destination)
            if not held[name]:
                del held[name]
            if not held:
                del self._proxies[destination]
        changes: dict[ServiceKey, ServiceEntry | None] = {}
        for destination in destinations - {name}:
            target = self._watches.get(destination)
            if target is None or target.base is None:
                continue
            entry = with_sidecars(target.base, target.instances, self._proxies_of(destination))
            if entry is not None:
                entry = with_protocol(entry, self._protocol(destination, target))
            if entry != target.entry:
                target.entry = entry
                changes[entry_key(destination)] = self._lookup(entry_key(destination))
        if self._synced and changes:
            self.publisher.update(changes)

    def _maybe_synced(self) -> None:
        if self._synced or not self._catalog_answered:
            return
        if self._unanswered or not self.entries.listed:
            return
        # The first full state in one piece: proxies get every service at once, with
        # the protocols and chains of the config entries.
        self._recompile()
        self._synced = True
        view = {
            entry_key(name): w.entry
            for name, w in self._watches.items()
            if w.entry is not None and name in self._wanted
        }
        self.publisher.replace(view)
        if self._failing:
            self._set_error(next(iter(self._failing.values())))
        endpoints = sum(len(e.endpoints) for e in view.values())
        log.info(
            "consul: synced %d services, %d endpoints from %s",
            len(view),
            endpoints,
            self.config.address,
        )


def entry_key(name: str) -> ServiceKey:
    return ServiceKey(DEFAULT_NAMESPACE, name)
