"""Self-tests for tests/harness: real Envoy and backends, no xDS server involved."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.harness.backends import GrpcBackend, HttpBackend, grpc_whoami, http_get
from tests.harness.envoy import (
    EnvoyProcess,
    bootstrap,
    envoy_binary,
    static_bootstrap,
    validate_bootstrap,
)
from tests.harness.grpc_xds import GrpcXdsClient, grpc_bootstrap
from tests.harness.ports import free_port
from tests.harness.waiting import async_wait_for, wait_for

pytest_plugins = ["tests.harness.fixtures"]

pytestmark = pytest.mark.timeout(60)


def test_envoy_binary_is_native_executable() -> None:
    path = envoy_binary()
    assert os.access(path, os.X_OK), path


def test_http_backend_answers_with_its_name() -> None:
    with HttpBackend("b1") as backend:
        status, body = http_get(backend.url)
        assert (status, body) == (200, "b1")
        backend.status = 503
        assert http_get(backend.url) == (503, "b1")
        assert backend.requests == 2


def test_static_envoy_serves_traffic_without_failures(
    tmp_path: Path, envoy_factory, http_backend_factory, request_loop_factory
) -> None:
    shm_before = set(Path("/dev/shm").glob("envoy_shared_memory_*"))
    backend = http_backend_factory("b1")
    admin_port, listener_port = free_port(), free_port()
    env: EnvoyProcess = envoy_factory(
        static_bootstrap(admin_port, listener_port, backend.port), wait="ready"
    )
    assert env.server_state() == "LIVE"

    loop = request_loop_factory(f"http://127.0.0.1:{listener_port}/")
    loop.wait_for_requests(50, timeout=10)
    summary = loop.stop()
    assert summary.failed == 0, summary
    assert summary.total >= 50
    assert summary.bodies == {"b1": summary.ok}, summary

    assert backend.requests >= summary.ok

    stats = env.stats(r"^cluster\.backend\.upstream_rq_2xx$")
    assert stats["cluster.backend.upstream_rq_2xx"] >= summary.ok
    assert env.stat("cluster.backend.upstream_rq_2xx") == stats["cluster.backend.upstream_rq_2xx"]
    assert env.stat("no.such.stat") is None

    assert env.cluster_names() == ["backend"]
    assert env.cluster_names(dynamic_only=True) == []
    assert env.listener_names() == ["listener_0"]
    dump = env.config_dump("static_clusters")
    assert [c["cluster"]["name"] for c in dump["configs"]] == ["backend"]
    assert "configs" in env.config_dump()
    assert "starting main dispatch loop" in env.log_tail(200)

    pid = env.pid
    assert pid is not None
    assert env.stop() == 0
    assert not env.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert set(Path("/dev/shm").glob("envoy_shared_memory_*")) <= shm_before


ENVOY_DEFAULT_XDS_BACKOFF = (0.5, 30.0)
"""Envoy's own xDS reconnect backoff, base and cap in seconds (RetryInitialDelayMs and
RetryMaxDelayMs in its grpc_stream.h): what a bootstrap without retry_policy gets."""

XDS_RETRIES = 11
"""Reconnects the retry test waits for. Under the harness policy eleven take at most
8.5 s; under Envoy's default the last five are each drawn below 30 s, and all eleven
fit the same bound plus slack with probability below 1e-6 (simulated)."""

BACKOFF_SLACK = 3.0
"""Seconds allowed beyond the policy's worst case: process start-up, polling, a busy machine."""


def backoff_worst_case(base: float, cap: float, first: int, count: int) -> float:
    """Longest time `count` reconnects can take from reconnect delay number `first` on.

    Envoy's jittered exponential backoff draws delay k below min(base * 2**k, cap).
    """
    return sum(min(base * 2**k, cap) for k in range(first, first + count))


