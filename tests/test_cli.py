"""`xds-server` as a user runs it: a subprocess, a registry file, settings, signals, bad input."""

from __future__ import annotations

import asyncio
import json
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
EXAMPLE = Path(__file__).parent.parent / "examples" / "registry.yaml"


def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    if not any(a.startswith("--admin-address") for a in args):
        args = (*args, "--admin-address", f"127.0.0.1:{free_port()}")
    return subprocess.Popen(
        [sys.executable, "-m", "xds_server", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
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
    path = tmp_path / "registry.yaml"
    path.write_text(EXAMPLE.read_text())
    port = free_port()
    proc = _start(
        "--file", str(path), "--xds-address", f"127.0.0.1:{port}", "--file-interval", "0.1"
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


async def test_serves_the_registry_file_and_follows_edits(
    running: tuple[subprocess.Popen[str], int, Path],
) -> None:
    proc, port, path = running
    c, resp = await _clusters(port)
    assert len(resp.resources) == 2  # web and api
    await c.send(
        discovery_pb2.DiscoveryRequest(
            type_url=CDS, response_nonce=resp.nonce, version_info=resp.version_info
        )
    )
    # A broken edit keeps the last good state (nothing is pushed)...
    path.write_text("services:\n  - name: web\n    ports: [{port: NOPE}]\n")
    with pytest.raises(asyncio.TimeoutError):
        await c.recv(timeout=1.0)
    # ...and a good edit is pushed: a third service means a third cluster.
    path.write_text(
        EXAMPLE.read_text() + "  - {name: db, ports: [{port: 5432, protocol: tcp}]}\n"
    )
    resp2 = await c.recv(timeout=5.0)
    assert resp2.version_info != resp.version_info
    assert len(resp2.resources) == 3
    await c.close()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    # The reason names the file, the line and the bad value.
    assert f"{path}:3:" in out and "services[0].ports[0].port" in out


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


def test_busy_admin_port_is_one_clear_line_and_exit_2() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = _start(
            "--xds-address", f"127.0.0.1:{free_port()}", "--admin-address", f"127.0.0.1:{port}"
        )
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert out.strip().splitlines()[-1] == (
        f"xds-server: cannot listen on 127.0.0.1:{port} (admin): Address already in use"
    )


def test_bad_registry_file_at_start_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "r.yaml"
    bad.write_text("services:\n  - {name: a, ports: [{port: eighty}]}\n")
    proc = _start("--file", str(bad), "--xds-address", f"127.0.0.1:{free_port()}")
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert f"{bad}:2:" in out and "services[0].ports[0].port" in out


def test_unreadable_registry_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    proc = _start("--file", str(missing), "--xds-address", f"127.0.0.1:{free_port()}")
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert out.strip() == f"xds-server: {missing}: cannot read: No such file or directory"


def test_unknown_flag_is_one_line() -> None:
    proc = _start("--no-such-flag")
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert out.strip().splitlines() == [
        "xds-server: unrecognized arguments: --no-such-flag (see --help)"
    ]


def test_bad_environment_value_names_the_variable() -> None:
    proc = _start(env={"XDS_SERVER_DEBOUNCE_QUIET": "soon"})
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert out.strip() == (
        "xds-server: invalid debounce_quiet from environment variable "
        "XDS_SERVER_DEBOUNCE_QUIET: not a duration: 'soon' (e.g. 100ms, 1s, 2m)"
    )


def test_config_file_and_json_logs(tmp_path: Path) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(EXAMPLE.read_text())
    xds, admin = free_port(), free_port()
    cfg = tmp_path / "xds-server.yaml"
    cfg.write_text(
        f"xds_address: 127.0.0.1:{xds}\nadmin-address: 127.0.0.1:{admin}\n"
        f"file: {registry}\nlog_format: json\n"
    )
    proc = _start("--config", str(cfg), "--admin-address", f"127.0.0.1:{admin}")
    try:
        _wait_port(admin)
        _wait_port(xds)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert any(f"127.0.0.1:{xds}" in doc["message"] for doc in lines)
    assert {"time", "level", "logger", "message"} <= set(lines[0])


os.environ.setdefault("PYTHONUNBUFFERED", "1")
