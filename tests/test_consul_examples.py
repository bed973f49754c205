"""The README's canary: the config entries in examples/consul-entries, written to the
emulator as `consul config write` would, are accepted and split `web` 90/10 between the
compose demo's v1 and v2 instances."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sources.consul_config import CHAIN_KIND
from tests.consul_emulator import ConsulEmulator
from tests.harness.waiting import async_wait_for
from tests.test_consul_source import WAIT, emulator, register, running
from xds_server.model import RoutePolicy

__all__ = ["emulator"]

pytestmark = pytest.mark.timeout(60)

ENTRIES = Path(__file__).resolve().parent.parent / "examples" / "consul-entries"


async def test_the_readme_canary_entries_are_accepted_and_split_90_10(
    emulator: ConsulEmulator,
) -> None:
    await register(emulator, "web", 8081, meta={"protocol": "http", "version": "v1"})
    await register(emulator, "web", 8082, meta={"protocol": "http", "version": "v2"})
    files = sorted(ENTRIES.glob("*.json"))
    assert [f.name for f in files] == [
        "web-defaults.json",
        "web-resolver.json",
        "web-splitter.json",
    ]
    async with running(emulator) as w:
        for path in files:
            assert emulator.config_write(json.loads(path.read_text())) is True
        await async_wait_for(
            lambda: len(w.catalog.policies()) == 5, WAIT, message="3 entries and 2 compiled"
        )
        assert all(not o.error and not o.notices for o in w.catalog.policies())
        chain = next(o.policy for o in w.catalog.policies() if o.key.kind == CHAIN_KIND)
        assert isinstance(chain, RoutePolicy)
        split = [(d.destination.subset, d.weight) for d in chain.http[0].destinations]
        assert split == [("v1", 9000), ("v2", 1000)]
