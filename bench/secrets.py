"""Workload certificates over SDS: what serving them costs (issue 13, Performance).

One run serves N simulated proxies, each of its own identity (so N certificates), from
an in-process `XdsServer` whose group snapshot holds a few clusters; the proxies run in
a child process (their CPU is not the server's). Each proxy opens a SotW ADS stream,
subscribes to CDS (wildcard) and, with secrets, to ``default`` and ``ROOTCA``, and ACKs
every response. Reported, for the server process:

* time from the first stream to every proxy holding all it asked for (SYNCED), and
  the server CPU over that window: with secrets against the same run without;
* a full rotation: every certificate reissued (`SecretStore.reissue_all`) and pushed,
  until every proxy has ACKed its new certificate: server CPU, and the CPU of the
  issuance alone;
* the server's RSS once all are SYNCED.

    python -m bench.secrets --proxies 200          # both modes, one after the other
    python -m bench.secrets --proxies 1000 --mode secrets

Each mode runs in a fresh interpreter so RSS figures do not mix.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import multiprocessing
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from translators import resources as rb
from xds_server import types
from xds_server.cache import SnapshotCache
from xds_server.grpc_server import ServerOptions, XdsServer
from xds_server.identity.ca import CertificateAuthority
from xds_server.identity.pki import write_file
from xds_server.identity.server_tls import ServerTls, TlsFiles
from xds_server.identity.spiffe import SpiffeId
from xds_server.model import Endpoint
from xds_server.secrets import CERTIFICATE, ROOT_CA, SecretStore

GROUP = "bench"
STREAMS_PER_CHANNEL = 50
TRUST_DOMAIN = "bench.local"
MODES = ("plain", "secrets", "mtls")
RETRIED = (
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.INTERNAL,
)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# -- the simulated proxies (child process) ----------------------------------------------


async def _proxy(
    stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub, i: int, secrets: bool, out: Connection
) -> None:
    """One proxy's ADS stream; refused by the server's admission limit, it retries after
    a jittered pause, as Envoy's backoff does."""
    while True:
        try:
            await _stream(stub, i, secrets, out)
            return
        except grpc.aio.AioRpcError as exc:
            # grpcio's client sometimes reports a refused stream whose requests were still
            # being written as INTERNAL ("Internal error from Core"): retried like a refusal.
            if exc.code() not in RETRIED:
                raise
            await asyncio.sleep(random.uniform(0.5, 1.0))


async def _stream(
    stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub, i: int, secrets: bool, out: Connection
) -> None:
    node = base_pb2.Node(id=f"proxy-{i}", cluster=GROUP)
    node.metadata.fields["NAMESPACE"].string_value = "bench"
    node.metadata.fields["SERVICE_ACCOUNT"].string_value = f"sa-{i}"
    queue: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()

    async def requests() -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while True:
            yield await queue.get()

    names = {types.CLUSTER: [], types.SECRET: [CERTIFICATE, ROOT_CA]}
    wanted = [types.CLUSTER, *([types.SECRET] if secrets else [])]
    for n, type_url in enumerate(wanted):
        req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names[type_url])
        if n == 0:
            req.node.CopyFrom(node)
        queue.put_nowait(req)
    acked: set[str] = set()
    synced = False
    async for resp in stub.StreamAggregatedResources(requests()):
        queue.put_nowait(
            discovery_pb2.DiscoveryRequest(
                type_url=resp.type_url,
                version_info=resp.version_info,
                response_nonce=resp.nonce,
                resource_names=names[resp.type_url],
            )
        )
        if resp.type_url == types.SECRET and synced:
            out.send(("rotated", i))
        acked.add(resp.type_url)
        if not synced and acked.issuperset(wanted):
            synced = True
            out.send(("synced", i))


