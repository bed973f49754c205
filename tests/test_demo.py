"""`make demo` still works: `examples/demo.py --check` end to end, on free ports only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.harness.ports import free_port

pytestmark = pytest.mark.timeout(150)

ROOT = Path(__file__).resolve().parent.parent


def test_demo_check_passes(tmp_path: Path) -> None:
    registry = yaml.safe_load((ROOT / "examples" / "registry.yaml").read_text())
    for svc in registry["services"]:
        for ep in svc["endpoints"]:
            ep["port"] = free_port()
    copy = tmp_path / "registry.yaml"
    copy.write_text(yaml.safe_dump(registry, sort_keys=False))
    ports = {
        flag: str(free_port())
        for flag in (
            "--xds-port",
            "--admin-port",
            "--listener-port",
            "--envoy-admin-port",
            "--extra-port",
        )
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--check", "--registry", str(copy),
         *(x for item in ports.items() for x in item)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "demo check passed" in done.stdout, output
