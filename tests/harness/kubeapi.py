"""A Kubernetes API for tests: kmock's emulator on loopback, behind a proxy that can be cut.

`KubeApi` runs `kmock.KubernetesEmulator` (a real HTTP server speaking the Kubernetes
API: list, watch, create, patch, delete) on its own event loop in a background
thread, so sync end-to-end tests and async unit tests use it alike. Clients (the
`xds-server` under test) reach it through a small TCP proxy on a fixed loopback port:
`cut()` closes every connection and stops listening (the API server is unreachable:
connection refused), `restore()` listens again on the same port.

`MetadataEmulator` adds what kmock lacks and the source relies on: a request whose
`Accept` asks for `as=PartialObjectMetadata[List]` (the metadata-only view of Pods) gets
only the objects' metadata, as a real API server sends it.

What the emulator does not do, the tests script with kmock's reactions
(`script(...)`): 410 Gone, BOOKMARK and ERROR events, watches that end. Note what it
does not emulate: resourceVersions (the list says "...", objects have none), label
selectors, `timeoutSeconds`; and a watch starts by replaying every object as ADDED.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, Self, TypeVar

import aiohttp
import aiohttp.web
import kmock
import yaml

from tests.harness.loop_thread import LoopThread
from tests.harness.ports import free_port

T = TypeVar("T")

SERVICES = "v1/services"
SLICES = "discovery.k8s.io/v1/endpointslices"
PODS = "v1/pods"
TOKEN = "test-token"


def service(
    name: str,
    ports: list[dict[str, Any]] | None = None,
    namespace: str = "default",
    **spec: Any,
) -> dict[str, Any]:
    """A Service object; `ports` default to one `http` port 80."""
    labels = spec.pop("labels", None)
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"ports": ports if ports is not None else [{"name": "http", "port": 80}], **spec},
    }


def endpoint(
    ip: str = "127.0.0.1", zone: str | None = None, pod: str | None = None, **conditions: bool
) -> dict[str, Any]:
    """An EndpointSlice endpoint; `pod`: the Pod its targetRef names."""
    ep: dict[str, Any] = {"addresses": [ip], "conditions": conditions}
    if zone:
        ep["zone"] = zone
    if pod:
        ep["targetRef"] = {"kind": "Pod", "name": pod, "namespace": "default"}
    return ep


def pod(name: str, labels: dict[str, str], namespace: str = "default") -> dict[str, Any]:
    """A Pod with `labels`, and a spec and status the metadata-only view must leave out."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1"},
    }


def endpoint_slice(
    name: str,
    service_name: str,
    endpoints: list[dict[str, Any]],
    ports: list[tuple[str, int]],
    namespace: str = "default",
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports],
        "endpoints": endpoints,
    }


_PLURALS = {"Service": "services", "Pod": "pods", "EndpointSlice": "endpointslices"}


def _path(obj_or_kind: dict[str, Any] | str, namespace: str, name: str | None = None) -> str:
    kind = obj_or_kind if isinstance(obj_or_kind, str) else obj_or_kind["kind"]
    plural = _PLURALS.get(kind, kind)
    base = "/apis/discovery.k8s.io/v1" if plural == "endpointslices" else "/api/v1"
    return f"{base}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")


def _metadata_only(request: Any) -> bool:
    accept = next((v for k, v in request.headers.items() if k.lower() == "accept"), "")
    return "as=PartialObjectMetadata" in accept and "g=meta.k8s.io" in accept


