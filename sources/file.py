"""The file registry source: watches one registry file and publishes its services.

The file's format, its mapping to the model and its error messages are in
`sources.file_schema`; this module reads the file when it changes (`sources.watch`) and
publishes what it describes, keeping the last good state while the file is unusable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sources.base import Catalog
from sources.file_schema import FileRegistryError, ServiceCache, parse_registry
from sources.watch import Mode, Watch
from xds_server.model import ServiceEntry

__all__ = ["KIND", "FileRegistryError", "FileSource", "ServiceCache", "parse_registry"]

log = logging.getLogger("sources.file")

KIND = "file"
# A file modified this recently may be modified again within the same mtime tick
# (same size, same inode): re-read it on every check until it is older ("racy" stamps).
_RACY_NS = 2_000_000_000


# --- the watching source ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stamp:
    mtime_ns: int
    size: int
    inode: int
    device: int


@dataclass(frozen=True, slots=True)
class _Result:
    entries: tuple[ServiceEntry, ...] = ()
    error: str | None = None


class FileSource:
    """Watches one registry file and publishes its services to the catalog.

    The file's directory is watched with OS notifications (`sources.watch`: in-place
    writes, saves by rename and ConfigMap symlink swaps are all seen), with a safety
    re-check every `interval` seconds; where notifications are unavailable (or `watch`
    is "poll") the file is polled every `interval` seconds instead. On each check it is
    stat'ed (mtime, size, inode), re-read if that changed, and published only when the
    parsed entries changed; only the services whose content changed are validated
    again (`ServiceCache`). A file that is missing or unusable is reported once per
    distinct error (log and `catalog.set_error`); the last good state stays published.
    """

    def __init__(
        self,
        path: Path,
        catalog: Catalog,
        *,
        name: str = "file",
        interval: float = 1.0,
        watch: Mode = "auto",
    ) -> None:
        self.path = path
        self.catalog = catalog
        self.name = name
        self.interval = interval
        self.cache = ServiceCache()
        self.watch = Watch([path], self.poll, interval=interval, mode=watch, what="registry file")
        self._stamp: _Stamp | None = None
        self._text: str | None = None
        self._published: tuple[ServiceEntry, ...] | None = None
        self._error: str | None = None
        catalog.register(name, KIND)

    @property
    def error(self) -> str | None:
        return self._error

    def load_once(self) -> list[ServiceEntry]:
        """Read, parse and publish the file now; FileRegistryError if it is unusable."""
        result = self._scan(force=True)
        assert result is not None
        if result.error is not None:
            # The caller reports it (at startup there is no last good state to keep).
            self._error = result.error
            self.catalog.set_error(self.name, result.error)
            raise FileRegistryError(result.error)
        self._apply(result)
        return list(result.entries)

    async def run(self) -> None:
        """Forever: watch the file and publish what changed."""
        await self.watch.run()

    async def poll(self) -> None:
        """One check of the file (off the event loop), applied to the catalog."""
        result = await asyncio.to_thread(self._scan)
        if result is not None:
            self._apply(result)

    def _scan(self, force: bool = False) -> _Result | None:
        """Stat and, if it may have changed, read and parse. None: nothing new."""
        try:
            st = os.stat(self.path)
            stamp = _Stamp(st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)
            racy = time.time_ns() - st.st_mtime_ns < _RACY_NS
            if stamp == self._stamp and not racy and not force:
                return None
            data = self.path.read_bytes()
        except OSError as exc:
            self._stamp = self._text = None
            return _Result(error=f"{self.path}: cannot read: {exc.strerror or exc}")
        self._stamp = stamp
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._text = None
            return _Result(error=f"{self.path}: not UTF-8: {exc.reason} at byte {exc.start}")
        if text == self._text and not force:
            return None
        self._text = text
        try:
            entries = parse_registry(text, str(self.path), self.name, self.cache)
            return _Result(entries=tuple(entries))
        except FileRegistryError as exc:
            return _Result(error=str(exc))
        except Exception as exc:  # a bug here must not end the watch loop
            log.exception("%s: unexpected error while parsing", self.path)
            return _Result(error=f"{self.path}: internal error: {type(exc).__name__}: {exc}")

    def _apply(self, result: _Result) -> None:
        if result.error is not None:
            if result.error != self._error:
                self._error = result.error
                log.error("%s; keeping the last good state", result.error)
                self.catalog.set_error(self.name, result.error)
            return
        if result.entries == self._published and self._error is None:
            return
        if self._error is not None:
            log.info("%s: valid again", self.path)
        self._error = None
        self._published = result.entries
        self.catalog.replace(self.name, result.entries)
        log.info("%s: %s", self.path, _summary(result.entries))


def _summary(entries: Sequence[ServiceEntry]) -> str:
    endpoints = sum(len(e.endpoints) for e in entries)
    return f"published {len(entries)} services, {endpoints} endpoints"
