"""The Kubernetes registry source: Services, EndpointSlices and Pods by list + watch.

One list-then-watch loop per (resource, namespace) — all namespaces by default — over
`aiohttp`, reading raw JSON (DESIGN §6: the official client's model deserialisation is
what makes large clusters slow). The semantics are client-go's reflector's:

- list (paged), then watch from the list's resourceVersion with
  `allowWatchBookmarks=true` and a randomised `timeoutSeconds`; every request has a
  read timeout;
- a watch that ends normally (server timeout, bookmark, connection drop after the
  stream was up) is resumed from the last resourceVersion seen — an event's or a
  bookmark's — without a list;
- 410 Gone, as an HTTP status or as an ERROR event, means that resourceVersion is too
  old: relist and rebuild. A rebuild publishes with `catalog.replace`, which notifies
  only about services that really changed, so a relist of an unchanged cluster pushes
  nothing;
- resourceVersions are opaque strings, only ever sent back;
- any other failure: `catalog.set_error` (the last good state stays served; the
  catalog never sees an empty state because the API server is unreachable), then a
  retry after an exponential backoff with jitter. The first success clears the error.
  An API server that cannot be reached is one outage for every loop (sources.base's
  Outage): one prober sends `GET /version` with backoff and every loop resumes the
  moment it answers, instead of each loop probing on its own schedule;
- an update (a relist, or one read of watch events) that would remove more than the
  threshold of the published services is held (sources.hold): the previous state is
  served for the hold period, then what is still gone is removed.

Nothing is published until every initial list (in every namespace) has succeeded, so
readiness waits for the whole first state. The label selector applies to Services;
EndpointSlices are joined to them through their `kubernetes.io/service-name` label;
Pods are watched as metadata only, for their labels (`sources.kube_pods`).
Mapping rules: `sources.kube_mapping`; connection settings: `sources.kube_config`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Iterable
from typing import Any

import aiohttp

from sources.base import Backoff, Catalog, Outage
from sources.hold import DEFAULT_HOLD, GuardedPublisher, HoldPolicy
from sources.kube_api import (
    DEFAULT_TIMING,
    ApiError,
    Gone,
    Key,
    Resource,
    Timing,
    check,
    describe,
    resource_path,
    watch_lines,
)
from sources.kube_config import KubeConfigError, KubeConnection
from sources.kube_mapping import (
    DEFAULT_CLUSTER_DOMAIN,
    KubeService,
    KubeSlice,
    build_entry,
    object_key,
    parse_service,
    parse_slice,
    resource_version,
)
from sources.kube_pods import METADATA_LIST, METADATA_WATCH, PodLabels, parse_pod
from xds_server import __version__, metrics
from xds_server.model import ServiceEntry, ServiceKey

log = logging.getLogger("sources.kubernetes")

KIND = "kubernetes"


class KubernetesSource:
    """Lists and watches Services, EndpointSlices and Pods; publishes to the catalog."""

    def __init__(
        self,
        connection: KubeConnection,
        catalog: Catalog,
        *,
        namespaces: Iterable[str] = (),
        label_selector: str | None = None,
        name: str = "kubernetes",
        cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
        timing: Timing = DEFAULT_TIMING,
        hold: HoldPolicy = DEFAULT_HOLD,
    ) -> None:
        self.connection = connection
        self.catalog = catalog
        self.name = name
        self.cluster_domain = cluster_domain
        self.timing = timing
        scopes: list[str | None] = list(dict.fromkeys(namespaces)) or [None]
        self.resources = [
            Resource(
                kind, ns, resource_path(kind, ns), label_selector if kind == "services" else None
            )
            for kind in ("services", "endpointslices", "pods")
            for ns in scopes
        ]
        self._services: dict[Key, KubeService] = {}
        self._slices: dict[Key, KubeSlice] = {}
        self._slices_of: dict[Key, set[Key]] = {}  # service key -> its slices' keys
        self.pods = PodLabels()
        self.publisher = GuardedPublisher(catalog, name, hold, self._lookup)
        self.outage = Outage(
            Backoff(timing.backoff_initial, timing.backoff_max), self._probe, self._probe_failed
        )
        self._skipped: dict[Key, str] = {}
        self._synced = False
        self._session: aiohttp.ClientSession | None = None
        catalog.register(name, KIND)

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
                self.publisher.close()
                self._session = None

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
        headers = self.connection.headers()
        if res.kind == "pods":  # their metadata only: see sources.kube_pods
            headers = {**headers, "Accept": METADATA_WATCH if "watch" in params else METADATA_LIST}
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
            changed: set[Key] = set()
            try:
                for line in lines:
                    if line.strip():
                        events += 1
                        changed |= self._event(res, json.loads(line))
            finally:  # what was applied before a 410 or a bad line is published
                self._publish(changed)
        return events

    # --- state ---------------------------------------------------------------------

    def _event(self, res: Resource, event: Any) -> set[Key]:
        """Apply one watch event to the store; the service keys it may have changed."""
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
        if res.kind == "pods":
            key, labels = parse_pod(obj)
            return self.pods.set(key, None if kind == "DELETED" else labels)
        key = object_key(obj)
        if res.kind == "services":
            return self._set_service(key, None if kind == "DELETED" else parse_service(obj))
        return self._set_slice(key, None if kind == "DELETED" else parse_slice(obj))

    def _set_service(self, key: Key, svc: KubeService | None) -> set[Key]:
        if svc is None:
            return {key} if self._services.pop(key, None) is not None else set()
        if self._services.get(key) == svc:
            return set()
        self._services[key] = svc
        return {key}

    def _set_slice(self, key: Key, sl: KubeSlice | None) -> set[Key]:
        old = self._slices.get(key)
        if old == sl:
            return set()
        changed: set[Key] = set()
        if old is not None:
            owner = (old.namespace, old.service)
            self._slices.pop(key)
            self.pods.unref(owner, old)
            members = self._slices_of.get(owner)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._slices_of[owner]
            changed.add(owner)
        if sl is not None:
            self._slices[key] = sl
            owner = (sl.namespace, sl.service)
            self._slices_of.setdefault(owner, set()).add(key)
            self.pods.ref(owner, sl)
            changed.add(owner)
        return changed

    def _listed(self, res: Resource, items: list[Any], rv: str | None) -> None:
        """A full list of one resource: its part of the store is rebuilt, then published."""
        if res.listed:
            metrics.KUBE_RELISTS.labels(self.name, res.kind).inc()
        objs = [obj for obj in items if isinstance(obj, dict)]
        if res.kind == "pods":
            self.pods.replace(res.owns, map(parse_pod, objs))
        elif res.kind == "services":
            for key in [k for k in self._services if res.owns(k)]:
                self._set_service(key, None)
            for obj in objs:
                self._set_service(object_key(obj), parse_service(obj))
        else:
            for key in [k for k in self._slices if res.owns(k)]:
                self._set_slice(key, None)
            for obj in objs:
                self._set_slice(object_key(obj), parse_slice(obj))
        res.rv = rv
        res.listed = True
        self.outage.up()
        log.info("%s: listed %d objects", res.label, len(items))
        if self._synced or all(r.listed for r in self.resources):
            self._publish_all()

    def _entry(self, key: Key) -> ServiceEntry | None:
        svc = self._services.get(key)
        reason = None if svc is None else svc.skip
        if reason != self._skipped.get(key):
            if reason is None:
                self._skipped.pop(key, None)
            else:
                self._skipped[key] = reason
                log.warning("%s: service %s.%s skipped: %s", self.name, key[1], key[0], reason)
            metrics.KUBE_SKIPPED_SERVICES.labels(self.name).set(len(self._skipped))
        if svc is None or reason is not None:
            return None
        slices = [self._slices[k] for k in self._slices_of.get(key, ())]
        return build_entry(svc, slices, self.name, self.cluster_domain, self.pods.labels)

    def _publish_all(self) -> None:
        entries: dict[Key, ServiceEntry] = {}
        for key in list(self._services) + list(self._skipped):
            entry = self._entry(key)
            if entry is not None:
                entries[key] = entry
        first = not self._synced
        self._synced = True
        # catalog.replace marks the source synced and clears its error
        self.publisher.replace({ServiceKey(*k): e for k, e in entries.items()})
        failing = [r for r in self.resources if r.error is not None]
        if failing:  # another resource is still failing: the state stays stale
            self.catalog.set_error(self.name, f"{failing[0].label}: {failing[0].error}")
        if first:
            endpoints = sum(len(e.endpoints) for e in entries.values())
            log.info(
                "%s: synced: %d services, %d endpoints (%d skipped)",
                self.name, len(entries), endpoints, len(self._skipped),
            )  # fmt: skip

    def _publish(self, keys: set[Key]) -> None:
        if not self._synced or not keys:
            return
        self.publisher.update({ServiceKey(*key): self._entry(key) for key in keys})

    def _lookup(self, key: ServiceKey) -> ServiceEntry | None:
        return self._entry((key.namespace, key.name))

    # --- health --------------------------------------------------------------------

    def _failed(self, res: Resource, message: str) -> None:
        if message != res.error:
            log.warning("%s: %s; keeping the last good state, retrying", res.label, message)
        res.error = message
        self.catalog.set_error(self.name, f"{res.label}: {message}")

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
            self.catalog.mark_synced(self.name)