def _partial(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


class MetadataEmulator(kmock.KubernetesEmulator):
    """kmock's emulator, serving PartialObjectMetadata(List) to requests that ask for it."""

    async def _serve_list(self, request: Any) -> Any:
        body = await super()._serve_list(request)
        if not _metadata_only(request):
            return body
        items = [_partial(obj) for obj in body["items"]]
        return {
            **body,
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "items": items,
        }

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        partial = _metadata_only(request)
        async for event in super()._serve_watch(request):
            if partial and isinstance(event, dict) and isinstance(event.get("object"), dict):
                event = {**event, "object": _partial(event["object"])}
            yield event


class FirstWatch:
    """A kmock criterion matching only the first watch of `kind` that arrives after it is
    armed (kmock also asks criteria about requests it served earlier)."""

    def __init__(self, kind: str, armed: bool = True) -> None:
        self.kind, self.armed = kind, armed
        self.chosen: Any = None
        self.seen: set[int] = set()

    def __call__(self, req: Any) -> bool:
        if req is self.chosen:
            return True
        fresh = id(req) not in self.seen  # requests live on in kmock's history: ids stay
        self.seen.add(id(req))
        if not (fresh and self.armed and req.url.path.endswith(self.kind)):
            return False
        if not req.params.get("watch"):
            return False
        self.armed, self.chosen = False, req
        return True


# --- custom resources: the policy CRDs (Istio, Gateway API) ---------------------------

ISTIO_GROUP = "networking.istio.io"
GATEWAY_GROUP = "gateway.networking.k8s.io"
CUSTOM_PLURALS = {
    "VirtualService": "virtualservices",
    "DestinationRule": "destinationrules",
    "HTTPRoute": "httproutes",
    "GRPCRoute": "grpcroutes",
    "AuthorizationPolicy": "authorizationpolicies",
    "PeerAuthentication": "peerauthentications",
}


def custom_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    """The path of a namespaced custom resource (or of one object of it)."""
    plural = CUSTOM_PLURALS.get(kind, kind)
    return f"/apis/{api_version}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")


def policy_crds(istio: str | None = "v1", gateway: bool = True) -> list[str]:
    """kmock resource names of the policy CRDs a cluster serves: Istio's at version
    `istio` (None: not installed), the Gateway API's v1 routes if `gateway`."""
    out = []
    if istio is not None:
        out += [f"{ISTIO_GROUP}/{istio}/virtualservices", f"{ISTIO_GROUP}/{istio}/destinationrules"]
        # Istio installs its security CRDs with its networking ones.
        out += [
            f"security.istio.io/{istio}/authorizationpolicies",
            f"security.istio.io/{istio}/peerauthentications",
        ]
    if gateway:
        out += [f"{GATEWAY_GROUP}/v1/httproutes", f"{GATEWAY_GROUP}/v1/grpcroutes"]
    return out


