"""`xds-server` as a user runs it: a subprocess, a resources file, signals, bad input."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from tests.ads_client import AdsClient
from tests.harness.ports import free_port
from tests.xds_util import CDS, NODE

pytestmark = pytest.mark.timeout(60)
EXAMPLE = Path(__file__).parent.parent / "examples" / "resources.yaml"


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "xds_server", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"server did not listen on {port}")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    path = tmp_path / "resources.yaml"
    path.write_text(EXAMPLE.read_text())
    port = free_port()
    proc = _start(
        "--resources", str(path), "--xds-address", f"127.0.0.1:{port}", "--reload-interval", "0.1"
    )
    try:
        _wait_port(port)
        yield proc, port, path
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


async def _clusters(port: int) -> tuple[AdsClient, discovery_pb2.DiscoveryResponse]:
    c = AdsClient(port)
    await c.send(discovery_pb2.DiscoveryRequest(node=NODE, type_url=CDS))
    return c, await c.recv()


async def test_serves_the_resources_file_and_follows_edits(
    running: tuple[subprocess.Popen[str], int, Path],
) -> None:
    proc, port, path = running
    c, resp = await _clusters(port)
    assert len(resp.resources) == 1
    await c.send(
        discovery_pb2.DiscoveryRequest(
            type_url=CDS, response_nonce=resp.nonce, version_info=resp.version_info
        )
    )
    # A broken edit keeps the last good state (nothing is pushed)...
    path.write_text("clusters: [ {name: web, type: NOPE} ]\n")
    with pytest.raises(asyncio.TimeoutError):
        await c.recv(timeout=1.0)
    # ...and a good edit is pushed.
    path.write_text(EXAMPLE.read_text().replace("connect_timeout: 1s", "connect_timeout: 2s"))
    resp2 = await c.recv(timeout=5.0)
    assert resp2.version_info != resp.version_info
    await c.close()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "keeping the last good resources" in out
    assert "NOPE" in out  # the reason names the bad value


async def test_sigterm_ends_streams_with_unavailable(
    running: tuple[subprocess.Popen[str], int, Path],
) -> None:
    import grpc

    proc, port, _ = running
    c, _resp = await _clusters(port)
    proc.send_signal(signal.SIGTERM)
    assert await c.expect_status(timeout=10) == grpc.StatusCode.UNAVAILABLE
    await c.close()
    assert proc.wait(10) == 0


def test_busy_port_is_one_clear_line_and_exit_2() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = _start("--xds-address", f"127.0.0.1:{port}")
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in out


def test_bad_resources_file_at_start_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "r.yaml"
    bad.write_text("clusters:\n  - {name: a, connect_timeout: forever}\n")
    proc = _start("--resources", str(bad), "--xds-address", f"127.0.0.1:{free_port()}")
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert "clusters[0]" in out and str(bad) in out


def test_unknown_flag_fails_with_usage() -> None:
    proc = _start("--no-such-flag")
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "unrecognized arguments" in out


os.environ.setdefault("PYTHONUNBUFFERED", "1")
