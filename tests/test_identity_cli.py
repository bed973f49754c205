"""`xds-server ca init` / `ca issue` as a user runs them (real subprocesses), and Envoy
accepting what they write in a TLS context (``envoy --mode validate`` loads the files)."""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from tests.harness.envoy import static_bootstrap, validate_bootstrap
from tests.harness.ports import free_port
from tests.harness.server_proc import ROOT, script

pytestmark = pytest.mark.timeout(60)
CACERTS = ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]


def ca(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [script("xds-server"), "ca", *args],
        capture_output=True, text=True, timeout=30, env=env, check=False,
    )  # fmt: skip


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_istio_cacerts_and_refuses_to_overwrite(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    done = ca("init", "--dir", str(d), "--trust-domain", "example.org")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in d.iterdir()) == CACERTS
    assert mode(d / "ca-key.pem") == 0o600
    root = x509.load_pem_x509_certificate((d / "root-cert.pem").read_bytes())
    assert (d / "ca-cert.pem").read_bytes() == (d / "root-cert.pem").read_bytes()
    assert "O=example.org" in root.subject.rfc4514_string()
    key = (d / "ca-key.pem").read_bytes()
    again = ca("init", "--dir", str(d))
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1, again.stderr  # one line
    assert "already holds a CA" in again.stderr and "not overwritten" in again.stderr
    assert (d / "ca-key.pem").read_bytes() == key


def test_issue_writes_what_envoy_and_grpc_read(tmp_path: Path) -> None:
    assert ca("init", "--dir", str(tmp_path / "ca")).returncode == 0
    out = tmp_path / "web"
    done = ca(
        "issue", "--ca-dir", str(tmp_path / "ca"), "--namespace", "shop",
        "--service-account", "web", "--ttl", "2h", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "issued spiffe://cluster.local/ns/shop/sa/web" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["cert-chain.pem", "key.pem", "root-cert.pem"]
    assert mode(out / "key.pem") == 0o600
    assert b"PRIVATE KEY" not in (out / "cert-chain.pem").read_bytes()
    leaf, *chain = x509.load_pem_x509_certificates((out / "cert-chain.pem").read_bytes())
    roots = x509.load_pem_x509_certificates((out / "root-cert.pem").read_bytes())
    life = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert life == dt.timedelta(hours=2, minutes=1)  # the TTL plus the backdating
    verifier = PolicyBuilder().store(Store(roots)).build_client_verifier()
    subjects = verifier.verify(leaf, chain).subjects or []
    assert [str(s.value) for s in subjects] == ["spiffe://cluster.local/ns/shop/sa/web"]


def test_issue_takes_the_trust_domain_from_the_ca_unless_told(tmp_path: Path) -> None:
    assert (
        ca("init", "--dir", str(tmp_path / "ca"), "--trust-domain", "example.org").returncode == 0
    )
    base = ["issue", "--ca-dir", str(tmp_path / "ca"), "--namespace", "a", "--service-account", "b"]
    done = ca(*base, "--out", str(tmp_path / "o1"))
    assert "issued spiffe://example.org/ns/a/sa/b " in done.stdout, done.stderr
    done = ca(*base, "--trust-domain", "other.org", "--out", str(tmp_path / "o2"))
    assert "issued spiffe://other.org/ns/a/sa/b " in done.stdout, done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--namespace", "Shop", "--service-account", "web"], "namespace 'Shop': not a DNS-1123"),
        (["--namespace", "shop", "--service-account", "web", "--ttl", "0h"], "positive duration"),
        (["--namespace", "shop", "--service-account", "web", "--trust-domain", "A"], "lower case"),
    ],
)
def test_issue_refuses_bad_input_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    assert ca("init", "--dir", str(tmp_path / "ca")).returncode == 0
    done = ca("issue", "--ca-dir", str(tmp_path / "ca"), "--out", str(tmp_path / "o"), *args)
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "o").exists()


def test_issue_without_a_ca_says_which_file_is_missing(tmp_path: Path) -> None:
    done = ca(
        "issue", "--ca-dir", str(tmp_path / "nope"), "--namespace", "a",
        "--service-account", "b", "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert done.returncode == 2
    assert "nope/ca-cert.pem: cannot read" in done.stderr


def _tls_context(d: Path, *, upstream: bool) -> dict[str, Any]:
    common: dict[str, Any] = {
        "tls_certificates": [
            {
                "certificate_chain": {"filename": str(d / "cert-chain.pem")},
                "private_key": {"filename": str(d / "key.pem")},
            }
        ],
        "validation_context": {"trusted_ca": {"filename": str(d / "root-cert.pem")}},
    }
    kind = "UpstreamTlsContext" if upstream else "DownstreamTlsContext"
    ctx: dict[str, Any] = {
        "@type": f"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{kind}",
        "common_tls_context": common,
    }
    if not upstream:
        ctx["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": ctx}


def test_envoy_loads_the_issued_files_in_tls_contexts(tmp_path: Path) -> None:
    assert ca("init", "--dir", str(tmp_path / "ca")).returncode == 0
    for sa in ("web", "api"):
        done = ca(
            "issue", "--ca-dir", str(tmp_path / "ca"), "--namespace", "default",
            "--service-account", sa, "--out", str(tmp_path / sa),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    boot = static_bootstrap(free_port(), free_port(), free_port())
    listener = boot["static_resources"]["listeners"][0]
    listener["filter_chains"][0]["transport_socket"] = _tls_context(
        tmp_path / "api", upstream=False
    )
    cluster = boot["static_resources"]["clusters"][0]
    cluster["transport_socket"] = _tls_context(tmp_path / "web", upstream=True)
    validate_bootstrap(boot, tmp_path)
    # Envoy really reads the files: web's key with api's certificate is refused.
    (tmp_path / "api" / "key.pem").write_bytes((tmp_path / "web" / "key.pem").read_bytes())
    with pytest.raises(AssertionError, match="KEY_VALUES_MISMATCH"):
        validate_bootstrap(boot, tmp_path)
