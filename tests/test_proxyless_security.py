"""Issue 13, test 8: proxyless gRPC with mesh security, end to end.

A real xds-server subprocess (``--ca-dir``, mutual TLS on the xDS port), an xDS-managed
grpcio server (``grpc.server(xds=True)`` + ``xds_server_credentials``) and a proxyless
client (``xds:///api`` + ``xds_channel_credentials``), each in its own process, with
``file_watcher`` certificate providers over ``ca issue``-style files (gRFC A29, A36).
The server replies with the caller's SPIFFE ID and certificate serial, so a call that
was not mutual TLS, or with another certificate, shows.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.harness.controlled_xds import ControlledXds
from tests.harness.grpc_mesh import (
    XDS_CREDENTIALS,
    GrpcXdsServer,
    mesh_bootstrap,
    nacks,
    replies,
    server_bootstrap,
)
from tests.harness.grpc_xds import GrpcXdsClient
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for
from tests.harness.xds_tls import TRUST_DOMAIN, XdsPki, write_workload
from translators.grpc_server import allow_principals
from translators.grpc_tls import TLS_MODE_LABEL
from xds_server.identity import cli as ca_cli
from xds_server.identity.cli import CERT_CHAIN_FILE
from xds_server.identity.spiffe import SpiffeId
from xds_server.model import Endpoint, Port, Service, ServiceEntry

pytest_plugins = ["tests.harness.fixtures"]
pytestmark = pytest.mark.timeout(120)

WEB = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/web"
# The identity of examples/xds-mtls/grpc-bootstrap.json's node.
EXAMPLE_CLIENT = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/grpc-client"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "xds-mtls"
_ids = itertools.count(1)


def registry(port: int, labels: dict[str, str]) -> str:
    service = {
        "name": "api",
        "ports": [{"name": "grpc", "port": 50051, "protocol": "grpc"}],
        "labels": labels,
        "endpoints": [{"address": "127.0.0.1", "port": port}],
    }
    return yaml.safe_dump({"services": [service]})


def example(name: str, certs: Path, xds_port: int) -> dict[str, Any]:
    """An examples/xds-mtls bootstrap with this test's files, port and IP, refreshing its
    certificate files every second."""
    text = (
        (EXAMPLES / name)
        .read_text()
        .replace("/etc/xds-certs", str(certs))
        .replace("localhost:18000", f"localhost:{xds_port}")
        .replace('"60s"', '"1s"')
        .replace("10.0.0.5", "127.0.0.1")
    )
    boot = json.loads(text)
    assert isinstance(boot, dict)
    return boot


@dataclass
class Mesh:
    pki: XdsPki
    xds: XdsServerProcess
    api_port: int
    api_certs: Path
    tmp: Path

    def server(self, **kwargs: object) -> GrpcXdsServer:
        boot = example("grpc-server-bootstrap.json", self.api_certs, self.xds.xds_port)
        log = self.tmp / f"api-server-{next(_ids)}.log"
        return GrpcXdsServer("api", self.api_port, boot, log, **kwargs)  # type: ignore[arg-type]

    def issue_client(self) -> Path:
        """The example client's files, written by `xds-server ca issue --out` (again: a
        rotation, as the README says to do it)."""
        certs = self.tmp / "grpc-client-certs"
        issue = ["issue", "--ca-dir", str(self.pki.ca_dir), "--out", str(certs)]
        identity = ["--namespace", "default", "--service-account", "grpc-client"]
        assert ca_cli.main([*issue, *identity]) == 0
        return certs

    def client(self) -> tuple[dict[str, Any], Path]:
        certs = self.issue_client()
        return example("grpc-bootstrap.json", certs, self.xds.xds_port), certs


def start_mesh(
    tmp_path: Path, xds_server_factory: Callable[..., XdsServerProcess], *server_args: str
) -> Mesh:
    pki = XdsPki(tmp_path / "pki")
    api_port = free_port()
    path = tmp_path / "registry.yaml"
    path.write_text(registry(api_port, {TLS_MODE_LABEL: "istio", "app": "api"}))
    xds = xds_server_factory(
        *pki.server_args(),
        *("--ca-dir", str(pki.ca_dir)),
        *("--file", str(path), "--file-interval", "0.1"),
        *server_args,
        insecure=False,
    )
    return Mesh(pki, xds, api_port, pki.client("default", "api"), tmp_path)


@pytest.fixture
def mesh(tmp_path: Path, xds_server_factory: Callable[..., XdsServerProcess]) -> Mesh:
    return start_mesh(tmp_path, xds_server_factory)


def test_mtls_call_and_certificate_file_swap_without_errors(
    mesh: Mesh, grpc_xds_client_factory: Callable[..., GrpcXdsClient]
) -> None:
    # Connections live 1 s, so new handshakes (with whatever files are current) follow.
    with mesh.server(max_connection_age_ms=1000) as server:
        boot, web_certs = mesh.client()
        client = grpc_xds_client_factory(boot, "xds:///api", interval=0.05, env=XDS_CREDENTIALS)

        def first_reply() -> dict[str, str] | None:
            got = replies(client)
            return got[0] if got else None

        reply = wait_for(
            first_reply,
            timeout=30,
            message=lambda: f"no reply: {client.log_tail(10)}\nserver: {server.log_tail(10)}",
        )
        # The server saw the client's certificate: the call was mutual TLS, set up over xDS.
        assert reply["peer"] == EXAMPLE_CLIENT, reply
        old_serial = reply["serial"]

        # Rotate the client's certificate files (atomic renames) under the call loop; the
        # server's own certificate too. gRPC's file_watcher rereads every second.
        mark = client.mark()
        mesh.issue_client()
        new = x509.load_pem_x509_certificate((web_certs / CERT_CHAIN_FILE).read_bytes())
        write_workload(mesh.api_certs, mesh.pki.ca.issue(SpiffeId(TRUST_DOMAIN, "default", "api")))

        def rotated() -> bool:
            return any(r["serial"] != old_serial for r in replies(client, mark))

        wait_for(rotated, timeout=20, message="the server never saw the client's new certificate")
        client.wait_for_calls(10, timeout=10)
        assert client.errors_since(mark) == []
        serials = {r["serial"] for r in replies(client, mark)}
        assert serials - {old_serial} == {f"{new.serial_number:x}"}
        assert {r["peer"] for r in replies(client, mark)} == {EXAMPLE_CLIENT}
        # gRPC accepted every resource we sent the server and the client.
        proxies = mesh.xds.get("/debug/proxies")
        groups = {p["node_id"].split("-")[0]: p["group"].split(";") for p in proxies}
        assert {"identity", "ips=127.0.0.1"} <= set(groups["api"]), groups
        assert "identity" in groups["grpc"], groups
        assert nacks(proxies) == {}


def test_server_rbac_denies_another_identity(
    tmp_path: Path, grpc_xds_client_factory: Callable[..., GrpcXdsClient]
) -> None:
    # In process: the authorization hook (AuthorizationPolicy → RBAC comes from
    # another module) is set to "allow only web" directly.
    pki = XdsPki(tmp_path / "pki")
    api_port = free_port()
    api = Service("api", ports=(Port("grpc", 50051, "grpc"),), labels=((TLS_MODE_LABEL, "istio"),))
    with ControlledXds(pki.ca) as xds:
        xds.controller.proxyless.rbac_of = lambda instance: [allow_principals([WEB])]
        xds.set_services([ServiceEntry(api, (Endpoint("127.0.0.1", api_port, "grpc"),))])
        api_boot = server_bootstrap(xds.port, "api", pki.client("default", "api"))
        with GrpcXdsServer("api", api_port, api_boot, tmp_path / "api.log") as server:
            clients = {}
            for account in ("web", "evil"):
                boot = mesh_bootstrap(
                    xds.port,
                    account,
                    "default",
                    account,
                    pki.client("default", account),
                    xds_tls=False,
                )
                clients[account] = grpc_xds_client_factory(
                    boot, "xds:///api", name=account, env=XDS_CREDENTIALS
                )
            web, evil = clients["web"], clients["evil"]
            wait_for(
                lambda: replies(web),
                timeout=30,
                message=lambda: f"web never got through: {web.log_tail(10)}\n{server.log_tail(5)}",
            )
            assert {r["peer"] for r in replies(web)} == {WEB}
            denied = wait_for(
                lambda: evil.codes_since(0)["PERMISSION_DENIED"] >= 5,
                timeout=30,
                message=lambda: f"evil: {evil.codes_since(0)}; {evil.log_tail(10)}",
            )
            assert denied
            mark = evil.mark()
            evil.wait_for_calls(5, timeout=10)
            assert set(evil.codes_since(mark)) == {"PERMISSION_DENIED"}
            assert replies(evil) == []
            assert nacks(xds.proxies()) == {}


ALLOW = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api, namespace: default}
spec:
  selector: {matchLabels: {app: api}}
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/%s]}}]}]
"""


