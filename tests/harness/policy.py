"""Traffic policy end to end: Istio objects written to a `--policy` file, a server on a
registry file, and one SotW and one delta Envoy that take them, shared by a test module.

* Object builders: ``virtual_service``, ``destination_rule``, ``destination``,
  ``subsets`` (Istio-shaped dicts, as an operator writes them).
* :class:`PolicyWorld`: ``xds-server --file REGISTRY --policy POLICY`` with loopback
  ``HttpBackend`` endpoints (labelled, e.g. ``version: v1``) and two Envoys, each on its
  own HTTP listener port (node metadata ``http_listener_port``), so one test module pays
  for one server and two Envoys. ``apply(*objects)`` rewrites the policy file (one
  atomic write) and waits until `xdsctl policies` shows exactly those objects, none
  rejected, and both Envoys serve the VirtualServices' rules (their route names are in
  Envoy's config dump: Envoy has ACKed them).
* :class:`Client`: one keep-alive HTTP connection through an Envoy, with request headers
  and timing, for statistics over many requests.

Fixtures over it are in tests/harness/policy_fixtures.py.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .backends import HttpBackend, RequestLoop
from .e2e import WAIT, rejected
from .envoy import EnvoyProcess, bootstrap
from .ports import free_port
from .server_proc import XdsServerProcess
from .waiting import wait_for

API_VERSION = "networking.istio.io/v1"
NAMESPACE = "default"
MODES = ("sotw", "delta")

Object = dict[str, Any]
# A registry service for the world: its name, and its endpoints as (backend name, labels).
ServiceSpec = tuple[str, Sequence[tuple[str, Mapping[str, str]]]]

# The VirtualService rule a policy route was made from (translators/names.py):
# ``VirtualService <ns>/<name> http[<i>]`` plus `` (<rule name>)`` when it has one.
_RULE = re.compile(r"^(VirtualService \S+ http\[\d+\](?: \([^)]*\))?)")


# ------------------------------------------------------------------------ objects


def destination(
    host: str, subset: str | None = None, weight: int | None = None, port: int | None = None
) -> dict[str, Any]:
    """One ``route[]`` entry: ``{destination: {host, subset?, port?}, weight?}``."""
    dest: dict[str, Any] = {"host": host}
    if subset is not None:
        dest["subset"] = subset
    if port is not None:
        dest["port"] = {"number": port}
    out: dict[str, Any] = {"destination": dest}
    if weight is not None:
        out["weight"] = weight
    return out


def virtual_service(name: str, hosts: Sequence[str], http: Sequence[Mapping[str, Any]]) -> Object:
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"hosts": list(hosts), "http": [dict(rule) for rule in http]},
    }


def destination_rule(
    name: str,
    host: str,
    subsets: Sequence[Mapping[str, Any]] = (),
    traffic_policy: Mapping[str, Any] | None = None,
) -> Object:
    spec: dict[str, Any] = {"host": host}
    if traffic_policy is not None:
        spec["trafficPolicy"] = dict(traffic_policy)
    if subsets:
        spec["subsets"] = [dict(s) for s in subsets]
    return {
        "apiVersion": API_VERSION,
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


def subsets(*versions: str) -> list[dict[str, Any]]:
    """One subset per version, named after it, selecting endpoints labelled ``version``."""
    return [{"name": v, "labels": {"version": v}} for v in versions]


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename, as editors do (never half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def rule_subjects(objects: Iterable[Object]) -> set[str]:
    """The route-name prefix of every rule of the VirtualServices in `objects`."""
    out = set()
    for obj in objects:
        if obj["kind"] != "VirtualService":
            continue
        meta = obj["metadata"]
        for i, rule in enumerate(obj["spec"].get("http", [])):
            base = f"VirtualService {meta.get('namespace', NAMESPACE)}/{meta['name']} http[{i}]"
            out.add(f"{base} ({rule['name']})" if rule.get("name") else base)
    return out


# ------------------------------------------------------------------------ Envoy views


def virtual_hosts(env: EnvoyProcess) -> list[dict[str, Any]]:
    """Every virtual host of every RouteConfiguration Envoy has accepted (config dump)."""
    dump = env.config_dump("dynamic_route_configs")
    return [
        vhost
        for item in dump.get("configs", [])
        for vhost in item.get("route_config", {}).get("virtual_hosts", [])
    ]


def routes(env: EnvoyProcess) -> list[dict[str, Any]]:
    """Every route of every RouteConfiguration Envoy has accepted (config dump)."""
    return [route for vhost in virtual_hosts(env) for route in vhost.get("routes", [])]


def policy_rule_subjects(env: EnvoyProcess) -> set[str]:
    """The VirtualService rules Envoy routes by (see `rule_subjects`)."""
    out = set()
    for route in routes(env):
        m = _RULE.match(route.get("name", ""))
        if m:
            out.add(m.group(1))
    return out


def cluster(env: EnvoyProcess, name: str) -> dict[str, Any] | None:
    """The active cluster `name` as Envoy holds it (config dump), or None."""
    for item in env.config_dump("dynamic_active_clusters").get("configs", []):
        c: dict[str, Any] = item.get("cluster", {})
        if c.get("name") == name:
            return c
    return None


def host_flags(env: EnvoyProcess, cluster_name: str) -> dict[int, str]:
    """Envoy's ``/clusters`` health flags of each host of `cluster_name`, by port."""
    out = {}
    prefix = f"{cluster_name}::127.0.0.1:"
    for line in env.admin_get("/clusters").splitlines():
        if line.startswith(prefix) and "::health_flags::" in line:
            port = int(line[len(prefix) :].split("::", 1)[0])
            out[port] = line.rsplit("::", 1)[1]
    return out


