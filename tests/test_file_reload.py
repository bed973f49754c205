"""Reloading the registry file validates only what changed: counted, not timed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from sources.file import FileRegistryError, FileSource, ServiceCache, parse_registry
from sources.file_chunks import cut, parse_item
from xds_server.catalog import Catalog
from xds_server.model import ServiceKey

N = 1000


def service(i: int, ip: str | None = None, port: str = "8080") -> str:
    ip = ip or f"10.0.{i // 250}.{i % 250 + 1}"
    return (
        f"  - name: svc-{i}\n"
        f"    namespace: bench\n"
        f"    ports: [{{name: http, port: 80}}]\n"
        f"    endpoints:\n"
        f"      - {{address: {ip}, port: {port}}}\n"
        f"      - {{address: 10.9.{i // 250}.{i % 250 + 1}, port: 8080}}\n"
    )


def registry(services: list[str]) -> str:
    return "services:\n" + "".join(services)


def write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def ips(catalog: Catalog, i: int) -> list[str]:
    return [ep.ip for ep in catalog.merged()[ServiceKey("bench", f"svc-{i}")].endpoints]


def metric(source: str) -> float:
    value = REGISTRY.get_sample_value("xds_catalog_validations_total", {"source": source})
    return value or 0.0


async def test_editing_one_service_of_a_thousand_validates_that_one(tmp_path: Path) -> None:
    services = [service(i) for i in range(N)]
    path = tmp_path / "registry.yaml"
    path.write_text(registry(services))
    catalog = Catalog()
    source = FileSource(path, catalog, name="reload", interval=3600)
    source.load_once()
    assert (source.cache.validated, catalog.validations) == (N, N)
    before = metric("reload")

    services[500] = service(500, ip="10.200.0.1")
    write(path, registry(services))
    await source.poll()
    assert ips(catalog, 500) == ["10.200.0.1", "10.9.2.1"]
    assert (source.cache.validated, catalog.validations) == (N + 1, N + 1)
    assert metric("reload") == before + 1

    # Moving services around changes no service: nothing is validated again.
    services[1], services[2] = services[2], services[1]
    write(path, registry(services))
    await source.poll()
    assert (source.cache.validated, catalog.validations) == (N + 1, N + 1)

    # An invalid edit is still reported at its line and column, the last good state kept.
    services[700] = service(700, port='"8080"')
    write(path, registry(services))
    await source.poll()
    line = 1 + 700 * 6 + 5
    column = services[700].splitlines()[4].index('"8080"') + 1
    (status,) = catalog.sources()
    assert status.error == (
        f"{path}:{line}:{column}: services[700].endpoints[0].port: Input should be a valid integer"
    )
    assert ips(catalog, 500) == ["10.200.0.1", "10.9.2.1"]
    assert catalog.validations == N + 1

    # Fixed: the one service changed since the last good load is validated again.
    services[700] = service(700, ip="10.200.0.7")
    write(path, registry(services))
    await source.poll()
    assert status.error is None
    assert ips(catalog, 700) == ["10.200.0.7", "10.9.2.201"]
    assert catalog.validations == N + 2


async def test_a_rejected_entry_stays_rejected_when_others_change(tmp_path: Path) -> None:
    services = [service(i) for i in range(3)]
    services[1] = service(1, ip="10.0.0.300")  # a string, but not an address
    path = tmp_path / "registry.yaml"
    path.write_text(registry(services))
    catalog = Catalog()
    source = FileSource(path, catalog, name="rejects", interval=3600)
    source.load_once()
    (status,) = catalog.sources()
    rejected = list(status.rejections)
    assert [r.subject for r in rejected] == ["service svc-1.bench endpoint 10.0.0.300:8080"]
    assert sorted(k.name for k in catalog.merged()) == ["svc-0", "svc-1", "svc-2"]

    services[2] = service(2, ip="10.200.0.2")
    write(path, registry(services))
    await source.poll()
    assert status.rejections == rejected
    assert ips(catalog, 1) == ["10.9.0.2"]  # its good endpoint, as before
    assert ips(catalog, 2) == ["10.200.0.2", "10.9.0.3"]
    assert catalog.validations == 4


# --- the text cut: a reload with the cache means exactly what a fresh parse means -----

BASE = """\
# the registry
services:
  - name: a
    ports: [{port: 80}]
    endpoints: [{address: 10.0.0.1, port: 8080}]
  # a comment between items
  - name: b
    ports:
      - {port: 80}
    endpoints:
      - address: 10.0.0.2
        port: 8080
