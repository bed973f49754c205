"""`xdsctl events` against a real `xds-server --file` with real Envoys (SotW and delta).

One edit of the registry file (a new TCP service, so a new listener on its port) is one
event, ACKed by every connected Envoy; a third Envoy whose bootstrap already has a static
listener on that address rejects the listener update (Envoy refuses two listeners with
one address), and that NACK is attributed to the event with the Envoy's node id and its
own error text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness.e2e import WAIT, Mesh
from tests.harness.envoy import XDS_CLUSTER, EnvoyProcess, bootstrap
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess, run_xdsctl
from tests.harness.waiting import wait_for
from tests.test_e2e_file_registry import service, write

pytest_plugins = ["tests.harness.fixtures"]

pytestmark = pytest.mark.timeout(90)
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def occupier(port: int) -> dict[str, Any]:
    """A static TCP listener on 0.0.0.0:`port` (SO_REUSEPORT, as Envoy's default, so the
    other Envoys still bind that port)."""
    return {
        "name": "occupier",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {
                "@type": TCP_PROXY,
                "stat_prefix": "occupier",
                "cluster": XDS_CLUSTER,
            },
        }]}],
    }  # fmt: skip


def events(server: XdsServerProcess, *args: str) -> Any:
    proc = run_xdsctl("--server", server.admin_url, "events", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def last_event(server: XdsServerProcess, first: int) -> dict[str, Any] | None:
    found = server.get(f"/debug/events?since={first}")["events"]
    return found[-1] if found else None


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_one_file_edit_is_one_event_acked_by_every_envoy_and_a_nack_attributed(
    delta: bool,
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory: Callable[..., EnvoyProcess],
) -> None:
    registry = tmp_path / "registry.yaml"
    web = service("web", {"address": "127.0.0.1", "port": free_port()})
    write(registry, [web])
    port = free_port()
    server = xds_server_factory(
        "--file", str(registry), "--file-interval", "1h", "--http-listener-port", str(port)
    )
    mesh = Mesh(server, port, "envoy-a")
    for node in ("envoy-a", "envoy-b"):
        mesh.envoy(envoy_factory, delta, node=node)
    # envoy-c: same group, but its bootstrap has a listener where the new one will be.
    tcp_port = free_port()
    boot = bootstrap(server.xds_port, free_port(), "envoy-c", delta=delta)
    boot["static_resources"]["listeners"] = [occupier(tcp_port)]
    envoy_factory(boot, name="envoy-c", wait="ready", timeout=WAIT)
    for node in ("envoy-a", "envoy-b", "envoy-c"):
        mesh.wait_synced(node)
    (startup,) = server.get("/debug/events")["events"]  # the first load, before any proxy
    assert startup["state"] == "NO_PROXY" and startup["source"] == "file"

    db = {"name": "db", "ports": [{"port": tcp_port, "protocol": "tcp"}],
          "endpoints": [{"address": "127.0.0.1", "port": free_port()}]}  # fmt: skip
    write(registry, [web, db])

    def settled() -> dict[str, Any] | None:
        e = last_event(server, startup["id"])
        return e if e is not None and e["state"] not in ("SEEN", "PENDING") else None

    event = wait_for(settled, WAIT, message=f"no settled event: {last_event(server, 0)}")
    assert event is not None
    assert [e["id"] for e in server.get(f"/debug/events?since={startup['id']}")["events"]] == [
        event["id"]
    ], "one edit, one event"
    assert event["changes"] == {"services_added": {"count": 1, "names": ["db.default"]}}
    assert event["proxies"] == {
        "total": 3, "acked": 2, "nacked": 1, "pending": 0, "pushed_pending": 0
    }, event  # fmt: skip
    (nack,) = event["nacks"]
    assert nack["node"] == "envoy-c" and nack["type_url"].endswith("Listener"), nack
    assert f"tcp_{tcp_port}" in nack["error"] and "duplicate address" in nack["error"], nack
    assert event["state"] == "NACKED"
    conv = event["convergence"]
    assert 0 < conv["p50"] <= conv["p99"] <= conv["max"]

    # xdsctl events: the table row (ACKed by 2 of 3) and the NACK under it, with the error.
    lines = events(server).splitlines()
    assert lines[0].split()[:5] == ["ID", "SOURCE", "STATE", "ACKED", "PUSHED"]
    row = next(line for line in lines if line.split()[0] == str(event["id"]))
    assert row.split()[1:4] == ["file", "NACKED", "2/3"], row
    assert "services_added=1 (db.default)" in row
    nack_line = lines[lines.index(row) + 1]
    assert nack_line.startswith("    NACK envoy-c (Listener): ") and "duplicate" in nack_line
    # -o json is /debug/events; --follow prints each event once, then stops (--for).
    assert json.loads(events(server, "-o", "json"))["events"][-1] == event
    followed = events(server, "--follow", "--for", "0.5", "--interval", "0.2").splitlines()
    assert followed[0].split()[:3] == ["ID", "SOURCE", "STATE"]
    rows = [line for line in followed[1:] if not line.startswith(" ")]
    assert [r.split()[0] for r in rows] == [str(startup["id"]), str(event["id"])], followed
    lines_json = events(server, "--follow", "--for", "0", "-o", "json").splitlines()
    assert [json.loads(line)["id"] for line in lines_json] == [startup["id"], event["id"]]
