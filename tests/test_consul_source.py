"""The Consul source against the Consul HTTP API emulator (no Envoy): watches, health,
outages, index rules, ACLs and filters, observed through the catalog it publishes to.

Registrations go through py-consul's own (requests) client, as an operator's tooling
would, in a worker thread so the source's event loop keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import consul
import pytest

from sources.consul import ConsulConfig, ConsulSource
from sources.hold import DEFAULT_HOLD, HoldPolicy
from tests.consul_emulator import ConsulEmulator
from tests.harness.e2e import answered_rounds
from tests.harness.waiting import async_wait_for
from xds_server import metrics
from xds_server.catalog import Catalog
from xds_server.model import ServiceEntry, ServiceKey

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0


@pytest.fixture
def emulator() -> Iterator[ConsulEmulator]:
    with ConsulEmulator() as emu:
        yield emu


def agent(emu: ConsulEmulator, token: str | None = None) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=emu.port, token=token)


def put(emu: ConsulEmulator, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(emu.url + path, data=json.dumps(body).encode(), method="PUT")
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        assert response.status == 200


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def register(
    emu: ConsulEmulator,
    name: str,
    port: int,
    *,
    sid: str | None = None,
    status: str = "passing",
    token: str | None = None,
    **kwargs: Any,
) -> str:
    sid = sid or f"{name}-{port}"
    check = {"CheckID": f"service:{sid}", "TTL": "30s", "Status": status}
    await call(
        agent(emu, token).agent.service.register,
        name,
        service_id=sid,
        address="127.0.0.1",
        port=port,
        check=check,
        **kwargs,
    )
    return sid


class Watched:
    """A running ConsulSource and the catalog it publishes to."""

    def __init__(self, emu: ConsulEmulator, hold: HoldPolicy = DEFAULT_HOLD, **config: Any) -> None:
        self.catalog = Catalog()
        self.changes = 0
        self.catalog.on_change(self._changed)
        config.setdefault("wait", 2.0)
        self.source = ConsulSource(self.catalog, ConsulConfig(address=emu.url, **config), hold=hold)

    def _changed(self) -> None:
        self.changes += 1

    @property
    def status(self) -> dict[str, Any]:
        (status,) = (s for s in self.catalog.sources() if s.name == "consul")
        return status.as_dict()

    def entry(self, name: str) -> ServiceEntry | None:
        return self.catalog.merged().get(ServiceKey("default", name))

    def health(self, name: str) -> dict[int, tuple[str, int]]:
        entry = self.entry(name)
        return {ep.port: (ep.health, ep.weight) for ep in entry.endpoints} if entry else {}


@contextlib.asynccontextmanager
async def running(
    emu: ConsulEmulator, *, synced: bool = True, **config: Any
) -> AsyncIterator[Watched]:
    """A ConsulSource on ``emu`` running for the block; by default the block starts once
    it has synced (published its first full state)."""
    watched = Watched(emu, **config)
    task = asyncio.create_task(watched.source.run())
    try:
        if synced:
            await async_wait_for(
                lambda: watched.status["synced"], WAIT, message=f"first sync: {watched.status}"
            )
        yield watched
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT)


def metric(counter: Any, *labels: str) -> float:
    return float(counter.labels(*labels)._value.get())


# --------------------------------------------------------------------------- tests


async def test_first_sync_publishes_every_service_at_once_and_makes_the_source_ready(
    emulator: ConsulEmulator,
) -> None:
    await register(emulator, "web", 8081)
    await register(emulator, "web", 8082)
    await register(emulator, "api", 9000, meta={"protocol": "grpc"})
    async with running(emulator) as w:
        # One publication of the whole state, not one per service (and one of the config
        # entries, first, so the services come with the protocols they set).
        assert w.changes == 2
        assert w.catalog.not_ready() == []
        assert w.health("web") == {8081: ("healthy", 1), 8082: ("healthy", 1)}
        api = w.entry("api")
        assert api is not None and api.service.ports[0].protocol == "grpc"
        # Consul's own servers' service is not routed to.
        assert w.entry("consul") is None


async def test_health_flips_are_followed(emulator: ConsulEmulator) -> None:
    sid = await register(emulator, "web", 8081, weights={"passing": 10, "warning": 2})
    await register(emulator, "web", 8082)
    a = agent(emulator)
    async with running(emulator) as w:
        assert w.health("web")[8081] == ("healthy", 10)
        await call(a.agent.check.ttl_warn, f"service:{sid}")
        await async_wait_for(
            lambda: w.health("web")[8081] == ("healthy", 2), WAIT, message="warning → weight 2"
        )
        await call(a.agent.check.ttl_fail, f"service:{sid}")
        await async_wait_for(
            lambda: w.health("web")[8081][0] == "unhealthy", WAIT, message="critical → unhealthy"
        )
        # The service keeps its cluster when no instance is healthy.
        await call(a.agent.check.ttl_fail, "service:web-8082")
        all_unhealthy = {("unhealthy", 10), ("unhealthy", 1)}
        await async_wait_for(
            lambda: set(w.health("web").values()) == all_unhealthy, WAIT, message="all unhealthy"
        )
        assert w.entry("web") is not None
        await call(a.agent.check.ttl_pass, f"service:{sid}")
        await async_wait_for(
            lambda: w.health("web")[8081] == ("healthy", 10), WAIT, message="passing again"
        )


async def test_registration_and_deregistration(emulator: ConsulEmulator) -> None:
    await register(emulator, "web", 8081)
    async with running(emulator) as w:
        sid = await register(emulator, "billing", 7000, tags=["v1"])
        await async_wait_for(lambda: w.entry("billing"), WAIT, message="billing registered")
        await call(agent(emulator).agent.service.deregister, sid)
        await async_wait_for(
            lambda: w.entry("billing") is None, WAIT, message="billing deregistered"
        )
        assert w.entry("web") is not None


async def test_outage_keeps_the_last_good_state_and_recovery_repushes_nothing(
    emulator: ConsulEmulator,
) -> None:
    for port in (8081, 8082):
        await register(emulator, "web", port)
    await register(emulator, "api", 9000)
    async with running(emulator) as w:
        before = dict(w.catalog.merged())
        changes = w.changes
        emulator.pause()
        await async_wait_for(lambda: w.status["stale"], WAIT, message="stale while Consul is down")
        assert "cannot reach Consul at" in w.status["error"]
        assert metric(metrics.SOURCE_STALE, "consul") == 1
        # Retries keep failing (each one counted); nothing is dropped meanwhile.
        errors = metric(metrics.SOURCE_ERRORS, "consul")
        await async_wait_for(
            lambda: metric(metrics.SOURCE_ERRORS, "consul") >= errors + 2, WAIT, message="retries"
        )
        assert dict(w.catalog.merged()) == before
        emulator.clear_request_log()
        emulator.resume()
        await async_wait_for(
            lambda: not w.status["stale"], WAIT, message="fresh again once Consul answers"
        )
        # Every watch has taken in an answer since (and asked again): had an answer
        # looked like a change, it would have been published by now.
        paths = ("/v1/catalog/services", "/v1/health/service/web", "/v1/health/service/api")
        await async_wait_for(
            lambda: all(answered_rounds(emulator.request_log(), p) for p in paths),
            WAIT,
            message="a round of each watch after the outage",
        )
        assert w.changes == changes, "recovery re-published the same state"
        assert dict(w.catalog.merged()) == before
        # The watches resumed from the index they had, as blocking queries.
        health = [r for r in emulator.request_log() if r.path.startswith("/v1/health/service/")]
        assert health and all(int(r.query["index"][0]) > 1 for r in health), health


async def test_no_leader_marks_the_source_stale_with_consuls_error(
    emulator: ConsulEmulator,
) -> None:
    await register(emulator, "web", 8081)
    async with running(emulator) as w:
        changes = w.changes
        emulator.set_no_leader(True)
        # Blocking queries only see it when they return: make them return now.
        await register(emulator, "web", 8082)
        await async_wait_for(lambda: w.status["stale"], WAIT, message="stale without a leader")
        assert "No cluster leader" in w.status["error"]
        emulator.set_no_leader(False)
        await async_wait_for(
            lambda: not w.status["stale"], WAIT, message="fresh with a leader again"
        )
        await async_wait_for(
            lambda: len(w.health("web")) == 2, WAIT, message="the registration made meanwhile"
        )
        assert w.changes == changes + 1


async def test_index_going_backwards_restarts_the_watch_without_a_push(
    emulator: ConsulEmulator,
) -> None:
    await register(emulator, "web", 8081)
    async with running(emulator) as w:
        resets = metric(metrics.CONSUL_INDEX_RESETS, "consul")
        changes = w.changes
        emulator.clear_request_log()
        emulator.reset_index(1)
        await async_wait_for(
            lambda: metric(metrics.CONSUL_INDEX_RESETS, "consul") >= resets + 2,
            WAIT,
            message="both watches saw the index go backwards",
        )

        # Each watch started over with a query that does not block (no index), took its
        # answer in and asked again: only then does "nothing published" mean anything.
        def reread(path: str) -> bool:
            rounds = answered_rounds(emulator.request_log(), path)
            return any("index" not in r.query for r in rounds)

        await async_wait_for(
            lambda: reread("/v1/catalog/services") and reread("/v1/health/service/web"),
            WAIT,
            message="non-blocking re-reads, taken in",
        )
        assert w.changes == changes
        assert not w.status["stale"]


async def test_index_zero_is_clamped_to_one(emulator: ConsulEmulator) -> None:
    await register(emulator, "web", 8081)
    # The first answers carry index 0 (a Consul bug clients must survive): the next
    # queries use index=1, which blocks once the real index is known, not index=0,
    # which would never block.
    emulator.zero_index_next(2)
    async with running(emulator) as w:
        await register(emulator, "web", 8082)
        await async_wait_for(lambda: len(w.health("web")) == 2, WAIT, message="second instance")
        log = emulator.request_log()
        assert any(r.query.get("index") == ["1"] for r in log), log
        assert not any(r.query.get("index") == ["0"] for r in log)


async def test_transient_errors_are_retried(emulator: ConsulEmulator) -> None:
    await register(emulator, "web", 8081)
    errors = metric(metrics.SOURCE_ERRORS, "consul")
    emulator.fail_next(2, 500, "rpc error", path_prefix="/v1/health/")
    emulator.drop_next(1, path_prefix="/v1/health/")
    async with running(emulator) as w:
        health = [r for r in emulator.request_log() if r.path == "/v1/health/service/web"]
        assert [r.status for r in health[:3]] == [0, 500, 500], health
        # aiohttp itself retries a GET whose reused connection was dropped, so the drop
        # may not reach the source; the two 500s do.
        assert metric(metrics.SOURCE_ERRORS, "consul") >= errors + 2
        assert not w.status["stale"]
        assert w.health("web") == {8081: ("healthy", 1)}


async def test_wait_plus_jitter_never_hits_the_read_timeout(emulator: ConsulEmulator) -> None:
    await register(emulator, "web", 8081)
    async with running(emulator, wait=0.5) as w:
        errors = metric(metrics.SOURCE_ERRORS, "consul")
        emulator.clear_request_log()
        # Several blocking rounds, each one up to wait * 17/16, answered and taken in.
        paths = ("/v1/catalog/services", "/v1/health/service/web")
        await async_wait_for(
            lambda: all(len(answered_rounds(emulator.request_log(), p)) >= 3 for p in paths),
            WAIT,
            message="three blocking rounds of each watch",
        )
        assert metric(metrics.SOURCE_ERRORS, "consul") == errors
        assert not w.status["stale"]


async def test_acl_token() -> None:
    with ConsulEmulator(acl_tokens={"s3cret"}) as emu:
        await register(emu, "web", 8081, token="s3cret")
        async with running(emu, token="s3cret") as w:
            assert w.entry("web") is not None
        async with running(emu, synced=False, token="wrong") as w:
            await async_wait_for(lambda: w.status["error"], WAIT, message="an error")
            assert not w.status["synced"]
            assert "ACL not found" in w.status["error"]
            assert "CONSUL_HTTP_TOKEN" in w.status["error"]
            assert "ACL not found" in " ".join(w.catalog.not_ready())


async def test_service_patterns_tags_and_kinds_select_what_is_watched(
    emulator: ConsulEmulator,
) -> None:
    await register(emulator, "web", 8081, tags=["public"])
    await register(emulator, "web-admin", 8082, tags=["internal"])
    await register(emulator, "api", 9000, tags=["public"])
    # A Connect sidecar of web: a service kind, not an ordinary service.
    sidecar = {
        "Name": "web-sidecar-proxy",
        "Kind": "connect-proxy",
        "Port": 21000,
        "Tags": ["public"],
        "Proxy": {"DestinationServiceName": "web"},
    }
    await call(put, emulator, "/v1/agent/service/register", sidecar)
    async with running(emulator, services=("web*",), tags=("public",)) as w:
        assert sorted(k.name for k in w.catalog.merged()) == ["web"]
        watched = {r.path for r in emulator.request_log() if r.path.startswith("/v1/health/")}
        assert "/v1/health/service/api" not in watched
        assert "/v1/health/service/web-admin" not in watched


async def test_stopping_before_the_first_sync_publishes_nothing_and_ends_every_watch(
    emulator: ConsulEmulator,
) -> None:
    await register(emulator, "web", 8081)
    await register(emulator, "api", 9000)
    emulator.fail_next(1000, 500, "rpc error", path_prefix="/v1/health/service/api")
    async with running(emulator, synced=False) as w:
        await async_wait_for(lambda: w.status["error"], WAIT, message="api's watch failing")
        assert not w.status["synced"]
    assert not w.status["synced"] and dict(w.catalog.merged()) == {}
    left = [t for t in asyncio.all_tasks() if t.get_name().startswith("consul:")]
    assert left == []


async def test_a_service_losing_its_last_instance_goes_in_one_change(
    emulator: ConsulEmulator,
) -> None:
    """Never published with no endpoints first (Envoy: "no healthy upstream") while the
    catalog watch catches up: the empty health answer waits for the catalog."""
    for name, port in (("web", 8081), ("db", 5432), ("api", 9000)):
        await register(emulator, name, port)
    async with running(emulator) as w:
        seen: list[int | None] = []

        def record() -> None:
            api = w.entry("api")
            seen.append(None if api is None else len(api.endpoints))

        w.catalog.on_change(record)
        # The health watch's answer first, as happens when the catalog's is later.
        emulator.slow(1.0, "/v1/catalog/services")
        await call(agent(emulator).agent.service.deregister, "api-9000")
        await async_wait_for(lambda: w.entry("api") is None, WAIT, message="api removed")
        assert seen == [None], seen  # one change: present with its endpoint → gone
        assert not w.status["holding"]  # 1 of 3: an ordinary removal


ACL_TOKEN = "s3cret"


@contextlib.asynccontextmanager
async def three_services_behind_acls(hold: float) -> AsyncIterator[tuple[ConsulEmulator, Watched]]:
    """An emulator with ACLs and web, db and api, watched with ACL_TOKEN (short waits)."""
    with ConsulEmulator(acl_tokens={ACL_TOKEN}) as emu:
        for name, port in (("web", 8081), ("db", 5432), ("api", 9000)):
            await register(emu, name, port, token=ACL_TOKEN)
        policy = HoldPolicy(threshold=0.5, period=hold)
        async with running(emu, token=ACL_TOKEN, wait=0.5, hold=policy) as w:
            yield emu, w


async def test_a_token_losing_service_read_is_held_then_restored_with_nothing_published() -> None:
    async with three_services_behind_acls(hold=60) as (emu, w):
        before, changes = dict(w.catalog.merged()), w.changes
        emu.set_service_read(ACL_TOKEN, [])  # the policy loses service:read
        await async_wait_for(lambda: w.status["holding"], WAIT, message="holding")
        assert w.status["held_removals"] == 3, w.status
        assert "3 of 3 services would be removed at once" in w.status["hold_reason"]
        assert w.status["stale"] is False  # Consul answers: empty, filtered
        # Several answers of every watch later, still the previous state, untouched.
        emu.clear_request_log()
        await async_wait_for(
            lambda: (
                all(
                    len(answered_rounds(emu.request_log(), f"/v1/health/service/{k.name}")) >= 2
                    for k in before
                )
                and len(answered_rounds(emu.request_log(), "/v1/catalog/services")) >= 2
            ),
            WAIT,
            message="two rounds of every watch while held",
        )
        assert dict(w.catalog.merged()) == before
        assert w.changes == changes
        emu.set_service_read(ACL_TOKEN, None)  # restored
        await async_wait_for(lambda: not w.status["holding"], WAIT, message="hold ended")
        assert dict(w.catalog.merged()) == before
        assert w.changes == changes


async def test_a_removal_still_true_when_the_hold_ends_applies() -> None:
    async with three_services_behind_acls(hold=1.0) as (emu, w):
        emu.set_service_read(ACL_TOKEN, ["web"])  # web only: 2 of 3 would go
        await async_wait_for(lambda: w.status["holding"], WAIT, message="holding")
        assert w.status["held_removals"] == 2
        assert sorted(k.name for k in w.catalog.merged()) == ["api", "db", "web"]
        await async_wait_for(lambda: not w.status["holding"], WAIT, message="the hold is over")
        assert sorted(k.name for k in w.catalog.merged()) == ["web"]
        # The held services' watches are gone with them.
        assert sorted(w.source._watches) == ["web"]
