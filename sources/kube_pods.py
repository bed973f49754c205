"""Pod labels for the Kubernetes source, from a metadata-only watch of Pods.

DestinationRule subsets select endpoints by their pod's labels, and EndpointSlices do
not carry them: an endpoint names its pod (`targetRef`), and the pod's labels come from
a list+watch of Pods asking for `PartialObjectMetadata` (the `Accept` headers below), so
the API server sends name, namespace and labels — never specs or statuses, which are
most of a Pod's bytes. The loop itself is `sources.kubernetes`'s, like every resource's.

Memory (a cluster has ten times more Pods than Services): only (namespace, name) →
labels is kept, and identical label sets — every replica of a ReplicaSet has the same —
are one shared tuple. `PodLabels` also knows which services' endpoints reference each
pod, so a label change republishes only those services, and a pod event that changes
no label (most of them: status updates) republishes nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from sources.kube_api import Key
from sources.kube_mapping import KubeSlice, object_key
from xds_server import model
from xds_server.model import Labels

# What client-go's metadata client asks for (without its fallback to whole objects).
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


def parse_pod(obj: dict[str, Any]) -> tuple[Key, Labels]:
    """(namespace, name) and labels of a PartialObjectMetadata (or any object)."""
    namespace, name = object_key(obj)
    meta = obj.get("metadata")
    raw = meta.get("labels") if isinstance(meta, dict) else None
    labels = model.labels(
        {sys.intern(str(k)): sys.intern(str(v)) for k, v in raw.items()}
        if isinstance(raw, dict)
        else {}
    )
    return (sys.intern(namespace), sys.intern(name)), labels


def slice_pods(sl: KubeSlice) -> Iterable[Key]:
    """The pods a slice's endpoints name (in the slice's namespace, as the endpoint slice
    controller always writes them)."""
    return ((sl.namespace, ep.pod) for ep in sl.endpoints if ep.pod)


class PodLabels:
    """Pod labels by (namespace, name), and which services' endpoints reference each pod."""

    def __init__(self) -> None:
        self._labels: dict[Key, Labels] = {}
        self._shared: dict[Labels, Labels] = {}  # one tuple per distinct label set
        self._uses: dict[Labels, int] = {}
        # pod -> {service key: number of its slices' endpoints naming the pod}
        self._refs: dict[Key, dict[Key, int]] = {}

    def __len__(self) -> int:
        return len(self._labels)

    def labels(self, namespace: str, name: str) -> Labels:
        """A pod's labels; () for a pod not (yet) seen."""
        return self._labels.get((namespace, name), ())

    def set(self, key: Key, labels: Labels | None) -> set[Key]:
        """A pod's labels (None: deleted); the services to republish because of it."""
        old = self._labels.get(key)
        if old == labels:
            return set()
        if old is not None:
            self._release(old)
        if labels is None:
            del self._labels[key]
        else:
            self._labels[key] = self._share(labels)
        if (old or ()) == (labels or ()):
            return set()  # appeared or went without labels: the endpoints read the same
        return set(self._refs.get(key, ()))

    def replace(self, owns: Callable[[Key], bool], pods: Iterable[tuple[Key, Labels]]) -> None:
        """A complete list of the pods `owns` selects (the caller republishes everything)."""
        for key in [k for k in self._labels if owns(k)]:
            self.set(key, None)
        for key, labels in pods:
            self.set(key, labels)

    def ref(self, service: Key, sl: KubeSlice) -> None:
        for pod in slice_pods(sl):
            users = self._refs.setdefault(pod, {})
            users[service] = users.get(service, 0) + 1

    def unref(self, service: Key, sl: KubeSlice) -> None:
        for pod in slice_pods(sl):
            users = self._refs.get(pod)
            if users is None or service not in users:
                continue
            users[service] -= 1
            if not users[service]:
                del users[service]
                if not users:
                    del self._refs[pod]

    def _share(self, labels: Labels) -> Labels:
        shared = self._shared.setdefault(labels, labels)
        self._uses[shared] = self._uses.get(shared, 0) + 1
        return shared

    def _release(self, labels: Labels) -> None:
        left = self._uses[labels] - 1
        if left:
            self._uses[labels] = left
        else:
            del self._uses[labels], self._shared[labels]
