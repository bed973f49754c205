"""A generated object and its expected fate, and a scenario of several."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.policy_strategies.values import Object


@dataclass
class Drawn:
    """One generated object; `defect`: the words its rejection must contain, or None."""

    obj: Object
    defect: str | None = None
    uses: frozenset[str] = frozenset()  # services whose DestinationRule subsets it names
    label: str = ""  # the start of its name (default: from its kind)

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def host(self) -> str:
        spec = self.obj["spec"]
        return str(spec["host"] if self.kind == "DestinationRule" else spec["hosts"][0])


@dataclass
class Scenario:
    objects: list[Drawn] = field(default_factory=list)

    def named(self, n: int) -> list[Drawn]:
        """The objects with names unique to example ``n`` (so no object has a last valid
        version from an earlier example)."""
        for d in self.objects:
            d.obj["metadata"] = {"name": f"{d.label or d.kind.lower()[:2]}-{d.host}-{n}"}
        return self.objects

    def expected(self) -> dict[tuple[str, str], tuple[str, ...]]:
        """Per (kind, name): the words one of which its rejection must contain (its own
        defect, or a subset its rejected DestinationRule would have defined: whichever
        the server meets first), or () if it must not be rejected."""
        bad_drs = {
            d.host
            for d in self.objects
            if d.kind == "DestinationRule" and d.defect and not d.label  # the host's own
        }
        out: dict[tuple[str, str], tuple[str, ...]] = {}
        for d in self.objects:
            words = () if d.defect is None else (d.defect,)
            if d.uses & bad_drs:
                words += ("is not defined by a DestinationRule",)
            out[(d.kind, d.obj["metadata"]["name"])] = words
        return out
