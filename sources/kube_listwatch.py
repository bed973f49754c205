"""The list+watch loops of a Kubernetes source (`ListWatchSource`), shared by the
registry source (`sources.kubernetes`) and the policy source (`sources.kube_policies`).

One loop per `Resource` (a kind in one namespace, or all), over `aiohttp`, reading raw
JSON. The semantics are client-go's reflector's:

- list (paged), then watch from the list's resourceVersion with
  `allowWatchBookmarks=true` and a randomised `timeoutSeconds`; every request has a
  read timeout;
- a watch that ends normally (server timeout, bookmark, connection drop after the
  stream was up) is resumed from the last resourceVersion seen — an event's or a
  bookmark's — without a list;
- 410 Gone, as an HTTP status or as an ERROR event, means that resourceVersion is too
  old: relist and rebuild (the subclass's `_rebuild`, then its `_publish_all`, which
  must publish nothing when nothing changed);
- resourceVersions are opaque strings, only ever sent back;
- any other failure: `catalog.set_error` (the last good state stays served), then a
  retry after an exponential backoff with jitter. The first success clears the error.
  An API server that cannot be reached is one outage for every loop (sources.base's
  Outage): one prober sends `GET /version` with backoff and every loop resumes the
  moment it answers;
- 404 (`NotFound`) goes to `_not_found`: an error like any other here; the policy
  source overrides it, since a CRD the cluster does not have is not an error there.

Nothing is published until every loop's first list has succeeded (`_synced`), so
readiness waits for the whole first state. What a subclass supplies: how one watch
event changes its store (`_apply`), how a complete list rebuilds it (`_rebuild`), and
how it publishes everything (`_publish_all`) or what some events changed (`_publish`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

import aiohttp

from sources.base import Backoff, Catalog, Outage
from sources.kube_api import (
    ApiError,
    Gone,
    NotFound,
    Resource,
    Timing,
    check,
    describe,
    watch_lines,
)
from sources.kube_config import KubeConfigError, KubeConnection
from sources.kube_mapping import resource_version
from xds_server import __version__, metrics

log = logging.getLogger("sources.kubernetes")

K = TypeVar("K", bound=Hashable)  # what a subclass's store is keyed by


class ListWatchSource(Generic[K]):
    """Runs one list+watch loop per resource in `self.resources`; see the module doc."""

    def __init__(
        self, connection: KubeConnection, catalog: Catalog, name: str, timing: Timing
    ) -> None:
        self.connection = connection
        self.catalog = catalog
        self.name = name
        self.timing = timing
        self.resources: list[Resource] = []
        self.outage = Outage(
            Backoff(timing.backoff_initial, timing.backoff_max), self._probe, self._probe_failed
        )
        self._synced = False
        self._session: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        """Forever: every list+watch loop, each with its own retries."""
        headers = {"Accept": "application/json", "User-Agent": f"xds-server/{__version__}"}
        connector = aiohttp.TCPConnector(ssl=self.connection.ssl_context or False)
        async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
            self._session = session
            try:
                async with asyncio.TaskGroup() as tg:
                    for res in self.resources:
                        tg.create_task(self._loop(res), name=f"{self.name}-{res.label}")
            finally:
                self.outage.close()
                self._closed()
                self._session = None

    # --- what a subclass supplies ------------------------------------------------------

    def _apply(self, res: Resource, kind: str, obj: dict[str, Any]) -> set[K]:
        """Apply one ADDED/MODIFIED/DELETED event; the keys it changed (to `_publish`)."""
        raise NotImplementedError

    def _rebuild(self, res: Resource, objs: list[dict[str, Any]]) -> None:
        """A complete list of `res`: its part of the store becomes exactly `objs`."""
        raise NotImplementedError

    def _publish_all(self) -> None:
        raise NotImplementedError

    def _publish(self, keys: set[K]) -> None:
        raise NotImplementedError

    def _headers(self, res: Resource, watching: bool) -> dict[str, str]:
        return self.connection.headers()

    def _closed(self) -> None:
        """run() ends."""

    def _recovered(self) -> None:
        """Every loop works again after an error."""
        self.catalog.mark_synced(self.name)

    async def _not_found(self, res: Resource, exc: NotFound, backoff: Backoff) -> bool:
        """A 404 (an error by default); whether to relist."""
        metrics.KUBE_WATCH_RESTARTS.labels(self.name, res.kind, "error").inc()
        self._failed(res, describe(exc))
        await asyncio.sleep(backoff.next())
        return False

    # --- the loop of one resource --------------------------------------------------

    async def _loop(self, res: Resource) -> None:
        backoff = Backoff(self.timing.backoff_initial, self.timing.backoff_max)
        need_list = True
        gone_streak = 0
        while True:
            try:
                if need_list:
                    items, rv = await self._list(res)
                    self._listed(res, items, rv)
                    need_list = False
                loop = asyncio.get_running_loop()
                began = loop.time()
                events = await self._watch(res)
                gone_streak = 0
                quick = loop.time() - began < 1.0 and events == 0
                metrics.KUBE_WATCH_RESTARTS.labels(self.name, res.kind, "closed").inc()
                if quick:  # a server or proxy closing every watch at once: no hot loop
                    await asyncio.sleep(backoff.next())
                else:
                    backoff.reset()
            except Gone:
                metrics.KUBE_WATCH_RESTARTS.labels(self.name, res.kind, "gone").inc()
                log.info("%s: resourceVersion %s is gone (410); relisting", res.label, res.rv)
                need_list = True
                gone_streak += 1
                if gone_streak > 1:  # relisting at once is normal; in a loop it is not
                    await asyncio.sleep(backoff.next())
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                # The API server cannot be reached: one outage for every loop.
                metrics.KUBE_WATCH_RESTARTS.labels(self.name, res.kind, "error").inc()
                self._failed(res, describe(exc))
                await self.outage.wait()
            except NotFound as exc:
                need_list = await self._not_found(res, exc, backoff) or need_list
            except (aiohttp.ClientError, ApiError, KubeConfigError) as exc:
                metrics.KUBE_WATCH_RESTARTS.labels(self.name, res.kind, "error").inc()
                self._failed(res, describe(exc))
                await asyncio.sleep(backoff.next())
            except ValueError as exc:  # undecodable JSON: the store may have missed an event
                metrics.KUBE_WATCH_RESTARTS.labels(self.name, res.kind, "error").inc()
                self._failed(res, f"invalid JSON from the API server: {exc}")
                need_list = True
                await asyncio.sleep(backoff.next())
            except Exception as exc:  # a bug here must not end the watch
                log.exception("%s: unexpected error", res.label)
                metrics.KUBE_WATCH_RESTARTS.labels(self.name, res.kind, "error").inc()
                self._failed(res, f"internal error: {type(exc).__name__}: {exc}")
                need_list = True
                await asyncio.sleep(backoff.next())

    def _get(self, res: Resource, params: dict[str, str], read_timeout: float) -> Any:
        """A GET of the resource, to be used as `async with`."""
        assert self._session is not None, "run() has not started"
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.timing.connect_timeout, sock_read=read_timeout
        )
        headers = self._headers(res, "watch" in params)
        url = self.connection.server + res.path
        return self._session.get(url, params=params, headers=headers, timeout=timeout)

    async def _list(self, res: Resource) -> tuple[list[Any], str | None]:
        items: list[Any] = []
        params = {"limit": str(self.timing.page_size)}
        if res.selector:
            params["labelSelector"] = res.selector
        while True:
            async with self._get(res, params, self.timing.request_timeout) as resp:
                await check(resp, f"list {res.label}")
                body = json.loads(await resp.read())
            if not isinstance(body, dict):
                raise ApiError(f"list {res.label}: the response is not a list object")
            items.extend(body.get("items") or ())
            meta = body.get("metadata") or {}
            if not meta.get("continue"):
                rv = meta.get("resourceVersion")
                return items, rv if isinstance(rv, str) and rv else None
            params["continue"] = str(meta["continue"])

    async def _watch(self, res: Resource) -> int:
        """One watch until the server ends it; the number of events it carried."""
        seconds = int(random.uniform(1.0, 2.0) * self.timing.watch_timeout)
        params = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": str(seconds)}
        if res.rv is not None:
            params["resourceVersion"] = res.rv
        if res.selector:
            params["labelSelector"] = res.selector
        events = 0
        async with self._get(res, params, seconds + self.timing.watch_read_grace) as resp:
            await check(resp, f"watch {res.label}")
            self._connected(res)
            try:
                events = await self._stream(res, resp)
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                # The connection broke after the watch was up (an API server restart, a
                # load balancer's idle timeout): resume like a normal close. If the API
                # server is really gone, connecting again fails and that is reported.
                log.info("%s: watch connection lost (%s); resuming", res.label, describe(exc))
        return events

    async def _stream(self, res: Resource, resp: aiohttp.ClientResponse) -> int:
        events = 0
        async for lines in watch_lines(resp):
            changed: set[K] = set()
            try:
                for line in lines:
                    if line.strip():
                        events += 1
                        changed |= self._event(res, json.loads(line))
            finally:  # what was applied before a 410 or a bad line is published
                if self._synced and changed:
                    self._publish(changed)
        return events

    def _event(self, res: Resource, event: Any) -> set[K]:
        """Apply one watch event to the store; the keys it may have changed."""
        kind = event.get("type") if isinstance(event, dict) else None
        obj = event.get("object") if isinstance(event, dict) else None
        if not isinstance(obj, dict):
            raise ValueError(f"watch event without an object: {str(event)[:200]}")
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone
            raise ApiError(
                f"watch {res.label}: error event {obj.get('code')} {obj.get('reason', '')}: "
                f"{obj.get('message', '')}".strip()
            )
        rv = resource_version(obj)
        if rv is not None:
            res.rv = rv
        if kind == "BOOKMARK":
            return set()
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            log.debug("%s: ignored event type %r", res.label, kind)
            return set()
        return self._apply(res, kind, obj)

    def _listed(self, res: Resource, items: list[Any], rv: str | None) -> None:
        """A full list of one resource: its part of the store is rebuilt, then published."""
        if res.listed:
            metrics.KUBE_RELISTS.labels(self.name, res.kind).inc()
        self._rebuild(res, [obj for obj in items if isinstance(obj, dict)])
        res.rv = rv
        res.listed = True
        self.outage.up()
        log.info("%s: listed %d objects", res.label, len(items))
        if self._synced or all(r.listed for r in self.resources):
            self._publish_all()

    # --- health --------------------------------------------------------------------

    def _failed(self, res: Resource, message: str) -> None:
        if message != res.error:
            log.warning("%s: %s; keeping the last good state, retrying", res.label, message)
        res.error = message
        self.catalog.set_error(self.name, f"{res.label}: {message}")

    def _report_failing(self) -> None:
        """After a publish: another resource still failing keeps the source stale."""
        failing = [r for r in self.resources if r.error is not None]
        if failing:
            self.catalog.set_error(self.name, f"{failing[0].label}: {failing[0].error}")

    async def _probe(self) -> None:
        """Whether the API server answers at all (`/version` is readable by anyone)."""
        assert self._session is not None, "run() has not started"
        timeout = aiohttp.ClientTimeout(total=self.timing.connect_timeout * 2)
        url = self.connection.server + "/version"
        async with self._session.get(url, headers=self.connection.headers(), timeout=timeout):
            pass  # any HTTP answer: the server is there (a 401/403 shows in the loops)

    def _probe_failed(self, exc: BaseException) -> None:
        message = f"cannot reach the API server: {describe(exc)}"
        self.catalog.set_error(self.name, message)

    def _connected(self, res: Resource) -> None:
        self.outage.up()
        if res.error is None:
            return
        log.info("%s: watching again (was: %s)", res.label, res.error)
        res.error = None
        if self._synced and all(r.error is None for r in self.resources):
            self._recovered()
