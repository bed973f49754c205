"""YAML merge keys (``<<: *base``) in registry and policy files: a key written next to a
merge overrides the merged one, as YAML means; only a key written twice in one mapping is
a duplicate."""

from __future__ import annotations

import pytest

from sources.file import FileRegistryError, parse_registry
from sources.policy_file import parse_policy_file

REGISTRY = """\
services:
  - &web
    name: web
    namespace: shop
    ports: [{port: 80}]
  - <<: *web
    name: api
    ports: [{port: 8080}]
"""


def test_a_registry_entry_overrides_what_it_merges() -> None:
    web, api = parse_registry(REGISTRY, "r.yaml", "file")
    assert (web.service.name, web.service.namespace, web.service.ports[0].port) == (
        "web", "shop", 80,
    )  # fmt: skip
    assert (api.service.name, api.service.namespace, api.service.ports[0].port) == (
        "api", "shop", 8080,
    )  # fmt: skip


def test_an_error_after_a_merge_is_reported_where_it_is() -> None:
    # Positions are built on error: the merged, overridden keys must not stop that walk.
    text = REGISTRY + "  - <<: *web\n    name: db\n    ports: [{port: 0x}]\n"
    with pytest.raises(FileRegistryError) as err:
        parse_registry(text, "r.yaml", "file")
    assert str(err.value).startswith("r.yaml:11:20: services[2].ports[0].port: ")


def test_a_key_written_twice_beside_a_merge_is_still_a_duplicate() -> None:
    text = REGISTRY + "    name: again\n"
    with pytest.raises(FileRegistryError) as err:
        parse_registry(text, "r.yaml", "file")
    assert str(err.value) == "r.yaml:9:5: services[1].name: duplicate key (first at line 7)"


POLICY = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: &meta {name: reviews, namespace: shop}
spec: {host: reviews}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  <<: *meta
  name: ratings
spec: {host: ratings, trafficPolicy: {loadBalancer: {simple: NOPE}}}
"""


def test_policy_objects_override_what_they_merge() -> None:
    # Anchors do not cross documents: the two objects are items of one List.
    doc = "kind: List\napiVersion: v1\nitems:\n" + "".join(
        "- " + "\n  ".join(part.strip().splitlines()) + "\n" for part in POLICY.split("---\n")
    )
    reviews, ratings = parse_policy_file(doc, "p.yaml")
    assert (str(reviews.key), reviews.error) == ("DestinationRule shop/reviews", "")
    assert str(ratings.key) == "DestinationRule shop/ratings"
    line = doc.splitlines()[12]
    assert line.index("NOPE") == 63, line
    assert ratings.error.startswith(
        "p.yaml:13:64: DestinationRule shop/ratings: spec.trafficPolicy.loadBalancer.simple: "
    )
