"""`/debug/events` on the admin API: the document, `since` and `limit`, bad parameters, and
an admin server whose cache follows no events."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.harness.admin_state import AdminState, serving
from xds_server.events import EventLog
from xds_server.events_changes import Changes


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_debug_events_since_limit_and_bad_parameters() -> None:
    state = AdminState()
    log = EventLog(5, clock=lambda: 10.0, wall=lambda: 1_700_000_000.0)
    for name in ("a", "b", "c"):
        log.record([Changes(name)], 9.5)
    state.cache.events = log
    with serving(state) as url:
        status, doc = get(f"{url}/debug/events")
        assert status == 200 and doc["history"] == 5
        assert [(e["id"], e["source"], e["state"]) for e in doc["events"]] == [
            (1, "a", "SEEN"), (2, "b", "SEEN"), (3, "c", "SEEN")
        ]  # fmt: skip
        assert doc["events"][0]["seen_at"] == pytest.approx(1_700_000_000.0 - 0.5)
        assert [e["id"] for e in get(f"{url}/debug/events?since=1")[1]["events"]] == [2, 3]
        assert [e["id"] for e in get(f"{url}/debug/events?limit=1")[1]["events"]] == [3]
        for bad in ("since=x", "limit=0", "limit=-2"):
            status, doc = get(f"{url}/debug/events?{bad}")
            assert status == 400 and "must be" in doc["error"], (bad, doc)
        index = urllib.request.urlopen(url + "/", timeout=5).read().decode()
        assert "/debug/events" in index


def test_debug_events_without_an_event_log_is_empty() -> None:
    with serving(AdminState()) as url:
        assert get(f"{url}/debug/events") == (200, {"history": 0, "events": []})
