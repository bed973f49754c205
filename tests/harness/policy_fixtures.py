"""Fixtures for traffic policy end-to-end modules (``pytest_plugins =
["tests.harness.policy_fixtures"]``): ``world``, one `PolicyWorld` per module over the
module's ``SERVICES``; ``mode``, each test once per Envoy ("sotw", "delta"), with the
backends reset and a check that neither Envoy rejected an update."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .policy import MODES, PolicyWorld, policy_world


@pytest.fixture(scope="module")
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PolicyWorld]:
    """The module's services (its ``SERVICES``), their backends, the server, two Envoys."""
    directory = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    with policy_world(directory, request.module.SERVICES) as w:
        yield w


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest, world: PolicyWorld) -> Iterator[str]:
    """Each test once through the SotW Envoy, once through the delta one; backends reset
    before and after, and no update rejected by either Envoy after."""
    world.reset_backends()
    yield str(request.param)
    world.reset_backends()
    world.check_nothing_rejected()