def test_an_authorization_policy_file_reaches_the_grpc_servers_rbac(
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    grpc_xds_client_factory: Callable[..., GrpcXdsClient],
) -> None:
    """Through the CLI: an AuthorizationPolicy allowing only web denies the example
    client (sa/grpc-client) with PERMISSION_DENIED; allowing it instead, edited in the
    file, lets it through without a restart."""
    policy = tmp_path / "security.yaml"
    policy.write_text(ALLOW % "web")
    mesh = start_mesh(tmp_path, xds_server_factory, "--policy", str(policy))
    with mesh.server() as server:
        boot, _ = mesh.client()
        client = grpc_xds_client_factory(boot, "xds:///api", interval=0.05, env=XDS_CREDENTIALS)
        wait_for(
            lambda: client.codes_since(0)["PERMISSION_DENIED"] >= 3,
            timeout=30,
            message=lambda: f"{client.codes_since(0)}: {client.log_tail(10)}\n{server.log_tail(5)}",
        )
        assert replies(client) == []
        policy.write_text(ALLOW % "grpc-client")
        mark = client.mark()
        wait_for(
            lambda: replies(client, mark),
            timeout=30,
            message=lambda: f"never allowed: {client.codes_since(mark)}",
        )
        assert {r["peer"] for r in replies(client, mark)} == {EXAMPLE_CLIENT}
        assert nacks(mesh.xds.get("/debug/proxies")) == {}
