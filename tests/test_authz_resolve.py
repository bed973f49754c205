"""Security objects in force: a refused object keeps its last valid version (and says
so); a never-valid one is not in force; other kinds are left out."""

from __future__ import annotations

from translators.authz_status import resolve_security
from xds_server.model import AuthorizationPolicy, PolicyKey, PolicyObject

KEY = PolicyKey("AuthorizationPolicy", "shop", "p")
V1 = AuthorizationPolicy(KEY, "DENY", origin="p.yaml:1")


def test_a_refused_object_keeps_its_last_valid_version() -> None:
    first = resolve_security([PolicyObject(KEY, "p.yaml:1", security=V1)], {})
    assert first.policies == (V1,) and first.accepted == {KEY: V1}
    (status,) = first.statuses
    assert status.state == "ACCEPTED" and status.reasons == ()
    broken = PolicyObject(KEY, "p.yaml:1", error="p.yaml:3:5: AuthorizationPolicy shop/p: x")
    second = resolve_security([broken], first.accepted)
    assert second.policies == (V1,) and second.accepted == {KEY: V1}
    (status,) = second.statuses
    assert status.state == "REJECTED"
    assert status.reasons == (broken.error, "serving its last valid version (p.yaml:1)")
    # Never valid: nothing in force; the object is gone: its version is forgotten.
    assert resolve_security([broken], {}).policies == ()
    assert resolve_security([], first.accepted).accepted == {}


def test_other_kinds_are_left_out() -> None:
    other = PolicyObject(PolicyKey("VirtualService", "shop", "v"), "v.yaml:1")
    assert resolve_security([other], {}) == resolve_security([], {})
