"""What a parse reports: `PolicyError` rejects an object, a `Notice` accompanies an accepted
one; `Context` carries one parse's namespace and gathers its notices."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sources.istio.constants import DEFAULT_NAMESPACE
from sources.yaml_positions import render_path

Path = tuple[str | int, ...]

# Values of unsupported fields that equal the default: nothing is lost, so no notice.
_DEFAULT_VALUES = {"h2UpgradePolicy": "DEFAULT", "unmatchedPreflights": "UNSPECIFIED"}
_NOT_APPLIED = "not supported; ignored"


class PolicyError(ValueError):
    """The object is invalid and is rejected whole: `path` names the field, `reason` why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{render_path(path)}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Notice:
    """The object is accepted, but what `path` names is not applied (`message` says why)."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{render_path(self.path)}: {self.message}"


class Context:
    """One parse: the object's namespace and the notices gathered along the way."""

    def __init__(self) -> None:
        self.namespace = DEFAULT_NAMESPACE
        self.notices: list[Notice] = []

    def notice(self, path: Path, message: str) -> None:
        self.notices.append(Notice(path, message))

    def ignore(self, obj: Mapping[str, Any], path: Path, names: Iterable[str]) -> None:
        """Notices for the unsupported fields of `obj` that are set to something."""
        for name in names:
            value = obj.get(name)
            if value in (None, False, 0, "", [], {}) or value == _DEFAULT_VALUES.get(name):
                continue
            self.notice((*path, name), _NOT_APPLIED)
