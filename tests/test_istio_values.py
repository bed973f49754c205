"""Istio parser: the value checks on their own (path rendering, supported kinds, durations,
regexes, header values) and the text of errors and notices."""

from __future__ import annotations

from typing import Any

import pytest

from sources.istio import (
    Notice,
    PolicyError,
    check_regex,
    header_value_problem,
    is_supported_kind,
    parse_duration,
    render_path,
)
from sources.yaml_positions import KEY


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (("spec", "http", 0, "match", 1, "uri", "regex"), "spec.http[0].match[1].uri.regex"),
        (("spec", "http", 0, "headers"), "spec.http[0].headers"),
        (
            ("spec", "http", 0, "match", 0, "headers", "end-user"),
            'spec.http[0].match[0].headers["end-user"]',
        ),
        (("labels", 'a"b\\c'), 'labels["a\\"b\\\\c"]'),
        (("mirror_percent",), "mirror_percent"),
        ((0, "x"), "[0].x"),
        (("x-y",), '["x-y"]'),
        ((), ""),
        # the file registry's paths render alike: a key's own path, a non-string YAML key
        (("services", 0, "labels", "app-tier", KEY), 'services[0].labels["app-tier"] (key)'),
        (("services", 0, "labels", 1.5), "services[0].labels[1.5]"),
    ],
)
def test_render_path(path: tuple[Any, ...], text: str) -> None:
    """One rendering for the parser's paths and the file registry's (sources.yaml_positions)."""
    assert render_path(path) == text


@pytest.mark.parametrize(
    ("obj", "supported"),
    [
        ({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService"}, True),
        ({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule"}, True),
        ({"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService"}, True),
        ({"apiVersion": "networking.istio.io/v1", "kind": "Gateway"}, False),
        ({"apiVersion": "networking.istio.io/v2", "kind": "VirtualService"}, False),
        ({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute"}, False),
        ({"kind": "VirtualService"}, False),
        ([], False),
    ],
)
def test_is_supported_kind(obj: Any, supported: bool) -> None:
    assert is_supported_kind(obj) is supported


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("0.5s", 0.5),
        ("1.5s", 1.5),
        ("100ms", 0.1),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("10ns", 1e-8),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("+2s", 2.0),
        ("-0s", 0.0),
        ("9223372035s", 9223372035.0),
        ("2562047h47m15s", 9223372035.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1", 'invalid duration \'1\' (for example "1.5s", "100ms", "1m")'),
        ("", 'invalid duration \'\' (for example "1.5s", "100ms", "1m")'),
        ("1 s", 'invalid duration \'1 s\' (for example "1.5s", "100ms", "1m")'),
        ("1d", 'invalid duration \'1d\' (for example "1.5s", "100ms", "1m")'),
        (" 1s", 'invalid duration \' 1s\' (for example "1.5s", "100ms", "1m")'),
        ("s", 'invalid duration \'s\' (for example "1.5s", "100ms", "1m")'),
        ("-1s", "negative duration '-1s'"),
        ("9223372036s", "duration '9223372036s' is longer than 9223372035s (Envoy's limit)"),
    ],
)
def test_parse_duration_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert str(caught.value) == reason


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("/api/v[0-9]+/.*", None),
        ("a" * 96, None),  # program size exactly 100: Envoy's limit is inclusive
        ("a" * 97, "regex program size 101 exceeds Envoy's limit of 100"),
        ("[a-z]{200}", "regex program size 204 exceeds Envoy's limit of 100"),
        ("", "empty regex"),
        ("a(", "invalid RE2 regex: missing ): a("),
        ("(?<=a)b", "invalid RE2 regex: invalid perl operator: (?<="),
        ("*", "invalid RE2 regex: no argument for repetition operator: *"),
        ("x" * 1025, "regex is 1025 characters long; the limit is 1024"),
    ],
)
def test_check_regex(pattern: str, reason: str | None) -> None:
    assert check_regex(pattern) == reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("plain", None),
        ("", None),
        ("100%%", None),
        ("%HOSTNAME%", None),
        ("a %DOWNSTREAM_REMOTE_ADDRESS% b %%", None),
        ("%REQ(x-request-id)%", None),
        ("%REQ(:authority)%", None),
        (
            "100%",
            "invalid '%' at position 3 in header value '100%': write '%%' for a literal '%', "
            "or use a known variable such as %HOSTNAME% or %REQ(x-name)%",
        ),
        (
            "%FOO%",
            "invalid '%' at position 0 in header value '%FOO%': write '%%' for a literal "
            "'%', or use a known variable such as %HOSTNAME% or %REQ(x-name)%",
        ),
        (
            "%HOSTNAME(x)%",
            "invalid '%' at position 0 in header value '%HOSTNAME(x)%': write '%%' for a "
            "literal '%', or use a known variable such as %HOSTNAME% or %REQ(x-name)%",
        ),
        ("a\nb", "header value contains a NUL, CR or LF character"),
    ],
)
def test_header_value_problem(value: str, reason: str | None) -> None:
    assert header_value_problem(value) == reason


def test_policy_error_and_notice_text() -> None:
    err = PolicyError(("spec", "http", 0, "timeout"), "bad")
    assert (err.path, err.reason, str(err)) == (
        ("spec", "http", 0, "timeout"),
        "bad",
        "spec.http[0].timeout: bad",
    )
    assert isinstance(err, ValueError)
    assert str(PolicyError((), "whole object")) == "whole object"
    assert str(Notice(("spec", "exportTo"), "ignored")) == "spec.exportTo: ignored"
