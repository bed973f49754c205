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


# Who names a pod, in its namespace: one Service's name (named once: the usual case, and
# the cheapest), or each Service's count of endpoints naming it.
Users = str | dict[str, int]


class PodLabels:
    """Pod labels by (namespace, name), and which services' endpoints reference each pod.

    Both maps are nested by namespace so a pod costs no key tuple, and its name is the
    interned string the slices' endpoints hold too (`sources.kube_mapping`)."""

    def __init__(self) -> None:
        self._labels: dict[str, dict[str, Labels]] = {}
        self._users: dict[str, dict[str, Users]] = {}
        self._shared: dict[Labels, Labels] = {}  # one tuple per distinct label set
        self._uses: dict[Labels, int] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def labels(self, namespace: str, name: str) -> Labels:
        """A pod's labels; () for a pod not (yet) seen."""
        pods = self._labels.get(namespace)
        return pods.get(name, ()) if pods else ()

    def set(self, key: Key, labels: Labels | None) -> set[Key]:
        """A pod's labels (None: deleted); the services to republish because of it."""
        namespace, name = key
        pods = self._labels.get(namespace)
        old = pods.get(name) if pods else None
        if old == labels:
            return set()  # most pod events: a status change
        if old is not None:
            self._release(old)
        if labels is None:
            assert pods is not None
            del pods[name]
            self._count -= 1
            if not pods:
                del self._labels[namespace]
        else:
            self._count += old is None
            self._labels.setdefault(namespace, {})[name] = self._share(labels)
        if (old or ()) == (labels or ()):
            return set()  # appeared or went without labels: the endpoints read the same
        users = self._users.get(namespace, {}).get(name)
        names = () if users is None else (users,) if isinstance(users, str) else users
        return {(namespace, service) for service in names}

    def replace(self, owns: Callable[[Key], bool], pods: Iterable[tuple[Key, Labels]]) -> None:
        """A complete list of the pods `owns` selects (the caller republishes everything)."""
        gone = [(ns, n) for ns, names in self._labels.items() for n in names if owns((ns, n))]
        for key in gone:
            self.set(key, None)
        for key, labels in pods:
            self.set(key, labels)

    def ref(self, service: Key, sl: KubeSlice) -> None:
        """`service`'s slice `sl` is stored: its endpoints name their pods."""
        svc = service[1]
        for namespace, pod in slice_pods(sl):
            pods = self._users.setdefault(namespace, {})
            users = pods.get(pod)
            if users is None:
                pods[pod] = svc
                continue
            if isinstance(users, str):
                users = pods[pod] = {users: 1}
            users[svc] = users.get(svc, 0) + 1

    def unref(self, service: Key, sl: KubeSlice) -> None:
        """`service`'s slice `sl` is gone (or replaced)."""
        svc = service[1]
        for namespace, pod in slice_pods(sl):
            pods = self._users.get(namespace)
            users = pods.get(pod) if pods else None
            if pods is None or users is None:
                continue
            if isinstance(users, str):
                if users == svc:
                    del pods[pod]
            elif svc in users:
                users[svc] -= 1
                if not users[svc]:
                    del users[svc]
                if not users:
                    del pods[pod]
                elif len(users) == 1 and next(iter(users.values())) == 1:
                    pods[pod] = next(iter(users))  # back to the cheap form
            if not pods:
                del self._users[namespace]

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
