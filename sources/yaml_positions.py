"""YAML with positions: where in a file a value came from, for `file:line:col` errors.

Shared by the sources that read YAML files (the file registry, policy files). Parsing
uses libyaml when PyYAML has it and never tracks positions on the fast path; `Nodes`
indexes a composed document's nodes by the path a validator reports, only when an
error needs a line number. Mappings that repeat a key are refused (PyYAML would keep
the last one silently).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml

YamlPath = tuple[Any, ...]
KEY = "[key]"  # pydantic's loc marker for a mapping key; also ours for key nodes
MERGE_TAG = "tag:yaml.org,2002:merge"
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def render_path(path: YamlPath) -> str:
    """`("spec", "http", 0, "headers", "end-user")` → `spec.http[0].headers["end-user"]`.

    The one rendering of a field path, for the file registry and the policy parser alike.
    A KEY marker reads ` (key)`; a non-string key (YAML allows them) is shown as its repr."""
    out = ""
    for part in path:
        if part == KEY:
            out += " (key)"
        elif isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and IDENT.fullmatch(part):
            out += f".{part}" if out else part
        elif isinstance(part, str):
            out += '["' + part.replace("\\", "\\\\").replace('"', '\\"') + '"]'
        else:
            out += f"[{part!r}]"
    return out


def located(filename: str, mark: yaml.Mark | None, path: YamlPath, reason: str) -> str:
    """``file:line:col: path: reason`` (1-based; just ``file`` without a mark)."""
    where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark is not None else filename
    what = f"{render_path(path)}: " if path else ""
    return f"{where}: {what}{reason}"


class Nodes:
    """Every value node and key node of a composed document, by the path pydantic reports."""

    def __init__(
        self, root: yaml.Node, filename: str, error: Callable[[str], Exception] = ValueError
    ) -> None:
        # Keys are constructed from their nodes alone; any loader's constructor will do.
        self._loader = yaml.SafeLoader("")
        self._filename = filename
        self._error = error
        self.by_path: dict[YamlPath, yaml.Node] = {}
        self._walk(root, (), set())

    def _walk(self, node: yaml.Node, path: YamlPath, active: set[int]) -> None:
        if id(node) in active:  # a recursive alias
            return
        self.by_path[path] = node
        active = active | {id(node)}
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, (*path, i), active)
        elif isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], yaml.Node] = {}
            for key_node, value_node in node.value:
                # Merge keys are resolved by the constructor; complex keys fail there.
                if key_node.tag == MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue
                seen = first.setdefault((key_node.tag, key_node.value), key_node)
                if seen is not key_node and _inside(node, seen):
                    raise self._error(
                        located(
                            self._filename,
                            key_node.start_mark,
                            (*path, key_node.value),
                            f"duplicate key (first at line {seen.start_mark.line + 1})",
                        )
                    )
                key = self._loader.construct_object(key_node, deep=True)
                self.by_path[(*path, key, KEY)] = key_node
                self._walk(value_node, (*path, key), active)

    def mark(self, path: YamlPath) -> yaml.Mark | None:
        for n in range(len(path), -1, -1):
            node = self.by_path.get(path[:n])
            if node is not None:
                return node.start_mark
        return None


def _inside(mapping: yaml.MappingNode, key: yaml.Node) -> bool:
    """Whether `key` is written in `mapping` itself. The constructor flattens merge keys
    (``<<: *base``) into the mapping's pairs, ahead of its own: a key from elsewhere that
    an own key repeats is an override, as YAML's merge means, not a duplicate."""
    return mapping.start_mark.index <= key.start_mark.index < mapping.end_mark.index


class DuplicateKey(Exception):
    """A mapping repeats a key; the _Nodes walk then reports it with its path."""


class NoDuplicateKeys:
    """Refuses a mapping that repeats a key (PyYAML would silently keep the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != MERGE_TAG:
                ident = (key_node.tag, key_node.value)
                if ident in seen:
                    raise DuplicateKey
                seen.add(ident)
        return super().construct_mapping(node, deep)  # type: ignore[misc]


class PyLoader(NoDuplicateKeys, yaml.SafeLoader):
    """PyYAML's own parser: its syntax errors say the most."""


class CLoader(NoDuplicateKeys, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml's parser when PyYAML has it: 2-3x faster on big files. Its syntax error
    messages are terser, so a file it rejects is parsed again by PyLoader to explain."""


def unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads` object hook refusing duplicate keys (the YAML path then explains)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out
