"""The per-type SDS service (SecretDiscoveryService) beside ADS, SotW and delta, over a
real gRPC connection: the same identity's secrets as on ADS, and none for a node
without one."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

from xds_server import types
from xds_server.cache import SnapshotCache
from xds_server.grpc_server import ServerOptions, XdsServer
from xds_server.secret_rotation import open_store

NAMES = ["default", "ROOTCA"]


def node(sa: str) -> base_pb2.Node:
    n = base_pb2.Node(id=f"{sa}-1", cluster="g")
    n.metadata.fields["NAMESPACE"].string_value = "default"
    if sa:
        n.metadata.fields["SERVICE_ACCOUNT"].string_value = sa
    return n


async def first_response(port: int, delta: bool, sa: str) -> Any:
    async def requests() -> AsyncIterator[Any]:
        if delta:
            yield discovery_pb2.DeltaDiscoveryRequest(
                node=node(sa), type_url=types.SECRET, resource_names_subscribe=NAMES
            )
        else:
            yield discovery_pb2.DiscoveryRequest(
                node=node(sa), type_url=types.SECRET, resource_names=NAMES
            )
        await asyncio.sleep(30)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
        call = (stub.DeltaSecrets if delta else stub.StreamSecrets)(requests())
        try:
            return await asyncio.wait_for(call.read(), 5)
        finally:
            call.cancel()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_secret_discovery_service_serves_the_node_identity(
    tmp_path: Path, delta: bool
) -> None:
    cache = SnapshotCache()
    cache.set_snapshot("g", {})
    cache.secrets = open_store(tmp_path / "ca", None, dt.timedelta(hours=1).total_seconds())
    server = XdsServer(cache, options=ServerOptions(address="127.0.0.1:0"))
    port = await server.start()
    try:
        resp = await first_response(port, delta, "web")
        anys = [r.resource for r in resp.resources] if delta else list(resp.resources)
        secrets = {}
        for a in anys:
            s = secret_pb2.Secret()
            assert a.Unpack(s)
            secrets[s.name] = s
        assert sorted(secrets) == sorted(NAMES)
        chain = secrets["default"].tls_certificate.certificate_chain.inline_bytes
        leaf = x509.load_pem_x509_certificates(chain)[0]
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        assert uris == ["spiffe://cluster.local/ns/default/sa/web"]
        if delta:  # no identity: every name reported absent, no secret sent
            none = await first_response(port, delta, "")
            assert list(none.resources) == [] and sorted(none.removed_resources) == sorted(NAMES)
    finally:
        await server.stop(0)