"""

VARIANTS = {
    "one endpoint moved": BASE.replace("10.0.0.2", "10.0.0.3"),
    "an item added": BASE + "  - name: c\n    ports: [{port: 80}]\n",
    "an item removed": BASE.split("  # a comment")[0],
    "items at column 0": BASE.replace("\n  ", "\n"),
    "another top-level key after": BASE + "extra: 1\n",
    "another top-level key before": "extra: 1\n" + BASE,
    "a duplicate key in an item": BASE.replace("    ports: [{port: 80}]\n", "    ports: []\n" * 2),
    "an anchor and an alias": BASE.replace("[{port: 80}]", "&p [{port: 80}]").replace(
        "      - {port: 80}", "      - {port: 81}"
    )
    + "  - name: c\n    ports: *p\n",
    "a quoted string over lines": BASE.replace("name: b", 'name: "b\n  - x"'),
    "a wrong type": BASE.replace("port: 8080\n", 'port: "8080"\n'),
    "an unknown field": BASE.replace("  - name: b\n", "  - name: b\n    colour: red\n"),
    "a block scalar": BASE.replace("name: b", "name: |-\n      b\n  - not an item"),
    "a syntax error": BASE.replace("[{port: 80}]", "[{port: 80}"),
    "a list in flow style": "services: [{name: a, ports: [{port: 80}]}]\n",
    "JSON": '{"services": [{"name": "a", "ports": [{"port": 80}]}]}',
    "a document marker": "---\n" + BASE,
    "services not a list": "services:\n  a: 1\n",
    "a top-level item": BASE + "- name: d\n",
}


def outcome(text: str, cache: ServiceCache | None) -> object:
    try:
        return parse_registry(text, "r.yaml", "file", cache)
    except FileRegistryError as exc:
        return str(exc)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_a_reload_means_what_a_fresh_parse_means(name: str) -> None:
    cache = ServiceCache()
    parse_registry(BASE, "r.yaml", "file", cache)
    assert outcome(VARIANTS[name], cache) == outcome(VARIANTS[name], None)
    # ... and again from what it learnt from the variant (if it was valid)
    assert outcome(BASE, cache) == outcome(BASE, None)


def test_cutting_is_refused_where_it_would_not_be_certain() -> None:
    assert cut(BASE) == [BASE[BASE.index("  - name: a") : BASE.index("  - name: b")],
                         BASE[BASE.index("  - name: b") :]]  # fmt: skip
    for name in (
        "another top-level key after",
        "another top-level key before",
        "an anchor and an alias",
        "a list in flow style",
        "JSON",
        "a document marker",
        "services not a list",
        "a top-level item",
    ):
        assert cut(VARIANTS[name]) is None, name


def test_an_item_that_aliases_another_is_parsed_again_when_the_other_changes() -> None:
    aliased = BASE.replace("[{port: 80}]", "&p [{port: 80}]") + "  - name: c\n    ports: *p\n"
    cache = ServiceCache()
    parse_registry(aliased, "r.yaml", "file", cache)
    edited = aliased.replace("&p [{port: 80}]", "&p [{port: 90}]")
    ports = [[p.port for p in e.service.ports] for e in parse_registry(edited, "r", "f", cache)]
    assert ports == [[90], [80], [90]]


def test_an_item_alone_must_be_one_mapping() -> None:
    assert parse_item("  - {name: a}\n") == {"name": "a"}
    for text in ("  - {name: a}\n  - {name: b}\n", "  - a\n", "name: a\n", "  - {a: 1, a: 2}\n"):
        assert parse_item(text) is None, text