def _clients_main(port: int, n: int, secrets: bool, out: Connection, ca_dir: str | None) -> None:
    """`n` proxies: over plaintext, sharing channels; with `ca_dir` (the CA, Istio's
    cacerts layout), over mutual TLS, each on its own channel with its own certificate (issued
    here, so the server's CPU does not count it: an identity per channel)."""

    async def main() -> None:
        target = f"127.0.0.1:{port}"
        if ca_dir is None:
            channels = [
                grpc.aio.insecure_channel(target)
                for _ in range((n + STREAMS_PER_CHANNEL - 1) // STREAMS_PER_CHANNEL)
            ]
            stubs = [ads_pb2_grpc.AggregatedDiscoveryServiceStub(c) for c in channels]
            stub_of = [stubs[i // STREAMS_PER_CHANNEL] for i in range(n)]
        else:
            ca = CertificateAuthority.load_dir(Path(ca_dir))
            stub_of = []
            for i in range(n):
                w = ca.issue(SpiffeId(TRUST_DOMAIN, "bench", f"sa-{i}"))
                creds = grpc.ssl_channel_credentials(
                    w.trust_bundle.pem(), w.key_pem(), w.cert_chain_pem()
                )
                channel = grpc.aio.secure_channel(target, creds)
                stub_of.append(ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel))
            out.send(("ready", -1))
        tasks = [asyncio.create_task(_proxy(stub_of[i], i, secrets, out)) for i in range(n)]
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


# -- the server (this process) -----------------------------------------------------------


def _snapshot(cache: SnapshotCache, clusters: int) -> None:
    names = [f"svc-{i}" for i in range(clusters)]
    cache.set_snapshot(
        GROUP,
        {
            types.CLUSTER: [rb.eds_cluster(n) for n in names],
            types.ENDPOINT: [rb.load_assignment(n, [Endpoint("10.0.0.1", 80)]) for n in names],
        },
    )


async def _wait(conn: Connection, kind: str, n: int, timeout: float) -> float:
    """Seconds until `n` messages of `kind` arrived from the clients."""
    start = time.perf_counter()
    seen: set[int] = set()
    deadline = start + timeout
    while len(seen) < n:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{kind}: {len(seen)} of {n} after {timeout}s")
        while conn.poll():
            what, i = conn.recv()
            if what == kind:
                seen.add(i)
        await asyncio.sleep(0.005)
    return time.perf_counter() - start


def _server_tls(ca: CertificateAuthority, directory: Path) -> ServerTls:
    """Mutual TLS on the xDS port: a server certificate for 127.0.0.1, clients verified
    against the CA (as `--xds-tls-cert/--xds-tls-key/--xds-client-ca`)."""
    w = ca.issue(SpiffeId(TRUST_DOMAIN, "xds-system", "xds-server"), hosts=("127.0.0.1",))
    files = TlsFiles(directory / "cert-chain.pem", directory / "key.pem", directory / "ca.pem")
    write_file(files.cert, w.cert_chain_pem())
    write_file(files.key, w.key_pem(), private=True)
    write_file(files.client_ca, w.trust_bundle.pem())  # type: ignore[arg-type]
    return ServerTls(files)


async def run(
    n: int, mode: str, clusters: int, timeout: float, rate: float | None
) -> dict[str, Any]:
    """One mode: `plain` (no secrets), `secrets` (SDS over plaintext xDS) or `mtls` (SDS
    over mutual TLS on the xDS port). `rate`: new streams per second the server admits
    (None: its default, 200/s after a burst of 400)."""
    secrets = mode != "plain"
    cache = SnapshotCache(group_of=lambda node: GROUP)
    _snapshot(cache, clusters)
    store = None
    ca = CertificateAuthority.create_root(TRUST_DOMAIN)
    if secrets:
        store = cache.secrets = SecretStore(
            ca, trust_domain=TRUST_DOMAIN, ttl=dt.timedelta(hours=24)
        )
    tmp = tempfile.TemporaryDirectory(prefix="bench-secrets-")
    options = ServerOptions(address="127.0.0.1:0")
    if rate is not None:
        options = replace(options, new_streams_per_second=rate, new_streams_burst=int(rate))
    if mode == "mtls":
        options = replace(options, tls=_server_tls(ca, Path(tmp.name)))
    server = XdsServer(cache, options=options)
    port = await server.start()
    ours, theirs = multiprocessing.Pipe(duplex=False)
    ca_dir = None
    if mode == "mtls":
        ca_dir = str(Path(tmp.name) / "ca")
        ca.save_dir(Path(ca_dir))
    child = multiprocessing.get_context("spawn").Process(
        target=_clients_main, args=(port, n, secrets, theirs, ca_dir), daemon=True
    )
    result: dict[str, Any] = {"mode": mode, "proxies": n, "admission": rate or "default"}
    child.start()
    if ca_dir is not None:  # the clients' certificates are issued before the clock starts
        await _wait(ours, "ready", 1, timeout)
    cpu0 = time.process_time()
    try:
        result["all_synced_s"] = round(await _wait(ours, "synced", n, timeout), 3)
        result["server_cpu_to_synced_s"] = round(time.process_time() - cpu0, 3)
        result["rss_mb"] = round(_rss_mb(), 1)
        if store is not None:
            cpu1 = time.process_time()
            reissued = store.reissue_all("renewal")
            result["issue_cpu_s"] = round(time.process_time() - cpu1, 3)
            result["rotation_wall_s"] = round(await _wait(ours, "rotated", reissued, timeout), 3)
            result["rotation_cpu_s"] = round(time.process_time() - cpu1, 3)
            result["certificates_rotated"] = reissued
    finally:
        child.kill()
        # The killed clients' streams end with transport errors: expected, not news.
        logging.getLogger("xds_server").setLevel(logging.CRITICAL)
        await server.stop(0)
        tmp.cleanup()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.secrets", description=__doc__)
    p.add_argument("--proxies", type=int, default=200)
    p.add_argument("--clusters", type=int, default=20, help="clusters in the group snapshot")
    p.add_argument("--mode", choices=("all", *MODES), default="all")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument(
        "--rate",
        type=float,
        help="new streams per second the server admits (default: the server's own, 200/s"
        " after a burst of 400)",
    )
    a = p.parse_args(argv)
    if a.mode == "all":
        for mode in MODES:
            cmd = [sys.executable, "-m", "bench.secrets", "--mode", mode]
            cmd += ["--proxies", str(a.proxies), "--clusters", str(a.clusters)]
            cmd += ["--timeout", str(a.timeout)]
            cmd += ["--rate", str(a.rate)] if a.rate is not None else []
            subprocess.run(cmd, check=True)
        return 0
    result = asyncio.run(run(a.proxies, a.mode, a.clusters, a.timeout, a.rate))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
