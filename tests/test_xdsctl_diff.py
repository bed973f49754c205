"""`xdsctl diff --node`: a real xds-server and an ADS client that stops ACKing after a
registry edit; the diff names what changed, field by field, until the client ACKs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2

from tests.ads_client import AdsClient
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import async_wait_for
from tests.xds_util import CDS, EDS, NODE

pytest_plugins = ["tests.harness.fixtures"]
pytestmark = pytest.mark.timeout(90)
EXAMPLE = Path(__file__).parent.parent / "examples" / "registry.yaml"
Start = Callable[..., XdsServerProcess]
WEB_PORT = "endpoints[1].lb_endpoints[0].endpoint.address.socket_address.port_value"


class Proxy:
    """An ADS client that ACKs only when told to, remembering each type's last response."""

    def __init__(self, port: int) -> None:
        self.client = AdsClient(port)
        self.last: dict[str, discovery_pb2.DiscoveryResponse] = {}
        self.names: dict[str, list[str]] = {CDS: [], EDS: []}

    async def subscribe(self, type_url: str) -> None:
        req = discovery_pb2.DiscoveryRequest(
            node=NODE, type_url=type_url, resource_names=self.names[type_url]
        )
        await self.client.send(req)
        await self.read_until(lambda: type_url in self.last)
        if type_url == CDS:  # EDS follows the clusters, as Envoy's
            self.names[EDS] = sorted(c.name for c in self.clusters())

    def clusters(self) -> list[cluster_pb2.Cluster]:
        out = []
        for any_ in self.last[CDS].resources:
            c = cluster_pb2.Cluster()
            assert any_.Unpack(c)
            out.append(c)
        return out

    async def read_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not done():
            resp = await self.client.recv(timeout=max(0.1, end - loop.time()))
            self.last[resp.type_url] = resp

    async def ack(self, type_url: str) -> None:
        resp = self.last[type_url]
        await self.client.send(
            discovery_pb2.DiscoveryRequest(
                type_url=type_url,
                version_info=resp.version_info,
                response_nonce=resp.nonce,
                resource_names=self.names[type_url],
            )
        )


def diff_json(server: XdsServerProcess) -> dict[str, Any]:
    out = server.xdsctl("diff", "--node", NODE.id, "-o", "json")
    return dict(json.loads(out.stdout))


async def test_diff_names_what_a_stale_proxy_lacks(
    tmp_path: Path, xds_server_factory: Start
) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(EXAMPLE.read_text())
    server = xds_server_factory("--file", str(registry), "--file-interval", "0.1")
    proxy = Proxy(server.xds_port)
    try:
        for type_url in (CDS, EDS):
            await proxy.subscribe(type_url)
            await proxy.ack(type_url)

        async def synced() -> bool:
            doc = await asyncio.to_thread(diff_json, server)
            states = {t: v["state"] for t, v in doc["types"].items()}
            return states == {"clusters": "SYNCED", "endpoints": "SYNCED"}

        await async_wait_for(synced, timeout=10, message="the proxy SYNCED")
        out = server.xdsctl("diff", "--node", NODE.id).stdout.splitlines()
        assert out[1:] == ["no differences: the proxy has acknowledged what it would get now"]

        eds_acked = proxy.last[EDS].nonce
        # The edit: web's second endpoint moves to another port, api speaks HTTP/2 now and
        # a new service appears. The client receives the pushes but does not ACK them.
        registry.write_text(
            EXAMPLE.read_text()
            .replace("port: 8082", "port: 8092")
            .replace("[{name: http, port: 80, protocol: http}]\n    endpoints:\n      - {address:"
                     " 127.0.0.1, port: 8083",
                     "[{name: http, port: 80, protocol: http2}]\n    endpoints:\n      - {address:"
                     " 127.0.0.1, port: 8083")
            + "  - {name: db, ports: [{port: 5432, protocol: tcp}]}\n"
        )  # fmt: skip
        await proxy.read_until(lambda: len(proxy.last[CDS].resources) == 3)

        async def stale() -> dict[str, Any] | None:
            doc = await asyncio.to_thread(diff_json, server)
            return doc if len(doc["changes"]) == 3 else None

        doc = await async_wait_for(stale, timeout=10, message="three changes")
        assert {t: v["state"] for t, v in doc["types"].items()} == {
            "clusters": "STALE",
            "endpoints": "STALE",
        }
        table = server.xdsctl("diff", "--node", NODE.id, "--patch").stdout
        rows = [line.split(maxsplit=3) for line in table.splitlines() if not line[0].isspace()]
        assert rows[0][:2] == ["NODE", NODE.id]
        assert rows[1] == ["TYPE", "NAME", "CHANGE", "FIELDS"]
        assert rows[2:] == [
            ["clusters", "api.default:80", "changed", "typed_extension_protocol_options"],
            ["clusters", "db.default:5432", "added", "-"],
            ["endpoints", "web.default:80", "changed", WEB_PORT],
        ]
        assert "    sent, waiting for the proxy's ACK" in table
        web = doc["changes"][2]
        assert web["fields"] == [WEB_PORT]
        assert '-                "port_value": 8082' in web["patch"]
        assert '+                "port_value": 8092' in web["patch"]

        # ACKed: nothing left to explain.
        await proxy.read_until(lambda: proxy.last[EDS].nonce != eds_acked)
        for type_url in (CDS, EDS):
            await proxy.ack(type_url)

        async def acked() -> bool:
            return not (await asyncio.to_thread(diff_json, server))["changes"]

        await async_wait_for(acked, timeout=10, message="no differences after the ACKs")
    finally:
        await proxy.client.close()
