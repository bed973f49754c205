"""Consul intentions enforced by the sidecars (issue 13, test 9): ``xds-server --consul``
with the services registered with Connect sidecars (tests.test_sidecar_consul), and a
``service-intentions`` config entry written to and deleted from the emulator's config
entries API, as ``consul config write`` / ``consul config delete`` would."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.consul_emulator import ConsulEmulator
from tests.harness.waiting import wait_for
from tests.test_sidecar_consul import ConsulSidecars, consul_mesh, emu  # noqa: F401  (fixtures)

pytest_plugins = ["tests.harness.fixtures"]
pytestmark = pytest.mark.timeout(90)

DENY_WEB = {
    "Kind": "service-intentions",
    "Name": "api",
    "Sources": [{"Name": "web", "Action": "deny"}],
}


def test_9_a_deny_intention_gives_403_and_deleting_it_restores_200(
    emu: ConsulEmulator,  # noqa: F811
    consul_mesh: Callable[..., ConsulSidecars],  # noqa: F811
) -> None:
    mesh = consul_mesh()
    assert mesh.call_api() == 200
    emu.config_write(DENY_WEB)
    wait_for(lambda: mesh.call_api() == 403, timeout=20, message="the deny intention")
    requests = mesh.backend.requests
    assert mesh.call_api() == 403 and mesh.backend.requests == requests
    # api's sidecar denied them (its inbound HCM's prefix is the instance's port).
    denied = mesh.api.stats(r"^http\.inbound_\d+\.rbac\.denied$")
    assert sum(denied.values()) >= 2, denied
    emu.config_delete("service-intentions", "api")
    wait_for(lambda: mesh.call_api() == 200, timeout=20, message="the intention deleted")


def test_consul_default_intention_deny_refuses_callers_no_intention_allows(
    emu: ConsulEmulator,  # noqa: F811
    consul_mesh: Callable[..., ConsulSidecars],  # noqa: F811
) -> None:
    emu.config_write({**DENY_WEB, "Sources": [{"Name": "web", "Action": "allow"}]})
    mesh = consul_mesh("--consul-default-intention", "deny")
    assert mesh.call_api() == 200  # allowed by its intention
    emu.config_delete("service-intentions", "api")
    wait_for(lambda: mesh.call_api() == 403, timeout=20, message="the default intention")
