"""The registry hold (sources.hold): which removals are held, for how long, what ends a
hold and what it publishes, seen through the real Catalog and its metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sources.file import FileSource
from sources.hold import GuardedPublisher, HoldPolicy
from xds_server import metrics
from xds_server.catalog import Catalog
from xds_server.model import Endpoint, Port, Service, ServiceEntry, ServiceKey

pytestmark = pytest.mark.timeout(30)

NAMES = ("a", "b", "c", "d")


def entry(name: str, ip: str = "10.0.0.1") -> ServiceEntry:
    return ServiceEntry(
        Service(name, "default", ports=(Port("http", 80),)), (Endpoint(ip, 8080, "http"),)
    )


def key(name: str) -> ServiceKey:
    return ServiceKey("default", name)


class Source:
    """A source's current view, published through a GuardedPublisher, and what the
    catalog saw."""

    def __init__(self, policy: HoldPolicy, name: str = "consul") -> None:
        self.catalog = Catalog()
        self.catalog.register(name, "consul")
        self.name = name
        self.changes = 0
        self.catalog.on_change(self._changed)
        self.view: dict[ServiceKey, ServiceEntry] = {key(n): entry(n) for n in NAMES}
        self.pub = GuardedPublisher(self.catalog, name, policy, self.view.get)
        self.pub.replace(self.view)

    def _changed(self) -> None:
        self.changes += 1

    def drop(self, *names: str) -> None:
        """One update removing `names` from the view."""
        for n in names:
            del self.view[key(n)]
        self.pub.update({key(n): None for n in names})

    def served(self) -> list[str]:
        return sorted(k.name for k in self.catalog.merged())

    def status(self) -> dict[str, object]:
        (status,) = self.catalog.sources()
        return status.as_dict()

    def gauge(self, g: metrics.Gauge) -> float:
        return float(g.labels(self.name)._value.get())


async def test_exactly_the_threshold_is_an_ordinary_removal() -> None:
    src = Source(HoldPolicy(threshold=0.5, period=60))
    src.drop("a", "b")  # 2 of 4: exactly half
    assert src.served() == ["c", "d"]
    assert src.status()["holding"] is False
    assert src.catalog.holding() == []


async def test_more_than_the_threshold_is_held_and_shown() -> None:
    src = Source(HoldPolicy(threshold=0.5, period=60))
    changes = src.changes
    src.drop("a", "b", "c")  # 3 of 4
    assert src.served() == list(NAMES)
    assert src.changes == changes  # nothing reached the merged view
    status = src.status()
    assert status["holding"] is True and status["held_removals"] == 3
    assert "3 of 4 services would be removed at once" in str(status["hold_reason"])
    (warning,) = src.catalog.holding()
    assert warning.startswith("source consul (consul) is HOLDING a removal: 3 of 4")
    assert src.gauge(metrics.SOURCE_HOLDING) == 1
    assert src.gauge(metrics.SOURCE_HELD_REMOVALS) == 3
    src.pub.close()


async def test_threshold_zero_turns_the_guard_off() -> None:
    src = Source(HoldPolicy(threshold=0, period=60))
    src.drop(*NAMES)
    assert src.served() == []
    assert src.status()["holding"] is False


async def test_a_restored_view_ends_the_hold_with_nothing_published() -> None:
    src = Source(HoldPolicy(threshold=0.5, period=60))
    changes = src.changes
    src.drop(*NAMES)
    assert src.status()["holding"] is True
    # The registry answers with everything again (e.g. the token's policy restored).
    src.view.update({key(n): entry(n) for n in NAMES})
    src.pub.update({key(n): entry(n) for n in NAMES})
    assert src.status()["holding"] is False
    assert src.gauge(metrics.SOURCE_HOLDING) == 0
    assert src.changes == changes
    assert src.served() == list(NAMES)


async def test_at_the_end_the_current_view_decides() -> None:
    src = Source(HoldPolicy(threshold=0.5, period=0.2))
    src.drop("a", "b", "c")
    # During the hold: b comes back (seen only by the view, not as an update), and d's
    # endpoints change, which applies at once.
    src.view[key("b")] = entry("b")
    src.view[key("d")] = entry("d", "10.0.0.9")
    src.pub.update({key("d"): src.view[key("d")]})
    merged_d = src.catalog.merged()[key("d")]
    assert merged_d.endpoints[0].ip == "10.0.0.9"
    assert src.status()["holding"] is True
    await asyncio.sleep(0.4)
    assert src.served() == ["b", "d"]
    assert src.status()["holding"] is False
    assert src.gauge(metrics.SOURCE_HELD_REMOVALS) == 0


async def test_a_held_removal_that_falls_below_the_threshold_applies_at_once() -> None:
    src = Source(HoldPolicy(threshold=0.5, period=60))
    src.drop("a", "b", "c")
    src.view.update({key("b"): entry("b"), key("c"): entry("c")})
    src.pub.update({key("b"): entry("b"), key("c"): entry("c")})  # only a is still gone
    assert src.served() == ["b", "c", "d"]
    assert src.status()["holding"] is False


async def test_a_full_view_publishes_held_entries_with_it() -> None:
    src = Source(HoldPolicy(threshold=0.5, period=60))
    changes = src.changes
    src.pub.replace({key("d"): entry("d")})  # a relist that lost a, b and c
    assert src.served() == list(NAMES)
    assert src.changes == changes
    assert src.status()["held_removals"] == 3
    src.pub.close()


async def test_the_file_registry_is_exempt(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    services = "".join(
        f"  - {{name: {n}, ports: [{{port: 80}}], endpoints: [{{address: 10.0.0.1}}]}}\n"
        for n in NAMES
    )
    path.write_text("services:\n" + services)
    catalog = Catalog()
    source = FileSource(path, catalog)
    source.load_once()
    assert len(catalog.merged()) == 4
    path.write_text("services: []\n")
    source.load_once()
    assert dict(catalog.merged()) == {}
    assert catalog.holding() == []
