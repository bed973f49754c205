"""The route status writer against kmock (sources.kube_route_status_writer with its Lease
elector): a good HTTPRoute gets Accepted/ResolvedRefs True with our controller name and
observedGeneration, one naming a missing Service ResolvedRefs False/BackendNotFound;
another controller's entry survives, also a concurrent write of it (409, re-read);
two replicas write each status once; when the leader dies the other takes over after
the lease expires; a refused write is logged once and retried.

The route watch is stood in for by `feed`: it lists the routes kmock holds and hands
them to every writer, as the Kubernetes source will on each change."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from sources.gateway_api import CONTROLLER_NAME
from sources.kube_config import from_kubeconfig
from sources.kube_lease import LeaderElection
from sources.kube_lease_client import LeaseElector
from sources.kube_route_status import route_id
from sources.kube_route_status_writer import RouteStatusWriter
from tests.gateway_objects import route, to
from tests.harness.kubeapi import GRPC_ROUTES, HTTP_ROUTES, LEASES, WritableKubeApi
from tests.harness.waiting import async_wait_for
from tests.test_kube_route_status import OTHER, SERVICES, services


@pytest.fixture
def api() -> Iterator[WritableKubeApi]:
    server = WritableKubeApi().start()
    try:
        yield server
    finally:
        server.stop()


def http_route(name: str, *backends: str, generation: int = 1) -> dict[str, Any]:
    obj = route(to(*backends), name=name)
    obj["metadata"]["generation"] = generation
    return obj


def writer(
    api: WritableKubeApi, tmp_path: Path, identity: str, *, release: bool = True
) -> RouteStatusWriter:
    connection = from_kubeconfig([api.kubeconfig(tmp_path / f"{identity}.yaml")])
    # A short lease so a takeover happens within the test; the ratios are the defaults'.
    election = LeaderElection(identity, lease_duration=2, renew_deadline=1.4, retry_period=0.3)
    elector = LeaseElector(connection, election, namespace="xds-system", release_on_cancel=release)
    return RouteStatusWriter(connection, elector, debounce=0.05, qps=100)


def routes(api: WritableKubeApi) -> dict[Any, dict[str, Any]]:
    objs = api.list_objects(HTTP_ROUTES) + api.list_objects(GRPC_ROUTES)
    return {route_id(o): o for o in objs}


@contextlib.asynccontextmanager
async def running(
    api: WritableKubeApi, *writers: RouteStatusWriter, feed_every: float | None = 0.1
) -> AsyncIterator[None]:
    """The writers run, fed the routes every `feed_every` s (the watch's stand-in), or
    once (None)."""

    async def feed() -> None:
        while True:
            current = await asyncio.to_thread(routes, api)
            for w in writers:
                w.update(current, services)
            if feed_every is None:
                return
            await asyncio.sleep(feed_every)

    tasks = [asyncio.create_task(w.run()) for w in writers] + [asyncio.create_task(feed())]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert task.cancelled() or task.result() is None  # never died


def ours(api: WritableKubeApi, name: str) -> dict[str, Any] | None:
    obj = api.get_object(HTTP_ROUTES, "shop", name) or {}
    mine = [p for p in obj.get("status", {}).get("parents", [])
            if p["controllerName"] == CONTROLLER_NAME]  # fmt: skip
    return mine[0] if mine else None


def conditions(entry: dict[str, Any] | None) -> list[tuple[str, str, str, int | None]]:
    return [
        (c["type"], c["status"], c["reason"], c.get("observedGeneration"))
        for c in (entry or {}).get("conditions", [])
    ]


def status_patches(api: WritableKubeApi, name: str) -> int:
    return len(api.writes("PATCH", f"/httproutes/{name}/status"))


async def test_good_route_accepted_missing_backend_not_found(
    api: WritableKubeApi, tmp_path: Path
) -> None:
    good = http_route("good", "web-v1", "web-v2", generation=3)
    good["status"] = {"parents": [OTHER]}
    api.put_object(HTTP_ROUTES, good)
    api.put_object(HTTP_ROUTES, http_route("broken", "web-v1", "gone"))
    w = writer(api, tmp_path, "a")
    told: list[list[str]] = []
    w.on_notes = told.append
    async with running(api, w):
        await async_wait_for(lambda: w.writes == 2, timeout=15)
    assert told[0] == [  # on taking the Lease, before writing
        "route status (xds-server.io/mesh): written by this replica "
        "(Lease xds-system/xds-server-status); 0 written, 0 failed"
    ]
    assert any("; 2 written, 0 failed" in notes[0] for notes in told)  # the pass that wrote
    assert told[-1] == [  # released on stop
        "route status (xds-server.io/mesh): written by no replica yet "
        "(Lease xds-system/xds-server-status)"
    ]
    entry = ours(api, "good")
    assert entry is not None
    assert entry["parentRef"] == {"group": "", "kind": "Service", "name": "web",
                                  "namespace": "shop", "port": 80}  # fmt: skip
    assert conditions(entry) == [
        ("Accepted", "True", "Accepted", 3),
        ("ResolvedRefs", "True", "ResolvedRefs", 3),
    ]
    assert all(c["lastTransitionTime"].endswith("Z") for c in entry["conditions"])
    assert (api.get_object(HTTP_ROUTES, "shop", "good") or {})["status"]["parents"][0] == OTHER
    assert conditions(ours(api, "broken")) == [
        ("Accepted", "True", "Accepted", 1),
        ("ResolvedRefs", "False", "BackendNotFound", 1),
    ]
    lease = api.get_object(LEASES, "xds-system", "xds-server-status")
    assert lease is not None and lease["spec"]["holderIdentity"] == ""  # released on stop


async def test_two_replicas_write_each_status_once(api: WritableKubeApi, tmp_path: Path) -> None:
    for name in ("r1", "r2", "r3"):
        api.put_object(HTTP_ROUTES, http_route(name, "web-v1"))
    a, b = writer(api, tmp_path, "a"), writer(api, tmp_path, "b")
    async with running(api, a, b):
        await async_wait_for(lambda: all(ours(api, n) for n in ("r1", "r2", "r3")), timeout=15)
        # Both keep being fed and the leader keeps renewing for several lease periods.
        await asyncio.sleep(2.5)
        # Never two leaders (one, unless a stalled machine let a renewal lapse).
        assert [a.elector.is_leader(), b.elector.is_leader()].count(True) <= 1
        leaders = [w.elector.identity for w in (a, b) if w.elector.is_leader()]
        for w in (a, b):
            if leaders and w.elector.identity not in leaders:
                assert f"written by {leaders[0]} (Lease" in w.notes()[0]
    assert [status_patches(api, n) for n in ("r1", "r2", "r3")] == [1, 1, 1]
    assert a.writes + b.writes == 3


async def test_the_other_replica_takes_over_when_the_leader_dies(
    api: WritableKubeApi, tmp_path: Path
) -> None:
    api.put_object(HTTP_ROUTES, http_route("web", "web-v1"))
    a = writer(api, tmp_path, "a", release=False)  # killed: no release
    b = writer(api, tmp_path, "b")
    async with running(api, a):
        await async_wait_for(lambda: ours(api, "web"), timeout=15)
    assert a.writes == 1
    lease = api.get_object(LEASES, "xds-system", "xds-server-status")
    assert lease is not None and lease["spec"]["holderIdentity"] == "a"
    # While nobody leads, the route changes; b waits the lease out, then writes it.
    api.call(api._request("PATCH", "/apis/gateway.networking.k8s.io/v1/namespaces/shop/"
                          "httproutes/web", {"metadata": {"generation": 2},
                                             "spec": {"rules": [to("gone")]}}))  # fmt: skip
    async with running(api, b):
        await async_wait_for(lambda: b.writes == 1, timeout=15)  # counted once answered
        assert ("ResolvedRefs", "False", "BackendNotFound", 2) in conditions(ours(api, "web"))
        assert b.elector.is_leader()
        lease = api.get_object(LEASES, "xds-system", "xds-server-status")
        assert lease is not None
        assert (lease["spec"]["holderIdentity"], lease["spec"]["leaseTransitions"]) == ("b", 1)
    assert (a.writes, b.writes) == (1, 1)
    assert status_patches(api, "web") == 2


async def test_a_concurrent_write_by_another_controller_is_kept(
    api: WritableKubeApi, tmp_path: Path
) -> None:
    """The writer merges into an old copy of the route; meanwhile another controller
    adds its entry. The PATCH gets 409, the writer re-reads and keeps that entry."""
    created = api.put_object(HTTP_ROUTES, http_route("web", "web-v1"))
    api.call(api._request("PATCH", "/apis/gateway.networking.k8s.io/v1/namespaces/shop/"
                          "httproutes/web/status", {"status": {"parents": [OTHER]}}))  # fmt: skip
    w = writer(api, tmp_path, "a")
    task = asyncio.create_task(w.run())
    try:
        await async_wait_for(w.elector.is_leader, timeout=15)
        w.update({route_id(created): created}, services)  # the stale copy, no status
        await async_wait_for(lambda: ours(api, "web"), timeout=15)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    parents = (api.get_object(HTTP_ROUTES, "shop", "web") or {})["status"]["parents"]
    assert parents[0] == OTHER
    assert len(parents) == 2
    assert status_patches(api, "web") == 3  # the other controller's, our 409, our retry
    assert len(api.writes("GET", "/httproutes/web/status")) == 1


async def test_the_old_copy_handed_back_after_a_write_is_not_written_again(
    api: WritableKubeApi, tmp_path: Path
) -> None:
    """The watch may deliver the route as it was before our write; that is not a reason
    to write again (nor to draw a 409)."""
    created = api.put_object(HTTP_ROUTES, http_route("web", "web-v1"))
    w = writer(api, tmp_path, "a")
    async with running(api, w, feed_every=None):
        await async_wait_for(lambda: w.writes == 1, timeout=15)
        before = w.passes
        w.update({route_id(created): created}, services)
        await async_wait_for(lambda: w.passes > before, timeout=15)
    assert status_patches(api, "web") == 1
    assert api.writes("GET", "/httproutes/web/status") == []


async def test_a_backend_appearing_is_written_on_refresh(
    api: WritableKubeApi, tmp_path: Path
) -> None:
    """Services are looked up live: a refresh (the catalog changed) is enough for the
    route to be written again, without new route objects."""
    created = api.put_object(HTTP_ROUTES, http_route("web", "web-v1", "web-v3"))
    known = dict(SERVICES)
    w = writer(api, tmp_path, "a")
    task = asyncio.create_task(w.run())
    try:
        w.update([created], lambda namespace, name: known.get((namespace, name)))
        await async_wait_for(lambda: w.writes == 1, timeout=15)
        assert conditions(ours(api, "web"))[1][:3] == ("ResolvedRefs", "False", "BackendNotFound")
        known[("shop", "web-v3")] = frozenset({80})
        w.refresh()
        await async_wait_for(lambda: w.writes == 2, timeout=15)
        assert conditions(ours(api, "web"))[1][:3] == ("ResolvedRefs", "True", "ResolvedRefs")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_refused_write_is_logged_once_and_retried(
    api: WritableKubeApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api.put_object(HTTP_ROUTES, http_route("web", "web-v1"))
    forbidden = 'httproutes.gateway.networking.k8s.io "web" is forbidden'
    api.script(lambda k: k.refusals.update({("PATCH", "/web/status"): (403, forbidden)}))
    w = writer(api, tmp_path, "a")
    w.backoff.base = w.backoff.cap = 0.1
    with caplog.at_level(logging.WARNING, "sources.kube_route_status"):
        async with running(api, w, feed_every=None):  # retried with no new event
            await async_wait_for(lambda: w.failures >= 3, timeout=15)
            notes, errors = w.notes(), w.state()["errors"]
    assert w.writes == 0
    assert w.notes()[1:] == []  # no longer the writer: its errors are not the next one's
    warnings = [r.getMessage() for r in caplog.records if r.name == "sources.kube_route_status"]
    assert warnings == [
        "HTTPRoute shop/web: status not written: PATCH /apis/gateway.networking.k8s.io/v1/"
        "namespaces/shop/httproutes/web/status: HTTP 403: httproutes.gateway.networking.k8s.io "
        '"web" is forbidden (needs get and patch on httproutes/status)'
    ]
    assert notes[1:] == [
        "status of HTTPRoute shop/web not written: "
        + warnings[0].split(": status not written: ")[1]
    ]
    assert errors == {"HTTPRoute/shop/web": warnings[0].split(": ", 1)[1]
                                   .removeprefix("status not written: ")}  # fmt: skip


async def test_a_leader_that_cannot_renew_stops_then_resumes(
    api: WritableKubeApi, tmp_path: Path
) -> None:
    """The API server unreachable: past the renew deadline the leader no longer counts
    itself leader (another replica may take over once the lease expires); when it
    answers again, the Lease still names it and it renews."""
    w = writer(api, tmp_path, "a")
    task = asyncio.create_task(w.run())
    try:
        await async_wait_for(w.elector.is_leader, timeout=15)
        api.cut()
        await async_wait_for(lambda: not w.elector.is_leader(), timeout=15)
        assert "this replica cannot take part" in w.notes()[0]
        api.restore()
        await async_wait_for(w.elector.is_leader, timeout=15)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    lease = api.get_object(LEASES, "xds-system", "xds-server-status")
    assert lease is not None and lease["spec"]["leaseTransitions"] == 0  # renewed, not retaken
