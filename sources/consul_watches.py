"""How the Consul source's watches run and fail: its client, the blocking-query loop
every watch runs (`ConsulWatches.follow`), the shared `Outage` prober, and the
failures that mark the source stale. The rules are listed in sources.consul's
docstring; what each watch's answers mean is the subclass's (sources.consul)."""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import consul
import consul.aio

from sources.base import Backoff, Catalog, Outage
from sources.consul_connection import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    BlockingIndex,
    ConsulConfig,
    Pacer,
    consul_down,
    describe,
    pause,
)
from xds_server import metrics

log = logging.getLogger("sources.consul")

T = TypeVar("T")
_PROBE = "/v1/status/leader"


class ConsulWatches:
    """The watches' machinery; `status_names` are the catalog sources a failure marks
    stale, `_maybe_synced` is called after each answer."""

    def __init__(self, catalog: Catalog, config: ConsulConfig, name: str) -> None:
        self.catalog = catalog
        self.config = config
        self.name = name
        self.status_names: tuple[str, ...] = (name,)
        self._failing: dict[str, str] = {}  # watch ("catalog" or a service) → its error
        self._synced = False
        self._pacer = Pacer(config.watch_rate)
        self._client: consul.aio.Consul | None = None
        self.outage = Outage(Backoff(BACKOFF_BASE, BACKOFF_CAP), self._probe, self._probe_failed)

    @property
    def synced(self) -> bool:
        return self._synced

    def _maybe_synced(self) -> None:
        """Publishes the first full state when every watch has answered (subclass)."""

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
        for name in self.status_names:
            self.catalog.set_error(name, message)

    def _succeeded(self, watch: str) -> None:
        self._clear_failure(watch)
        self._maybe_synced()

    def _clear_failure(self, watch: str) -> None:
        if self._failing.pop(watch, None) is not None and not self._failing:
            log.info("Consul at %s answers again", self.config.address)
            if self._synced:  # clears the stale marks
                for name in self.status_names:
                    self.catalog.mark_synced(name)

    def _reset(self, what: str) -> None:
        metrics.CONSUL_INDEX_RESETS.labels(self.name).inc()
        log.info("consul: index of %s went backwards; starting that watch over", what)