class KubeApi:
    emulator: type[MetadataEmulator] = MetadataEmulator  # WritableEmulator for writers

    def __init__(self) -> None:
        self.port = free_port()
        self._thread = LoopThread("kube-api")
        self.loop = self._thread.loop
        self.handler: MetadataEmulator | None = None
        self._server: kmock.Server | None = None
        self._proxy: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._session: aiohttp.ClientSession | None = None

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> Self:
        self._thread.start()
        self._thread.run(self._start())
        return self

    async def _start(self) -> None:
        self.handler = self.emulator()
        await self.handler.__aenter__()
        self._server = kmock.Server(self.handler)
        await self._server.__aenter__()
        self.handler.resources[SERVICES] = {}
        self.handler.resources[SLICES] = {}
        self.handler.resources[PODS] = {}
        self._session = aiohttp.ClientSession(
            base_url=f"http://127.0.0.1:{self._server.port}",
            timeout=aiohttp.ClientTimeout(total=10),
        )
        await self._listen()

    def stop(self) -> None:
        if not self._thread.running:
            return
        try:
            self._thread.run(self._stop(), timeout=10)
        finally:
            self._thread.stop()

    async def _stop(self) -> None:
        await self._cut()
        if self._session is not None:
            await self._session.close()
        if self._server is not None:
            await self._server.__aexit__(None, None, None)
        if self.handler is not None:
            await self.handler.__aexit__(None, None, None)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run `coro` on the emulator's loop and return its result."""
        return self._thread.run(coro, timeout)

    def script(self, fn: Callable[[kmock.KubernetesEmulator], Any]) -> Any:
        """Run `fn(handler)` on the emulator's loop (to add reactions)."""

        async def run() -> Any:
            assert self.handler is not None
            return fn(self.handler)

        return self.call(run())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": TOKEN}}],
            "contexts": [
                {
                    "name": "kmock",
                    "context": {"cluster": "kmock", "user": "tester", "namespace": namespace},
                }
            ],
            "current-context": "kmock",
        }
        path.write_text(yaml.safe_dump(doc))
        return path

    # --- the proxy -----------------------------------------------------------------

    async def _listen(self) -> None:
        self._proxy = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._server is not None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._server.port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    async def _cut(self) -> None:
        if self._proxy is not None:
            self._proxy.close()
            self._proxy = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def cut(self) -> None:
        """The API server becomes unreachable: connections reset, new ones refused."""
        self.call(self._cut())

    def restore(self) -> None:
        self.call(self._listen())

    # --- objects -------------------------------------------------------------------

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        assert self._session is not None
        async with self._session.request(method, path, json=body) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 300:
                raise AssertionError(f"{method} {path}: {resp.status} {data}")
            return data

    def create(self, obj: dict[str, Any]) -> Any:
        ns = obj["metadata"].get("namespace", "default")
        return self.call(self._request("POST", _path(obj, ns), obj))

    def patch(self, kind: str, name: str, patch: dict[str, Any], namespace: str = "default") -> Any:
        return self.call(self._request("PATCH", _path(kind, namespace, name), patch))

    def delete(self, kind: str, name: str, namespace: str = "default") -> Any:
        return self.call(self._request("DELETE", _path(kind, namespace, name)))

    def requests(self) -> list[dict[str, Any]]:
        """Every request the emulator received, in order: method, path, query, headers."""

        async def collect() -> list[dict[str, Any]]:
            assert self.handler is not None
            return [
                {
                    "method": str(r.method.value).upper(),
                    "path": r.url.path,
                    "query": dict(r.params),
                    "headers": dict(r.headers),
                }
                for r in self.handler
            ]

        return self.call(collect())

    # --- custom resources (policy CRDs) ------------------------------------------------

    def serve_crds(self, istio: str | None = "v1", gateway: bool = True) -> None:
        """Install the policy CRDs (`policy_crds`): lists of them answer, even when empty;
        kinds not installed answer 404, as a cluster without the CRD does."""

        async def install() -> None:
            assert self.handler is not None
            for resource in policy_crds(istio, gateway):
                self.handler.resources[resource] = {}

        self.call(install())

    def create_custom(self, obj: dict[str, Any]) -> Any:
        ns = obj["metadata"].get("namespace", "default")
        return self.call(
            self._request("POST", custom_path(obj["apiVersion"], obj["kind"], ns), obj)
        )

    def patch_custom(
        self, api_version: str, kind: str, name: str, patch: dict[str, Any], namespace: str
    ) -> Any:
        path = custom_path(api_version, kind, namespace, name)
        return self.call(self._request("PATCH", path, patch))

    def delete_custom(self, api_version: str, kind: str, name: str, namespace: str) -> Any:
        return self.call(self._request("DELETE", custom_path(api_version, kind, namespace, name)))


# --- writers: resourceVersions, 409 Conflict, PUT, the /status subresource -----------

LEASES = "coordination.k8s.io/v1/leases"
HTTP_ROUTES = "gateway.networking.k8s.io/v1/httproutes"
GRPC_ROUTES = "gateway.networking.k8s.io/v1/grpcroutes"


def _conflict(message: str) -> aiohttp.web.Response:
    status = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 409,
              "reason": "Conflict", "message": message}  # fmt: skip
    return aiohttp.web.json_response(status, status=409)


