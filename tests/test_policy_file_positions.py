"""Policy files: positions are exact without indexing every node of every document."""

from __future__ import annotations

from sources.policy_file import parse_policy_file

LIST = """\
apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata: {name: a}
  spec: {host: a}
-   apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: b}
    spec:
      hosts: [b]
      http:
      - route: [{destination: {host: b}}]
        bogus: 1
- 3
"""


def test_list_items_have_their_own_origin_and_field_positions() -> None:
    objects = parse_policy_file(LIST, "l.yaml")
    assert [o.origin for o in objects] == ["l.yaml:4:3", "l.yaml:8:5", "l.yaml:16:3"]
    assert objects[0].error == ""
    assert objects[1].error == (
        'l.yaml:15:16: VirtualService default/b: spec.http[0].bogus: unknown field "bogus"'
    )
    assert objects[2].error == "l.yaml:16:3: expected a Kubernetes object"
