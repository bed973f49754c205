"""What the side-by-side benchmark compares: the services file both servers read (and
its edits), the two servers behind one small interface (`Peer`), and the Envoys they feed
(spawned, timed until every cluster is active; the static-bootstrap floor)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from bench import common, sovereign_peer, sovereign_templates
from bench.common import BenchError
from bench.envoy_admin import EnvoyWatch
from bench.registry import ENDPOINT_PORT, NAMESPACE, SERVICE_PORT, Endpoint, Registry
from tests.harness import envoy as harness_envoy
from tests.harness.envoy import EnvoyProcess
from tests.harness.ports import free_port

SEED = "seed"
FORMATS = ("json", "yaml")


# -- the file -----------------------------------------------------------------------------


def registry(services: int, endpoints: int) -> Registry:
    """``seed`` plus `services` services; the same for every server (so are its edits)."""
    full = Registry.generate(services, endpoints)
    seed = [Endpoint(f"192.0.2.{j + 1}", f"z{j % 3}") for j in range(endpoints)]
    return Registry(services={SEED: seed, **full.services})


def seed_only(reg: Registry) -> Registry:
    return Registry(services={SEED: reg.services[SEED]})


def entries(reg: Registry) -> list[dict[str, Any]]:
    """The registry's services as data: what its YAML text holds under ``services:``."""
    return [
        {
            "name": name,
            "namespace": NAMESPACE,
            "ports": [{"name": "http", "port": SERVICE_PORT, "protocol": "http"}],
            "endpoints": [
                {
                    "address": ep.address,
                    "port": ENDPOINT_PORT,
                    "zone": ep.zone,
                    **({"weight": ep.weight} if ep.weight != 1 else {}),
                }
                for ep in eps
            ],
        }
        for name, eps in reg.services.items()
    ]


def file_text(reg: Registry, fmt: str, wrapped: bool) -> str:
    """The registry in `fmt` (json or yaml): under ``services:`` as xds-server's registry
    file (`wrapped`), or as the bare list sovereign's file source reads."""
    if fmt == "json":
        data = entries(reg)
        return json.dumps({"services": data} if wrapped else data)
    text = reg.text()
    if wrapped:
        return text
    header = "services:\n"
    assert text.startswith(header)
    return text[len(header) :] or "[]\n"


def cluster_of(service: str) -> str:
    return sovereign_templates.cluster_name(
        {"name": service, "namespace": NAMESPACE}, {"port": SERVICE_PORT}
    )


def expected(reg: Registry) -> dict[str, int]:
    """Cluster → how many endpoints Envoy must have for it."""
    return {cluster_of(name): len(eps) for name, eps in reg.services.items()}


def write_atomically(path: Path, text: str) -> float:
    """Write beside `path`, rename over it; ``time.monotonic()`` just before the rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    at = time.monotonic()
    os.replace(tmp, path)
    return at


# -- the servers --------------------------------------------------------------------------


class Peer(Protocol):
    name: str
    path: Path

    def text(self, reg: Registry) -> str: ...
    def start(self) -> float: ...
    def bootstrap(self, admin_port: int) -> dict[str, Any]: ...
    def cpu(self) -> float: ...
    def rss(self) -> float: ...
    def close(self) -> float | None: ...
    def tail(self) -> str: ...


class FileReader:
    """What both servers share: the file they read (`stem`.`fmt`; xds-server's wraps the
    list in ``services:``), the time they may take to start, the port their Envoy's HTTP
    listener is given (node metadata ``http_listener_port``)."""

    wrapped = True

    def __init__(self, workdir: Path, stem: str, fmt: str, timeout: float):
        self.path = workdir / f"{stem}.{fmt}"
        self.fmt = fmt
        self.timeout = timeout
        self.listener_port = free_port()

    def text(self, reg: Registry) -> str:
        return file_text(reg, self.fmt, wrapped=self.wrapped)


class XdsServerPeer(FileReader):
    """``xds-server --file PATH`` with its defaults (`common.RealServer`)."""

    name = "xds-server"

    def __init__(self, workdir: Path, timeout: float, fmt: str = "json"):
        super().__init__(workdir, "registry", fmt, timeout)
        self.server = common.RealServer(["--file", str(self.path)], workdir / "xds-server.log")

    def start(self) -> float:
        self.server.start()
        return self.server.wait_ready(self.timeout)

    def bootstrap(self, admin_port: int) -> dict[str, Any]:
        return harness_envoy.bootstrap(
            self.server.xds_port,
            admin_port,
            "side-by-side",
            "bench",
            metadata={"http_listener_port": self.listener_port},
        )

    def cpu(self) -> float:
        return sovereign_peer.tree_cpu(self.server.ps)

    def rss(self) -> float:
        return sovereign_peer.tree_rss(self.server.ps)

    def close(self) -> float | None:
        return self.server.close()

    def tail(self) -> str:
        return self.server.tail()


class SovereignPeer(FileReader):
    """sovereign as `bench.sovereign_peer` sets it up, reading the bare list."""

    name = "sovereign"
    wrapped = False

    def __init__(
        self, workdir: Path, venv: Path, timeout: float, refresh: float, workers: int, fmt: str
    ):
        super().__init__(workdir, "services", fmt, timeout)
        self.peer = sovereign_peer.Sovereign(venv, workdir, self.path, refresh, workers, fmt)
        self.refresh = refresh

    def start(self) -> float:
        self.peer.start()
        try:
            return self.peer.wait_ready(self.timeout)
        except sovereign_peer.PeerError as exc:
            raise BenchError(str(exc)) from None

    def bootstrap(self, admin_port: int) -> dict[str, Any]:
        return sovereign_peer.bootstrap(
            self.peer.port, admin_port, self.listener_port, self.refresh
        )

    def cpu(self) -> float:
        return self.peer.cpu()

    def rss(self) -> float:
        return self.peer.rss()

    def close(self) -> float | None:
        return self.peer.close()

    def tail(self) -> str:
        return self.peer.tail()


# -- Envoy --------------------------------------------------------------------------------


@contextlib.contextmanager
def envoy(bootstrap: Callable[[int], dict[str, Any]], log: Path) -> Iterator[EnvoyProcess]:
    """An Envoy started (spawned, not waited for) with ``bootstrap(admin_port)``; stopped
    after, whatever happens."""
    env = EnvoyProcess(log_level="warn")
    try:
        env.start(bootstrap(free_port()), log)
        yield env
    finally:
        env.stop()


def time_to_active(
    bootstrap: Callable[[int], dict[str, Any]],
    log: Path,
    want: dict[str, int],
    dump: str,
    timeout: float,
) -> float:
    """Seconds from a new Envoy's spawn to every cluster of `want` active."""
    with envoy(bootstrap, log) as env:
        t0 = time.monotonic()
        return EnvoyWatch(env, dump).wait_all_active(want, timeout) - t0


def static_bootstrap(reg: Registry) -> Callable[[int], dict[str, Any]]:
    """The floor's Envoy: the registry's clusters, endpoints inline, in its bootstrap."""
    clusters = sovereign_templates.clusters(entries(reg))

    def bootstrap(admin_port: int) -> dict[str, Any]:
        admin = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}}
        return {
            "node": {"id": "side-by-side-static", "cluster": "bench"},
            "static_resources": {"clusters": clusters},
            "admin": admin,
        }

    return bootstrap
