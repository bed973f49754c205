"""Policy files: re-reading a file parses only the documents whose text changed, and gives
exactly what parsing the whole file gives (objects, positions, errors)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sources.policy_file import (
    PolicyFileError,
    PolicyFileSource,
    parse_policy_file,
    parse_policy_file_reusing,
)
from xds_server.catalog import Catalog
from xds_server.model import PolicyObject


def pair(name: str, weight: int, extra: str = "") -> list[str]:
    """A VirtualService (weight/100-weight across v1/v2) and its DestinationRule."""
    vs = (
        "apiVersion: networking.istio.io/v1\n"
        "kind: VirtualService\n"
        f"metadata: {{name: {name}}}\n"
        f"{extra}"
        "spec:\n"
        f"  hosts: [{name}]\n"
        "  http:\n"
        "  - route:\n"
        f"    - destination: {{host: {name}, subset: v1}}\n"
        f"      weight: {weight}\n"
        f"    - destination: {{host: {name}, subset: v2}}\n"
        f"      weight: {100 - weight}\n"
    )
    dr = (
        "apiVersion: networking.istio.io/v1\n"
        "kind: DestinationRule\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n"
        f"  host: {name}\n"
        "  subsets:\n"
        "  - {name: v1, labels: {version: v1}}\n"
        "  - {name: v2, labels: {version: v2}}\n"
    )
    return [vs, dr]


def policy(weights: dict[str, int]) -> str:
    return "---\n".join(doc for name, w in weights.items() for doc in pair(name, w))


def reparse(
    before: str, after: str, name: str = "p.yaml"
) -> tuple[list[PolicyObject], list[PolicyObject]]:
    """Both versions through `parse_policy_file_reusing`, each checked against a whole parse."""
    first, reuse = parse_policy_file_reusing(before, name, {})
    assert first == parse_policy_file(before, name)
    second, _ = parse_policy_file_reusing(after, name, reuse)
    assert second == parse_policy_file(after, name)
    return first, second


def test_a_weight_change_reparses_only_its_document() -> None:
    first, second = reparse(
        policy({"a": 90, "b": 90, "c": 90}), policy({"a": 90, "b": 50, "c": 90})
    )
    # b's VirtualService is the third document; every other object is the one parsed before.
    assert [x is y for x, y in zip(first, second, strict=True)] == [
        True, True, False, True, True, True
    ]  # fmt: skip
    assert second[2].origin == "p.yaml:22:1"


def test_many_changed_documents_parse_the_whole_file_once() -> None:
    names = [f"s{i}" for i in range(40)]
    first, second = reparse(
        policy(dict.fromkeys(names, 90)), policy({**dict.fromkeys(names, 90), "s39": 10})
    )
    assert [x is y for x, y in zip(first, second, strict=True)] == [True] * 78 + [False, True]


def test_a_line_added_reparses_the_documents_after_it() -> None:
    weights = {"a": 90, "b": 90}
    edited = policy(weights).replace("kind: VirtualService\n", "kind: VirtualService\n# c\n", 1)
    first, second = reparse(policy(weights), edited)
    assert [x is y for x, y in zip(first, second, strict=True)] == [False] * 4
    assert [o.origin for o in second] == ["p.yaml:1:1", "p.yaml:14:1", "p.yaml:23:1", "p.yaml:35:1"]


def test_an_invalid_object_is_reported_as_by_a_whole_parse() -> None:
    weights = {"a": 90, "b": 90}
    _, second = reparse(
        policy(weights), policy({"a": 90, "b": 0}).replace("weight: 100", "weight: 0")
    )
    assert second[2].policy is None
    assert second[2].error.startswith("p.yaml:29:5: VirtualService default/b: spec.http[0].route")


@pytest.mark.parametrize(
    "broken",
    [
        "  hosts: [b\n",  # a flow sequence never closed
        '  hosts: ["b\n---\n"]\n',  # a document marker inside a quoted scalar
        "  hosts: [b]\n  hosts: [b]\n",  # a duplicate key
    ],
)
def test_a_yaml_error_is_the_whole_files_first_error(broken: str) -> None:
    good = policy({"a": 90, "b": 90, "c": 90})
    bad = good.replace("  hosts: [b]\n", broken)
    _, reuse = parse_policy_file_reusing(good, "p.yaml", {})
    with pytest.raises(PolicyFileError) as whole:
        parse_policy_file(bad, "p.yaml")
    with pytest.raises(PolicyFileError) as reused:
        parse_policy_file_reusing(bad, "p.yaml", reuse)
    assert str(reused.value) == str(whole.value)


@pytest.mark.parametrize(
    "uncut",
    [
        "%YAML 1.1\n---\n" + policy({"a": 90, "b": 90}),  # a directive
        policy({"a": 90, "b": 90}).replace("---\n", "...\n---\n", 1),  # a document end
        policy({"a": 90, "b": 90}).replace("\n", "\r"),  # old Mac line breaks
    ],
)
def test_a_file_that_cannot_be_cut_is_parsed_whole(uncut: str) -> None:
    _, reuse = parse_policy_file_reusing(policy({"a": 90, "b": 90}), "p.yaml", {})
    objects, again = parse_policy_file_reusing(uncut, "p.yaml", reuse)
    assert objects == parse_policy_file(uncut, "p.yaml")
    assert len(objects) == 4
    assert again == {}


def test_crlf_line_endings_are_cut_with_the_right_lines() -> None:
    crlf = policy({"a": 90, "b": 90}).replace("\n", "\r\n")
    _, second = reparse(crlf, crlf.replace("weight: 90", "weight: 40"))
    assert [o.origin for o in second] == ["p.yaml:1:1", "p.yaml:13:1", "p.yaml:22:1", "p.yaml:34:1"]


# A document as the generator writes it: its name, weight, and what surrounds it.
_DOC = st.tuples(
    st.sampled_from(["a", "b", "c", "d"]),
    st.integers(min_value=-5, max_value=105),  # out of range: rejected objects
    st.sampled_from(["", "\n", "# note\n", "metadata2: {x: 1}\n", "  bad: [\n"]),
    st.sampled_from(["---\n", "--- # next\n", "---\n\n", "\n---\n"]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_DOC, min_size=1, max_size=6), st.lists(_DOC, min_size=1, max_size=6))
def test_reuse_always_equals_a_whole_parse(
    before: list[tuple[str, int, str, str]], after: list[tuple[str, int, str, str]]
) -> None:
    def text(docs: list[tuple[str, int, str, str]]) -> str:
        out = ""
        for name, weight, extra, sep in docs:
            vs, dr = pair(name, weight, extra)
            out += vs + sep + dr + sep
        return out

    reuse: dict[tuple[int, str], list[PolicyObject]] = {}
    for version in (text(before), text(before[:1] + after), text(after)):
        try:
            whole = parse_policy_file(version, "p.yaml")
        except PolicyFileError as exc:
            with pytest.raises(PolicyFileError) as reused:
                parse_policy_file_reusing(version, "p.yaml", reuse)
            assert str(reused.value) == str(exc)
            continue
        objects, reuse = parse_policy_file_reusing(version, "p.yaml", reuse)
        assert objects == whole


async def test_the_source_keeps_unchanged_objects_across_polls(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(policy({"a": 90, "b": 90}))
    catalog = Catalog()
    source = PolicyFileSource([path], catalog)
    source.load_once()
    first = catalog.take_policies()  # as the catalog keeps them (marked with their registry)
    assert first is not None
    path.write_text(policy({"a": 90, "b": 20}))
    await source.poll()
    second = catalog.take_policies()
    assert second is not None
    assert [x is y for x, y in zip(first, second, strict=True)] == [True, True, False, True]
    assert second == tuple(parse_policy_file(path.read_text(), str(path)))
