"""Pytest fixture over `tests.harness.kubeapi`: enable with
``pytest_plugins = ["tests.harness.kube_fixtures"]`` (a module of its own, so that
importing the harness does not keep pytest from rewriting its assertions)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.kubeapi import KubeApi


@pytest.fixture
def kube_api() -> Iterator[KubeApi]:
    """A started `KubeApi` (kmock behind a cuttable proxy), stopped at teardown."""
    server = KubeApi().start()
    try:
        yield server
    finally:
        server.stop()
