"""Issue 13, test 7: no private key in `xdsctl`, any admin endpoint, CSDS or the log.

A real Envoy holds a workload certificate served over SDS; a second ADS stream of the
same identity receives the same key (one certificate per identity), which is then
looked for, as PEM, as its DER in base64 (the PEM body) and as the base64 JSON gives
a bytes field, in every admin route (enumerated from the app's router), every `xdsctl`
command, the CSDS answer and the server's log.
"""

from __future__ import annotations

import base64
import queue
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from tests.harness.backends import HttpBackend
from tests.harness.envoy import EnvoyProcess, sds_mtls_bootstrap
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess
from xds_server import types, xdsctl
from xds_server.admin import AdminServer
from xds_server.cache import SnapshotCache
from xds_server.status import ProxyRegistry

pytest_plugins = ["tests.harness.fixtures"]

NODE = "web-1"


def fetch_key(xds_port: int) -> bytes:
    """The identity's private key, as a proxy of that identity receives it."""
    node = base_pb2.Node(id="web-2", cluster="sds")
    node.metadata.fields["NAMESPACE"].string_value = "default"
    node.metadata.fields["SERVICE_ACCOUNT"].string_value = "web"
    requests: queue.Queue[discovery_pb2.DiscoveryRequest | None] = queue.Queue()
    requests.put(
        discovery_pb2.DiscoveryRequest(
            node=node, type_url=types.SECRET, resource_names=["default", "ROOTCA"]
        )
    )

    def feed() -> Iterator[discovery_pb2.DiscoveryRequest]:
        while (req := requests.get()) is not None:
            yield req

    with grpc.insecure_channel(f"127.0.0.1:{xds_port}") as channel:
        stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
            feed(), timeout=10
        )
        response = next(stream)
        requests.put(None)
    for any_ in response.resources:
        secret = secret_pb2.Secret()
        assert any_.Unpack(secret)
        if secret.name == "default":
            return bytes(secret.tls_certificate.private_key.inline_bytes)
    raise AssertionError(f"no default secret in {response.resources}")


def der(key_pem: bytes) -> bytes:
    return serialization.load_pem_private_key(key_pem, None).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def key_forms(key_pem: bytes) -> dict[str, str]:
    """Slices of the key in the forms a dump could show it (past any fixed header)."""
    raw = der(key_pem)
    return {
        "PEM marker": "PRIVATE KEY",
        "DER, base64 (the PEM body)": base64.b64encode(raw).decode()[24:64],
        "PEM, base64 (a JSON bytes field)": base64.b64encode(key_pem).decode()[24:64],
        "PEM, urlsafe base64": base64.urlsafe_b64encode(key_pem).decode()[24:64],
        "DER, hex": raw.hex()[48:128],
    }


def leaks(where: str, text: str, forms: dict[str, str]) -> list[str]:
    return [f"{where}: {name}" for name, form in forms.items() if form in text]


def admin_paths() -> list[str]:
    """Every GET route of the admin app, with a value for each path parameter."""
    server = AdminServer(
        "127.0.0.1:0",
        cache=SnapshotCache(),
        registry=ProxyRegistry(),
        readiness=list,
        sources=list,
        snapshot_for=None,  # type: ignore[arg-type]
        default_group="",
    )
    static = sorted(p.name for p in (Path(xdsctl.__file__).parent / "static").iterdir())
    paths = []
    for resource in server.app().router.resources():
        info = resource.get_info()
        if "path" in info:
            paths.append(str(info["path"]))
        elif "formatter" in info:
            paths += [re.sub(r"\{name\}", n, str(info["formatter"])) for n in static]
    return paths


def test_7_no_private_key_in_xdsctl_admin_csds_or_logs(
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory: Callable[..., EnvoyProcess],
    http_backend_factory: Callable[..., HttpBackend],
) -> None:
    server = xds_server_factory("--ca-dir", str(tmp_path / "ca"), "--log-level", "debug")
    backend = http_backend_factory("backend")
    config = sds_mtls_bootstrap(
        server.xds_port,
        free_port(),
        free_port(),
        free_port(),
        backend.port,
        node_id=NODE,
        namespace="default",
        service_account="web",
        spiffe_id="spiffe://cluster.local/ns/default/sa/web",
        cds_path=tmp_path / "cds.json",
    )
    envoy_factory(config, wait="ready", timeout=30)
    key_pem = fetch_key(server.xds_port)
    forms = key_forms(key_pem)
    found: list[str] = []
    seen: list[str] = []

    paths = admin_paths()
    assert {"/debug/snapshot", "/debug/proxies", "/debug/diff", "/metrics", "/"} <= set(paths)
    queries = {
        "/debug/snapshot": ["", f"?node={NODE}", f"?node={NODE}&type=secrets"],
        "/debug/diff": [f"?node={NODE}", f"?node={NODE}&type=secrets"],
    }
    for path in paths:
        for query in queries.get(path, [""]):
            status, text = server.get_text(path + query)
            seen.append(f"{path}{query} {status}")
            found += leaks(path + query, text, forms)

    for command in sorted(xdsctl.main.commands):
        params = {p.name for p in xdsctl.main.commands[command].params}
        args = [command, *(["--node", NODE] if "node" in params else [])]
        outputs = ["table", "json", "yaml"] if "output" in params else [""]
        for output in outputs:
            run = server.xdsctl(*args, *(["-o", output] if output else []), check=False)
            seen.append(f"xdsctl {' '.join(args)} {output}: {run.returncode}")
            found += leaks(f"xdsctl {' '.join(args)} -o {output}", run.stdout + run.stderr, forms)

    with grpc.insecure_channel(f"127.0.0.1:{server.xds_port}") as channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        answer = stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=10)
    secrets = [
        c
        for config in answer.config
        for c in config.generic_xds_configs
        if c.type_url == types.SECRET and c.HasField("xds_config")
    ]
    assert secrets, answer  # CSDS does show the proxy's secrets, redacted
    found += leaks("CSDS (text)", str(answer), forms)
    raw = answer.SerializeToString()
    for name, form in {"PEM": key_pem[40:80], "DER": der(key_pem)[16:48]}.items():
        if form in raw or b"PRIVATE KEY" in raw:
            found.append(f"CSDS (wire): {name}")

    found += leaks("server log", server.log(), forms)
    assert not found, (found, seen)
    # Not vacuous: CSDS does render the certificate the Envoy holds, key redacted.
    shown = secret_pb2.Secret()
    assert any(c.xds_config.Unpack(shown) and shown.name == "default" for c in secrets)
    assert shown.tls_certificate.private_key.inline_string == "[redacted]", shown
    assert shown.tls_certificate.certificate_chain.inline_bytes.startswith(b"-----BEGIN CERT")
