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
# What makes cutting unsafe: anchors/aliases, tabs, a BOM, line breaks other than \n;
# directives and document markers. (Patterns anchor on "\n" rather than use ^ with
# MULTILINE: several times faster on a file of thousands of lines.)
_UNSAFE = re.compile(r"[&*\t\r\x85\u2028\u2029\ufeff]")
_MARKER = re.compile(r"\n(?:%|---|\.\.\.)")
_FIRST_ITEM = re.compile(r"\n( *)-(?=[ \n]|\Z)")


def cut(text: str) -> list[str] | None:
    """The text of each item of the file's `services` list, or None if it cannot be cut
    safely (then the whole file is parsed)."""
    header = _HEADER.match(text)
    if header is None or _UNSAFE.search(text) or _MARKER.search("\n" + text):
        return None
    at = header.end() - 1  # the header's last "\n": every line below starts after one
    first = _FIRST_ITEM.search(text, at)
    if first is None or not _comments_only(text[at : first.start()]):
        return None
    indent = first.group(1)
    item = rf"\n{indent}-(?=[ \n]|\Z)"
    # A line that is neither an item start, nor inside an item, nor blank or a comment.
    stray = rf"\n(?! {{{len(indent) + 1}}}|{indent}-(?:[ \n]|\Z)|[ ]*(?:#|\n|\Z))"
    if re.search(stray, text[at:]):
        return None
    starts = [m.start() + 1 for m in re.finditer(item, text[at:])]
    body = text[at:]
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
