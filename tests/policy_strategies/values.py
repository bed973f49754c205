"""The registry the generated objects are written for, and strategies of the values
Istio fields take, boundary values first (hypothesis tries the first elements of
`sampled_from` early, and starts from the simplest draw)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

Object = dict[str, Any]
Draw = st.DrawFn

# The limits, written out here rather than taken from the product's constants, so that a
# wrong limit in the product fails the tests instead of moving them along with it.
INT32_MAX = 2**31 - 1  # Istio's int32 fields (weights, attempts, pool limits)
UINT32_MAX = 2**32 - 1  # Envoy's sum of weights, outlier detection counts
MAX_RING_SIZE = 8_388_608  # Envoy's ring_hash_lb_config and gRPC's ring (gRFC A42)
MAX_MAGLEV_TABLE_SIZE = 5_000_011  # Envoy's maglev_lb_config.table_size
MAX_DURATION_SECONDS = 9_223_372_035  # int64 nanoseconds, whole seconds

HTTP_SERVICES = ("web", "api")
TCP_SERVICE = "db"
HTTP_PORTS = {"web": (80,), "api": (80, 8080)}
SUBSET_LABELS = {
    "v1": {"version": "v1"},
    "v2": {"version": "v2"},
    "canary": {"tier": "canary"},
    "empty": {"version": "v9"},  # selects no endpoint: a warning, not an error
}
LOCALITIES = ("r1/a", "r2/b")

MAX_DURATION = f"{MAX_DURATION_SECONDS}s"
DURATIONS = st.one_of(
    st.sampled_from(["1ms", "0.001s", MAX_DURATION, "1h30m", "2.5s"]),
    st.integers(1, 600_000).map(lambda n: f"{n}ms"),
)
OFF_OR_DURATION = st.one_of(st.just("0s"), DURATIONS)
PERCENTAGES = st.one_of(st.sampled_from([0, 0.0001, 100, 99.9999]), st.floats(0.0001, 100))
LIMITS = st.sampled_from([0, 1, 2, 1024, INT32_MAX])
COUNTS = st.sampled_from([0, 1, 5, UINT32_MAX])
WEIGHTS = st.one_of(st.integers(0, 100), st.just(INT32_MAX))
TOKEN = st.from_regex(r"x-[a-z0-9-]{1,10}", fullmatch=True)
NAME = st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
# Match values: anything a YAML string holds but NUL/CR/LF, unicode included.
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00\r\n"), max_size=16)
HEADER_VALUES = st.one_of(
    st.from_regex(r"[ -$&-~]{0,20}", fullmatch=True),  # printable ASCII without '%'
    st.sampled_from(["%HOSTNAME%", "%%", "%REQ(x-user)%", "%UPSTREAM_CLUSTER%"]),
)
# Program sizes up to exactly Envoy's limit of 100 (`[a-z]{96}` and `a` * 96 are 100).
REGEXES = st.sampled_from(
    ["[a-z]{96}", "a" * 96, "^/api/v[0-9]+/.*$", "(?i)hello", "\\p{Greek}+", "[[:alpha:]]+",
     "(?P<id>[0-9]+)", ".*", "(a|b|c){1,3}", "\\bword\\b"]
)  # fmt: skip


def istio_object(kind: str, spec: Object) -> Object:
    """A networking.istio.io/v1 object; its name is given later (`Scenario.named`)."""
    return {"apiVersion": "networking.istio.io/v1", "kind": kind, "metadata": {}, "spec": spec}


# Three times in four, the simplest draw (0) included: what hypothesis starts from.
LIKELY = st.integers(0, 3).map(lambda n: n != 3)


def maybe(
    draw: Draw, out: Object, key: str, strategy: st.SearchStrategy[Any], likely: bool = False
) -> None:
    """Sets ``out[key]`` to a drawn value (half the time, or three in four if ``likely``),
    or leaves it unset."""
    if draw(LIKELY if likely else st.booleans()):
        out[key] = draw(strategy)


def header_ops(
    names: st.SearchStrategy[str], values: st.SearchStrategy[str]
) -> st.SearchStrategy[Object]:
    """Istio's Headers: request and response set / add / remove, each optional."""
    side = st.fixed_dictionaries(
        {},
        optional={
            "set": st.dictionaries(names, values, max_size=2),
            "add": st.dictionaries(names, values, max_size=2),
            "remove": st.lists(names, max_size=2),
        },
    )
    return st.fixed_dictionaries({}, optional={"request": side, "response": side})
