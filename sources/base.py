"""What every registry source shares: the catalog interface it publishes to, and the
backoff it waits with after an error.

Sources own their I/O (DESIGN §2); the catalog is the only thing they talk to.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
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

    def replace_policies(self, source: str, objects: Sequence[PolicyObject]) -> None: ...


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