def test_envoy_with_ads_waits_for_server(tmp_path: Path, envoy_factory) -> None:
    """No xDS server: admin answers, Envoy stays initializing and reconnects at the
    harness's shortened backoff, a pace Envoy's default backoff cannot keep."""
    env: EnvoyProcess = envoy_factory(bootstrap(free_port(), free_port(), "node-1"))
    assert env.server_state() in {"PRE_INITIALIZING", "INITIALIZING"}
    # The policy Envoy runs with, as Envoy reports it.
    (boot,) = [c["bootstrap"] for c in env.config_dump()["configs"] if "bootstrap" in c]
    (xds,) = boot["dynamic_resources"]["ads_config"]["grpc_services"]
    back_off = xds["envoy_grpc"]["retry_policy"]["retry_back_off"]
    base, cap = (float(back_off[k].removesuffix("s")) for k in ("base_interval", "max_interval"))
    assert (base, cap) == (0.1, 1.0), back_off
    assert base < ENVOY_DEFAULT_XDS_BACKOFF[0] and cap < ENVOY_DEFAULT_XDS_BACKOFF[1]

    fails = "cluster.xds_cluster.upstream_cx_connect_fail"
    seen = wait_for(lambda: env.stat(fails), timeout=10, message="Envoy never dialled xDS")
    # Failure n is followed by reconnect delay number n - 1.
    limit = backoff_worst_case(base, cap, seen - 1, XDS_RETRIES) + BACKOFF_SLACK
    started = time.monotonic()
    wait_for(
        lambda: (env.stat(fails) or 0) >= seen + XDS_RETRIES,
        timeout=limit,
        message=f"{XDS_RETRIES} xDS reconnects after failure {seen} took over {limit:.1f} s: "
        f"not the {base:g} s .. {cap:g} s backoff the bootstrap configures",
    )
    assert time.monotonic() - started <= limit
    with pytest.raises(AssertionError, match="did not become LIVE"):
        env.wait_ready(timeout=0.3)


@pytest.mark.parametrize("kwargs", [{}, {"delta": True}, {"ads": False}, {"metadata": {"k": "v"}}])
def test_bootstraps_validate(tmp_path: Path, kwargs: dict) -> None:
    validate_bootstrap(bootstrap(free_port(), free_port(), "n", **kwargs), tmp_path)
    validate_bootstrap(static_bootstrap(free_port(), free_port(), free_port()), tmp_path)
    bad = bootstrap(1, 2, "n")
    bad["static_resources"]["clusters"][0]["no_such_field"] = 1
    with pytest.raises(AssertionError, match="no_such_field"):
        validate_bootstrap(bad, tmp_path)


def test_envoy_start_failure_is_reported(tmp_path: Path) -> None:
    env = EnvoyProcess()
    try:
        bad = static_bootstrap(free_port(), free_port(), free_port())
        bad["static_resources"]["clusters"][0]["type"] = "NOT_A_TYPE"
        env.start(bad, tmp_path / "bad.log")
        with pytest.raises(RuntimeError, match="exited with code"):
            env.wait_admin(10)
    finally:
        env.stop()


def test_grpc_backend_direct_call(grpc_backend_factory) -> None:
    backend: GrpcBackend = grpc_backend_factory("g1")
    assert grpc_whoami(backend.address) == "g1"
    assert grpc_whoami(backend.address) == "g1"
    assert backend.requests == 2


def test_grpc_xds_client_subprocess_reports_failures(tmp_path: Path) -> None:
    """Without an xDS server the client runs, reports UNAVAILABLE lines, and stops."""
    client = GrpcXdsClient(
        grpc_bootstrap(free_port(), "grpc-node"), "xds:///web", log_path=tmp_path / "c.log"
    )
    try:
        client.start()
        client.wait_for_calls(3, timeout=15)
        errors = client.errors_since(0)
        assert errors and all(e["code"] == "UNAVAILABLE" for e in errors), errors
        assert not client.bodies_since(0)
        with pytest.raises(AssertionError, match="never reached backend"):
            client.wait_for_body("g1", timeout=0.2)
        pid = client.pid
        assert pid is not None
    finally:
        client.close()
    assert not client.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_wait_for_reports_message_and_last_exception() -> None:
    assert wait_for(lambda: 42, timeout=1) == 42

    def boom() -> bool:
        raise ValueError("nope")

    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"thing never happened.*ValueError: nope"):
        wait_for(boom, timeout=0.2, message="thing never happened")
    assert time.monotonic() - started < 2


async def test_async_wait_for() -> None:
    calls = 0

    async def soon() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 3

    assert await async_wait_for(soon, timeout=2, interval=0.01)
    with pytest.raises(AssertionError, match="never"):
        await async_wait_for(lambda: False, timeout=0.1, message="never")
    with pytest.raises(AssertionError, match="TimeoutError"):
        await async_wait_for(lambda: asyncio.sleep(10), timeout=0.1, message="slow")
