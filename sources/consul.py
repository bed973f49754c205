"""The Consul source: Consul's catalog and health, followed by blocking queries.

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

Removals go through sources.hold: one catalog answer that drops more than the
threshold of the services is held. A health answer with no instance at all for a
service the catalog still lists waits for the catalog (Consul moves both indexes when
a service's last instance goes; an ACL-filtered token gets both empty): the service is
removed with the catalog's answer, in one piece and under the hold's rule, rather than
first published with no endpoints ("no healthy upstream" until the catalog catches up).
A second empty health answer in a row confirms the removal on its own.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import consul
import consul.aio

from sources.base import Backoff, Catalog, Outage
from sources.consul_config import KINDS as CONFIG_KINDS
from sources.consul_connection import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    DEFAULT_ADDRESS,
    BlockingIndex,
    ConsulConfig,
    ConsulConfigError,
    Pacer,
    consul_down,
    describe,
    pause,
)
from sources.consul_entries_watch import ConfigEntriesWatch
from sources.consul_mapping import DEFAULT_PROTOCOL, meta_protocol, to_entry, with_protocol
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
T = TypeVar("T")
_CATALOG = "/v1/catalog/services"
_PROBE = "/v1/status/leader"
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


class ConsulSource:
    """Publishes the services of one Consul datacenter to the catalog."""

    def __init__(
        self,
        catalog: Catalog,
        config: ConsulConfig,
        *,
        name: str = "consul",
        hold: HoldPolicy = DEFAULT_HOLD,
    ) -> None:
        self.catalog = catalog
        self.config = config
        self.name = name
        self._watches: dict[str, _Watch] = {}
        self._wanted: set[str] = set()  # the services of the catalog's last answer
        self._failing: dict[str, str] = {}  # watch ("catalog" or a service) → its error
        self._catalog_answered = False
        self._unanswered = 0  # watches that have not answered once (a count: O(1) per answer)
        self._synced = False
        self._pacer = Pacer(config.watch_rate)
        self._client: consul.aio.Consul | None = None
        self.outage = Outage(Backoff(BACKOFF_BASE, BACKOFF_CAP), self._probe, self._probe_failed)
        self.publisher = GuardedPublisher(catalog, name, hold, self._lookup, self._prune)
        catalog.register(name, KIND)
        self.entries = ConfigEntriesWatch(catalog, name, KIND)
        self.entries.on_change = self._entries_changed
        self._protocols: dict[ServiceKey, str] = {}  # set by config entries

    @property
    def synced(self) -> bool:
        return self._synced

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

    def _connect(self) -> consul.aio.Consul:
        c = self.config
        parts = urlsplit(c.address)
        verify: bool | str = str(c.cacert) if c.cacert else c.verify
        cert = (str(c.client_cert), str(c.client_key)) if c.client_cert and c.client_key else None
        with warnings.catch_warnings():  # py-consul passes aiohttp deprecated arguments
            warnings.simplefilter("ignore", DeprecationWarning)
            client = consul.aio.Consul(
                host=parts.hostname,
                port=parts.port,
                scheme=parts.scheme,
                verify=verify,
                cert=cert,
                dc=c.datacenter,
                # One connection per blocking query: aiohttp's default pool of 100 would
                # queue the rest for a whole wait, and the queueing counts against the
                # read timeout.
                connections_limit=1 << 20,
                connections_timeout=c.read_timeout,
            )
        # py-consul lets CONSUL_HTTP_TOKEN override its argument; ours is already resolved
        # with the flag first.
        client.token = c.token
        return client

    def _selection(self) -> str:
        out = ",".join(self.config.services)
        return out + (f" tagged {','.join(self.config.tags)}" if self.config.tags else "")

    # -- the catalog watch -----------------------------------------------------------

    async def follow(
        self,
        path: str,
        query: Callable[[int], Awaitable[tuple[str | int | None, T]]],
        answer: Callable[[T], None],
        *,
        watch: str | None = None,
        paced: bool = False,
    ) -> None:
        """One blocking-query watch, forever, with the rules of the module docstring:
        `query(index)` → (X-Consul-Index, data), each answer handed to `answer`. `watch`
        names it in the source's failures (else `path`); `paced`: its starts go
        through the source's Pacer."""
        index = BlockingIndex()
        backoff = Backoff(BACKOFF_BASE, BACKOFF_CAP)
        name = watch or path
        while True:
            if paced and index.value == 0:
                await self._pacer.wait()
            started = time.monotonic()
            try:
                header, data = await query(index.value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(path, exc, watch=watch)
                await self._retry(exc, backoff, name)
                if paced:
                    await self._pacer.wait()
                continue
            backoff.reset()
            self.outage.up()
            if not index.update(header):
                self._reset(path)
            try:
                answer(data)
            except Exception:  # a bug in mapping must not end the watch
                log.exception("consul: cannot apply the answer of %s", path)
            self._succeeded(name)
            await pause(started)

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
        if entry != watch.entry:  # a response is not a change
            watch.entry = entry
            if self._synced:
                self.publisher.update({entry_key(name): self._lookup(entry_key(name))})
        if recompile:  # the chains' protocol checks read the instances' meta protocol
            self._recompile()

    async def _retry(self, exc: BaseException, backoff: Backoff, watch: str) -> None:
        """After a failed query: Consul unreachable or leaderless → wait with every other
        watch for the prober; any other error (this query's) → this watch's backoff."""
        if consul_down(exc):
            await self.outage.wait()
            # Consul answers again: the watch resumes its blocking query, which may not
            # return for a whole wait; the source is not stale meanwhile.
            self._clear_failure(watch)
        else:
            await asyncio.sleep(backoff.next())

    async def _probe(self) -> None:
        assert self._client is not None
        leader = await self._client.status.leader()
        if not leader:
            raise consul.ConsulException("No cluster leader")
        self._succeeded(_PROBE)

    def _probe_failed(self, exc: BaseException) -> None:
        self._failed(_PROBE, exc)

    # -- state of the source -----------------------------------------------------------

    def _failed(self, what: str, exc: BaseException, watch: str | None = None) -> None:
        message = describe(exc, self.config)
        first = not self._failing
        self._failing[watch or what] = message
        if first:
            log.warning("%s (%s); keeping the last good state", message, what)
        else:
            log.debug("%s (%s)", message, what)
        self._set_error(message)

    def _set_error(self, message: str) -> None:
        """Both catalog sources (services, config entries) read the one Consul."""
        self.catalog.set_error(self.name, message)
        self.catalog.set_error(self.entries.name, message)

    def _succeeded(self, watch: str) -> None:
        self._clear_failure(watch)
        self._maybe_synced()

    def _clear_failure(self, watch: str) -> None:
        if self._failing.pop(watch, None) is not None and not self._failing:
            log.info("Consul at %s answers again", self.config.address)
            if self._synced:  # clears the stale marks
                self.catalog.mark_synced(self.name)
                self.catalog.mark_synced(self.entries.name)

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

    def _reset(self, what: str) -> None:
        metrics.CONSUL_INDEX_RESETS.labels(self.name).inc()
        log.info("consul: index of %s went backwards; starting that watch over", what)


def entry_key(name: str) -> ServiceKey:
    return ServiceKey(DEFAULT_NAMESPACE, name)
