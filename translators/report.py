"""What a translation left out, and the first-claimant-wins rule that decides it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from xds_server.model import Service

K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class Skipped:
    """A resource or part of one the translation left out, and why."""

    subject: str
    reason: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.reason}"


class Claims(Generic[K]):
    """First claimant wins: callers claim keys (domains, ports, names) in a deterministic
    order; a later claim of a taken key returns the owner that holds it."""

    def __init__(self) -> None:
        self._owners: dict[K, str] = {}

    def claim(self, key: K, owner: str) -> str | None:
        """None if `owner` now holds `key`, else the earlier claimant that holds it."""
        if key in self._owners:
            return self._owners[key]
        self._owners[key] = owner
        return None


def who(service: Service) -> str:
    """A service in reports, unambiguous even when ``name.namespace`` strings coincide."""
    return f"{service.name} (namespace {service.namespace})"
