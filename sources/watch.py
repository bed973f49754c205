"""Watching files: OS notifications (`watchfiles`), polling only where they are unavailable.

Shared by the file registry and the policy files. `Watch` calls `check()` whenever
something that can change what a watched path reads as has happened, and also every
`interval` seconds as a safety re-check; `check` stats and re-reads, so a spurious or
repeated call publishes nothing.

The *directory* holding a file is watched, not the file: editors that save by writing a
temporary file and renaming it over the old one, and Kubernetes' ConfigMap volumes
(``registry.yaml -> ..data/registry.yaml``, where ``..data`` is a symlink swapped
atomically to a new ``..<timestamp>`` directory), replace the file's inode, which a watch
on the file itself would lose. Events are kept only for the file's own name and for
names starting with ``..`` (what the kubelet's atomic writer creates); a directory
given as a path keeps events for its files with one of the given suffixes.

A burst of events is one `check()`: watchfiles gathers events until none arrived for
`STEP_MS` (at most `DEBOUNCE_MS` in all). The safety re-check stays because
notifications miss some changes: a symlink whose target lives in another directory,
network and FUSE file systems where another host writes, an overflowed inotify queue.
It costs one `stat` per file per interval.

Polling (`check()` every `interval`, nothing else) is used when notifications are
unavailable — watchfiles fails to start (no inotify, the watch limit reached, a missing
directory; or the watch failing later, e.g. its directory removed) — or forced with
``--file-watch poll`` or watchfiles' own ``WATCHFILES_FORCE_POLLING`` environment
variable; one log line says which file and why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from watchfiles._rust_notify import RustNotify

log = logging.getLogger("sources.watch")

Mode = Literal["auto", "poll"]
# Events closer together than this are one batch; a batch is cut after DEBOUNCE_MS.
STEP_MS = 10
DEBOUNCE_MS = 50
FORCE_POLLING_ENV = "WATCHFILES_FORCE_POLLING"  # watchfiles' own switch, honoured as such


@dataclass(frozen=True, slots=True)
class _Target:
    """One watched directory and which of its entries matter."""

    directory: str
    names: frozenset[str]  # entries that matter by name
    suffixes: tuple[str, ...] = ()  # ... and by suffix (a watched directory's files)

    def matches(self, name: str) -> bool:
        return name in self.names or name.startswith("..") or name.endswith(self.suffixes)


def _targets(paths: Sequence[Path], suffixes: tuple[str, ...] = ()) -> list[_Target]:
    """What to watch for `paths`: a file's directory (its name matters), or a directory
    itself (its files ending in `suffixes` matter, when `suffixes` is given)."""
    out: dict[str, _Target] = {}
    for path in paths:
        path = Path(os.path.abspath(path))
        if suffixes and path.is_dir():
            t = _Target(str(path), frozenset(), suffixes)
        else:
            t = _Target(str(path.parent), frozenset({path.name}))
        held = out.get(t.directory)
        if held is not None:
            t = _Target(t.directory, held.names | t.names, held.suffixes or t.suffixes)
        out[t.directory] = t
    return list(out.values())


def polling_reason(mode: Mode) -> str | None:
    """Why notifications are not to be used, or None."""
    if mode == "poll":
        return "--file-watch poll"
    forced = os.environ.get(FORCE_POLLING_ENV, "").strip().lower()
    if forced not in ("", "0", "false", "no", "off"):
        return f"{FORCE_POLLING_ENV} is set"
    return None


class Watch:
    """Watches `paths` and calls `check()`; `how` says how once it has started."""

    def __init__(
        self,
        paths: Sequence[Path],
        check: Callable[[], Awaitable[None]],
        *,
        interval: float,
        mode: Mode = "auto",
        suffixes: tuple[str, ...] = (),
        what: str = "file",
    ) -> None:
        self.paths = list(paths)
        self.check = check
        self.interval = interval
        self.mode: Mode = mode
        self.suffixes = suffixes
        self.what = what
        self.how: Literal["notify", "poll"] | None = None  # None: not started yet
        self.reason: str | None = None  # why it polls

    async def run(self) -> None:
        """Forever: `check()` on every relevant change and every `interval` seconds."""
        self.reason = polling_reason(self.mode)
        if self.reason is None:
            try:
                await self._notified()
            except (OSError, RuntimeError) as exc:  # watchfiles' failures to watch
                self.reason = f"OS file notifications unavailable: {type(exc).__name__}: {exc}"
        label = ", ".join(str(p) for p in self.paths)
        # Asked for: said once as a fact. Not asked for: a warning, edits will be slower.
        level = logging.WARNING if polling_reason(self.mode) is None else logging.INFO
        log.log(
            level, "%s %s: polling every %gs (%s)", self.what, label, self.interval, self.reason
        )
        self.how = "poll"
        while True:
            await self.check()
            await asyncio.sleep(self.interval)

    async def _notified(self) -> None:
        by_dir = {t.directory: t for t in _targets(self.paths, self.suffixes)}
        # 0 (an interval under a millisecond): no safety re-check, rather than a busy one.
        timeout_ms = round(self.interval * 1000)
        stop = threading.Event()  # ends the blocking watch() in its thread on cancel
        # Not closed on the way out: close() would wait on the worker thread's watch(),
        # which `stop` ends within a step; dropping the last reference ends its thread.
        notify = RustNotify(list(by_dir), False, False, 0, False, False)
        log.info("%s: watching %s (OS notifications)", self.what, ", ".join(by_dir))
        self.how = "notify"
        try:
            # Anything that changed between the caller's first load and now.
            await self.check()
            while True:
                got = await asyncio.to_thread(notify.watch, DEBOUNCE_MS, STEP_MS, timeout_ms, stop)
                # A set of (change, path), or "timeout": the safety re-check.
                if isinstance(got, set) and not any(_relevant(by_dir, p) for _, p in got):
                    continue
                await self.check()
        finally:
            stop.set()


def _relevant(by_dir: dict[str, _Target], path: str) -> bool:
    directory, name = os.path.split(path)
    target = by_dir.get(directory)
    return target is not None and target.matches(name)
