"""`xds-server` as a user runs it: a subprocess, a registry file, settings, signals, bad input."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from tests.ads_client import AdsClient
from tests.harness.ports import free_port
from tests.harness.server_proc import ServerExited, XdsServerProcess
from tests.xds_util import CDS, LDS, NODE

pytest_plugins = ["tests.harness.fixtures"]
pytestmark = pytest.mark.timeout(60)
EXAMPLE = Path(__file__).parent.parent / "examples" / "registry.yaml"
Start = Callable[..., XdsServerProcess]


@pytest.fixture
def running(tmp_path: Path, xds_server_factory: Start) -> tuple[XdsServerProcess, Path]:
    path = tmp_path / "registry.yaml"
    path.write_text(EXAMPLE.read_text())
    return xds_server_factory("--file", str(path), "--file-interval", "0.1"), path


async def _clusters(port: int) -> tuple[AdsClient, discovery_pb2.DiscoveryResponse]:
    c = AdsClient(port)
    await c.send(discovery_pb2.DiscoveryRequest(node=NODE, type_url=CDS))
    return c, await c.recv()


async def test_serves_the_registry_file_and_follows_edits(
    running: tuple[XdsServerProcess, Path],
) -> None:
    server, path = running
    c, resp = await _clusters(server.xds_port)
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
    path.write_text(EXAMPLE.read_text() + "  - {name: db, ports: [{port: 5432, protocol: tcp}]}\n")
    resp2 = await c.recv(timeout=5.0)
    assert resp2.version_info != resp.version_info
    assert len(resp2.resources) == 3
    await c.close()
    assert server.stop() == 0
    # The reason names the file, the line and the bad value.
    out = server.log()
    assert f"{path}:3:" in out and "services[0].ports[0].port" in out


async def test_sigterm_ends_streams_with_unavailable(
    running: tuple[XdsServerProcess, Path],
) -> None:
    server, _ = running
    c, _resp = await _clusters(server.xds_port)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert await c.expect_status(timeout=10) == grpc.StatusCode.UNAVAILABLE
    await c.close()
    assert server.wait(10) == 0


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


# (flags, environment, how the last line begins) for startup errors: each ends with one clear
# line (after any log lines of what had started) and exit code 2, never a traceback.
# "{port}" is the busy port, "{dir}" the test's tmp dir (with bad.yaml and bad-policy.yaml).
EXIT_2: dict[str, tuple[list[str], dict[str, str], str]] = {
    "busy xDS port": (
        ["--xds-address", "127.0.0.1:{port}"],
        {},
        # The rest of the line is gRPC's own reason.
        "xds-server: cannot listen on 127.0.0.1:{port} (xDS): Failed to bind to address",
    ),
    "busy admin port": (
        ["--admin-address", "127.0.0.1:{port}"],
        {},
        "xds-server: cannot listen on 127.0.0.1:{port} (admin): Address already in use",
    ),
    "invalid registry file": (
        ["--file", "{dir}/bad.yaml"],
        {},
        "xds-server: {dir}/bad.yaml:2:30: services[0].ports[0].port: Input should be a valid",
    ),
    "unreadable registry file": (
        ["--file", "{dir}/nope.yaml"],
        {},
        "xds-server: {dir}/nope.yaml: cannot read: No such file or directory",
    ),
    "invalid policy YAML": (
        ["--policy", "{dir}/bad-policy.yaml"],
        {},
        "xds-server: {dir}/bad-policy.yaml:2:1: invalid YAML: ",
    ),
    "unreadable policy file": (
        ["--policy", "{dir}/no-policy.yaml"],
        {},
        "xds-server: {dir}/no-policy.yaml: cannot read: No such file or directory",
    ),
    "unknown flag": (
        ["--no-such-flag"],
        {},
        "xds-server: unrecognized arguments: --no-such-flag (see --help)",
    ),
    "admin on every interface without a token": (
        ["--admin-address", "0.0.0.0:{port}"],
        {},
        "xds-server: admin address 0.0.0.0:{port} is not loopback: set --admin-token or"
        " --admin-token-file (XDS_SERVER_ADMIN_TOKEN, XDS_SERVER_ADMIN_TOKEN_FILE), or bind it"
        " to 127.0.0.1",
    ),
    "admin on :: without a token": (
        ["--admin-address", "[::]:{port}"],
        {"XDS_SERVER_ADMIN_TOKEN": ""},
        "xds-server: admin address [::]:{port} is not loopback: set --admin-token",
    ),
    "unreadable admin token file": (
        ["--admin-token-file", "{dir}/no-token"],
        {},
        "xds-server: cannot read admin_token_file {dir}/no-token: No such file or directory",
    ),
    "admin token with a space": (
        [],
        {"XDS_SERVER_ADMIN_TOKEN": "two words"},
        "xds-server: invalid admin_token: must be printable ASCII without spaces",
    ),
    "bad environment value": (
        [],
        {"XDS_SERVER_DEBOUNCE_QUIET": "soon"},
        "xds-server: invalid debounce_quiet from environment variable "
        "XDS_SERVER_DEBOUNCE_QUIET: not a duration: 'soon' (e.g. 100ms, 1s, 2m)",
    ),
}


@pytest.mark.parametrize("case", EXIT_2)
def test_startup_error_is_one_line_and_exit_2(
    case: str, busy_port: int, tmp_path: Path, xds_server_factory: Start
) -> None:
    flags, env, line = EXIT_2[case]
    fill = {"port": str(busy_port), "dir": str(tmp_path)}
    (tmp_path / "bad.yaml").write_text("services:\n  - {name: a, ports: [{port: eighty}]}\n")
    (tmp_path / "bad-policy.yaml").write_text("spec: [\n")
    server = xds_server_factory(*(f.format(**fill) for f in flags), env=env, wait_ready=False)
    assert server.wait(20) == 2
    out = server.log()
    assert out.strip().splitlines()[-1].startswith(line.format(**fill)), out
    assert "Traceback" not in out


def test_config_file_and_json_logs(tmp_path: Path, xds_server_factory: Start) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(EXAMPLE.read_text())
    xds, admin = free_port(), free_port()
    cfg = tmp_path / "xds-server.yaml"
    cfg.write_text(
        f"xds_address: 127.0.0.1:{xds}\nadmin-address: 127.0.0.1:{admin}\n"
        f"file: {registry}\nlog_format: json\n"
    )
    # Only the config file names the addresses: the server must take them from it.
    server = xds_server_factory(
        "--config", str(cfg), addresses=False, admin_port=admin, xds_port=xds
    )
    with socket.create_connection(("127.0.0.1", xds), timeout=5):
        pass
    assert server.stop(15) == 0, server.log()
    lines = [json.loads(line) for line in server.log().strip().splitlines()]
    assert any(f"127.0.0.1:{xds}" in doc["message"] for doc in lines)
    assert {"time", "level", "logger", "message"} <= set(lines[0])


def test_a_dead_server_ends_the_wait_at_once(tmp_path: Path, xds_server_factory: Start) -> None:
    """The harness itself: waiting for a server that died fails with its exit code and log
    tail as soon as the process is gone, not after the whole timeout."""
    with pytest.raises(ServerExited) as err:
        xds_server_factory("--no-such-flag", timeout=60)
    assert "exited with code 2" in str(err.value)
    assert "unrecognized arguments: --no-such-flag" in str(err.value)


async def _listeners(port: int, node: base_pb2.Node) -> list[listener_pb2.Listener]:
    c = AdsClient(port)
    await c.send(discovery_pb2.DiscoveryRequest(node=node, type_url=LDS))
    resp = await c.recv()
    await c.close()
    out = []
    for any_ in resp.resources:
        lst = listener_pb2.Listener()
        assert any_.Unpack(lst)
        out.append(lst)
    return out


async def test_istio_generator_grpc_marks_a_proxyless_client(
    running: tuple[XdsServerProcess, Path],
) -> None:
    """A node whose metadata says GENERATOR: grpc (Istio's proxyless bootstrap) gets
    api_listeners although its user agent is not gRPC's; without it, Envoy listeners."""
    server, _ = running
    meta = struct_pb2.Struct()
    meta.update({"GENERATOR": "grpc"})
    proxyless = base_pb2.Node(id="p", cluster="c", user_agent_name="istio-agent", metadata=meta)
    got = await _listeners(server.xds_port, proxyless)
    assert got and all(lst.HasField("api_listener") for lst in got)
    assert {"web", "api"} <= {lst.name for lst in got}
    plain = base_pb2.Node(id="e", cluster="c", user_agent_name="istio-agent")
    got = await _listeners(server.xds_port, plain)
    assert got and not any(lst.HasField("api_listener") for lst in got)
    assert all(lst.HasField("address") for lst in got)