# --------------------------------------------------------------------------- client


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    seconds: float
    headers: dict[str, str]


class Client:
    """Requests through an Envoy listener on one keep-alive connection (a new one after
    the peer closes it)."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.port = port
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def get(self, host: str, path: str = "/", headers: Mapping[str, str] | None = None) -> Answer:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        started = time.monotonic()
        try:
            self._conn.request("GET", path, headers={"Host": host, **(headers or {})})
            resp = self._conn.getresponse()
            body = resp.read().decode("utf-8", "replace")
        except Exception:
            self.close()
            raise
        answer = Answer(
            resp.status,
            body,
            time.monotonic() - started,
            {k.lower(): v for k, v in resp.getheaders()},
        )
        if resp.will_close:
            self.close()
        return answer

    def bodies(self, host: str, n: int, headers: Mapping[str, str] | None = None) -> Counter[str]:
        """``n`` requests: how often each 2xx body (backend name) answered; a non-2xx
        counts as ``"<status>"``."""
        out: Counter[str] = Counter()
        for _ in range(n):
            a = self.get(host, headers=headers)
            out[a.body if 200 <= a.status < 300 else str(a.status)] += 1
        return out

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def share(counts: Counter[str], key: str) -> float:
    """`key`'s share of all counts, in percent."""
    return 100.0 * counts[key] / max(1, sum(counts.values()))


# ---------------------------------------------------------------------------- world


