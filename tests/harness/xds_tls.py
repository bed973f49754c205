"""TLS on the xDS port for tests: a CA on disk, the server's certificate files, client
certificate directories laid out as ``xds-server ca issue --out`` writes them, and a real
grpcio ADS client that reports what the server answered.

* :class:`XdsPki`: ``ca/`` (Istio's cacerts), ``server/`` (cert-chain.pem, key.pem,
  root-cert.pem for ``--xds-tls-cert/--xds-tls-key/--xds-client-ca``) and one directory
  per client identity;
* :func:`ads_once`: one ADS (or delta ADS) stream with given client files: the first
  response, or the status the stream ended with.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from xds_server import types
from xds_server.identity.ca import CertificateAuthority, WorkloadCertificate
from xds_server.identity.cli import CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE
from xds_server.identity.pki import write_file
from xds_server.identity.spiffe import SpiffeId

TRUST_DOMAIN = "cluster.local"
SERVER_HOSTS = ("localhost", "127.0.0.1")


def write_workload(directory: Path, workload: WorkloadCertificate) -> Path:
    """The three files `xds-server ca issue --out DIR` writes (atomic renames)."""
    directory.mkdir(parents=True, exist_ok=True)
    write_file(directory / KEY_FILE, workload.key_pem(), private=True)
    write_file(directory / CERT_CHAIN_FILE, workload.cert_chain_pem())
    write_file(directory / ROOT_CERT_FILE, workload.trust_bundle.pem())
    return directory


def server_args(directory: Path, mutual: bool = True) -> list[str]:
    """xds-server flags serving the ``ca issue`` files in ``directory`` on the xDS port
    (the trust bundle verifies clients when ``mutual``)."""
    args = [
        *("--xds-tls-cert", str(directory / CERT_CHAIN_FILE)),
        *("--xds-tls-key", str(directory / KEY_FILE)),
    ]
    if mutual:
        args += ["--xds-client-ca", str(directory / ROOT_CERT_FILE)]
    return args


class XdsPki:
    """A CA in ``directory/ca`` and the xDS server's certificate in ``directory/server``."""

    def __init__(self, directory: Path, ca: CertificateAuthority | None = None):
        self.directory = directory
        self.ca = ca or CertificateAuthority.create_root(
            TRUST_DOMAIN, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
        )
        self.ca_dir = directory / "ca"
        if not self.ca_dir.exists():
            self.ca.save_dir(self.ca_dir)
        self.server_dir = directory / "server"
        self.server = self.issue_server()

    def issue_server(self) -> WorkloadCertificate:
        """A (new) serving certificate for the xDS server, written over the old one."""
        spiffe = SpiffeId(TRUST_DOMAIN, "xds-system", "xds-server")
        self.server = self.ca.issue(spiffe, hosts=SERVER_HOSTS)
        write_workload(self.server_dir, self.server)
        return self.server

    def server_args(self, mutual: bool = True) -> list[str]:
        return server_args(self.server_dir, mutual)

    def client(
        self,
        namespace: str,
        service_account: str,
        *,
        name: str | None = None,
        now: dt.datetime | None = None,
        ttl: dt.timedelta = dt.timedelta(hours=1),
    ) -> Path:
        """A client directory (cert-chain.pem, key.pem, root-cert.pem) for ns/sa."""
        workload = self.ca.issue(
            SpiffeId(TRUST_DOMAIN, namespace, service_account), now=now, ttl=ttl
        )
        directory = self.directory / "clients" / (name or f"{namespace}.{service_account}")
        return write_workload(directory, workload)


@dataclass
class AdsResult:
    """What one ADS stream got: the first response, or how the stream ended."""

    response: Any | None
    code: grpc.StatusCode | None
    details: str


def channel_credentials(client: Path | None, roots: Path) -> grpc.ChannelCredentials:
    """TLS trusting ``roots``, presenting ``client``'s certificate if given."""
    key = chain = None
    if client is not None:
        key = (client / KEY_FILE).read_bytes()
        chain = (client / CERT_CHAIN_FILE).read_bytes()
    return grpc.ssl_channel_credentials(roots.read_bytes(), key, chain)


def node(node_id: str, namespace: str | None, service_account: str | None) -> base_pb2.Node:
    meta = struct_pb2.Struct()
    if namespace is not None:
        meta.fields["NAMESPACE"].string_value = namespace
    if service_account is not None:
        meta.fields["SERVICE_ACCOUNT"].string_value = service_account
    return base_pb2.Node(id=node_id, cluster="test", metadata=meta)


def ads_once(
    port: int,
    credentials: grpc.ChannelCredentials,
    the_node: base_pb2.Node,
    *,
    delta: bool = False,
    timeout: float = 10.0,
) -> AdsResult:
    """Open one ADS stream to localhost:port, ask for clusters, return the first answer."""
    done = threading.Event()
    if delta:
        first: Any = discovery_pb2.DeltaDiscoveryRequest(
            node=the_node, type_url=types.CLUSTER, resource_names_subscribe=["*"]
        )
    else:
        first = discovery_pb2.DiscoveryRequest(node=the_node, type_url=types.CLUSTER)

    def requests() -> Any:
        yield first
        done.wait(timeout)  # keep the stream open until the answer is read

    with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        method = stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources
        call = method(requests(), timeout=timeout)
        try:
            return AdsResult(next(call), None, "")
        except grpc.RpcError as exc:
            return AdsResult(None, exc.code(), exc.details() or "")
        finally:
            done.set()
            call.cancel()


def server_serial(port: int, client: Path, roots: Path) -> int:
    """The serial of the certificate the xDS port presents to a new TLS connection."""
    ctx = ssl.create_default_context(cafile=str(roots))
    ctx.load_cert_chain(client / CERT_CHAIN_FILE, client / KEY_FILE)
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number
