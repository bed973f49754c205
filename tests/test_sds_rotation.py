"""`--ca-dir`: created on first start, reloaded when its files change (the last good CA
kept while they are inconsistent), and `xds-server ca rotate` / `--finish`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from xds_server.identity import cli as ca_cli
from xds_server.identity.ca import CA_KEY, CertificateAuthority
from xds_server.secret_rotation import CaDir, open_ca, open_store


def test_first_start_creates_the_ca_and_later_starts_load_it(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    created = open_ca(ca_dir, "example.org")
    assert sorted(p.name for p in ca_dir.iterdir()) == [
        "ca-cert.pem",
        "ca-key.pem",
        "cert-chain.pem",
        "root-cert.pem",
    ]
    assert oct((ca_dir / CA_KEY).stat().st_mode & 0o777) == "0o600"
    assert open_ca(ca_dir, None).certificate == created.certificate
    # The trust domain: the flag, else the CA's organization.
    assert open_store(ca_dir, None, 60).trust_domain == "example.org"
    assert open_store(ca_dir, "other.org", 60).trust_domain == "other.org"


def test_reload_follows_rotate_and_keeps_the_last_good_ca(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca_dir = tmp_path / "ca"
    first = open_ca(ca_dir, None)
    watcher = CaDir(ca_dir)
    assert watcher.reload() is None  # unchanged
    # Half-way through a rotation: a key that does not match the certificate.
    other = CertificateAuthority.create_root()
    (ca_dir / CA_KEY).write_bytes(other.key.pem())
    with caplog.at_level(logging.WARNING):
        assert watcher.reload() is None
        assert watcher.reload() is None
    assert [r.message.count("not reloaded") for r in caplog.records] == [1]
    (ca_dir / CA_KEY).write_bytes(first.key.pem())  # consistent again; now rotate
    assert ca_cli.main(["rotate", "--dir", str(ca_dir)]) == 0
    rotated = watcher.reload()
    assert rotated is not None and rotated.certificate != first.certificate
    assert set(rotated.trust_bundle.roots) == {first.certificate, rotated.certificate}
    assert watcher.reload() is None
    assert ca_cli.main(["rotate", "--dir", str(ca_dir), "--finish"]) == 0
    os.utime(ca_dir / "root-cert.pem")
    finished = watcher.reload()
    assert finished is not None and finished.trust_bundle.roots == (rotated.certificate,)
    assert ca_cli.main(["rotate", "--dir", str(ca_dir), "--finish"]) == 2
