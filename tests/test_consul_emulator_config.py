"""The Consul emulator's config entry API (`/v1/config`) follows Consul's documented
semantics: writes with check-and-set, per-kind blocking lists, reads, deletes, indexes,
the basic checks on write and ACL filtering. Through py-consul's own client."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import consul
import pytest
from consul.exceptions import BadRequest, NotFound

from tests.consul_emulator import ConsulEmulator

SPLIT = {"Splits": [{"Weight": 100}]}


@pytest.fixture
def emu() -> Iterator[ConsulEmulator]:
    with ConsulEmulator(jitter=False) as e:
        yield e


@pytest.fixture
def client(emu: ConsulEmulator) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=emu.port)


def listed(client: consul.Consul, kind: str, index: int = 0, wait: str = "") -> tuple[int, list]:
    params = [("index", index), ("wait", wait)] if index else []
    header, entries = client.http.get(
        consul.callback.CB.json(index=True, allow_404=False),
        f"/v1/config/{kind}",
        params=params,
        headers=client.prepare_headers(),
    )
    return int(header), entries


def test_write_read_list_delete_with_indexes(client: consul.Consul) -> None:
    assert client.config.set("service-splitter", "web", SPLIT) is True
    entry = client.config.get("service-splitter", "web")
    assert entry["Splits"] == SPLIT["Splits"] and entry["CreateIndex"] == entry["ModifyIndex"]
    assert client.config.set("service-splitter", "web", SPLIT) is True
    again = client.config.get("service-splitter", "web")
    assert again["CreateIndex"] == entry["CreateIndex"] < again["ModifyIndex"]
    client.config.set("service-splitter", "api", SPLIT)
    index, entries = listed(client, "service-splitter")
    assert [e["Name"] for e in entries] == ["api", "web"]  # sorted by name
    assert index == max(e["ModifyIndex"] for e in entries)
    assert listed(client, "service-router")[1] == []  # another kind: none
    client.config.delete("service-splitter", "web")
    with pytest.raises(NotFound, match='Config entry not found for "service-splitter" / "web"'):
        client.http.get(consul.callback.CB.json(allow_404=False), "/v1/config/service-splitter/web")


def test_check_and_set(client: consul.Consul) -> None:
    assert client.config.set("service-defaults", "web", {"Protocol": "http"}, cas=0) is True
    assert client.config.set("service-defaults", "web", {"Protocol": "grpc"}, cas=0) is False
    modify = client.config.get("service-defaults", "web")["ModifyIndex"]
    assert (
        client.config.set("service-defaults", "web", {"Protocol": "grpc"}, cas=modify - 1) is False
    )
    assert client.config.set("service-defaults", "web", {"Protocol": "grpc"}, cas=modify) is True
    assert client.config.get("service-defaults", "web")["Protocol"] == "grpc"


def test_basic_checks_on_write(client: consul.Consul) -> None:
    with pytest.raises(BadRequest, match='invalid config entry kind: "nope"'):
        client.config.set("nope", "web", {})
    with pytest.raises(BadRequest, match='only "global" is supported'):
        client.config.set("proxy-defaults", "web", {})
    with pytest.raises(BadRequest, match="invalid config entry kind"):
        listed(client, "nope")


def test_a_blocked_list_wakes_for_its_kind_only(client: consul.Consul) -> None:
    client.config.set("service-router", "web", {"Routes": []})
    index = [listed(client, "service-router")[0]]
    results: list[tuple[float, int, list]] = []

    def block() -> None:
        start = time.monotonic()
        got = listed(client, "service-router", index[0], "1500ms")
        results.append((time.monotonic() - start, *got))

    thread = threading.Thread(target=block)
    thread.start()
    time.sleep(0.3)
    client.config.set("service-defaults", "web", {"Protocol": "http"})  # another kind
    thread.join(5)
    ((took, new_index, entries),) = results
    # Not woken by the other kind's write: answered when its wait ended, with the
    # table's (moved) index and the same list.
    assert took >= 1.4 and new_index > index[0] and [e["Name"] for e in entries] == ["web"]
    results.clear()
    index[0] = new_index
    thread = threading.Thread(target=block)
    thread.start()
    time.sleep(0.3)
    client.config.set("service-router", "api", {"Routes": []})  # its own kind
    thread.join(5)
    ((took, _, entries),) = results
    assert took < 1.0 and [e["Name"] for e in entries] == ["api", "web"]


def test_acl_filtered_lists() -> None:
    with ConsulEmulator(acl_tokens={"t"}) as emu:
        c = consul.Consul(host="127.0.0.1", port=emu.port, token="t")
        c.config.set("service-defaults", "web", {"Protocol": "http"})
        c.config.set("service-defaults", "db", {"Protocol": "tcp"})
        c.config.set("proxy-defaults", "global", {"Config": {"protocol": "http"}})
        emu.set_service_read("t", ["web"])
        assert [e["Name"] for e in listed(c, "service-defaults")[1]] == ["web"]
        assert [e["Name"] for e in listed(c, "proxy-defaults")[1]] == ["global"]


def test_a_consul_without_the_config_api_answers_404() -> None:
    with ConsulEmulator(config_kinds=None) as emu:
        c = consul.Consul(host="127.0.0.1", port=emu.port)
        with pytest.raises(NotFound):
            listed(c, "service-defaults")
