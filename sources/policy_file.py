"""Policy files: Istio VirtualService and DestinationRule objects, and Gateway API
HTTPRoute and GRPCRoute objects (mesh mode: `parentRefs` naming Services), from YAML/JSON
files.

`--policy PATH` (repeatable) names a file of one or more YAML documents, or a directory
whose ``*.yaml``, ``*.yml`` and ``*.json`` files are read in name order. Each document
is a Kubernetes-shaped object (``kind: List`` with ``items`` is unpacked, as `kubectl get
-o yaml` writes it). Every object becomes a `PolicyObject`:

- parsed (`sources.istio`), with notices for what it contains that is not applied;
- or refused, with ``file:line:col: Kind namespace/name: field.path: reason``;
  its last accepted version stays in force (the controller keeps it).

A file that cannot be read or is not valid YAML is one error for the source (shown in
`xdsctl sources`); its objects as last read stay published. Files are watched like the
registry file (`sources.watch`: OS notifications on their directories, polling where
those are unavailable); a change in any of them re-reads that file only, and of that file only
the documents whose text changed are parsed again (`parse_policy_file_reusing`), so
shifting one weight in a file of thousands of objects costs one document's parse.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sources.base import Catalog
from sources.policy_parse import (
    Chunk,
    PolicyFileError,
    parse_policy_file,
    parse_policy_file_reusing,
)
from sources.watch import Mode, Watch
from xds_server.model import PolicyKey, PolicyObject

__all__ = ["KIND", "SUFFIXES", "PolicyFileError", "PolicyFileSource", "parse_policy_file",
           "parse_policy_file_reusing"]  # fmt: skip

log = logging.getLogger("sources.policy")

KIND = "policy"
SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class _Stamp:
    mtime_ns: int
    size: int
    inode: int


def _files(paths: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
        else:
            out.append(path)
    return out


class PolicyFileSource:
    """Watches policy files and publishes their objects to the catalog."""

    def __init__(
        self,
        paths: Sequence[Path],
        catalog: Catalog,
        *,
        name: str = "policy",
        interval: float = 1.0,
        watch: Mode = "auto",
    ) -> None:
        self.paths = list(paths)
        self.catalog = catalog
        self.name = name
        self.interval = interval
        self.watch = Watch(
            self.paths, self.poll, interval=interval, mode=watch, suffixes=SUFFIXES, what="policy"
        )
        self._stamps: dict[Path, _Stamp] = {}
        self._objects: dict[Path, list[PolicyObject]] = {}
        self._reuse: dict[Path, dict[Chunk, list[PolicyObject]]] = {}
        self._errors: dict[Path, str] = {}
        self._published: tuple[PolicyObject, ...] | None = None
        catalog.register(name, KIND)

    def load_once(self) -> list[PolicyObject]:
        """Read everything now; PolicyFileError (the first unusable file) at startup."""
        self._scan(force=True)
        if self._errors:
            raise PolicyFileError(next(iter(self._errors.values())))
        return self._publish()

    async def run(self) -> None:
        """Forever: watch the files and publish what changed."""
        await self.watch.run()

    async def poll(self) -> None:
        changed = await asyncio.to_thread(self._scan)
        if changed:
            self._publish()

    def _scan(self, force: bool = False) -> bool:
        """Re-read the files whose stamp changed; whether anything did."""
        try:
            files = _files(self.paths)
        except OSError as exc:
            return self._fail(Path(exc.filename or self.paths[0]), f"cannot list: {exc.strerror}")
        changed = False
        for gone in set(self._objects) - set(files):
            del self._objects[gone]
            self._reuse.pop(gone, None)
            self._stamps.pop(gone, None)
            changed = True
        for path in files:
            try:
                st = os.stat(path)
                stamp = _Stamp(st.st_mtime_ns, st.st_size, st.st_ino)
                if not force and self._stamps.get(path) == stamp:
                    continue
                text = path.read_bytes().decode("utf-8")
            except OSError as exc:
                changed |= self._fail(path, f"{path}: cannot read: {exc.strerror or exc}")
                continue
            except UnicodeDecodeError as exc:
                changed |= self._fail(path, f"{path}: not UTF-8: {exc.reason} at byte {exc.start}")
                continue
            self._stamps[path] = stamp
            try:
                objects, reuse = parse_policy_file_reusing(
                    text, str(path), self._reuse.get(path, {})
                )
            except PolicyFileError as exc:
                changed |= self._fail(path, str(exc))
                continue
            self._reuse[path] = reuse
            if self._errors.pop(path, None) is not None:
                log.info("%s: valid again", path)
                changed = True
            if objects != self._objects.get(path):
                self._objects[path] = objects
                changed = True
        return changed

    def _fail(self, path: Path, error: str) -> bool:
        """A file is unusable: report it once; its objects as last read stay."""
        if self._errors.get(path) == error:
            return False
        self._errors[path] = error
        log.error("%s; keeping its last good objects", error)
        return True

    def _publish(self) -> list[PolicyObject]:
        seen: dict[PolicyKey, str] = {}
        objects: list[PolicyObject] = []
        for path in _files_in_order(self._objects, self.paths):
            for obj in self._objects[path]:
                first = seen.get(obj.key)
                if first is not None and obj.key.name != "?":
                    error = f"{obj.origin}: {obj.key}: duplicate of the object at {first}"
                    objects.append(PolicyObject(obj.key, obj.origin, error=error))
                    continue
                seen[obj.key] = obj.origin
                objects.append(obj)
        published = tuple(objects)
        if published != self._published:
            for obj in published:
                if obj.error:
                    log.warning("policy rejected: %s", obj.error)
            log.info("policy: published %d objects", len(published))
        if published != self._published or not self._errors:
            # The catalog ignores an unchanged set, but marks the source recovered.
            self._published = published
            self.catalog.replace_policies(self.name, published)
        if self._errors:
            self.catalog.set_error(self.name, "; ".join(self._errors.values()))
        return list(published)


def _files_in_order(known: dict[Path, list[PolicyObject]], paths: Sequence[Path]) -> list[Path]:
    order = {p: i for i, p in enumerate(_safe_files(paths))}
    return sorted(known, key=lambda p: (order.get(p, len(order)), str(p)))


def _safe_files(paths: Sequence[Path]) -> list[Path]:
    try:
        return _files(paths)
    except OSError:
        return []
