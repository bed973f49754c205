"""Config entries for the Consul config tests, as `GET /v1/config/:kind` returns them."""

from __future__ import annotations

from typing import Any

from sources.consul_config import Compiled, compile_entries
from xds_server.model import DEFAULT_NAMESPACE, PolicyObject, ServiceKey

Entry = dict[str, Any]


def defaults(name: str, protocol: str = "http", **more: Any) -> Entry:
    return {"Kind": "service-defaults", "Name": name, "Protocol": protocol, **more}


def router(name: str, *routes: Entry) -> Entry:
    return {"Kind": "service-router", "Name": name, "Routes": list(routes)}


def splitter(name: str, *splits: Entry) -> Entry:
    return {"Kind": "service-splitter", "Name": name, "Splits": list(splits)}


def resolver(name: str, **fields: Any) -> Entry:
    return {"Kind": "service-resolver", "Name": name, **fields}


def versions(*names: str) -> dict[str, Entry]:
    """Subsets selecting `Service.Meta.version` == each name."""
    return {n: {"Filter": f'Service.Meta.version == "{n}"'} for n in names}


def key(name: str) -> ServiceKey:
    return ServiceKey(DEFAULT_NAMESPACE, name)


def compiled(*entries: Entry, meta: dict[str, str] | None = None) -> Compiled:
    return compile_entries(entries, {key(k): v for k, v in (meta or {}).items()})


def policy_object(result: Compiled, kind: str, name: str) -> PolicyObject:
    for obj in (*result.entries, *result.policies):
        if obj.key.kind == kind and obj.key.name == name:
            return obj
    raise KeyError(f"{kind} {name}")


def instance(name: str, ip: str, port: int = 8080, meta: dict[str, str] | None = None,
             tags: list[str] | None = None, status: str = "passing") -> Entry:  # fmt: skip
    """One instance as `/v1/health/service/<name>` lists it."""
    return {
        "Node": {"Node": f"node-{ip}", "Address": ip, "Datacenter": "dc1", "Meta": {}},
        "Service": {
            "ID": f"{name}-{ip}",
            "Service": name,
            "Tags": tags or [],
            "Address": ip,
            "Port": port,
            "Meta": meta or {},
            "Weights": {"Passing": 1, "Warning": 1},
        },
        "Checks": [{"CheckID": "c", "Status": status}],
    }


def catalog(**services: list[Entry]) -> dict[ServiceKey, Any]:
    """A catalog as the Consul source builds it (`consul_mapping.to_entry`)."""
    from sources.consul_mapping import to_entry

    out = {}
    for name, instances in services.items():
        entry = to_entry(name, instances, source="consul")
        assert entry is not None
        out[entry.key] = entry
    return out


def static_translation(
    catalog: dict[ServiceKey, Any], result: Compiled, group: Any
) -> dict[str, Any]:
    """`result`'s policies resolved against `catalog` (none REJECTED but refused chains)
    and translated for `group`, as static bootstrap resources (listeners on loopback)."""
    from tests.test_translators import static_config, to_dict
    from translators import translate
    from translators.policy_resolve import resolve_policies
    from xds_server import types

    resolution = resolve_policies(catalog, result.policies, {})
    rejected = [s for s in resolution.statuses if s.state == "REJECTED"]
    assert all(s.key.kind == "discovery-chain" and s.reasons for s in rejected), rejected
    translation = translate(catalog, group, policies=resolution.services)
    # Aggregate clusters (failover) carry no endpoints: `static_config` inlines EDS ones.
    clusters = translation.resources[types.CLUSTER]
    aggregates = [c for c in clusters if c.HasField("cluster_type")]
    translation.resources[types.CLUSTER] = [c for c in clusters if c not in aggregates]
    static = static_config(translation)
    static["clusters"] += [to_dict(c) for c in aggregates]
    for listener in static["listeners"]:
        listener["address"]["socket_address"]["address"] = "127.0.0.1"
    return static


def every_field_entries() -> list[Entry]:
    """Entries for web, api, admin and backup using every field this server applies."""
    return [
        *(defaults(s) for s in ("api", "admin", "backup")),
        {
            "Kind": "service-defaults",
            "Name": "web",
            "Protocol": "http",
            "UpstreamConfig": {
                "Defaults": {"Limits": {"MaxConnections": 100}},
                "Overrides": [
                    {
                        "Name": "api",
                        "Limits": {"MaxPendingRequests": 5, "MaxConcurrentRequests": 9},
                        "PassiveHealthCheck": {
                            "Interval": "5s",
                            "MaxFailures": 3,
                            "MaxEjectionPercent": 50,
                            "BaseEjectionTime": "20s",
                        },
                    }
                ],
            },
        },
        router(
            "web",
            {
                "Match": {
                    "HTTP": {
                        "PathPrefix": "/admin",
                        "Header": [{"Name": "x-env", "Suffix": ".test", "Invert": True}],
                        "QueryParam": [{"Name": "debug", "Present": True}],
                        "Methods": ["GET", "POST"],
                    }
                },
                "Destination": {
                    "Service": "admin",
                    "PrefixRewrite": "/",
                    "RequestTimeout": "5s",
                    "NumRetries": 3,
                    "RetryOnConnectFailure": True,
                    "RetryOnStatusCodes": [503],
                    "RequestHeaders": {"Add": {"x-from": "web"}, "Remove": ["x-drop"]},
                    "ResponseHeaders": {"Set": {"x-served-by": "%HOSTNAME%"}},
                },
            },
            {
                "Match": {"HTTP": {"PathRegex": "/api/v[0-9]+/.*"}},
                "Destination": {"Service": "api", "RetryOn": ["5xx", "reset"]},
            },
            {"Match": {"HTTP": {"PathExact": "/canary"}}, "Destination": {"ServiceSubset": "v2"}},
        ),
        splitter(
            "web",
            {"Weight": 90, "ServiceSubset": "v1"},
            {"Weight": 10, "Service": "api", "RequestHeaders": {"Set": {"x-split": "api"}}},
        ),
        splitter(
            "api",
            {"Weight": 33.33, "ServiceSubset": "v1"},
            {"Weight": 66.67, "ServiceSubset": "v2"},
        ),
        resolver(
            "web",
            Subsets=versions("v1", "v2"),
            ConnectTimeout="2s",
            RequestTimeout="20s",
            Failover={"*": {"Service": "backup"}},
            LoadBalancer={"Policy": "least_request"},
        ),
        resolver(
            "api",
            Subsets={**versions("v1"), "v2": {"Filter": '"canary" in Service.Tags'}},
            LoadBalancer={
                "Policy": "ring_hash",
                "RingHashConfig": {"MinimumRingSize": 1024},
                "HashPolicies": [{"Field": "header", "FieldValue": "x-user"}],
            },
        ),
        resolver(
            "admin",
            LoadBalancer={
                "Policy": "maglev",
                "HashPolicies": [
                    {"Field": "cookie", "FieldValue": "sid", "CookieConfig": {"Session": True}}
                ],
            },
        ),
        resolver("backup", Redirect={"Service": "admin"}),
    ]
