"""Watching the registry and policy files: OS notifications, not polling.

Every source here is given a poll interval of an hour, so an edit that is applied was
seen by a notification: were the watcher to fall back to polling, these tests would time
out waiting. The polling fallback itself is tested with a short interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sources import watch
from sources.file import FileSource
from sources.policy_file import PolicyFileSource
from tests.harness.waiting import async_wait_for, running_task
from tests.test_file_source import WEB, WEB2, FakeCatalog, write_by_rename, write_in_place
from xds_server.catalog import Catalog

HOUR = 3600.0


async def wait(predicate: object, message: str) -> None:
    await async_wait_for(predicate, timeout=5.0, interval=0.01, message=message)  # type: ignore[arg-type]


def web(ip: str) -> str:
    return WEB.replace("10.0.0.1", ip)


class Counted(FileSource):
    """A FileSource counting the checks it has finished."""

    checks = 0

    async def poll(self) -> None:
        await super().poll()
        self.checks += 1


async def watching(source: FileSource | PolicyFileSource) -> None:
    await wait(lambda: source.watch.how is not None, "watcher started")
    assert source.watch.how == "notify", source.watch.reason


@contextlib.asynccontextmanager
async def watched(reg: Path, text: str | None = WEB) -> AsyncIterator[tuple[FakeCatalog, Counted]]:
    """A source on `reg` (`text` written to it first, if given), loaded and running, once
    its watch has started and made the check it makes on starting."""
    if text is not None:
        await asyncio.to_thread(reg.write_text, text)
    catalog = FakeCatalog()
    source = Counted(reg, catalog, interval=HOUR)
    source.load_once()
    async with running_task(source.run()):
        await watching(source)
        await wait(lambda: source.checks >= 1, "the check after starting")
        yield catalog, source


@pytest.fixture(autouse=True)
def _notifications(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(watch.FORCE_POLLING_ENV, raising=False)


async def test_in_place_write_is_seen_without_polling(tmp_path: Path) -> None:
    reg = tmp_path / "registry.yaml"
    async with watched(reg) as (catalog, _):
        await asyncio.to_thread(write_in_place, reg, WEB2)
        await wait(lambda: len(catalog.states) == 2, "in-place edit published")
    assert catalog.ips() == ["10.0.0.2"]


async def test_save_by_rename_is_seen_and_the_temporary_file_is_not(tmp_path: Path) -> None:
    reg = tmp_path / "registry.yaml"
    async with watched(reg) as (catalog, source):
        await asyncio.to_thread(write_by_rename, reg, WEB2)
        await wait(lambda: len(catalog.states) == 2, "renamed file published")
        checks = source.checks
        # Another file in the directory changes nothing we read: no check.
        await asyncio.to_thread((tmp_path / "notes.txt").write_text, "x")
        await asyncio.sleep(0.2)  # many steps: a check it caused would be over by now
        await asyncio.to_thread(write_in_place, reg, web("10.0.0.3"))  # a marker after it
        await wait(lambda: len(catalog.states) == 3, "marker edit published")
        assert source.checks == checks + 1
    assert catalog.ips() == ["10.0.0.3"]


def configmap(directory: Path, files: dict[str, str], version: int) -> None:
    """What the kubelet's atomic writer does: a new ..<timestamp> directory, a ..data_tmp
    symlink to it renamed over ..data, the files as symlinks into ..data (once)."""
    stamp = directory / f"..2026_12_04_00_00_0{version}.000000000"
    stamp.mkdir()
    for name, text in files.items():
        (stamp / name).write_text(text)
    tmp = directory / "..data_tmp"
    tmp.symlink_to(stamp.name)
    old = (directory / "..data").resolve() if (directory / "..data").exists() else None
    os.replace(tmp, directory / "..data")
    for name in files:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(Path("..data") / name)
    if old is not None:
        for f in old.iterdir():
            f.unlink()
        old.rmdir()


async def test_configmap_symlink_swap_is_seen(tmp_path: Path) -> None:
    configmap(tmp_path, {"registry.yaml": WEB}, 1)
    reg = tmp_path / "registry.yaml"
    async with watched(reg, None) as (catalog, _):
        await asyncio.to_thread(configmap, tmp_path, {"registry.yaml": WEB2}, 2)
        await wait(lambda: len(catalog.states) == 2, "swapped ConfigMap published")
        assert catalog.ips() == ["10.0.0.2"]
        await asyncio.to_thread(configmap, tmp_path, {"registry.yaml": web("10.0.0.3")}, 3)
        await wait(lambda: len(catalog.states) == 3, "second swap published")
    assert catalog.ips() == ["10.0.0.3"]


async def test_a_burst_of_writes_is_one_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A wide step, so that the burst is one batch however slow the machine is today.
    monkeypatch.setattr(watch, "STEP_MS", 300)
    monkeypatch.setattr(watch, "DEBOUNCE_MS", 3000)
    reg = tmp_path / "registry.yaml"

    def burst() -> None:
        for i in range(2, 22):
            write_in_place(reg, web(f"10.0.0.{i}"))

    async with watched(reg) as (catalog, source):
        await asyncio.to_thread(burst)
        await wait(lambda: len(catalog.states) == 2, "burst published")
        await asyncio.sleep(0.5)  # more than a step: a second reload would have come
    assert (source.checks, len(catalog.states)) == (2, 2)
    assert catalog.ips() == ["10.0.0.21"]


async def test_deleted_then_recreated_is_seen(tmp_path: Path) -> None:
    reg = tmp_path / "registry.yaml"
    async with watched(reg) as (catalog, _):
        await asyncio.to_thread(reg.unlink)
        await wait(lambda: catalog.errors, "missing file reported")
        await asyncio.to_thread(reg.write_text, WEB2)
        await wait(lambda: len(catalog.states) == 2, "recreated file published")
    assert catalog.ips() == ["10.0.0.2"]
    assert catalog.errors == [f"{reg}: cannot read: No such file or directory"]


async def test_a_touch_without_change_publishes_nothing(tmp_path: Path) -> None:
    reg = tmp_path / "registry.yaml"
    async with watched(reg) as (catalog, source):
        await asyncio.to_thread(write_in_place, reg, WEB)
        await wait(lambda: source.checks >= 2, "the rewrite checked")
        await asyncio.to_thread(write_in_place, reg, WEB2)
        await wait(lambda: len(catalog.states) == 2, "the real edit published")
    assert catalog.ips() == ["10.0.0.2"]


VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web]
  http:
    - route: [{{destination: {{host: web}}, weight: {weight}}}]
"""