class WritableEmulator(MetadataEmulator):
    """What controllers that write rely on and kmock lacks, as a real API server does it:
    every create and update sets a new `metadata.resourceVersion`; an update carrying a
    resourceVersion that is not the object's current one is refused with 409 Conflict
    (optimistic concurrency); PUT replaces an object; a PATCH of the `/status`
    subresource changes only `.status` (and `metadata.resourceVersion` for the check)."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resource_version = 0
        self.write_lock = asyncio.Lock()  # the check and the write of one request, atomic
        # (method, path part) → (HTTP status, message): refused before anything changes
        # (kmock applies a write even when a scripted reaction answers it).
        self.refusals: dict[tuple[str, str], tuple[int, str]] = {}

    def _next_rv(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        method = str(request.method.value).upper()
        for (refused_method, part), (code, message) in self.refusals.items():
            if method == refused_method and part in request.url.path:
                status = {"kind": "Status", "code": code, "message": message}
                return aiohttp.web.json_response(status, status=code)
        if request.resource is None or method not in ("POST", "PATCH", "PUT"):
            return await super()._handle(request)
        async with self.write_lock:
            if method == "PUT":
                return await self._replace(request)
            if not isinstance(request.data, dict):
                return await super()._handle(request)
            meta = request.data.setdefault("metadata", {})
            if method == "PATCH":
                key = (request.resource, request.namespace, request.name)
                current = self.objects[key] if key in self.objects else None
                if current is not None and not current.deleted:
                    wanted = meta.get("resourceVersion")
                    have = current.get("metadata", {}).get("resourceVersion")
                    if wanted is not None and wanted != have:
                        return _conflict(f"the object has been modified (now {have})")
                if request.subresource == "status":
                    for field in [f for f in request.data if f not in ("status", "metadata")]:
                        del request.data[field]
                    request.data["metadata"] = meta = {}
            meta["resourceVersion"] = self._next_rv()
            return await super()._handle(request)

    async def _replace(self, request: Any) -> aiohttp.web.StreamResponse:
        key = (request.resource, request.namespace, request.name)
        data = request.data if isinstance(request.data, dict) else {}
        async with self._lock:
            if key not in self.objects or self.objects[key].deleted:
                status = {"kind": "Status", "code": 404, "reason": "NotFound"}
                return aiohttp.web.json_response(status, status=404)
            current = self.objects[key]
            have = current.get("metadata", {}).get("resourceVersion")
            wanted = data.get("metadata", {}).get("resourceVersion")
            if wanted != have:  # an update must carry the version it replaces
                return _conflict(f"the object has been modified (now {have})")
            data["metadata"]["resourceVersion"] = self._next_rv()
            current.create(data)
            await self._buses[request.resource].put({"type": "MODIFIED", "object": current.raw})
            return aiohttp.web.json_response(current.raw)


class WritableKubeApi(KubeApi):
    """`KubeApi` over `WritableEmulator`, with helpers for routes and what was written."""

    emulator = WritableEmulator

    def put_object(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create `obj` of `resource` ("group/version/plural") through the API."""
        group_version, plural = resource.rsplit("/", 1)
        base = f"/apis/{group_version}" if "/" in group_version else f"/api/{group_version}"
        ns = obj["metadata"].get("namespace", "default")
        result: dict[str, Any] = self.call(
            self._request("POST", f"{base}/namespaces/{ns}/{plural}", obj)
        )
        return result

    def get_object(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        async def get() -> dict[str, Any] | None:
            assert self.handler is not None
            key = (kmock.resource(resource), namespace, name)
            if key not in self.handler.objects or self.handler.objects[key].deleted:
                return None
            return dict(self.handler.objects[key].raw)

        return self.call(get())

    def list_objects(self, resource: str) -> list[dict[str, Any]]:
        wanted = kmock.resource(resource)

        async def collect() -> list[dict[str, Any]]:
            assert self.handler is not None
            return [
                dict(obj.raw)
                for (res, _, _), obj in list(self.handler.objects.items())
                if res == wanted and not obj.deleted
            ]

        return self.call(collect())

    def writes(self, method: str, path_part: str) -> list[dict[str, Any]]:
        """The requests of `method` whose path contains `path_part`."""
        return [r for r in self.requests() if r["method"] == method and path_part in r["path"]]
