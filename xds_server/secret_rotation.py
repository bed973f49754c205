"""The secret store over time: `--ca-dir` opened (created on first start), renewals run
when due, and the directory reloaded when its files change, which is how a CA rotation
(`xds-server ca rotate`) reaches a running server.

A bad reload (a half-written directory, a key that does not match) is logged once and
the last good CA stays; the next change is tried again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Final

from xds_server.identity.ca import CACERTS_FILES, CertificateAuthority
from xds_server.identity.pki import CaError
from xds_server.identity.spiffe import DEFAULT_TRUST_DOMAIN, check_trust_domain
from xds_server.secrets import SecretStore

log = logging.getLogger(__name__)

POLL: Final = 1.0  # seconds between looks at --ca-dir (and the longest sleep)
MIN_SLEEP: Final = 0.1


def open_ca(directory: Path, trust_domain: str | None) -> CertificateAuthority:
    """The CA in ``directory`` (Istio's cacerts layout); a new self-signed root written
    there when none of its files exists yet (the first start). CaError otherwise."""
    directory = Path(directory)
    if not any((directory / name).exists() for name in CACERTS_FILES):
        ca = CertificateAuthority.create_root(trust_domain or DEFAULT_TRUST_DOMAIN)
        ca.save_dir(directory)
        log.info("created a CA for trust domain %s in %s", ca.trust_domain, directory)
        return ca
    return CertificateAuthority.load_dir(directory)


def open_store(directory: Path, trust_domain: str | None, ttl: float) -> SecretStore:
    """The secret store for `xds-server --ca-dir`: the trust domain is ``trust_domain``,
    else the CA's organization (as `ca issue`), else cluster.local."""
    ca = open_ca(directory, trust_domain)
    domain = check_trust_domain(trust_domain or ca.trust_domain or DEFAULT_TRUST_DOMAIN)
    return SecretStore(ca, trust_domain=domain, ttl=dt.timedelta(seconds=ttl))


class CaDir:
    """Notices changes to a cacerts directory's files (size and mtime)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._stamp = self._stat()
        self._last_error: str | None = None

    def _stat(self) -> tuple[tuple[int, int] | None, ...]:
        out: list[tuple[int, int] | None] = []
        for name in CACERTS_FILES:
            try:
                st = (self.directory / name).stat()
            except OSError:
                out.append(None)
            else:
                out.append((st.st_mtime_ns, st.st_size))
        return tuple(out)

    def reload(self) -> CertificateAuthority | None:
        """The directory's CA if its files changed since the last good load, else None."""
        stamp = self._stat()
        if stamp == self._stamp:
            return None
        try:
            ca = CertificateAuthority.load_dir(self.directory)
        except CaError as exc:
            if str(exc) != self._last_error:  # once per distinct problem, not per poll
                self._last_error = str(exc)
                log.warning("%s: not reloaded, the last good CA stays: %s", self.directory, exc)
            return None
        self._stamp, self._last_error = stamp, None
        log.info("%s changed: CA reloaded", self.directory)
        return ca


async def run(store: SecretStore, ca_dir: CaDir | None = None) -> None:
    """Renew certificates when due and follow ``ca_dir``, until cancelled."""
    while True:
        try:
            if ca_dir is not None and (ca := ca_dir.reload()) is not None:
                store.set_ca(ca)
            store.renew_due()
        except Exception:  # a bug here must not end renewals for good
            log.exception("secret rotation step failed")
        due = store.next_due()
        delay = POLL
        if due is not None:
            delay = min(POLL, max(MIN_SLEEP, (due - store.clock()).total_seconds()))
        await asyncio.sleep(delay)
