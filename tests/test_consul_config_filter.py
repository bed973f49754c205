"""Subset filters: the bexpr forms that are a set of labels, and every other form
refused with a reason (never applied to more endpoints than Consul would pick)."""

from __future__ import annotations

import pytest

from sources.consul_config import FilterError, filter_labels


@pytest.mark.parametrize(
    ("expression", "labels"),
    [
        ("Service.Meta.version == v1", (("version", "v1"),)),
        ('Service.Meta.version == "v1"', (("version", "v1"),)),
        ("Service.Meta.version == `v 1`", (("version", "v 1"),)),
        ('"canary" in Service.Tags', (("canary", ""),)),
        ("canary in Service.Tags", (("canary", ""),)),
        (
            'Service.Meta.version == "v2" and "canary" in Service.Tags AND Service.Meta.az == a',
            (("az", "a"), ("canary", ""), ("version", "v2")),
        ),
        ('Service.Meta.k == "a \\" quote"', (("k", 'a " quote'),)),
    ],
)
def test_label_forms(expression: str, labels: tuple[tuple[str, str], ...]) -> None:
    assert filter_labels(expression) == labels


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("Service.Meta.version != v1", "only `Service.Meta.<key> =="),
        ("Service.Meta.a == 1 or Service.Meta.b == 2", "clauses must be joined by `and`"),
        ("not Service.Meta.a == 1", "only `Service.Meta.<key> =="),
        ('"x" not in Service.Tags', "only `Service.Meta.<key> =="),
        ("Service.Meta.a == 1 and", "clauses must be joined by `and`"),
        ("Node.Meta.rack == r1", "only `Service.Meta.<key> =="),
        ("Service.Meta.a matches x", "only `Service.Meta.<key> =="),
        ("(Service.Meta.a == 1)", "only `Service.Meta.<key> =="),
        ("Service.Meta.a == and", "only `Service.Meta.<key> =="),
        ("Service.Meta.a == 1 and Service.Meta.a == 2", "can never match"),
        ("", "empty filter"),
    ],
)
def test_other_forms_are_refused(expression: str, reason: str) -> None:
    with pytest.raises(FilterError, match=reason.replace("(", r"\(")) as exc:
        filter_labels(expression)
    assert reason in str(exc.value)
