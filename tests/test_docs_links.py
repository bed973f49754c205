"""README.md and docs/*.md point only inside the repository, and at things that exist.

- every relative Markdown link resolves to a file or directory of the repository (its
  `#anchor` aside); links to web pages are left alone;
- nothing points outside the repository: no `../` path that leaves it (in a link or
  in the text), no absolute path into a checkout or a home directory (`/tmp/...`, an output
  path in a command, is fine);
- every path written in backticks that starts with one of the repository's top-level
  directories (`xds_server/session.py`, `translators/policy_*.py`, `deploy/grafana/`)
  exists, and a pytest node id (`tests/test_x.py::test_y`) names a test defined there,
  so the documentation cannot silently go stale when a file or test is renamed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
TOP_LEVEL = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")}

_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE = re.compile(r"`([^`\n]+)`")
_ABSOLUTE = re.compile(r"(?<![\w.])/(?:work|home)/")
_UP = re.compile(r"(?<![\w.])(?:\.\./)+[\w./*-]*")


def relative_links(text: str) -> list[str]:
    return [
        target
        for target in _LINK.findall(text)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")
    ]


def repo_paths(text: str) -> list[str]:
    """Words in backticks that look like a path in this repository."""
    out = []
    for span in _CODE.findall(text):
        for word in span.split():
            word = word.strip("(),;:'\"")
            if "/" in word and word.split("/")[0] in TOP_LEVEL:
                out.append(word)
    return out


def _defines(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text())
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return any(isinstance(n, kinds) and n.name == name for n in ast.walk(tree))


def problems(doc: Path, text: str) -> list[str]:
    out = []
    for n, line in enumerate(_LINK.sub("]()", text).splitlines(), 1):
        if m := _ABSOLUTE.search(line):
            out.append(f"{doc.name}:{n}: points outside the repository: {m.group()!r}")
        for up in _UP.findall(line):
            if not (doc.parent / up).resolve().is_relative_to(ROOT):
                out.append(f"{doc.name}:{n}: points outside the repository: {up!r}")
    for target in relative_links(text):
        path = target.split("#")[0]
        resolved = (doc.parent / path).resolve()
        if not resolved.is_relative_to(ROOT):
            out.append(f"{doc.name}: link {target!r} leaves the repository")
        elif not resolved.exists():
            out.append(f"{doc.name}: link {target!r}: no such file")
    for word in repo_paths(text):
        path, _, test = word.partition("::")
        found = sorted(ROOT.glob(path.rstrip("/"))) if "*" in path else [ROOT / path]
        if not any(p.exists() for p in found):
            out.append(f"{doc.name}: `{word}`: no such file")
        elif test and not _defines(found[0], test.split("[")[0]):
            out.append(f"{doc.name}: `{word}`: {path} defines no {test}")
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documentation_points_inside_the_repository_at_what_exists(doc: Path) -> None:
    assert problems(doc, doc.read_text()) == []


def test_the_architecture_is_in_the_repository_and_the_readme_points_to_it() -> None:
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()
    assert (ROOT / "docs" / "architecture.md").is_file()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see [design](../../shared/DESIGN.md)", "link '../../shared/DESIGN.md' leaves"),
        ("see [design](shared/DESIGN.md)", "link 'shared/DESIGN.md': no such file"),
        ("notes in ../../shared/DESIGN.md", "outside the repository: '../../shared/DESIGN.md'"),
        ("notes in `/work/shared/DESIGN.md`", "points outside the repository: '/work/'"),
        ("[the sessions](../xds_server/nope.py#L3)", "no such file"),
        ("in `xds_server/sesion.py`", "`xds_server/sesion.py`: no such file"),
        ("by `translators/policy_*.rs`", "no such file"),
        ("`tests/test_architecture.py::test_nothing_like_this`", "defines no test_nothing"),
    ],
)
def test_each_kind_of_problem_is_found(text: str, expected: str) -> None:
    found = problems(ROOT / "docs" / "architecture.md", text)
    assert len(found) == 1 and expected in found[0], found


def test_good_references_pass() -> None:
    text = (
        "[bench](benchmarks.md#setup), [readme](../README.md), [web](https://envoyproxy.io), "
        "[top](#layers), `xds_server/session.py`, `translators/policy_*.py`, "
        "`deploy/grafana/`, `tests/test_architecture.py::test_layers_import_only_what_they_may`"
    )
    assert problems(ROOT / "docs" / "architecture.md", text) == []
