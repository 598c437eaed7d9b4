"""The Plan: which example ids each epoch trains on, at which temperature (docs/design.md §5).

A plan is the curriculum's only output and the trainer's only curriculum input, so any trainer can
use it. JSON layout::

    {"spectrumkd": "plan", "n_total": N, "params": {...},
     "zones": {"early": [ids], "continuous": [...], "late": [...], "excluded": [...]},
     "epochs": [{"epoch": 1, "start": 0, "ids": [...], "temperature": 1.0,
                 "total_difficulty": 123.4}, ...]}

Ids keep the type they have in the scores file. ``start`` is the sorted position of the epoch's
first example (the window start for SpectrumKD plans). For baseline plans the zones say which ids
are ever used (``continuous``) and which never are (``excluded``); ``early``/``late`` are empty.
Plans built by :func:`spectrumkd.curriculum.make_plan` are consistent by construction; files are
validated on load (:meth:`Plan.load`, :meth:`Plan.from_dict`) and written atomically (a temporary file renamed into place), so a
failed write leaves nothing behind.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from spectrumkd import SpectrumKDError
from spectrumkd.curriculum.spectrum import ZONES
from spectrumkd.fileio import atomic_write_text, read_json

__all__ = ["EpochPlan", "Plan"]


@dataclass
class EpochPlan:
    """One epoch: 1-based ``epoch``, sorted ``start`` position, ``ids``, ``temperature``, difficulty.

    Epochs that train on the same window share one ``ids`` list; treat it as read-only.
    """

    epoch: int
    start: int
    ids: list
    temperature: float
    total_difficulty: float

    def to_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "start": self.start,
            "ids": self.ids,
            "temperature": self.temperature,
            "total_difficulty": self.total_difficulty,
        }


@dataclass
class Plan:
    """Per-epoch ids, temperatures and difficulties, plus the zones of the spectrum.

    >>> p = Plan(n_total=3, params={"curriculum": "full"},
    ...          zones={"early": [], "continuous": ["a", "b", "c"], "late": [], "excluded": []},
    ...          epochs=[EpochPlan(1, 0, ["a", "b", "c"], 1.0, 6.0)])
    >>> Plan.from_dict(p.to_dict()) == p
    True
    >>> p.num_epochs, p.subset_sizes()
    (1, [3])
    """

    n_total: int
    params: dict
    zones: dict[str, list]
    epochs: list[EpochPlan] = field(default_factory=list)

    @property
    def num_epochs(self) -> int:
        return len(self.epochs)

    def epoch(self, epoch: int) -> EpochPlan:
        """The plan of 1-based ``epoch``."""
        if not 1 <= epoch <= self.num_epochs:
            raise SpectrumKDError(f"epoch {epoch} is outside the plan's 1..{self.num_epochs}")
        return self.epochs[epoch - 1]

    def subset_sizes(self) -> list[int]:
        return [len(e.ids) for e in self.epochs]

    def used_ids(self) -> set:
        """Every id that some epoch trains on."""
        return {i for e in self.epochs for i in e.ids}

    def total_examples(self) -> int:
        """Examples seen over the whole plan (the trainer's step count derives from it)."""
        return sum(self.subset_sizes())

    def validate(self, source: str = "plan") -> None:
        """Raise :class:`SpectrumKDError` if the plan is inconsistent."""
        if set(self.zones) != set(ZONES):
            raise SpectrumKDError(f"{source}: zones must be exactly {', '.join(ZONES)}")
        for zone in ZONES:
            bad = [x for x in self.zones[zone] if isinstance(x, bool) or not isinstance(x, (str, int))]
            if bad:
                raise SpectrumKDError(f"{source}: zone {zone!r} holds ids that are neither strings "
                                      f"nor integers: {bad[:5]!r:.80}")
        all_ids: set = set()
        for zone in ZONES:
            zone_ids = self.zones[zone]
            if len(set(zone_ids)) != len(zone_ids) or all_ids.intersection(zone_ids):
                raise SpectrumKDError(f"{source}: zone {zone!r} repeats ids or overlaps another")
            all_ids.update(zone_ids)
        if len(all_ids) != self.n_total:
            raise SpectrumKDError(
                f"{source}: n_total is {self.n_total} but the zones hold {len(all_ids)} ids"
            )
        if not self.epochs:
            raise SpectrumKDError(f"{source}: no epochs")
        said = self.params.get("epochs")
        if said is not None and said != self.num_epochs:
            raise SpectrumKDError(
                f"{source}: params.epochs is {said!r} but the plan lists {self.num_epochs} epochs")
        for i, e in enumerate(self.epochs, start=1):
            where = f"{source}: epoch {e.epoch}"
            if e.epoch != i:
                raise SpectrumKDError(f"{source}: epochs must be numbered 1..n, found {e.epoch} at {i}")
            if not e.ids:
                raise SpectrumKDError(f"{where}: empty subset")
            if len(set(e.ids)) != len(e.ids):
                raise SpectrumKDError(f"{where}: repeated ids")
            unknown = [x for x in e.ids if x not in all_ids]
            if unknown:
                raise SpectrumKDError(f"{where}: ids not in any zone: {unknown[:10]}")
            excluded = set(self.zones["excluded"]).intersection(e.ids)
            if excluded:
                raise SpectrumKDError(f"{where}: uses excluded ids {sorted(map(str, excluded))[:10]}")
            if not (isinstance(e.temperature, (int, float)) and math.isfinite(e.temperature)
                    and e.temperature > 0):
                raise SpectrumKDError(f"{where}: temperature must be positive, got {e.temperature!r}")
            if not math.isfinite(e.total_difficulty):
                raise SpectrumKDError(f"{where}: total_difficulty is not finite")
            if not 0 <= e.start < self.n_total:
                raise SpectrumKDError(f"{where}: start {e.start} outside [0, {self.n_total})")

    # -- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "spectrumkd": "plan",
            "n_total": self.n_total,
            "params": self.params,
            "zones": {z: self.zones[z] for z in ZONES},
            "epochs": [e.to_dict() for e in self.epochs],
        }

    @classmethod
    def from_dict(cls, obj: dict, source: str = "plan") -> Plan:
        if not isinstance(obj, dict) or obj.get("spectrumkd") != "plan":
            raise SpectrumKDError(f'{source}: not a spectrumkd plan (missing "spectrumkd": "plan")')
        try:
            epochs = [
                EpochPlan(
                    epoch=int(e["epoch"]),
                    start=int(e["start"]),
                    ids=list(e["ids"]),
                    temperature=float(e["temperature"]),
                    total_difficulty=float(e["total_difficulty"]),
                )
                for e in obj["epochs"]
            ]
            plan = cls(
                n_total=int(obj["n_total"]),
                params=dict(obj.get("params", {})),
                zones={z: list(obj["zones"][z]) for z in ZONES},
                epochs=epochs,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SpectrumKDError(f"{source}: malformed plan ({type(exc).__name__}: {exc})") from None
        plan.validate(source)
        return plan

    def save(self, path: str | Path) -> Path:
        """Write the plan as JSON atomically; returns the path."""
        text = json.dumps(self.to_dict(), separators=(",", ":")) + "\n"
        return atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        path = Path(path)  # missing, not UTF-8, not JSON: one line naming the file (and line)
        return cls.from_dict(read_json(path, what="plan file", expect=object), source=str(path))
