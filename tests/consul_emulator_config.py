"""The Consul emulator's config entries table (`/v1/config`), with Consul's documented
semantics (the "Config HTTP Endpoint" API page):

* ``PUT /v1/config`` stores the body (an object with ``Kind`` and ``Name``; Consul's
  decoder also takes ``kind``/``name``) and answers ``true``; with ``?cas=N`` the write
  only applies if the entry's ModifyIndex is N (0: only if it does not exist yet), and
  answers ``false`` otherwise.
* ``GET /v1/config/:kind`` lists the kind's entries sorted by name (blocking, like the
  catalog); ``GET /v1/config/:kind/:name`` reads one (404 ``Config entry not found for
  "<kind>" / "<name>"``); ``DELETE /v1/config/:kind/:name`` removes one (``{}``; with
  ``?cas=N`` ``true``/``false``).
* Each entry carries ``CreateIndex`` and ``ModifyIndex`` (raft indexes). The index of a
  list is the config entries table's index (any kind's write moves it, as Consul's
  state store keeps one index for the table), but a blocked list only wakes for a write
  to its own kind; when its wait ends it answers with the table's index.
* Checked on write, as Consul checks the basics: an unknown kind → 400 ``invalid config
  entry kind: "<kind>"`` (reads too), no name → 400, proxy-defaults not named
  ``global`` → 400. Nothing else of an entry's content is validated.
* ACLs: a token limited by ``set_service_read`` lists only the entries of services it
  may read (proxy-defaults needs no ACL), as Consul filters lists.

Not emulated: namespaces, partitions, ``filter``, and kinds other than ``KINDS``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

KINDS = (
    "service-defaults",
    "proxy-defaults",
    "service-router",
    "service-splitter",
    "service-resolver",
    "service-intentions",
    "ingress-gateway",
    "terminating-gateway",
    "mesh",
    "exported-services",
)
UNFILTERED = frozenset({"proxy-defaults", "mesh"})  # readable with no service:read


class ConfigEntryError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(body)
        self.status = status
        self.body = body


class ConfigEntries:
    """Entries by (kind, name). Touched only from the emulator's event loop."""

    def __init__(self, kinds: Iterable[str] = KINDS) -> None:
        self.kinds = frozenset(kinds)
        self.entries: dict[tuple[str, str], dict[str, Any]] = {}
        self.index = 0  # the table's index: the raft index of its last write

    def check_kind(self, kind: str) -> None:
        if kind not in self.kinds:
            raise ConfigEntryError(400, f'invalid config entry kind: "{kind}"')

    def put(self, data: dict[str, Any], cas: int | None, raft: int) -> bool:
        """Stores `data`; False when `cas` does not match. Raises ConfigEntryError."""
        entry = dict(data)
        kind = entry.pop("kind", None) or entry.get("Kind")
        name = entry.pop("name", None) or entry.get("Name")
        if not isinstance(kind, str) or not kind:
            raise ConfigEntryError(400, "Request decoding failed: Kind is required")
        self.check_kind(kind)
        if not isinstance(name, str) or not name:
            raise ConfigEntryError(400, f"Name is required for {kind}")
        if kind == "proxy-defaults" and name != "global":
            raise ConfigEntryError(400, 'invalid name ("' + name + '"), only "global" is supported')
        entry["Kind"], entry["Name"] = kind, name
        old = self.entries.get((kind, name))
        if cas is not None and cas != (old["ModifyIndex"] if old else 0):
            return False
        entry["CreateIndex"] = old["CreateIndex"] if old else raft
        entry["ModifyIndex"] = raft
        self.entries[(kind, name)] = entry
        self.index = raft
        return True

    def delete(self, kind: str, name: str, cas: int | None, raft: int) -> bool:
        self.check_kind(kind)
        old = self.entries.get((kind, name))
        if cas is not None and (old is None or old["ModifyIndex"] != cas):
            return False
        if old is not None:
            del self.entries[(kind, name)]
        # Consul writes a delete to the raft log whether or not the entry existed.
        self.index = raft
        return True

    def get(self, kind: str, name: str, reads: Callable[[str], bool] | None) -> dict[str, Any]:
        self.check_kind(kind)
        entry = self.entries.get((kind, name))
        if entry is None or not self._readable(entry, reads):
            raise ConfigEntryError(404, f'Config entry not found for "{kind}" / "{name}"')
        return copy.deepcopy(entry)

    def list(self, kind: str, reads: Callable[[str], bool] | None) -> tuple[list[Any], bool]:
        """The kind's entries and whether ACLs filtered some out."""
        self.check_kind(kind)
        found = [e for (k, _), e in sorted(self.entries.items()) if k == kind]
        kept = [copy.deepcopy(e) for e in found if self._readable(e, reads)]
        return kept, len(kept) < len(found)

    def reset(self, to: int) -> None:
        self.index = min(self.index, to)
        for entry in self.entries.values():
            entry["CreateIndex"] = min(entry["CreateIndex"], to)
            entry["ModifyIndex"] = min(entry["ModifyIndex"], to)

    @staticmethod
    def _readable(entry: dict[str, Any], reads: Callable[[str], bool] | None) -> bool:
        return reads is None or entry["Kind"] in UNFILTERED or reads(entry["Name"])
