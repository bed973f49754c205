"""Workload certificates over SDS with a real Envoy (issue 13, tests 4 and 5).

One Envoy is both ends of a mutual-TLS hop whose certificate (``default``) and trust
bundle (``ROOTCA``) come from the xds-server's SDS over ADS (tests/harness/envoy.py
`sds_mtls_bootstrap`): plain HTTP in, mTLS to its own TLS listener, plain HTTP to a
backend. A request loop runs through it while certificates rotate (test 4) and while
the CA is replaced with two roots trusted in between (test 5): no request may fail.

Test 4 runs 30 s rather than the issue's minute on SotW (with a 6 s TTL that is about
eight renewals, each meeting fresh handshakes: the ``mesh`` cluster reconnects every 20
requests); a minute would add renewals of the same kind, not new cases, on a CI budget
shared by the whole suite. Delta runs the same check for 12 s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness.backends import HttpBackend, RequestLoop
from tests.harness.envoy import EnvoyProcess, sds_mtls_bootstrap
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for
from xds_server.identity import cli as ca_cli

pytest_plugins = ["tests.harness.fixtures"]

SPIFFE_ID = "spiffe://cluster.local/ns/default/sa/web"
UPDATES = "ssl_context_update_by_sds"


def certs(env: EnvoyProcess) -> list[dict[str, Any]]:
    doc: dict[str, Any] = json.loads(env.admin_get("/certs"))
    return list(doc.get("certificates", []))


def leaf_serials(env: EnvoyProcess) -> set[str]:
    return {c["serial_number"] for e in certs(env) for c in e.get("cert_chain", [])}


def ca_serials(env: EnvoyProcess) -> set[str]:
    return {c["serial_number"] for e in certs(env) for c in e.get("ca_cert", [])}


def sds_updates(env: EnvoyProcess) -> dict[str, int]:
    """``ssl_context_update_by_sds`` of the TLS listener and of the mTLS cluster."""
    stats = env.stats(UPDATES)
    listener = sum(v for k, v in stats.items() if k.startswith("listener."))
    cluster = sum(v for k, v in stats.items() if k.startswith("cluster.mesh."))
    return {"listener": listener, "cluster": cluster}


def start_mesh(
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory: Callable[..., EnvoyProcess],
    http_backend_factory: Callable[..., HttpBackend],
    *,
    delta: bool,
    ttl: str = "24h",
) -> tuple[EnvoyProcess, str, Path]:
    """The xds-server (its CA created in tmp_path/ca on first start), a backend, and the
    Envoy, live once its static listeners have their secrets."""
    ca_dir = tmp_path / "ca"
    server = xds_server_factory("--ca-dir", str(ca_dir), "--workload-cert-ttl", ttl)
    backend = http_backend_factory("backend")
    front = free_port()
    config = sds_mtls_bootstrap(
        server.xds_port,
        free_port(),
        front,
        free_port(),
        backend.port,
        node_id="web-1",
        namespace="default",
        service_account="web",
        spiffe_id=SPIFFE_ID,
        cds_path=tmp_path / "cds.json",
        delta=delta,
    )
    env = envoy_factory(config, wait="ready", timeout=30)
    return env, f"http://127.0.0.1:{front}/", ca_dir


def run_loop(url: str, seconds: float, sample: Callable[[], None]) -> RequestLoop:
    loop = RequestLoop(url, interval=0.02).start()
    try:
        loop.wait_for_requests(5, timeout=10)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sample()
            time.sleep(0.5)
    finally:
        loop.stop()
    return loop


@pytest.mark.parametrize(
    ("delta", "seconds"), [(False, 30.0), (True, 12.0)], ids=["sotw-30s", "delta-12s"]
)
def test_4_workload_certificate_rotation_under_load_fails_no_request(
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory: Callable[..., EnvoyProcess],
    http_backend_factory: Callable[..., HttpBackend],
    delta: bool,
    seconds: float,
) -> None:
    env, url, _ = start_mesh(
        tmp_path, xds_server_factory, envoy_factory, http_backend_factory, delta=delta, ttl="6s"
    )
    first = leaf_serials(env)
    assert len(first) == 1, certs(env)  # one identity: the listener and cluster share it
    before = sds_updates(env)
    seen: set[str] = set(first)
    loop = run_loop(url, seconds, lambda: seen.update(leaf_serials(env)))
    summary = loop.snapshot()
    assert summary.total > 100 and summary.failed == 0, summary
    # Renewal at 50-60% of 6 s: a new certificate every 3-3.6 s.
    assert len(seen) >= seconds / 4, sorted(seen)
    after = sds_updates(env)
    assert after["listener"] > before["listener"] and after["cluster"] > before["cluster"], (
        before,
        after,
    )


def test_5_ca_rotation_with_two_roots_fails_no_request(
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory: Callable[..., EnvoyProcess],
    http_backend_factory: Callable[..., HttpBackend],
) -> None:
    env, url, ca_dir = start_mesh(
        tmp_path, xds_server_factory, envoy_factory, http_backend_factory, delta=True
    )
    old_root, old_leaf = ca_serials(env), leaf_serials(env)
    assert len(old_root) == 1 and len(old_leaf) == 1
    state: dict[str, Any] = {"step": "rotate", "roots": [], "leaves": set()}
    loop = RequestLoop(url, interval=0.02)

    def step() -> None:
        roots, leaves = ca_serials(env), leaf_serials(env)
        state["roots"].append(len(roots))
        state["leaves"] |= leaves
        if state["step"] == "rotate":
            assert ca_cli.main(["rotate", "--dir", str(ca_dir)]) == 0
            state["step"] = "rotating"
        elif state["step"] == "rotating" and len(roots) == 2 and leaves != old_leaf:
            # Both roots trusted and a certificate from the new key: serve a while so
            # handshakes meet this state (a new one every 20 requests), then finish.
            state["new_root"], state["at"] = roots - old_root, loop.mark()
            state["step"] = "rotated"
        elif state["step"] == "rotated" and loop.mark() - state["at"] >= 100:
            assert ca_cli.main(["rotate", "--dir", str(ca_dir), "--finish"]) == 0
            state["step"] = "finishing"
        elif state["step"] == "finishing" and roots == state["new_root"]:
            state["step"] = "done"

    loop.start()
    try:
        loop.wait_for_requests(5, timeout=10)

        def done() -> bool:
            step()
            return bool(state["step"] == "done")

        wait_for(
            done,
            timeout=40,
            interval=0.3,
            message=lambda: f"CA rotation: {state}, {loop.snapshot()}",
        )
        loop.wait_for_requests(100, timeout=20)  # and handshakes after the end
    finally:
        summary = loop.stop()
    assert summary.total > 200 and summary.failed == 0, summary
    assert 2 in state["roots"], state  # the two-root bundle was served in between
    assert not (leaf_serials(env) & old_leaf)
