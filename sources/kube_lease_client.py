"""The Lease of `sources.kube_lease` over HTTP: read it, create or update it with the
resourceVersion read, every retry period; tell subscribers when leadership changes.

Where it lives: `POD_NAMESPACE` (set from the downward API, as other controllers read
it), else the connection's namespace (the service account's, in a pod). Who we are:
`POD_NAME`, else `<hostname>_<pid>`. RBAC: get, create and update on `leases` in
`coordination.k8s.io`, in that namespace.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from sources.kube_api import ApiError, describe
from sources.kube_config import KubeConfigError, KubeConnection
from sources.kube_lease import LEASE_NAME, Create, LeaderElection, LeaseRecord, Update, Wait

log = logging.getLogger("sources.kube_lease")


class Conflict(Exception):
    """409: the Lease changed since we read it (another replica wrote first)."""


def identity(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"


def lease_namespace(connection: KubeConnection, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get("POD_NAMESPACE") or connection.namespace or "default"


def lease_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return f"{base}/{name}" if name else base


async def refused(resp: aiohttp.ClientResponse, what: str) -> ApiError:
    """A non-2xx answer as one line: `what: HTTP 403: <the API server's message>`."""
    try:
        body = json.loads(await resp.read())
        message = str(body.get("message") or body.get("reason") or "")
    except (ValueError, AttributeError, aiohttp.ClientError):
        message = ""
    return ApiError(f"{what}: HTTP {resp.status}{': ' + message if message else ''}")


class LeaseElector:
    """Runs `LeaderElection` against the API server; `is_leader()` is safe to ask at
    any time (it expires on its own when renewals stop succeeding)."""

    def __init__(
        self,
        connection: KubeConnection,
        election: LeaderElection | None = None,
        *,
        name: str = LEASE_NAME,
        namespace: str | None = None,
        release_on_cancel: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.connection = connection
        self.election = election or LeaderElection(identity())
        self.name = name
        self.namespace = namespace or lease_namespace(connection)
        self.release_on_cancel = release_on_cancel
        self.clock, self.wall = clock, wall
        self.error: str | None = None  # the last failure, reported once
        self._subscribers: list[Callable[[bool], None]] = []
        self._seen: tuple[bool, str, str | None] = (False, "", None)  # leader, holder, error

    @property
    def identity(self) -> str:
        return self.election.identity

    @property
    def holder(self) -> str:
        record = self.election.record
        return record.holder if record is not None else ""

    def is_leader(self) -> bool:
        return self.election.is_leader(self.clock())

    def subscribe(self, callback: Callable[[bool], None]) -> None:
        """`callback(leader)` on every change of leadership, holder or error."""
        self._subscribers.append(callback)

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Forever: try to acquire or renew every retry period; release on cancel."""
        try:
            while True:
                await self.tick(session)
                await asyncio.sleep(self.election.retry_period)
        finally:
            await asyncio.shield(self._release(session))

    async def tick(self, session: aiohttp.ClientSession) -> None:
        """One read and, if the decision is to write, one write."""
        now = self.clock()
        try:
            lease = await self._request(session, "GET", lease_path(self.namespace, self.name))
            if lease is None:
                self.election.observed(None, None, now)
            else:
                meta = lease.get("metadata") or {}
                rv = meta.get("resourceVersion")
                self.election.observed(LeaseRecord.from_lease(lease), rv, now)
            action = self.election.plan(now, self.wall())
            if not isinstance(action, Wait):
                written = await self._write(session, action)
                meta = (written.get("metadata") or {}) if written else {}
                self.election.written(action.record, meta.get("resourceVersion"), now)
                if self.error is not None:
                    log.info("lease %s/%s: writing again", self.namespace, self.name)
                self.error = None
        except Conflict:
            log.debug("lease %s/%s: another replica wrote first", self.namespace, self.name)
        except (ApiError, KubeConfigError, aiohttp.ClientError, TimeoutError, OSError,
                ValueError) as exc:  # fmt: skip
            message = describe(exc)
            if message != self.error:
                log.warning("lease %s/%s: %s", self.namespace, self.name, message)
            self.error = message
        self._notify()

    def _notify(self) -> None:
        leader = self.is_leader()
        seen = (leader, self.holder, self.error)
        if seen == self._seen:
            return
        if leader != self._seen[0]:
            what = "took over" if leader else "stopped"
            log.info("lease %s/%s: %s status writing", self.namespace, self.name, what)
        self._seen = seen
        for callback in self._subscribers:
            callback(leader)

    def _lease(self, record: LeaseRecord, rv: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if rv is not None:
            meta["resourceVersion"] = rv
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": record.spec(),
        }

    async def _write(self, session: aiohttp.ClientSession, action: Create | Update) -> Any:
        if isinstance(action, Create):
            body = self._lease(action.record, None)
            return await self._request(session, "POST", lease_path(self.namespace), body)
        body = self._lease(action.record, action.resource_version)
        return await self._request(session, "PUT", lease_path(self.namespace, self.name), body)

    async def _release(self, session: aiohttp.ClientSession) -> None:
        action = self.election.release(self.wall())
        self.election.released()  # stop writing first: the release may not get through
        self._notify()
        if action is None or session.closed or not self.release_on_cancel:
            return
        try:
            async with asyncio.timeout(2.0):
                written = await self._write(session, action)
        except (ApiError, Conflict, aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.info("lease %s/%s: not released: %s", self.namespace, self.name, describe(exc))
            return
        log.info("lease %s/%s: released", self.namespace, self.name)
        rv = (written.get("metadata") or {}).get("resourceVersion") if written else None
        self.election.written(action.record, rv, self.clock())
        self._notify()

    async def _request(
        self, session: aiohttp.ClientSession, method: str, path: str, body: Any = None
    ) -> Any:
        """The answer's JSON; None for a GET that finds nothing."""
        what = f"{method} lease {self.namespace}/{self.name}"
        # A request must end well before the renew deadline, or a leader stuck in it
        # would keep believing it leads.
        timeout = aiohttp.ClientTimeout(total=self.election.renew_deadline / 2)
        headers = {**self.connection.headers(), "Accept": "application/json"}
        url = self.connection.server + path
        async with session.request(
            method, url, json=body, headers=headers, timeout=timeout
        ) as resp:
            if resp.status == 404 and method == "GET":
                return None
            if resp.status == 409:
                raise Conflict
            if resp.status >= 300:
                raise await refused(resp, what)
            return json.loads(await resp.read())
