"""What every registry source shares: the catalog interface it publishes to, the
backoff it waits with after an error, and the "registry is down" state its watches share.

Sources own their I/O (DESIGN §2); the catalog is the only thing they talk to.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from xds_server.model import PolicyObject, ServiceEntry, ServiceKey


class Catalog(Protocol):
    """What a source needs from the catalog (xds_server.catalog.Catalog)."""

    def register(self, source: str, kind: str) -> None: ...

    def replace(self, source: str, entries: Iterable[ServiceEntry]) -> None: ...

    def upsert(self, source: str, entry: ServiceEntry) -> None: ...

    def remove(self, source: str, key: ServiceKey) -> None: ...

    def mark_synced(self, source: str) -> None: ...

    def set_error(self, source: str, error: str) -> None: ...

    def set_holding(self, source: str, reason: str | None, held: int) -> None: ...

    def replace_policies(self, source: str, objects: Sequence[PolicyObject]) -> None: ...

    def set_notes(self, source: str, notes: Sequence[str]) -> None: ...


class Backoff:
    """Exponential backoff with jitter: `base`, doubling per failure up to `cap`.

    Each delay is drawn from [d/2, d] ("equal jitter"): never zero, so a registry that
    fails fast is not hammered, and spread out, so watches that failed together (every
    blocking query of a Consul agent that just restarted) do not retry in lockstep.
    """

    def __init__(self, base: float = 0.2, cap: float = 10.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        d = min(self.cap, self.base * 2.0 ** min(self.failures, 30))
        self.failures += 1
        return d / 2 + random.uniform(0, d / 2)

    def reset(self) -> None:
        self.failures = 0


class Outage:
    """A source's registry is down for all its watches at once.

    A watch whose request finds the registry unreachable calls `wait()`: the registry is
    marked down and one prober task retries a cheap, non-blocking `probe()` with
    exponential backoff while every waiting watch sleeps. The probe that succeeds wakes
    every waiting watch at once, so each resumes at most one backoff step (`cap`) after
    the registry returned, instead of each sleeping its own backoff and then, for a
    blocking query, a whole wait. A watch's request that succeeds calls `up()`, which
    resets the backoff; a probe alone does not, so a registry that answers the probe
    but fails real requests is still retried ever more slowly.
    """

    def __init__(
        self,
        backoff: Backoff,
        probe: Callable[[], Awaitable[None]],
        on_probe_failed: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        self.backoff = backoff
        self.probe = probe
        self.on_probe_failed = on_probe_failed
        self._up = asyncio.Event()
        self._up.set()
        self._prober: asyncio.Task[None] | None = None
        self.probes = 0  # probes sent since the source started (for tests and logs)

    @property
    def down(self) -> bool:
        return not self._up.is_set()

    async def wait(self) -> None:
        """The registry is down: return once a probe has found it up again."""
        if self._up.is_set():
            self._up.clear()
            self._prober = asyncio.create_task(self._probe_until_up(), name="registry-probe")
        await self._up.wait()

    def up(self) -> None:
        """A watch's request succeeded: the registry is up, whatever the prober thinks."""
        self.backoff.reset()
        self.close()
        self._up.set()

    def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            self._prober = None

    async def _probe_until_up(self) -> None:
        while True:
            await asyncio.sleep(self.backoff.next())
            self.probes += 1
            try:
                await self.probe()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.on_probe_failed(exc)
                continue
            self._prober = None
            self._up.set()
            return
