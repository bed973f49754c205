"""Policy files: documents → policy objects with positions; files and directories watched."""

from __future__ import annotations

from pathlib import Path

import pytest

from sources.policy_file import PolicyFileError, PolicyFileSource, parse_policy_file
from xds_server.catalog import Catalog
from xds_server.model import PolicyKey, RoutePolicy

CANARY = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http:
  - route:
    - destination: {host: web, subset: v1}
      weight: 90
    - destination: {host: web, subset: v2}
      weight: 10
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""

BAD_REGEX = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken}
spec:
  hosts: [api]
  http:
  - match:
    - uri: {regex: "(?=lookahead)"}
    route:
    - destination: {host: api}
"""

OTHER_KIND = """\
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: r}
spec: {}
"""


def test_documents_become_policy_objects_with_their_origin() -> None:
    objects = parse_policy_file(CANARY, "p.yaml")
    assert [o.key for o in objects] == [
        PolicyKey("VirtualService", "shop", "web"),
        PolicyKey("DestinationRule", "shop", "web"),
    ]
    assert [o.origin for o in objects] == ["p.yaml:1:1", "p.yaml:13:1"]
    vs = objects[0].policy
    assert isinstance(vs, RoutePolicy)
    assert [d.weight for d in vs.http[0].destinations] == [90, 10]
    assert not any(o.error for o in objects)


def test_an_invalid_object_names_file_line_column_object_and_field() -> None:
    objects = parse_policy_file(CANARY + "---\n" + BAD_REGEX, "p.yaml")
    assert [o.policy is not None for o in objects] == [True, True, False]
    error = objects[2].error
    # The regex value is on line 8 of the third document, which starts at line 22.
    assert error == (
        "p.yaml:29:20: VirtualService default/broken: spec.http[0].match[0].uri.regex: "
        "invalid RE2 regex: invalid perl operator: (?="
    )


def test_other_kinds_are_reported_and_do_not_stop_the_rest() -> None:
    objects = parse_policy_file(OTHER_KIND + "---\n" + CANARY, "p.yaml")
    assert objects[0].error == (
        "p.yaml:1:1: TCPRoute default/r: kind TCPRoute (gateway.networking.k8s.io/v1) is not "
        "supported (VirtualService and DestinationRule of networking.istio.io, "
        "AuthorizationPolicy and PeerAuthentication of security.istio.io, HTTPRoute and "
        "GRPCRoute of gateway.networking.k8s.io/v1 are)"
    )
    assert [o.policy is not None for o in objects] == [False, True, True]


def test_a_kubernetes_list_is_unpacked() -> None:
    items = "\n".join("  " + line for line in CANARY.split("---\n")[0].splitlines())
    text = "apiVersion: v1\nkind: List\nitems:\n- " + items.lstrip() + "\n"
    objects = parse_policy_file(text, "l.yaml")
    assert [o.key.name for o in objects] == ["web"]
    assert objects[0].policy is not None


def test_yaml_syntax_error_is_a_file_error_with_position() -> None:
    with pytest.raises(PolicyFileError, match=r"^p.yaml:3:\d+: invalid YAML: "):
        parse_policy_file("a: 1\nb: [\nc: }\n", "p.yaml")


def test_directory_is_read_in_name_order_and_duplicates_are_refused(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(CANARY)
    (tmp_path / "a.yml").write_text(CANARY.split("---\n")[0])
    (tmp_path / "notes.txt").write_text("not a policy")
    catalog = Catalog()
    source = PolicyFileSource([tmp_path], catalog)
    objects = source.load_once()
    assert [(o.key.kind, o.origin.split(":")[0].rsplit("/", 1)[-1]) for o in objects] == [
        ("VirtualService", "a.yml"),
        ("VirtualService", "b.yaml"),
        ("DestinationRule", "b.yaml"),
    ]
    assert objects[1].policy is None
    assert objects[1].error.endswith(
        f"VirtualService shop/web: duplicate of the object at {tmp_path}/a.yml:1:1"
    )
    assert catalog.take_policies() == tuple(objects)
    assert [s.synced for s in catalog.sources()] == [True]


async def test_an_unusable_file_keeps_its_last_objects(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(CANARY)
    catalog = Catalog()
    source = PolicyFileSource([path], catalog)
    first = source.load_once()
    catalog.take_policies()
    path.write_text("spec: [\n")
    await source.poll()
    assert catalog.take_policies() is None  # nothing republished
    status = catalog.sources()[0]
    assert status.error is not None and status.error.startswith(f"{path}:2:1: invalid YAML")
    path.write_text(CANARY.replace("weight: 90", "weight: 50"))
    await source.poll()
    again = catalog.take_policies()
    assert again is not None and again != tuple(first)
    assert catalog.sources()[0].error is None


def test_missing_file_at_start_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="cannot read: No such file or directory"):
        PolicyFileSource([tmp_path / "nope.yaml"], Catalog()).load_once()


def test_a_reference_error_names_file_line_column_object_and_field() -> None:
    """Errors found against the registry (an undefined subset) have the same form as
    the parser's: the source tells the resolver where the field is."""
    from translators.policy_resolve import resolve_policies
    from xds_server.model import Port, Service, ServiceEntry

    web = Service("web", "shop", (Port("http", 80),))
    text = CANARY.replace("subset: v2}", "subset: v9}")
    objects = parse_policy_file(text, "p.yaml")
    res = resolve_policies({web.key: ServiceEntry(web)}, objects, {})
    (vs,) = [s for s in res.statuses if s.key.kind == "VirtualService"]
    assert vs.reasons == (
        "p.yaml:8:5: VirtualService shop/web: spec.http[0].route: subset 'v9' of service "
        "web.shop is not defined by a DestinationRule (DestinationRule shop/web)",
    )
