"""The registry hold's two settings: flags, XDS_SERVER_* variables, bounds."""

from __future__ import annotations

import pytest

from xds_server.settings import SettingsError, load


def test_defaults_env_and_flags() -> None:
    s = load({}, environ={})
    assert (s.registry_hold_threshold, s.registry_hold) == (0.5, 60.0)
    env = {"XDS_SERVER_REGISTRY_HOLD_THRESHOLD": "0", "XDS_SERVER_REGISTRY_HOLD": "2s"}
    s = load({}, environ=env)
    assert (s.registry_hold_threshold, s.registry_hold) == (0.0, 2.0)
    s = load({"registry_hold_threshold": 0.8, "registry_hold": "1m"}, environ=env)
    assert (s.registry_hold_threshold, s.registry_hold) == (0.8, 60.0)


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_the_threshold_is_a_fraction(value: str) -> None:
    with pytest.raises(SettingsError, match="invalid registry_hold_threshold from"):
        load({}, environ={"XDS_SERVER_REGISTRY_HOLD_THRESHOLD": value})
