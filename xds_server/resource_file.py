"""Load Envoy resources written in Envoy's own JSON/YAML form from a file.

The static-resources mode of `xds-server --resources FILE`: a file such as

    clusters:  [ {name: web, type: EDS, eds_cluster_config: {eds_config: {ads: {}}}} ]
    endpoints: [ {cluster_name: web, endpoints: [...]} ]
    listeners: [ ... ]
    routes:    [ ... ]

is parsed with protobuf's JSON mapping (so `typed_config` needs its `@type`) and served
to every proxy. A file that does not parse keeps the last good state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

# Imported for their side effect: registering the typed_config types that resource
# files commonly embed, so json_format can resolve their "@type".
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format
from google.protobuf.message import Message

from xds_server import types

SECTIONS: dict[str, str] = {name: url for url, name in types.SHORT_NAMES.items()}


class ResourceFileError(ValueError):
    """The file cannot be used; the message says where and why."""


def load(path: Path) -> dict[str, list[Message]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ResourceFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ResourceFileError(f"{path}: {exc}") from exc
    return parse(data, str(path))


def parse(data: Any, origin: str = "<resources>") -> dict[str, list[Message]]:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ResourceFileError(f"{origin}: expected a mapping of {sorted(SECTIONS)}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ResourceFileError(
            f"{origin}: unknown section(s) {unknown}; expected {sorted(SECTIONS)}"
        )
    out: dict[str, list[Message]] = {url: [] for url in SECTIONS.values()}
    for section, items in data.items():
        type_url = SECTIONS[section]
        if not isinstance(items, list):
            raise ResourceFileError(f"{origin}: {section} must be a list")
        seen: set[str] = set()
        for i, item in enumerate(items):
            msg = types.MESSAGE_CLASSES[type_url]()
            try:
                json_format.ParseDict(item, msg)
            except json_format.ParseError as exc:
                raise ResourceFileError(f"{origin}: {section}[{i}]: {exc}") from exc
            name = types.resource_name(type_url, msg)
            if not name:
                raise ResourceFileError(f"{origin}: {section}[{i}] has no name")
            if name in seen:
                raise ResourceFileError(f"{origin}: {section}[{i}]: duplicate name {name!r}")
            seen.add(name)
            out[type_url].append(msg)
    return out
