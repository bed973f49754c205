"""Cutting a registry file into the text of each service, so a reload parses only the
services whose text changed.

Parsing is most of what a reload of a big registry file costs (libyaml composes, but
every scalar is resolved and constructed in Python: ~0.2 s for 1,000 services x 3
endpoints), so the file is cut, by text, into its ``services:`` items and only the items
not seen in the last good load are parsed, each on its own. The cut is made only where
it is certainly right, and parsing the whole file is the answer otherwise:

- the file is ``services:`` (after blank and comment lines) followed by a block list,
  every other line being more indented than its dashes, a blank line or a comment, so
  each item starts at a line ``<indent>- `` and ends where the next starts;
- no anchors or aliases (``&``/``*`` anywhere: an item could depend on another), no
  directives, document markers, tabs or unusual line breaks.

Each item parsed alone must then be a list of one mapping; anything else (a syntax error,
a duplicate key, a quoted string cut in two) makes the caller parse the whole file, which
also gives every error its exact position.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import yaml

from sources.yaml_positions import CLoader, DuplicateKey

_HEADER = re.compile(r"\A(?:[ \t]*(?:#[^\n]*)?\n)*services:[ \t]*(?:#[^\n]*)?\n")
_ITEM_INDENT = re.compile(r"^( *)-(?:[ \t]|$)", re.MULTILINE)
# What makes cutting unsafe: anchors/aliases, directives, document markers, tabs, a BOM
# and line breaks other than \n.
_UNCUTTABLE = re.compile(r"[&*\t\r\x85\u2028\u2029\ufeff]|^(?:%|---|\.\.\.)", re.MULTILINE)


def cut(text: str) -> list[str] | None:
    """The text of each item of the file's `services` list, or None if it cannot be cut
    safely (then the whole file is parsed)."""
    header = _HEADER.match(text)
    if header is None or _UNCUTTABLE.search(text):
        return None
    body = text[header.end() :]
    first = _ITEM_INDENT.search(body)
    if first is None:
        return None
    indent = first.group(1)
    deeper = len(indent) + 1
    # A line that is neither an item start, nor inside an item, nor blank or a comment.
    if re.search(rf"^(?! {{{deeper}}}|{indent}-(?:[ \t]|$)|[ \t]*(?:#|$))", body, re.MULTILINE):
        return None
    if not _comments_only(body[: first.start()]):
        return None
    starts = [m.start() for m in re.finditer(rf"^{indent}-(?:[ \t]|$)", body, re.MULTILINE)]
    starts.append(len(body))
    return [body[a:b] for a, b in itertools.pairwise(starts)]


def _comments_only(text: str) -> bool:
    return all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines())


def parse_item(chunk: str) -> dict[Any, Any] | None:
    """The mapping one item's text holds, or None if it is not exactly one mapping."""
    loader = CLoader(chunk)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except (yaml.YAMLError, DuplicateKey):
        return None
    finally:
        loader.dispose()
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        return data[0]
    return None
