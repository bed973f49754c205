"""`xds-server` settings: flags over XDS_SERVER_* over the config file over defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from xds_server.settings import Settings, SettingsError, load


def test_defaults() -> None:
    s = load({}, {})
    assert s == Settings()
    assert s.xds_address == "0.0.0.0:18000" and s.admin_address == "127.0.0.1:19000"
    assert s.debounce_quiet == 0.1 and s.debounce_max_delay == 1.0


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    cfg = tmp_path / "xds.yaml"
    cfg.write_text(
        "xds-address: 127.0.0.1:1\nadmin_address: 127.0.0.1:2\ndebounce_quiet: 250ms\n"
        "file: /etc/registry.yaml\n"
    )
    env = {"XDS_SERVER_ADMIN_ADDRESS": "127.0.0.1:3", "XDS_SERVER_XDS_ADDRESS": "127.0.0.1:4"}
    s = load({"xds_address": "127.0.0.1:5"}, env, cfg)
    assert s.xds_address == "127.0.0.1:5"
    assert s.admin_address == "127.0.0.1:3"
    assert s.debounce_quiet == 0.25
    assert s.file == Path("/etc/registry.yaml")
    # XDS_SERVER_CONFIG names the file when --config is not given.
    s = load({}, {"XDS_SERVER_CONFIG": str(cfg)})
    assert s.xds_address == "127.0.0.1:1"


@pytest.mark.parametrize(
    ("value", "seconds"), [("100ms", 0.1), ("1.5s", 1.5), ("2m", 120.0), ("0.3", 0.3), (2, 2.0)]
)
def test_durations(value: object, seconds: float) -> None:
    assert load({"debounce_max_delay": value}, {}).debounce_max_delay == seconds


def test_errors_name_the_setting_and_its_origin(tmp_path: Path) -> None:
    with pytest.raises(
        SettingsError,
        match=r"invalid http_listener_port from environment "
        r"variable XDS_SERVER_HTTP_LISTENER_PORT: .*65535",
    ):
        load({}, {"XDS_SERVER_HTTP_LISTENER_PORT": "70000"})
    with pytest.raises(
        SettingsError,
        match=r"invalid debounce_quiet from --debounce-quiet: "
        r"not a duration: '5x'",
    ):
        load({"debounce_quiet": "5x"}, {})
    cfg = tmp_path / "c.yaml"
    cfg.write_text("xds_adress: 1\n")
    with pytest.raises(SettingsError, match=r"unknown setting 'xds_adress' in config file"):
        load({}, {}, cfg)
    cfg.write_text("a: [1\n")
    with pytest.raises(SettingsError, match=r"c.yaml:2:1: invalid YAML"):
        load({}, {}, cfg)
    with pytest.raises(SettingsError, match=r"cannot read config file .*missing.yaml"):
        load({}, {}, tmp_path / "missing.yaml")
    with pytest.raises(SettingsError, match="invalid log_level"):
        load({}, {"XDS_SERVER_LOG_LEVEL": "loud"})


def test_policy_paths_from_flags_environment_and_file(tmp_path: Path) -> None:
    """`--policy` is repeatable (argparse gives a list); the environment takes a
    comma-separated list; the config file a list or one path."""
    from xds_server.cli import _parser

    flags = vars(_parser().parse_args(["--policy", "a.yaml", "--policy", "dir/"]))
    assert load(flags, {}).policy == (Path("a.yaml"), Path("dir"))
    assert load({}, {"XDS_SERVER_POLICY": "a.yaml, b.yaml"}).policy == (
        Path("a.yaml"),
        Path("b.yaml"),
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text("policy: [x.yaml, y/]\n")
    assert load({}, {}, cfg).policy == (Path("x.yaml"), Path("y"))
    cfg.write_text("policy: only.yaml\n")
    assert load({}, {}, cfg).policy == (Path("only.yaml"),)
    assert load({}, {}).policy == ()