class PolicyWorld:
    """A server on a registry file and a policy file, its backends, and one SotW and one
    delta Envoy (see the module docstring). Build it with `policy_world`."""

    def __init__(
        self,
        server: XdsServerProcess,
        policy_path: Path,
        backends: dict[str, HttpBackend],
        envoys: dict[str, EnvoyProcess],
        ports: dict[str, int],
    ) -> None:
        self.server = server
        self.policy_path = policy_path
        self.backends = backends
        self.envoys = envoys
        self.ports = ports

    def envoy(self, mode: str) -> EnvoyProcess:
        return self.envoys[mode]

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.ports[mode]}/"

    def client(self, mode: str, timeout: float = 5.0) -> Client:
        return Client(self.ports[mode], timeout)

    def loop(self, mode: str, host: str, **kwargs: Any) -> RequestLoop:
        """A running RequestLoop through `mode`'s Envoy; stop it (or use ``with``)."""
        return RequestLoop(self.url(mode), host, **kwargs).start()

    def reset_backends(self) -> None:
        for backend in self.backends.values():
            backend.reset()

    def policies(self) -> list[dict[str, Any]]:
        """`xdsctl policies -o json`: each object's kind, name, state, reasons."""
        doc: list[dict[str, Any]] = json.loads(
            self.server.xdsctl("policies", "-o", "json").stdout or "[]"
        )
        return doc

    def apply(
        self,
        *objects: Object,
        until: Callable[[EnvoyProcess], object] | None = None,
        timeout: float = WAIT,
    ) -> list[dict[str, Any]]:
        """Write `objects` as the whole policy file (one write) and wait until `xdsctl
        policies` shows exactly them, none rejected, and both Envoys route by exactly
        their VirtualServices' rules and satisfy `until` (e.g. a cluster setting).
        Returns the policy statuses."""
        text = yaml.safe_dump_all(list(objects), sort_keys=False) if objects else ""
        write_atomically(self.policy_path, text)
        wanted = {(o["kind"], NAMESPACE, o["metadata"]["name"]) for o in objects}
        subjects = rule_subjects(objects)
        last: list[Any] = []

        def shown() -> list[dict[str, Any]] | None:
            statuses = self.policies()
            last[:] = [statuses]
            keys = {(p["kind"], p["namespace"], p["name"]) for p in statuses}
            if keys != wanted or any(p["state"] == "REJECTED" for p in statuses):
                return None
            return statuses or [{}]

        statuses = wait_for(shown, timeout, message=lambda: f"policies shown: {last}")

        def served() -> bool:
            for mode, env in self.envoys.items():
                have = policy_rule_subjects(env)
                last[:] = [mode, sorted(have)]
                if have != subjects or (until is not None and not until(env)):
                    return False
            return True

        wait_for(served, timeout, message=lambda: f"Envoy serves {sorted(subjects)}: {last}")
        return [s for s in statuses if s]

    def check_nothing_rejected(self) -> None:
        for mode, env in self.envoys.items():
            assert rejected(env) == {}, (mode, rejected(env))


def _registry(services: Sequence[ServiceSpec], backends: Mapping[str, HttpBackend]) -> str:
    doc = {
        "services": [
            {
                "name": name,
                "ports": [{"name": "http", "port": 80, "protocol": "http"}],
                "endpoints": [
                    {"address": "127.0.0.1", "port": backends[b].port, "labels": dict(labels)}
                    for b, labels in endpoints
                ],
            }
            for name, endpoints in services
        ]
    }
    return yaml.safe_dump(doc, sort_keys=False)


@contextlib.contextmanager
def policy_world(
    directory: Path,
    services: Sequence[ServiceSpec],
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[PolicyWorld]:
    """Start the backends named in `services`, the server (registry written from
    `services`, an empty policy file, both polled every 0.1 s) and a ready SotW and delta
    Envoy (`metadata`: more node metadata per mode); stop them all on exit."""
    with contextlib.ExitStack() as stack:
        backends: dict[str, HttpBackend] = {}
        for _name, endpoints in services:
            for b, _labels in endpoints:
                if b not in backends:
                    backend = HttpBackend(b)
                    stack.callback(backend.stop)
                    backends[b] = backend.start()
        registry, policy = directory / "registry.yaml", directory / "policy.yaml"
        write_atomically(registry, _registry(services, backends))
        write_atomically(policy, "")
        server = XdsServerProcess(
            "--file", str(registry), "--policy", str(policy), "--file-interval", "0.1",
            log_path=directory / "xds-server.log",
        )  # fmt: skip
        stack.callback(server.stop)
        server.start()
        envoys: dict[str, EnvoyProcess] = {}
        ports: dict[str, int] = {}
        for mode in MODES:
            ports[mode] = free_port()
            boot = bootstrap(
                server.xds_port,
                free_port(),
                f"policy-{mode}",
                delta=mode == "delta",
                metadata={"http_listener_port": ports[mode], **(metadata or {}).get(mode, {})},
            )
            env = EnvoyProcess()
            stack.callback(env.stop)
            env.start(boot, directory / f"envoy-{mode}.log")
            envoys[mode] = env
        for env in envoys.values():
            env.wait_ready(WAIT)
        yield PolicyWorld(server, policy, backends, envoys, ports)
