"""The Consul source's config-entry watches against the emulator (no Envoy): writes and
deletes per kind, blocking queries, outages, kinds an old Consul lacks, protocols set by
service-defaults, and what `xdsctl policies` gets (the resolver's statuses)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sources.consul_config import CHAIN_KIND
from tests.consul_emulator import ConsulEmulator
from tests.consul_entries import defaults, resolver, splitter, versions
from tests.harness.waiting import async_wait_for
from tests.test_consul_source import WAIT, Watched, emulator, register, running
from translators.policy_resolve import PolicyStatus, resolve_policies
from xds_server.model import Policy, PolicyKey, PolicyObject, ServiceKey

__all__ = ["emulator"]  # the fixture, shared with the source's tests

pytestmark = pytest.mark.timeout(60)


def objects(w: Watched) -> dict[tuple[str, str], PolicyObject]:
    return {(o.key.kind, o.key.name): o for o in w.catalog.policies()}


def protocol(w: Watched, name: str) -> str | None:
    entry = w.entry(name)
    return entry.service.ports[0].protocol if entry else None


def config_queries(emu: ConsulEmulator, kind: str) -> list[Any]:
    return [r for r in emu.request_log() if r.path == f"/v1/config/{kind}"]


def statuses(
    w: Watched, before: dict[PolicyKey, Policy]
) -> tuple[dict[tuple[str, str], PolicyStatus], dict[PolicyKey, Policy]]:
    resolution = resolve_policies(w.catalog.merged(), w.catalog.policies(), before)
    return {(s.key.kind, s.key.name): s for s in resolution.statuses}, resolution.accepted


async def test_writes_and_deletes_of_each_kind_are_picked_up(emulator: ConsulEmulator) -> None:
    await register(emulator, "web", 8081, meta={"version": "v1"})
    await register(emulator, "web", 8082, meta={"version": "v2"})
    # A wait longer than the test: the health watch never answers again on its own, so
    # a protocol change can only come from the config entries' watch.
    async with running(emulator, wait=30.0) as w:
        assert protocol(w, "web") == "http"
        assert objects(w) == {}
        emulator.config_write(defaults("web", "http2"))
        await async_wait_for(lambda: protocol(w, "web") == "http2", WAIT, message="http2")
        # A new instance maps the service again: config entries still set its protocol.
        await register(emulator, "web", 8083, meta={"version": "v2"})
        await async_wait_for(lambda: len(w.health("web")) == 3, WAIT, message="3 instances")
        assert protocol(w, "web") == "http2"
        emulator.config_write(resolver("web", Subsets=versions("v1", "v2")))
        emulator.config_write(
            splitter(
                "web",
                {"Weight": 90, "ServiceSubset": "v1"},
                {"Weight": 10, "ServiceSubset": "v2"},
            )
        )
        await async_wait_for(
            lambda: {("service-splitter", "web"), (CHAIN_KIND, "web")} <= objects(w).keys(),
            WAIT,
            message="splitter compiled into the chain",
        )
        chain = objects(w)[(CHAIN_KIND, "web")].policy
        assert chain is not None and not objects(w)[(CHAIN_KIND, "web")].error
        weights = [d.weight for d in chain.http[0].destinations]  # type: ignore[union-attr]
        assert weights == [9000, 1000]
        # The entries themselves are listed (accepted), next to the compiled objects.
        assert objects(w)[("service-resolver", "web")].error == ""
        emulator.config_delete("service-splitter", "web")
        await async_wait_for(
            lambda: ("service-splitter", "web") not in objects(w), WAIT, message="delete seen"
        )
        emulator.config_delete("service-defaults", "web")
        await async_wait_for(lambda: protocol(w, "web") == "http", WAIT, message="meta again")


async def test_config_watches_are_blocking_queries_and_an_answer_is_not_a_change(
    emulator: ConsulEmulator,
) -> None:
    await register(emulator, "web", 8081)
    async with running(emulator, wait=1.0) as w:
        emulator.config_write(defaults("web", "http2"))
        await async_wait_for(lambda: protocol(w, "web") == "http2", WAIT, message="http2")
        changes = w.changes
        emulator.clear_request_log()
        await asyncio.sleep(1.5)  # more than one wait: every watch has asked again
        for kind in ("service-defaults", "service-router"):
            asked = config_queries(emulator, kind)
            # Each query names the index of the previous answer and a wait, so an idle
            # Consul sees about one query per wait, not a busy loop.
            assert 1 <= len(asked) <= 3, asked
            assert all(int(r.query["index"][0]) > 1 and r.query["wait"] for r in asked), asked
        # Another kind's write moves the table index: the router watch answers again
        # with the same (empty) list, which changes nothing.
        assert w.changes == changes


async def test_nothing_is_published_before_every_kind_has_answered(
    emulator: ConsulEmulator,
) -> None:
    await register(emulator, "web", 8081)
    emulator.config_write(defaults("web", "http2"))
    emulator.slow(1.5, "/v1/config/service-resolver")
    async with running(emulator, synced=False) as w:
        await async_wait_for(
            lambda: len(config_queries(emulator, "service-defaults")) >= 1, WAIT, message="asked"
        )
        await asyncio.sleep(0.5)
        assert not w.status["synced"] and w.catalog.merged() == {}
        assert w.catalog.policies() == ()
        await async_wait_for(lambda: w.status["synced"], WAIT, message="synced at last")
        # The services come with the protocol the entries set, from the first push.
        assert protocol(w, "web") == "http2"


async def test_a_kind_old_consul_lacks_counts_as_empty_and_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kinds = ("service-defaults", "proxy-defaults")  # Consul 1.5: no router, splitter, resolver
    with ConsulEmulator(config_kinds=kinds) as emu:
        await register(emu, "web", 8081)
        emu.config_write(defaults("web", "grpc"))
        async with running(emu, wait=0.5) as w:
            assert protocol(w, "web") == "grpc"
            await asyncio.sleep(1.2)  # rechecked once per wait, not in a busy loop
            asked = config_queries(emu, "service-router")
            assert 2 <= len(asked) <= 4, asked
    said = [r for r in caplog.records if "no config entries of kind service-router" in r.message]
    assert len(said) == 1, said
    assert 'invalid config entry kind: "service-router"' in said[0].message
    with ConsulEmulator(config_kinds=None) as emu:  # no config API at all: 404
        await register(emu, "web", 8081)
        async with running(emu) as w:
            assert protocol(w, "web") == "http" and w.catalog.policies() == ()


async def test_outage_keeps_the_last_good_entries_and_both_sources_go_stale(
    emulator: ConsulEmulator,
) -> None:
    await register(emulator, "web", 8081)
    emulator.config_write(defaults("web", "http2"))
    async with running(emulator) as w:
        before = w.catalog.policies()
        emulator.pause()
        await async_wait_for(lambda: w.status["stale"], WAIT, message="stale")
        config = next(s for s in w.catalog.sources() if s.name == "consul-config")
        assert config.stale and "cannot reach Consul at" in str(config.error)
        assert w.catalog.policies() == before and protocol(w, "web") == "http2"
        emulator.resume()
        await async_wait_for(lambda: not config.stale, WAIT, message="fresh again")
        emulator.config_write(defaults("web", "grpc"))
        await async_wait_for(lambda: protocol(w, "web") == "grpc", WAIT, message="after outage")


async def test_a_rejected_entry_is_listed_with_its_reason_and_the_last_good_chain_stays(
    emulator: ConsulEmulator,
) -> None:
    for name, port in (("web", 8081), ("admin", 8082)):
        await register(emulator, name, port)
    emulator.config_write(resolver("web", Redirect={"Service": "admin"}))
    async with running(emulator) as w:
        listed, accepted = statuses(w, {})
        assert listed[(CHAIN_KIND, "web")].state == "ACCEPTED"
        assert listed[("service-resolver", "web")].state == "ACCEPTED"
        good = accepted[PolicyKey(CHAIN_KIND, "default", "web")]
        emulator.config_write(resolver("admin", Redirect={"Service": "web"}))
        emulator.config_write(splitter("admin", {"Weight": 90, "Service": "web"}))
        await async_wait_for(
            lambda: objects(w)[(CHAIN_KIND, "web")].error, WAIT, message="circular redirect"
        )
        listed, accepted = statuses(w, accepted)
        chain = listed[(CHAIN_KIND, "web")]
        assert chain.state == "REJECTED"
        assert "detected circular resolver redirect: web -> admin -> web" in chain.reasons[0]
        assert chain.reasons[-1] == "serving its last valid version (consul discovery chain web)"
        assert accepted[PolicyKey(CHAIN_KIND, "default", "web")] == good
        # An entry Consul itself would refuse is listed, rejected, with its reason.
        bad = listed[("service-splitter", "admin")]
        assert bad.state == "REJECTED"
        assert bad.reasons == (
            "consul config entry service-splitter/admin: Splits: the sum of all split "
            "weights must be 100, not 90",
        )
        assert listed[("service-resolver", "admin")].state == "ACCEPTED"
        assert w.catalog.merged()[ServiceKey("default", "web")] is not None
