"""SPIFFE IDs: Istio's form parsed and formatted, and every malformed part refused with why."""

from __future__ import annotations

import pytest

from xds_server.identity.spiffe import SpiffeId, SpiffeIdError


def test_parse_and_format_round_trip() -> None:
    sid = SpiffeId.parse("spiffe://cluster.local/ns/default/sa/web")
    assert sid == SpiffeId("cluster.local", "default", "web")
    assert sid.uri == str(sid) == "spiffe://cluster.local/ns/default/sa/web"


def test_service_accounts_may_hold_dots_like_kubernetes_allows() -> None:
    assert SpiffeId("example.org", "team-a", "build.bot").service_account == "build.bot"


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("http://cluster.local/ns/default/sa/web", "must start with 'spiffe://'"),
        ("spiffe:///ns/default/sa/web", "trust domain: empty"),
        ("spiffe://Cluster.local/ns/default/sa/web", "only lower case letters"),
        ("spiffe://cluster.local:8080/ns/default/sa/web", "no port or user info"),
        ("spiffe://user@cluster.local/ns/default/sa/web", "no port or user info"),
        ("spiffe://" + "a" * 256 + "/ns/default/sa/web", "longer than 255"),
        ("spiffe://cluster.local/ns/default/sa/web?x=1", "no query or fragment"),
        ("spiffe://cluster.local/ns/default/sa/web#x", "no query or fragment"),
        ("spiffe://cluster.local/ns/default", "path must be /ns/<namespace>/sa/"),
        ("spiffe://cluster.local/ns/default/sa/web/extra", "path must be"),
        ("spiffe://cluster.local/sa/web/ns/default", "path must be"),
        ("spiffe://cluster.local", "path must be"),
        ("spiffe://cluster.local/ns//sa/web", "namespace '': not a DNS-1123 label"),
        ("spiffe://cluster.local/ns/Default/sa/web", "namespace 'Default'"),
        ("spiffe://cluster.local/ns/a.b/sa/web", "namespace 'a.b'"),
        ("spiffe://cluster.local/ns/-x/sa/web", "namespace '-x'"),
        ("spiffe://cluster.local/ns/" + "a" * 64 + "/sa/web", "not a DNS-1123 label"),
        ("spiffe://cluster.local/ns/default/sa/Web", "service account 'Web'"),
        ("spiffe://cluster.local/ns/default/sa/web.", "not a DNS-1123 subdomain"),
        ("spiffe://cluster.local/ns/default/sa/a..b", "not a DNS-1123 subdomain"),
        ("spiffe://cluster.local/ns/default/sa/" + "a" * 254, "not a DNS-1123 subdomain"),
    ],
)
def test_rejections_say_what_and_why(uri: str, why: str) -> None:
    with pytest.raises(SpiffeIdError) as err:
        SpiffeId.parse(uri)
    assert why in str(err.value)
    assert str(err.value).startswith(f"SPIFFE ID {uri!r}: ")


def test_constructor_validates_too() -> None:
    with pytest.raises(SpiffeIdError, match="namespace 'UPPER'"):
        SpiffeId("cluster.local", "UPPER", "web")
    with pytest.raises(SpiffeIdError, match="trust domain 'a/b'"):
        SpiffeId("a/b", "default", "web")