async def test_policy_file_edit_and_configmap_swap_are_seen(tmp_path: Path) -> None:
    single = tmp_path / "single"
    single.mkdir()
    (single / "vs.yaml").write_text(VS.format(weight=100))
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    configmap(mounted, {"dr.yaml": VS.format(weight=100).replace("name: web", "name: api")}, 1)
    catalog = Catalog()
    source = PolicyFileSource([single / "vs.yaml", mounted], catalog, interval=HOUR)
    source.load_once()
    first = catalog.policies()
    assert [o.key.name for o in first] == ["web", "api"]

    def published(name: str, text: str) -> bool:
        return any(o.key.name == name and text in repr(o.policy) for o in catalog.policies())

    async with running_task(source.run()):
        await watching(source)
        await asyncio.to_thread(
            write_by_rename, single / "vs.yaml", VS.format(weight=100).replace("web]", "web2]")
        )
        await wait(lambda: published("web", "web2"), "policy file edit published")
        edited = VS.format(weight=100).replace("name: web", "name: api").replace("web]", "api2]")
        await asyncio.to_thread(configmap, mounted, {"dr.yaml": edited}, 2)
        await wait(lambda: published("api", "api2"), "ConfigMap policy swap published")


async def test_forced_polling_is_said_at_start_and_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(watch.FORCE_POLLING_ENV, "1")
    reg = tmp_path / "registry.yaml"
    await asyncio.to_thread(reg.write_text, WEB)
    catalog = FakeCatalog()
    source = FileSource(reg, catalog, interval=0.05)
    source.load_once()
    with caplog.at_level(logging.INFO, "sources.watch"):
        async with running_task(source.run()):
            await wait(lambda: source.watch.how == "poll", "polling")
            await asyncio.to_thread(write_by_rename, reg, WEB2)
            await wait(lambda: len(catalog.states) == 2, "polled edit published")
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "sources.watch"] == [
        ("INFO", f"registry file {reg}: polling every 0.05s (WATCHFILES_FORCE_POLLING is set)")
    ]


async def test_unavailable_notifications_fall_back_to_polling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reg = tmp_path / "gone" / "registry.yaml"  # its directory does not exist: no watch
    catalog = FakeCatalog()
    source = FileSource(reg, catalog, interval=0.05)
    with caplog.at_level(logging.WARNING, "sources.watch"):
        async with running_task(source.run()):
            await wait(lambda: source.watch.how == "poll", "polling")
            await wait(lambda: catalog.errors, "missing file reported")
            reg.parent.mkdir()
            await asyncio.to_thread(reg.write_text, WEB)
            await wait(lambda: catalog.states, "file published once it exists")
    (record,) = [r for r in caplog.records if r.name == "sources.watch"]
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith(
        f"registry file {reg}: polling every 0.05s (OS file notifications"
    )
