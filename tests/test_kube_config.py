"""Reaching the Kubernetes API: kubeconfig parsing, in-cluster config, the settings."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sources.kube_config import KubeConfigError, from_kubeconfig, resolve
from xds_server.cli import _parser, main
from xds_server.settings import SettingsError, load


def kubeconfig(path: Path, user: dict[str, Any] | None = None, **cluster: Any) -> Path:
    doc = {
        "clusters": [{"name": "c1", "cluster": {"server": "https://k8s.example:6443", **cluster}}],
        "users": [{"name": "u1", "user": user or {"token": "abc"}}],
        "contexts": [
            {"name": "one", "context": {"cluster": "c1", "user": "u1", "namespace": "shop"}},
            {"name": "two", "context": {"cluster": "c1", "user": "u1"}},
        ],
        "current-context": "one",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=test"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def test_token_context_and_namespace(tmp_path: Path) -> None:
    conn = from_kubeconfig([kubeconfig(tmp_path / "config")])
    assert conn.server == "https://k8s.example:6443"
    assert conn.headers() == {"Authorization": "Bearer abc"}
    assert conn.namespace == "shop" and conn.ssl_context is not None
    two = from_kubeconfig([tmp_path / "config"], context="two")
    assert two.namespace == "default" and "context two" in two.origin


def test_token_file_is_read_on_each_request(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("first\n")
    conn = from_kubeconfig([kubeconfig(tmp_path / "config", {"tokenFile": "tok"})])
    assert conn.headers() == {"Authorization": "Bearer first"}
    (tmp_path / "tok").write_text("rotated")
    assert conn.headers() == {"Authorization": "Bearer rotated"}


def test_certificates_inline_and_as_files(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    b64 = {p: base64.b64encode(p.read_bytes()).decode() for p in (cert, key)}
    inline = {"client-certificate-data": b64[cert], "client-key-data": b64[key]}
    conn = from_kubeconfig(
        [kubeconfig(tmp_path / "a", inline, **{"certificate-authority-data": b64[cert]})]
    )
    assert conn.ssl_context is not None and conn.headers() == {}
    files = {"client-certificate": str(cert), "client-key": "key.pem"}  # relative to the file
    conn = from_kubeconfig(
        [kubeconfig(tmp_path / "b", files, **{"certificate-authority": "cert.pem"})]
    )
    assert conn.ssl_context is not None


@pytest.mark.parametrize(
    ("user", "cluster", "context", "error"),
    [
        ({"exec": {"command": "aws"}}, {}, None, "exec credential plugin"),
        ({"token": "x"}, {}, "nope", "no context 'nope' (known: one, two)"),
        ({"token": "x"}, {"server": "k8s:6443"}, None, "server must be an http(s) URL"),
        ({"client-key-data": "eA=="}, {}, None, "client-certificate and client-key go together"),
        ({"token": "x"}, {"certificate-authority-data": "!!"}, None, "not valid base64"),
        ({"client-certificate": "missing.pem", "client-key": "k"}, {}, None, "cannot read"),
    ],
)
def test_errors_are_one_line(
    tmp_path: Path, user: dict[str, Any], cluster: dict[str, Any], context: str | None, error: str
) -> None:
    path = kubeconfig(tmp_path / "config", user, **cluster)
    with pytest.raises(KubeConfigError) as info:
        from_kubeconfig([path], context)
    assert error in str(info.value) and "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_resolve_order(tmp_path: Path) -> None:
    explicit = kubeconfig(tmp_path / "explicit")
    env_file = kubeconfig(tmp_path / "env", {"token": "env"})
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    kubeconfig(home / ".kube" / "config", {"token": "home"})
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token")
    (sa / "namespace").write_text("mesh")
    env = {
        "KUBECONFIG": f"{tmp_path / 'missing'}:{env_file}",
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
    }

    assert resolve(explicit, environ=env, home=home).headers()["Authorization"] == "Bearer abc"
    assert resolve(None, environ=env, home=home).headers()["Authorization"] == "Bearer env"
    no_env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert resolve(None, environ=no_env, home=home).headers()["Authorization"] == "Bearer home"
    pod = resolve(None, environ=no_env, home=tmp_path / "nohome", service_account_dir=sa)
    assert pod.server == "https://10.0.0.1:443" and pod.namespace == "mesh"
    assert pod.headers() == {"Authorization": "Bearer sa-token"}
    with pytest.raises(KubeConfigError, match="no Kubernetes configuration"):
        resolve(None, environ={}, home=tmp_path / "nohome")


def test_settings_switch_and_lists(tmp_path: Path) -> None:
    flags = vars(_parser().parse_args(["--kubernetes", "--namespaces", "a, b", "--context", "x"]))
    s = load(flags, environ={})
    assert s.kubernetes is True and s.namespaces == ("a", "b") and s.context == "x"
    assert load({}, environ={}).kubernetes is False and load({}, environ={}).namespaces == ()
    for text, value in [("true", True), ("1", True), ("false", False), ("0", False)]:
        assert load({}, environ={"XDS_SERVER_KUBERNETES": text}).kubernetes is value
    config = tmp_path / "settings.yaml"
    config.write_text("kubernetes: true\nnamespaces: [shop, data]\nlabel-selector: mesh=on\n")
    s = load({}, environ={}, config=config)
    assert s.namespaces == ("shop", "data") and s.label_selector == "mesh=on"
    with pytest.raises(SettingsError, match="XDS_SERVER_KUBERNETES"):
        load({}, environ={"XDS_SERVER_KUBERNETES": "maybe"})
    with pytest.raises(SystemExit):
        _parser().parse_args(["--kubernetes", "yes"])


def test_xds_server_refuses_a_bad_kubeconfig_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = kubeconfig(tmp_path / "config", {"exec": {"command": "aws"}})
    code = main(
        [
            "--kubernetes",
            "--kubeconfig",
            str(path),
            "--admin-address",
            "127.0.0.1:0",
            "--xds-insecure",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("xds-server: ") and "exec credential plugin" in err
