"""docker-compose.yml, offline: no Docker engine runs where these tests do.

The Compose specification (check-jsonschema's vendored `compose-spec` schema) checks
the file's shape; the rest checks what a schema cannot: mounted files exist, the Envoy
bootstrap points at the xds-server service and is valid for Envoy, the Consul service
definitions parse, have health checks and name addresses Envoy can reach, every
`depends_on` target exists and every published port binds loopback.
"""

from __future__ import annotations

import copy
import ipaddress
import itertools
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.envoy import validate_bootstrap

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
CONSUL_DIR = ROOT / "examples" / "consul"


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    svcs = load_compose()["services"]
    assert isinstance(svcs, dict) and svcs
    return svcs


def check_compose_spec(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with its builtin (vendored, offline) Compose schema."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def volume_mounts(svc: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of every bind mount, short or long syntax."""
    mounts = []
    for vol in svc.get("volumes", []):
        if isinstance(vol, str):
            source, target = vol.split(":")[:2]
        else:
            source, target = vol["source"], vol["target"]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def host_file(svc: dict[str, Any], container_path: str) -> Path:
    """The repo file mounted at container_path (or inside a mounted directory)."""
    for source, target in volume_mounts(svc):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return (ROOT / source / container_path[len(target) :].lstrip("/")).resolve()
    raise AssertionError(f"{container_path} is not mounted from the repo")


def flag_value(command: list[str], flag: str) -> str | None:
    """`--flag value` or `--flag=value` (Go's flag package takes both, as does argparse)."""
    for i, arg in enumerate(command):
        if arg == flag and i + 1 < len(command):
            return command[i + 1]
        if arg.startswith(flag + "="):
            return arg[len(flag) + 1 :]
    return None


def command_of(name: str) -> list[str]:
    cmd = services()[name]["command"]
    assert isinstance(cmd, list), f"{name}: use the exec (list) form of command"
    return [str(a) for a in cmd]


# --- the Compose specification --------------------------------------------------------


def test_compose_file_validates_against_the_compose_spec() -> None:
    result = check_compose_spec(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "breakage",
    ["unknown service key", "ports not a list", "depends_on condition"],
)
def test_a_broken_compose_file_fails_the_check(tmp_path: Path, breakage: str) -> None:
    data = copy.deepcopy(load_compose())
    xds = data["services"]["xds-server"]
    if breakage == "unknown service key":
        xds["restart_policy"] = "always"  # belongs under deploy:, not on the service
    elif breakage == "ports not a list":
        xds["ports"] = {"18000": 18000}
    else:
        xds["depends_on"]["consul"]["condition"] = "service_ready"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(data))
    result = check_compose_spec(broken)
    assert result.returncode != 0, f"{breakage}: accepted\n{result.stdout}"
    assert "xds-server" in result.stdout, result.stdout


# --- what a schema cannot check -------------------------------------------------------


def test_default_services_and_the_file_alternative() -> None:
    svcs = services()
    default = {name for name, svc in svcs.items() if not svc.get("profiles")}
    assert {"consul", "xds-server", "envoy"} <= default
    assert "--consul" in command_of("xds-server")
    backends = default - {"consul", "xds-server", "envoy"}
    assert len(backends) >= 2, backends
    # the file registry stays available, but not in a plain `docker compose up`
    assert svcs["xds-server-file"]["profiles"]
    assert flag_value(command_of("xds-server-file"), "--file") is not None


def test_images_are_pinned() -> None:
    for name, svc in services().items():
        if "build" in svc:
            assert (ROOT / svc["build"] / "Dockerfile").is_file(), name
            continue
        image = svc["image"]
        tag = image.rpartition(":")[2] if ":" in image else ""
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{name}: {image} not pinned"
    assert re.fullmatch(r"hashicorp/consul:1\.\d+\.\d+", services()["consul"]["image"])
    assert re.fullmatch(r"envoyproxy/envoy:v1\.\d+\.\d+", services()["envoy"]["image"])


def test_every_mounted_file_exists() -> None:
    mounted = 0
    for name, svc in services().items():
        for source, _target in volume_mounts(svc):
            assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            mounted += 1
    assert mounted >= 3


def dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions, backslash continuations joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    return [" ".join(i.split()) for i in re.split(r"(?<!\\)\n", "\n".join(lines)) if i.strip()]


def requirement_name(requirement: str) -> str:
    """PEP 503 normalised distribution name of a requirement string."""
    name = re.split(r"[\s<>=!~;\[@]", requirement.strip("'\""), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_installed_requirements(instructions: list[str]) -> set[str]:
    """Distribution names the image's `pip install`s bring in.

    `pip install .` or `.[extra]` installs the project's dependencies (plus those
    extras) as pyproject.toml lists them, and `--no-deps` drops them; a named
    package is itself.
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installed: set[str] = set()
    for inst in instructions:
        if not inst.startswith("RUN "):
            continue
        for command in re.split(r"&&|;|\|\|", inst[4:]):
            words = command.replace("\\", " ").split()
            pairs = list(itertools.pairwise(words))
            if ("pip", "install") not in pairs:
                continue
            args = words[pairs.index(("pip", "install")) + 2 :]
            for arg in (a.strip("'\"") for a in args if not a.startswith("-")):
                target, _, extras = arg.partition("[")
                if target not in (".", "./"):
                    installed.add(requirement_name(arg))
                elif "--no-deps" not in args:
                    reqs = list(project["dependencies"])
                    for extra in filter(None, extras.rstrip("]").split(",")):
                        reqs += project["optional-dependencies"][extra.strip()]
                    installed |= {requirement_name(r) for r in reqs}
    return installed


def test_dockerfile_copies_existing_paths_and_installs_the_consul_client() -> None:
    instructions = dockerfile_instructions()
    for inst in instructions:
        if inst.startswith("COPY "):
            for src in inst.split()[1:-1]:
                assert (ROOT / src).exists(), inst
    # xds-server --consul (the compose default) imports the Consul client at start-up
    installed = pip_installed_requirements(instructions)
    assert "py-consul" in installed, f"the image's pip installs bring in only {sorted(installed)}"


def test_depends_on_targets_exist() -> None:
    svcs = services()
    for name, svc in svcs.items():
        deps = svc.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else deps.keys():
            assert dep in svcs, f"{name} depends on unknown service {dep}"
            if isinstance(deps, dict) and deps[dep].get("condition") == "service_healthy":
                assert "healthcheck" in svcs[dep], f"{name} waits for {dep}'s health"


def test_published_ports_bind_loopback() -> None:
    for name, svc in services().items():
        for port in svc.get("ports", []):
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:
                parts = str(port).split(":")
                host_ip = parts[0] if len(parts) == 3 else None
            assert host_ip == "127.0.0.1", f"{name}: {port} is published on every interface"


def test_xds_server_reaches_consul_by_service_name() -> None:
    cmd = command_of("xds-server")
    address = flag_value(cmd, "--consul-address")
    assert address == "http://consul:8500"
    assert "consul" in services()["xds-server"]["depends_on"]
    assert flag_value(cmd, "--admin-address") == "0.0.0.0:19000"  # published, for xdsctl


def test_consul_connection_limit_is_raised() -> None:
    hcl = flag_value(command_of("consul"), "-hcl")
    assert hcl is not None
    match = re.search(r"limits\s*\{\s*http_max_conns_per_client\s*=\s*(\d+)\s*\}", hcl)
    assert match and int(match.group(1)) > 200, hcl  # Consul's default is 200 per client IP


# --- the Envoy bootstrap --------------------------------------------------------------


def envoy_bootstrap() -> Path:
    cmd = command_of("envoy")
    config = flag_value(cmd, "-c") or flag_value(cmd, "--config-path")
    assert config, cmd
    return host_file(services()["envoy"], config)


def test_envoy_bootstrap_points_at_the_xds_server_service() -> None:
    boot = yaml.safe_load(envoy_bootstrap().read_text())
    assert boot["node"]["id"] and boot["node"]["cluster"]
    assert boot["admin"]["address"]["socket_address"]["port_value"] == 9901
    ads = boot["dynamic_resources"]["ads_config"]
    cluster_name = ads["grpc_services"][0]["envoy_grpc"]["cluster_name"]
    (cluster,) = [c for c in boot["static_resources"]["clusters"] if c["name"] == cluster_name]
    assert cluster["type"] in ("STRICT_DNS", "LOGICAL_DNS")  # a name, not an IP
    assert "http2_protocol_options" in json.dumps(cluster)  # gRPC needs HTTP/2
    (lb_endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    sock = lb_endpoint["endpoint"]["address"]["socket_address"]
    assert sock["address"] == "xds-server" and "xds-server" in services()
    xds_address = flag_value(command_of("xds-server"), "--xds-address") or "0.0.0.0:18000"
    assert sock["port_value"] == int(xds_address.rpartition(":")[2])
    # the HTTP listener xds-server gives Envoy (default 10000) is the one published
    listener = int(flag_value(command_of("xds-server"), "--http-listener-port") or 10000)
    assert f"127.0.0.1:{listener}:{listener}" in services()["envoy"]["ports"]


def test_envoy_validates_the_bootstrap(tmp_path: Path) -> None:
    # validate mode builds the static cluster without resolving `xds-server`; the
    # shared lookup raises when there is no Envoy, like every other Envoy test
    boot = yaml.safe_load(envoy_bootstrap().read_text())
    assert "OK" in validate_bootstrap(boot, tmp_path, timeout=60)


# --- the Consul service definitions ---------------------------------------------------


def backend_addresses() -> dict[str, str]:
    """Fixed IPv4 address → compose service, for services on the demo network."""
    out = {}
    for name, svc in services().items():
        nets = svc.get("networks")
        if isinstance(nets, dict):
            for net in nets.values():
                if net and "ipv4_address" in net:
                    out[net["ipv4_address"]] = name
    return out


def service_definitions(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    defs = data.get("services") or [data["service"]]
    assert isinstance(defs, list) and defs, path
    return defs


def definition_files() -> list[Path]:
    files = sorted(CONSUL_DIR.glob("*/*.json"))
    assert files
    return files


@pytest.mark.parametrize("path", definition_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_consul_service_definition(path: Path) -> None:
    addresses = backend_addresses()
    subnets = [
        ipaddress.ip_network(c["subnet"])
        for net in load_compose()["networks"].values()
        for c in (net or {}).get("ipam", {}).get("config", [])
    ]
    for svc in service_definitions(path):
        assert svc["name"] and svc["id"], svc
        ip = ipaddress.ip_address(svc["address"])  # Envoy needs an IP, not a DNS name
        assert any(ip in net for net in subnets), f"{ip} is outside the compose network"
        assert svc["address"] in addresses, f"{svc['id']}: no compose service at {ip}"
        assert 0 < svc["port"] < 65536
        assert svc.get("meta", {}).get("protocol", "http") in ("http", "http2", "grpc", "tcp")
        checks = svc.get("checks") or [svc["check"]]
        for check in checks:
            assert check["interval"] and check["timeout"], check
            assert check["http"] == f"http://{svc['address']}:{svc['port']}/", check
        # the backend container listens where the registration says
        backend = command_of(addresses[svc["address"]])
        assert f"-listen=:{svc['port']}" in backend


def test_consul_loads_the_demo_definitions_and_mounts_the_example() -> None:
    consul = services()["consul"]
    config_dir = flag_value(command_of("consul"), "-config-dir")
    # not /consul/config: the image's entrypoint chowns that one, failing on a :ro mount
    assert config_dir and config_dir != "/consul/config"
    assert host_file(consul, config_dir) == (CONSUL_DIR / "services").resolve()
    assert host_file(consul, "/consul/register/hello.json").is_file()
    registered = {
        d["name"] for f in (CONSUL_DIR / "services").glob("*.json") for d in service_definitions(f)
    }
    assert len(registered) >= 2, registered
    # the README's example is not registered at startup, but its backend runs
    (hello,) = service_definitions(CONSUL_DIR / "register" / "hello.json")
    assert hello["name"] not in registered
    assert not services()[backend_addresses()[hello["address"]]].get("profiles")
