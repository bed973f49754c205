"""Writes HTTPRoute/GRPCRoute `status.parents[]` (Accepted, ResolvedRefs) to the API
server, from the one replica that holds the Lease (`sources.kube_lease_client`).

Fed by the route watch: `update(routes, services)` hands over the latest raw objects and
what Services exist; a pass, debounced so a burst of events makes one, computes our
entries (`sources.kube_route_status`) and PATCHes the `/status` subresource of each
route whose entries differ, as a JSON merge patch carrying the resourceVersion it was
computed from. `status.parents` is an atomic list (a merge patch, like server-side
apply, replaces it whole), so the resourceVersion is what keeps another controller's
concurrent write from being lost: the API server answers 409, we re-read the route
(GET on `/status`), merge again and retry. Writes are rate limited (`qps`). A failure
is logged once per route and message, counted, and retried after a backoff; it never
stops the writer or the source feeding it.

RBAC: get and patch on `httproutes/status` and `grpcroutes/status`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from sources.base import Backoff
from sources.gateway_api import API_GROUP, CONTROLLER_NAME, any_namespace
from sources.gateway_api.status import Permitted, ServicePorts
from sources.kube_api import ApiError, describe
from sources.kube_config import KubeConfigError, KubeConnection
from sources.kube_lease_client import LeaseElector, refused
from sources.kube_route_status import (
    PLURALS,
    ParseCache,
    RouteId,
    desired_parents,
    keyed,
    merge_parents,
)
from xds_server import __version__, metrics

log = logging.getLogger("sources.kube_route_status")

MERGE_PATCH = "application/merge-patch+json"
CONFLICT_RETRIES = 3


def status_path(rid: RouteId) -> str:
    kind, namespace, name = rid
    return f"/apis/{API_GROUP}/v1/namespaces/{namespace}/{PLURALS[kind]}/{name}/status"


def _rv(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata")
    rv = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
    return str(rv) if rv is not None else None


class Deleted(Exception):
    """404: the route was deleted under us; nothing to write."""


class NotLeader(Exception):
    """The Lease was lost while this write waited for its turn."""


class Stale(Exception):
    """409: the route changed since the version we merged into."""


class RouteStatusWriter:
    """See the module doc. `run()` also runs the Lease elector, on the same session."""

    def __init__(
        self,
        connection: KubeConnection,
        elector: LeaseElector | None = None,
        *,
        controller: str = CONTROLLER_NAME,
        permitted: Permitted = any_namespace,
        debounce: float = 1.0,
        qps: float = 20.0,
        backoff: Backoff | None = None,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_notes: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.connection = connection
        self.on_notes = on_notes  # e.g. the policy source's notes in `xdsctl sources`
        self._notes: list[str] = []
        self._leader = False
        self.elector = elector or LeaseElector(connection)
        self.controller = controller
        self.permitted = permitted
        self.debounce = debounce
        self.interval = 1.0 / qps if qps > 0 else 0.0
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.wall = wall
        self.writes = 0  # PATCHes the API server accepted
        self.failures = 0  # PATCHes or re-reads that failed (conflicts not counted)
        self.passes = 0  # passes over every route completed as leader
        self.errors: dict[RouteId, str] = {}  # the last failure of each route, logged once
        self._routes: dict[RouteId, Mapping[str, Any]] = {}
        self._services: ServicePorts = lambda namespace, name: None
        self._cache = ParseCache()
        # route → (our entries last written, resourceVersions known to predate that
        # write): the watch may hand the old object back before our write reaches it.
        self._sent: dict[RouteId, tuple[list[dict[str, Any]], set[str | None]]] = {}
        self._wake = asyncio.Event()
        self._next_write = 0.0
        self._session: aiohttp.ClientSession | None = None
        self.elector.subscribe(self._leadership)

    # --- the interface the route watch uses ---------------------------------------------

    def update(
        self,
        routes: Mapping[RouteId, Mapping[str, Any]] | Iterable[Mapping[str, Any]],
        services: ServicePorts | None = None,
    ) -> None:
        """The current routes (raw objects, as listed or watched; keyed by `RouteId` or
        not) and, if given, a new way to look Services up. Cheap: the work happens in
        the next pass."""
        self._routes = {rid: obj for rid, obj in keyed(routes).items() if rid[0] in PLURALS}
        if services is not None:
            self._services = services
        self._wake.set()

    def refresh(self) -> None:
        """Services changed: statuses may too (a backend appeared or went away)."""
        self._wake.set()

    def notes(self) -> list[str]:
        """Who writes route status, and the routes whose status could not be written."""
        lease = f"Lease {self.elector.namespace}/{self.elector.name}"
        if self.elector.is_leader():
            head = (
                f"route status ({self.controller}): written by this replica ({lease}); "
                f"{self.writes} written, {self.failures} failed"
            )
        else:
            holder = self.elector.holder or "no replica yet"
            head = f"route status ({self.controller}): written by {holder} ({lease})"
            if self.elector.error:
                head += f"; this replica cannot take part: {self.elector.error}"
        errors = [
            f"status of {k} {ns}/{n} not written: {m}"
            for (k, ns, n), m in sorted(self.errors.items())
        ]
        return [head, *errors]

    def _tell(self) -> None:
        notes = self.notes()
        if self.on_notes is not None and notes != self._notes:
            self.on_notes(notes)
        self._notes = notes

    def state(self) -> dict[str, Any]:
        """For `xdsctl sources` and the admin API."""
        return {
            "controller": self.controller,
            "lease": f"{self.elector.namespace}/{self.elector.name}",
            "identity": self.elector.identity,
            "leader": self.elector.is_leader(),
            "holder": self.elector.holder,
            "writes": self.writes,
            "failures": self.failures,
            "passes": self.passes,
            "errors": {"/".join(rid): msg for rid, msg in sorted(self.errors.items())},
        }

    # --- running -------------------------------------------------------------------------

    async def run(self) -> None:
        headers = {"User-Agent": f"xds-server/{__version__}"}
        connector = aiohttp.TCPConnector(ssl=self.connection.ssl_context or False)
        async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
            self._session = session
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self.elector.run(session), name="route-status-lease")
                    tg.create_task(self._loop(), name="route-status-writer")
            finally:
                self._session = None
                metrics.ROUTE_STATUS_LEADER.set(0)

    def _leadership(self, leader: bool) -> None:
        metrics.ROUTE_STATUS_LEADER.set(1 if leader else 0)
        if not leader:
            self.errors.clear()  # the next leader has its own
        self._tell()
        if leader and not self._leader:
            self._wake.set()  # write what the last leader left different
        self._leader = leader

    async def _loop(self) -> None:
        retry: float | None = None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), retry)
            except TimeoutError:
                pass
            # Coalesce a burst of route events and catalog changes (refresh): a pass
            # over 5,000 routes takes ~0.1 s of CPU, so at most one a second by default.
            await asyncio.sleep(self.debounce)
            self._wake.clear()
            retry = None
            if not self.elector.is_leader():
                continue
            try:
                ok = await self.write_pass()
            except Exception:  # a bug must not end the writer, nor the source feeding it
                log.exception("route status: a pass failed; retrying")
                ok = False
            if ok:
                self.backoff.reset()
            else:
                retry = self.backoff.next()

    async def write_pass(self) -> bool:
        """Write every route whose entries differ; False if some write failed."""
        routes, services = self._routes, self._services
        desired = desired_parents(
            routes, services, cache=self._cache, permitted=self.permitted,
            controller=self.controller,
        )  # fmt: skip
        for rid in [r for r in self._sent if r not in routes]:
            del self._sent[rid]
        for rid in [r for r in self.errors if r not in routes]:
            del self.errors[rid]
        ok = True
        for rid, entries in desired.items():
            if not self.elector.is_leader():
                return True  # the new leader writes what is left
            ok = await self._reconcile(rid, routes[rid], entries) and ok
        self.passes += 1
        self._tell()
        return ok

    async def _reconcile(
        self, rid: RouteId, obj: Mapping[str, Any], entries: list[dict[str, Any]]
    ) -> bool:
        sent = self._sent.get(rid)
        if sent is not None and sent[0] == entries and _rv(obj) in sent[1]:
            return True  # an object older than our last write of these entries
        stale: set[str | None] = set()
        try:
            for _ in range(CONFLICT_RETRIES):
                merged = merge_parents(obj, entries, self.wall(), self.controller)
                if merged is None:
                    break
                stale.add(_rv(obj))
                try:
                    written = await self._patch(rid, merged, _rv(obj))
                except Stale:
                    metrics.ROUTE_STATUS_WRITES.labels("conflict").inc()
                    obj = await self._get(rid)
                    continue
                self.writes += 1
                metrics.ROUTE_STATUS_WRITES.labels("written").inc()
                stale.discard(_rv(written))
                self._sent[rid] = (entries, stale)
                break
            else:
                raise ApiError(f"still conflicting after {CONFLICT_RETRIES} attempts")
        except Deleted:
            self._sent.pop(rid, None)
            return True
        except NotLeader:
            return True  # the new leader writes it
        except (ApiError, KubeConfigError, aiohttp.ClientError, TimeoutError, OSError,
                ValueError) as exc:  # fmt: skip
            self.failures += 1
            metrics.ROUTE_STATUS_WRITES.labels("failed").inc()
            message = describe(exc)
            if self.errors.get(rid) != message:
                log.warning("%s %s/%s: status not written: %s", *rid, message)
            self.errors[rid] = message
            return False
        if self.errors.pop(rid, None) is not None:
            log.info("%s %s/%s: status written again", *rid)
        return True

    async def _patch(
        self, rid: RouteId, parents: list[dict[str, Any]], rv: str | None
    ) -> Mapping[str, Any]:
        delay = self._next_write - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self._next_write = time.monotonic() + self.interval
        if not self.elector.is_leader():
            raise NotLeader
        body: dict[str, Any] = {"status": {"parents": parents}}
        if rv is not None:  # optimistic concurrency: 409 if the route changed since
            body["metadata"] = {"resourceVersion": rv}
        return await self._request("PATCH", rid, body)

    async def _get(self, rid: RouteId) -> Mapping[str, Any]:
        return await self._request("GET", rid)

    async def _request(self, method: str, rid: RouteId, body: Any = None) -> Mapping[str, Any]:
        assert self._session is not None, "run() has not started"
        headers = {**self.connection.headers(), "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = MERGE_PATCH
            data = json.dumps(body).encode()
        url = self.connection.server + status_path(rid)
        async with self._session.request(
            method, url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=30)
        ) as resp:
            if resp.status == 404:
                raise Deleted
            if resp.status == 409:
                raise Stale
            if resp.status >= 300:
                error = await refused(resp, f"{method} {status_path(rid)}")
                if resp.status == 403:
                    error = ApiError(f"{error} (needs get and patch on {PLURALS[rid[0]]}/status)")
                raise error
            answer = json.loads(await resp.read())
            return answer if isinstance(answer, Mapping) else {}
