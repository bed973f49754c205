"""The layers of docs/architecture.md, enforced on the real imports (read with `ast`).

- `xds_server.model` imports nothing of ours outside itself;
- the shared leaves (`xds_server` itself for `__version__`, `types`, `validation`,
  `metrics`) import only the model and each other;
- `sources` and `translators` import the model and the shared leaves, never each
  other and never the serving core;
- the serving core (every other `xds_server` module) imports neither sources nor
  translators: only the composition root (`xds_server.cli`, `xds_server.controller`
  with its `controller_policy`, and `xds_server.__main__` that runs the CLI) knows
  them, and nothing imports the root but the root.

Every import counts, also one inside a function or under `TYPE_CHECKING`: it is a
dependency all the same.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("xds_server", "sources", "translators")
SHARED = frozenset(
    {"xds_server", "xds_server.types", "xds_server.validation", "xds_server.metrics"}
)
ROOT_MODULES = frozenset(
    {
        "xds_server.cli",
        "xds_server.controller",
        "xds_server.controller_policy",
        "xds_server.__main__",
    }
)
MAY_IMPORT = {
    "model": {"model"},
    "shared": {"model", "shared"},
    "sources": {"model", "shared", "sources"},
    "translators": {"model", "shared", "translators"},
    "core": {"model", "shared", "core"},
    "root": {"model", "shared", "core", "sources", "translators", "root"},
}


@dataclass(frozen=True)
class Import:
    importer: str  # module name
    path: Path
    line: int
    imported: str  # module name of ours


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def layer(module: str) -> str:
    if module == "xds_server.model" or module.startswith("xds_server.model."):
        return "model"
    if module in SHARED:
        return "shared"
    if module in ROOT_MODULES:
        return "root"
    top = module.split(".")[0]
    return "core" if top == "xds_server" else top


def imports_of(path: Path, text: str | None = None) -> list[Import]:
    """Our modules that the module at `path` (with `text`, else the file's) imports,
    resolved: relative imports against its package, and `from pkg import name` to
    `pkg.name` when that is a module."""
    importer = module_name(path)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text() if text is None else text, str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if is_module(sub) else base)
        for target in targets:
            if target.split(".")[0] in PACKAGES:
                found.append(Import(importer, path, node.lineno, target))
    return found


def all_imports() -> list[Import]:
    return [
        imp
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for imp in imports_of(path)
    ]


def violations(imports: list[Import]) -> list[str]:
    out = []
    for imp in imports:
        mine, theirs = layer(imp.importer), layer(imp.imported)
        if theirs not in MAY_IMPORT[mine]:
            out.append(
                f"{imp.path.relative_to(ROOT)}:{imp.line}: {imp.importer} ({mine}) imports "
                f"{imp.imported} ({theirs}); {mine} may import only "
                f"{', '.join(sorted(MAY_IMPORT[mine]))}"
            )
    return out


def test_layers_import_only_what_they_may() -> None:
    assert violations(all_imports()) == []


def test_the_scan_sees_the_real_dependencies() -> None:
    """Guards the check itself: if resolution broke, the rule above would pass on nothing."""
    edges = {(layer(i.importer), layer(i.imported)) for i in all_imports()}
    # The composition root knows every source and translator; the outer layers use the model.
    assert {("root", "sources"), ("root", "translators"), ("root", "core")} <= edges
    assert {("sources", "model"), ("translators", "model"), ("shared", "model")} <= edges
    by_module = {(i.importer, i.imported) for i in all_imports()}
    assert ("xds_server.cli", "sources.file") in by_module
    assert ("translators.listeners", "translators.resources") in by_module  # `from . import x`
    assert ("sources.kubernetes", "xds_server.metrics") in by_module  # `from pkg import mod`
    assert ("xds_server.model", "xds_server.model.policy") in by_module  # `from .policy import`


@pytest.mark.parametrize(
    ("importer", "source", "expected"),
    [
        ("translators/x.py", "from sources.file import FileSource\n", "(translators) imports"),
        ("sources/x.py", "import translators.names\n", "(sources) imports"),
        ("sources/x.py", "from xds_server.cache import SnapshotCache\n", "(core)"),
        ("xds_server/model/x.py", "from xds_server import types\n", "(model) imports"),
        ("xds_server/model/x.py", "from ..validation import dns_name\n", "(model) imports"),
        ("xds_server/session.py", "def f():\n    from translators import group\n", ":2:"),
        ("xds_server/admin.py", "from xds_server.controller import Controller\n", "(root)"),
        ("xds_server/types.py", "from xds_server.snapshot import Resource\n", "(shared)"),
    ],
)
def test_each_kind_of_violation_is_reported(importer: str, source: str, expected: str) -> None:
    problems = violations(imports_of(ROOT / importer, source))
    assert len(problems) == 1 and expected in problems[0], problems
