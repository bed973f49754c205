"""The traffic-policy end-to-end tests' view of a server: `xds-server --file REGISTRY
--policy POLICY` as a subprocess, the Istio objects they write into the policy file, and
what the server says of them (``/debug/policies`` and `xdsctl policies`).

Both files are replaced atomically (temp file + rename, as editors do) and polled every
0.1 s. ``wait_policies`` waits until the server reports exactly the objects last
written, so a test knows its edit was read before it looks at traffic.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.harness.e2e import WAIT, Mesh
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for

API_VERSION = "networking.istio.io/v1"
NAMESPACE = "default"

Object = dict[str, Any]
PolicyKey = tuple[str, str]  # (kind, name) in namespace "default"


# ------------------------------------------------------------------------ the objects


def virtual_service(name: str, hosts: Sequence[str], http: Sequence[Object]) -> Object:
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {"hosts": list(hosts), "http": list(http)},
    }


def destination_rule(
    name: str,
    host: str,
    subsets: Mapping[str, Mapping[str, str]] = {},
    traffic: Object | None = None,
) -> Object:
    """A DestinationRule whose subsets select endpoints by label (``{"v1": {"version":
    "v1"}}``), with an optional top-level traffic policy."""
    spec: Object = {"host": host}
    if traffic is not None:
        spec["trafficPolicy"] = traffic
    if subsets:
        spec["subsets"] = [{"name": n, "labels": dict(labels)} for n, labels in subsets.items()]
    return {
        "apiVersion": API_VERSION,
        "kind": "DestinationRule",
        "metadata": {"name": name},
        "spec": spec,
    }


def split(host: str, weights: Mapping[str, int]) -> list[Object]:
    """A rule's ``route``: ``host``'s subsets with these weights."""
    return [
        {"destination": {"host": host, "subset": subset}, "weight": weight}
        for subset, weight in weights.items()
    ]


def key_of(obj: Mapping[str, Any]) -> PolicyKey:
    return (str(obj["kind"]), str(obj["metadata"]["name"]))


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def policy_text(objects: Iterable[Object | str]) -> str:
    """A multi-document YAML file: each object dumped, or given as YAML text."""
    return "---\n".join(
        o if isinstance(o, str) else yaml.safe_dump(o, sort_keys=False) for o in objects
    )


# ------------------------------------------------------------------------ the server


class PolicyMesh(Mesh):
    """An xds-server on a registry file and a policy file it polls every 0.1 s."""

    def __init__(
        self, server: XdsServerProcess, registry: Path, policy: Path, listener_port: int, node: str
    ) -> None:
        super().__init__(server, listener_port, node)
        self.registry = registry
        self.policy = policy

    def write_policies(self, *objects: Object | str) -> str:
        """Replace the policy file with these objects; the text written."""
        text = policy_text(objects)
        write_atomically(self.policy, text)
        return text

    def policies(self) -> dict[PolicyKey, dict[str, Any]]:
        """``/debug/policies`` by (kind, name); every object is in namespace default."""
        docs: list[dict[str, Any]] = self.server.get("/debug/policies")
        return {(d["kind"], d["name"]): d for d in docs if d["namespace"] == NAMESPACE}

    def wait_policies(
        self,
        keys: Iterable[PolicyKey],
        done: Callable[[dict[PolicyKey, dict[str, Any]]], bool] = lambda _: True,
        timeout: float = WAIT,
    ) -> dict[PolicyKey, dict[str, Any]]:
        """Until the server reports exactly the objects ``keys`` and ``done`` holds of
        them (e.g. one of them is REJECTED for a given reason)."""
        want = set(keys)
        last: list[dict[PolicyKey, dict[str, Any]]] = [{}]

        def reflected() -> bool:
            self.server.check_running()  # a crash ends the wait at once, with the log
            current = self.policies()
            last[0] = current
            return set(current) == want and done(current)

        try:
            wait_for(reflected, timeout, interval=0.05)
        except AssertionError:
            raise AssertionError(
                f"the server never reported {sorted(want)} as expected; last: {last[0]}; "
                f"its log's tail:\n{self.server.tail(15)}"
            ) from None
        return last[0]

    def xdsctl_policies(self) -> dict[PolicyKey, tuple[str, list[str]]]:
        """`xdsctl policies` as an operator reads it: per (kind, name), the STATE column
        and the reason lines printed under the object's row."""
        lines = self.server.xdsctl("policies").stdout.splitlines()
        header, rows = lines[0].split(), lines[1:]
        assert header[:3] == ["KIND", "NAME", "STATE"], lines
        out: dict[PolicyKey, tuple[str, list[str]]] = {}
        current: PolicyKey | None = None
        for line in rows:
            if line.startswith("    "):
                assert current is not None, lines
                out[current][1].append(line.strip())
                continue
            kind, name, state = line.split()[:3]
            namespace, _, short = name.partition("/")
            current = (kind, short)
            assert namespace == NAMESPACE, line
            out[current] = (state, [])
        return out


def start_policy_mesh(
    factory: Callable[..., XdsServerProcess],
    directory: Path,
    services: Sequence[Mapping[str, Any]],
    objects: Sequence[Object | str] = (),
    node: str = "envoy-policy",
) -> PolicyMesh:
    """An xds-server on a registry file of ``services`` and a policy file of ``objects``
    (both written in ``directory``), polling both every 0.1 s."""
    registry, policy = directory / "registry.yaml", directory / "policies.yaml"
    write_atomically(registry, yaml.safe_dump({"services": list(services)}, sort_keys=False))
    write_atomically(policy, policy_text(objects))
    port = free_port()
    server = factory(
        "--file", str(registry), "--policy", str(policy), "--file-interval", "0.1",
        "--http-listener-port", str(port), "--debounce-quiet", "0.02",
    )  # fmt: skip
    return PolicyMesh(server, registry, policy, port, node)
