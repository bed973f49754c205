"""The file registry source: parsing with file:line:col errors, and the watch loop."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from textwrap import dedent

import pytest
import yaml

from sources.file import FileRegistryError, FileSource, parse_registry
from tests.harness.waiting import async_wait_for, running_task
from xds_server.model import Endpoint, Locality, Port, Service, ServiceEntry

ROOT = Path(__file__).resolve().parent.parent


def parse(text: str) -> list[ServiceEntry]:
    return parse_registry(dedent(text), "reg.yaml", "file")


def error_of(text: str) -> str:
    with pytest.raises(FileRegistryError) as info:
        parse(text)
    return str(info.value)


# --- mapping -------------------------------------------------------------------------

FULL = """\
services:
  - name: web
    namespace: shop
    ports:
      - {name: http, port: 80, protocol: http}
      - {name: admin, port: 9000, protocol: grpc}
    hostnames: [web.example.com, www.example.com]
    labels: {team: shop, app: web}
    endpoints:
      - address: 10.0.0.1
        port: 8081
        region: eu
        zone: z1
        subzone: rack1
        health: draining
        weight: 3
        labels: {version: v1}
      - {address: 10.0.0.2, ports: {admin: 9001, http: 8082}, zone: z2}
"""


def test_full_example_maps_to_exact_model_values() -> None:
    assert parse(FULL) == [
        ServiceEntry(
            service=Service(
                name="web",
                namespace="shop",
                ports=(Port("http", 80, "http"), Port("admin", 9000, "grpc")),
                hostnames=("web.example.com", "www.example.com"),
                labels=(("app", "web"), ("team", "shop")),
                source="file",
            ),
            endpoints=(
                Endpoint(
                    ip="10.0.0.1",
                    port=8081,
                    port_name="http",
                    health="draining",
                    locality=Locality("eu", "z1", "rack1"),
                    weight=3,
                    labels=(("version", "v1"),),
                ),
                Endpoint("10.0.0.2", 9001, "admin", locality=Locality(zone="z2")),
                Endpoint("10.0.0.2", 8082, "http", locality=Locality(zone="z2")),
            ),
        )
    ]


def test_defaults() -> None:
    (entry,) = parse(
        """\
        services:
          - name: api
            ports: [{port: 80}, {port: 50051, protocol: grpc}]
            endpoints: [{address: 10.0.0.9, port: 8083}, {address: 10.0.0.8}]
        """
    )
    assert entry.service == Service(
        name="api",
        namespace="default",
        ports=(Port("http", 80, "http"), Port("grpc", 50051, "grpc")),
        source="file",
    )
    assert entry.endpoints == (
        # `port:` is the instance port of the service's first port ...
        Endpoint("10.0.0.9", 8083, "http", "healthy", Locality(), 1, ()),
        # ... and with neither port nor ports, every service port on its own number.
        Endpoint("10.0.0.8", 80, "http"),
        Endpoint("10.0.0.8", 50051, "grpc"),
    )


def test_external_name_is_a_service_envoy_resolves_itself() -> None:
    (entry,) = parse(
        """
        services:
          - name: payments
            ports: [{port: 443}]
            external_name: api.payments.example.com
        """
    )
    assert entry.service.external_name == "api.payments.example.com"
    assert entry.endpoints == ()
    message = error_of(
        """
        services:
          - name: payments
            ports: [{port: 443}]
            external_name: api.payments.example.com
            endpoints: [{address: 10.0.0.1}]
        """
    )
    assert message.startswith("reg.yaml:3:5: services[0]: a service with external_name"), message


def test_empty_services_list_is_a_valid_empty_registry() -> None:
    assert parse("services: []\n") == []


def test_json_input() -> None:
    text = (
        '{"services": [{"name": "web", "ports": [{"port": 80}],'
        ' "endpoints": [{"address": "::1", "port": 8081, "zone": "z1"}]}]}'
    )
    assert parse_registry(text, "reg.json", "consul-ish") == [
        ServiceEntry(
            Service("web", ports=(Port("http", 80),), source="consul-ish"),
            (Endpoint("::1", 8081, "http", locality=Locality(zone="z1")),),
        )
    ]


def test_example_registry_is_the_demo() -> None:
    path = ROOT / "examples" / "registry.yaml"
    entries = parse_registry(path.read_text(), str(path), "file")
    got = {
        e.service.name: [(ep.ip, ep.port, ep.locality.zone, dict(ep.labels)) for ep in e.endpoints]
        for e in entries
    }
    assert got == {
        "web": [
            ("127.0.0.1", 8081, "z1", {"version": "v1"}),
            ("127.0.0.1", 8082, "z2", {"version": "v2"}),
        ],
        "api": [("127.0.0.1", 8083, "z1", {})],
    }


def test_bad_values_pass_through_unchanged_for_the_catalog_to_judge() -> None:
    entries = parse(
        """\
        services:
          - name: ""
            ports: [{name: web, port: 70000, protocol: quic}]
            endpoints:
              - {address: 10.0.0.300, port: 0, health: sick, weight: 0}
              - {address: not-an-ip, ports: {nosuchport: -1}, weight: -5}
          - name: ""
            ports: []
            endpoints: [{address: 10.0.0.1, port: 8080}]
        """
    )
    assert [e.service.name for e in entries] == ["", ""]  # duplicates are kept
    assert entries[0].service.ports == (Port("web", 70000, "quic"),)  # type: ignore[arg-type]
    assert entries[0].endpoints == (
        Endpoint("10.0.0.300", 0, "web", health="sick", weight=0),  # type: ignore[arg-type]
        Endpoint("not-an-ip", -1, "nosuchport", weight=-5),
    )
    # A service without ports: `port:` has no service port to name.
    assert entries[1].endpoints == (Endpoint("10.0.0.1", 8080, ""),)


# --- whole-file errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            """\
            services:
              - name: web
                ports: [{port: 80}]
                endpoints:
                  - {address: 10.0.0.1, port: 8081}
                  - {address: 10.0.0.2, port: abc}
            """,
            "reg.yaml:6:35: services[0].endpoints[1].port: Input should be a valid integer",
            id="wrong-type-flow",
        ),
        pytest.param(
            """\
            services:
              - name: web
                ports:
                  - port: "80"
            """,
            "reg.yaml:4:15: services[0].ports[0].port: Input should be a valid integer",
            id="quoted-int-is-a-string",
        ),
        pytest.param(
            """\
            services:
              - name: web
                ports: [{port: 80}]
                endpoints: 5
            """,
            "reg.yaml:4:16: services[0].endpoints: expected a list",
            id="endpoints-not-a-list",
        ),
        pytest.param(
            """\
            services:
              - name: web
                ports: [{port: 80}]
                endpoints: [5]
            """,
            "reg.yaml:4:17: services[0].endpoints[0]: expected a mapping",
            id="endpoint-not-a-mapping",
        ),
        pytest.param(
            """\
            services:
              - name: web
                ports: [{port: 80}]
                endpoints:
                  - address: 10.0.0.1
                    zonee: z1
            """,
            "reg.yaml:6:9: services[0].endpoints[0].zonee: unknown field 'zonee'; expected one"
            " of: address, port, ports, region, zone, subzone, health, weight, labels,"
            " sidecar_port",
            id="unknown-key",
        ),
        pytest.param(
            """\
            services:
              - name: web
                ports: [{port: 80}]
                endpoints:
                  - zone: z1
            """,
            "reg.yaml:5:9: services[0].endpoints[0].address: Field required",
            id="missing-field",
        ),
        pytest.param(
            """\
            services:
              - name: web
                ports: [{port: 80}]
                endpoints:
                  - {address: 10.0.0.1, port: 1, ports: {http: 2}}
            """,
            "reg.yaml:5:9: services[0].endpoints[0]: give either port or ports, not both",
            id="port-and-ports",
        ),
        pytest.param(
            """\
            services:
              - name: web
                ports: [{port: 80}]
                labels: {team: shop, replicas: 3}
            """,
            "reg.yaml:4:36: services[0].labels.replicas: Input should be a valid string",
            id="label-value-type",
        ),
        pytest.param(
            """\
            services:
              - name: web
                ports: [{port: 80}]
                labels: {1: x}
            """,
            "reg.yaml:4:14: services[0].labels[1] (key): Input should be a valid string",
            id="label-key-type",
        ),
        pytest.param(
            """\
            services:
              - name: 1
                ports: [{port: x}]
            """,
            "reg.yaml:2:11: services[0].name: Input should be a valid string (+1 more error)",
            id="first-of-several",
        ),
        pytest.param(
            """\
            services:
              - name: web
                ports: [{port: 80}]
                name: api
            """,
            "reg.yaml:4:5: services[0].name: duplicate key (first at line 2)",
            id="duplicate-key",
        ),
        pytest.param(
            """\
            services:
              - name: web
                ports: [{port: 80}
            """,
            "reg.yaml:4:1: invalid YAML: expected ',' or ']', but got '<stream end>'"
            " (while parsing a flow sequence at 3:12)",
            id="yaml-syntax",
        ),
        pytest.param(
            """\
            services:
              - name: web
              bad
            """,
            "reg.yaml:4:1: invalid YAML: could not find expected ':'"
            " (while scanning a simple key at 3:3)",
            id="yaml-syntax-key",
        ),
        pytest.param(
            "services: []\n---\nservices: []\n",
            "reg.yaml:2:1: invalid YAML: but found another document"
            " (expected a single document in the stream at 1:1)",
            id="two-documents",
        ),
        pytest.param(
            "services: []\n  \x07\n",
            "reg.yaml:2:3: invalid YAML: unacceptable character #x0007:"
            " special characters are not allowed",
            id="control-character",
        ),
        pytest.param(
            "# only a comment\n",
            "reg.yaml: empty document; expected a mapping with a 'services' list",
            id="empty",
        ),
        pytest.param(
            "- name: web\n",
            "reg.yaml:1:1: expected a mapping with a 'services' list, got list",
            id="top-level-list",
        ),
        pytest.param(
            "services:\n",
            "reg.yaml:1:10: services: expected a list",
            id="services-null",
        ),
        pytest.param(
            "services: []\nversion: 2\n",
            "reg.yaml:2:1: version: unknown field 'version'; expected one of: services",
            id="unknown-top-level-key",
        ),
        pytest.param(
            "kind: registry\n",
            "reg.yaml:1:1: kind: unknown field 'kind'; expected one of: services",
            id="no-services",
        ),
    ],
)
def test_whole_file_errors_name_file_line_column_path_and_reason(text: str, expected: str) -> None:
    assert error_of(text) == expected


# --- the watch loop --------------------------------------------------------------------

WEB = (
    "services:\n  - name: web\n    ports: [{port: 80}]\n"
    "    endpoints: [{address: 10.0.0.1, port: 8081}]\n"
)
WEB2 = WEB.replace("10.0.0.1", "10.0.0.2")
BROKEN = "services:\n  - name: web\n    ports: [{port: 80}\n"


class FakeCatalog:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.states: list[list[ServiceEntry]] = []
        self.errors: list[str] = []

    def register(self, source: str, kind: str) -> None:
        self.calls.append(("register", source, kind))

    def replace(self, source: str, entries: Iterable[ServiceEntry]) -> None:
        self.calls.append(("replace", source))
        self.states.append(list(entries))

    def set_error(self, source: str, error: str) -> None:
        self.calls.append(("set_error", source))
        self.errors.append(error)

    def ips(self) -> list[str]:
        return [ep.ip for e in self.states[-1] for ep in e.endpoints]


class CountedSource(FileSource):
    """A FileSource that counts the polls it has finished: evidence for quiet windows."""

    polls = 0

    async def poll(self) -> None:
        await super().poll()
        self.polls += 1


async def looked_again(source: CountedSource) -> None:
    """Until two more polls have finished: the first may have begun before whatever the
    test just wrote, the second began after it and saw it. A window in which "nothing
    changed" means something only once the source has looked."""
    start = source.polls
    await async_wait_for(
        lambda: source.polls >= start + 2, 3.0, interval=0.01, message=f"two polls after {start}"
    )


async def wait(predicate: object, message: str) -> None:
    await async_wait_for(predicate, timeout=3.0, interval=0.02, message=message)  # type: ignore[arg-type]


@pytest.fixture
def reg(tmp_path: Path) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(WEB)
    return path


def write_in_place(path: Path, text: str) -> None:
    with path.open("r+") as f:  # same inode: truncate and rewrite
        f.seek(0)
        f.truncate()
        f.write(text)


def write_by_rename(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def test_publishes_edits_and_skips_identical_rewrites(reg: Path) -> None:
    catalog = FakeCatalog()
    source = CountedSource(reg, catalog, interval=0.05)
    assert catalog.calls == [("register", "file", "file")]
    async with running_task(source.run()):
        await wait(lambda: catalog.states, "initial publish")
        assert catalog.ips() == ["10.0.0.1"]

        write_in_place(reg, WEB2)
        await wait(lambda: len(catalog.states) == 2, "edit published")
        assert catalog.ips() == ["10.0.0.2"]

        write_in_place(reg, WEB2)  # same content
        write_by_rename(reg, WEB2)  # same content, new inode
        write_in_place(reg, WEB2.replace("    ports", "    # a comment\n    ports"))
        await looked_again(source)
        assert len(catalog.states) == 2
    assert catalog.errors == []


async def test_error_keeps_last_good_state_until_fixed(
    reg: Path, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = FakeCatalog()
    source = CountedSource(reg, catalog, interval=0.05)
    caplog.set_level(logging.INFO, logger="sources.file")
    async with running_task(source.run()):
        await wait(lambda: catalog.states, "initial publish")

        write_in_place(reg, BROKEN)  # e.g. a half-written file
        await wait(lambda: catalog.errors, "error reported")
        assert catalog.errors == [
            f"{reg}:4:1: invalid YAML: expected ',' or ']', but got '<stream end>'"
            " (while parsing a flow sequence at 3:12)"
        ]
        write_in_place(reg, BROKEN.replace("web", "api"))  # another write, same error
        await looked_again(source)
        assert catalog.calls[-1] == ("set_error", "file")
        assert len(catalog.errors) == 1 and len(catalog.states) == 1
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert [r.name for r in errors] == ["sources.file"]
        assert catalog.errors[0] in errors[0].getMessage()
        assert source.error == catalog.errors[0]

        # Fixed with the same content as before: still republished, to clear the error.
        write_in_place(reg, WEB)
        await wait(lambda: len(catalog.states) == 2, "republished after fix")
        assert catalog.states[1] == catalog.states[0]
        assert source.error is None
        await looked_again(source)
        assert len(catalog.states) == 2 and len(catalog.errors) == 1


async def test_deleted_file_is_an_error_and_coming_back_clears_it(reg: Path) -> None:
    catalog = FakeCatalog()
    source = CountedSource(reg, catalog, interval=0.05)
    async with running_task(source.run()):
        await wait(lambda: catalog.states, "initial publish")
        await asyncio.to_thread(reg.unlink)
        await wait(lambda: catalog.errors, "missing file reported")
        await looked_again(source)
        assert catalog.errors == [f"{reg}: cannot read: No such file or directory"]
        assert len(catalog.states) == 1

        await asyncio.to_thread(reg.write_text, WEB)
        await wait(lambda: len(catalog.states) == 2, "back")
        assert catalog.calls[-1] == ("replace", "file")


async def test_atomic_rename_is_picked_up(reg: Path) -> None:
    catalog = FakeCatalog()
    source = FileSource(reg, catalog, interval=0.05)
    async with running_task(source.run()):
        await wait(lambda: catalog.states, "initial publish")
        write_by_rename(reg, WEB2)
        await wait(lambda: len(catalog.states) == 2, "renamed file published")
        assert catalog.ips() == ["10.0.0.2"]


async def test_same_size_same_mtime_rewrite_is_picked_up(reg: Path) -> None:
    catalog = FakeCatalog()
    source = FileSource(reg, catalog, interval=0.05)
    async with running_task(source.run()):
        await wait(lambda: catalog.states, "initial publish")
        st = await asyncio.to_thread(reg.stat)
        write_in_place(reg, WEB2)  # same size
        os.utime(reg, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime, same inode
        await wait(lambda: len(catalog.states) == 2, "rewrite published")
        assert catalog.ips() == ["10.0.0.2"]


def test_load_once_publishes_or_raises(reg: Path) -> None:
    catalog = FakeCatalog()
    source = FileSource(reg, catalog, name="static", interval=0.05)
    entries = source.load_once()
    assert [e.service.source for e in entries] == ["static"]
    assert catalog.calls == [("register", "static", "file"), ("replace", "static")]
    assert catalog.states == [entries]

    reg.write_text(BROKEN)
    with pytest.raises(FileRegistryError, match=r"registry\.yaml:4:1: invalid YAML"):
        source.load_once()
    assert catalog.calls[-1] == ("set_error", "static")

    reg.unlink()
    with pytest.raises(FileRegistryError, match="cannot read: No such file"):
        source.load_once()
    assert len(catalog.states) == 1


def test_not_utf8_is_a_file_error(reg: Path) -> None:
    reg.write_bytes(b"services: []\n# caf\xe9\n")
    with pytest.raises(
        FileRegistryError, match=r"registry\.yaml: not UTF-8: invalid continuation byte at byte 18"
    ):
        FileSource(reg, FakeCatalog()).load_once()


def test_json_and_yaml_forms_of_a_file_mean_the_same_and_errors_have_lines() -> None:
    """JSON takes a fast path (json), YAML the libyaml one; both agree, and a JSON file's
    errors still name the line and column."""
    doc = {
        "services": [
            {
                "name": "web",
                "ports": [{"name": "http", "port": 80}],
                "endpoints": [{"address": "10.0.0.1", "port": 8080, "zone": "z1"}],
            }
        ]
    }
    as_json = json.dumps(doc, indent=2)
    assert parse_registry(as_json, "r.json", "file") == parse_registry(
        yaml.safe_dump(doc), "r.yaml", "file"
    )
    where = r"^r.json:14:19: services\[0\].endpoints\[0\].port"
    with pytest.raises(FileRegistryError, match=where):
        parse_registry(as_json.replace('"port": 8080', '"port": "8080"'), "r.json", "file")
    dup = '{"services": [], "services": []}'
    with pytest.raises(FileRegistryError, match=r"^r.json:1:\d+: services: duplicate key"):
        parse_registry(dup, "r.json", "file")
