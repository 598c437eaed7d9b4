"""Records of finished experiment runs, and the study built from them alone (issue 18).

Each finished arm × training seed, and each reference model (the student before training, the
teacher), leaves one small JSON *record* in the experiment folder: what the tables and the study
need, never weights. So a study can be committed part-way, continued on a fresh machine, or run as
shards on many machines whose ``records/`` folders are then copied together; the tables are
rebuilt from the records alone. Layout (``suffix`` is ``""`` for the best checkpoint, ``"-last"``
for the last)::

    records/arms/{arm}/seed{seed}{suffix}.json
    records/references/{before|teacher}{suffix}.json

A record::

    {"spectrumkd": "record", "version": 1, "unit": "arm", "arm": "full", "seed": 0,
     "checkpoint": "best", "config_hash": "3f2a…", "commit": "98ec8a6… (or null)",
     "kind": "none", "epochs": 4, "steps": 40, "planned_steps": 40, "n_train": 40,
     "curves": {"heldout_kl": [[0, 1.9], [20, 1.2], [40, 1.1]], "heldout_ce": [...], ...},
     "panel": {"heldout_ce": ..., "heldout_kl": ..., "entropy": ..., "sample_nll": ...,
               "rougeL": ..., "rougeL_greedy": ...},
     "per_prompt": [{"gen_seed": 10, "id": "dolly-eval-0", "rougeL": 23.5}, ...]}

(a reference record has ``"unit": "reference"``, ``"reference"`` and no training fields).
``config_hash`` (:func:`config_hash`) is computed by the experiment from everything that decides
the record's numbers (:func:`spectrumkd.experiment.unit_hashes`); a record whose hash differs from
the current config's is refused with one line naming the file (:func:`read_record`), never mixed.

The grid is a fixed list of units (:func:`spectrumkd.experiment.grid`); shard ``I/N`` (0-based
``I``, as a job array's task id) takes the units at positions ``I, I + N, I + 2N, ...``
(:func:`shard_units`), so the N shards partition the grid whatever runs first.

:func:`build_study` writes ``study.json``: ``n_train``, ``runs`` (per arm × seed: ``steps``,
``curves``, ``panel``), ``references.<before|teacher>.<metric>`` and ``comparisons``: for every
arm other than the baseline and every metric of :data:`COMPARED` (the panel's final values and
the normalised areas under the held-out curves, ``heldout_kl_auc`` ...), the paired-seed
statistics of :func:`spectrumkd.evaluate.stats.paired_seeds`, and for ROUGE-L the per-prompt
Wilcoxon p as a secondary figure (``p_per_prompt_secondary``). Nothing here loads a model.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from spectrumkd import SpectrumKDError
from spectrumkd.evaluate.results import PANEL_METRICS
from spectrumkd.fileio import atomic_write_text, read_json

__all__ = ["COMPARED", "CURVE_KEYS", "RECORD_VERSION", "Unit", "build_study", "comparisons", "config_hash",
           "curves_from_metrics", "parse_shard", "per_prompt_tests", "read_record",
           "record_scores", "seed_values", "shard_units", "write_record"]

RECORD_VERSION = 1
CURVE_KEYS = ("heldout_ce", "heldout_kl", "entropy")
"""The held-out curve's measures (``metrics.jsonl`` lines of kind ``curve``)."""
COMPARED = (*PANEL_METRICS, *(f"{k}_auc" for k in CURVE_KEYS))
"""The metrics compared arm vs baseline: final panel values and areas under the held-out curves."""


@dataclass(frozen=True)
class Unit:
    """One cell of the experiment grid: an arm at a training seed, or a reference model."""

    unit: str  # "arm" or "reference"
    name: str
    seed: int | None = None

    @property
    def label(self) -> str:
        return f"{self.name} seed {self.seed}" if self.unit == "arm" else f"reference {self.name}"

    def record_path(self, out: str | Path, suffix: str = "") -> Path:
        base = Path(out) / "records"
        if self.unit == "arm":
            return base / "arms" / self.name / f"seed{self.seed}{suffix}.json"
        return base / "references" / f"{self.name}{suffix}.json"


def config_hash(payload: Mapping) -> str:
    """The first 16 hex digits of the SHA-256 of ``payload`` as canonical JSON (sorted keys).

    >>> config_hash({"b": 1, "a": [1, 2]}) == config_hash({"a": [1, 2], "b": 1})
    True
    """
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` → ``(I, N)`` with ``0 <= I < N``.

    >>> parse_shard("1/4")
    (1, 4)
    """
    head, slash, tail = text.partition("/")
    try:
        index, count = int(head), int(tail)
    except ValueError:
        index, count = -1, 0
    if not slash or count < 1 or not 0 <= index < count:
        raise SpectrumKDError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4 … 3/4")
    return index, count


def shard_units(units: list, index: int, count: int) -> list:
    """The units at positions ``index, index + count, ...``: N shards partition the grid.

    >>> shard_units(list("abcde"), 0, 2), shard_units(list("abcde"), 1, 2)
    (['a', 'c', 'e'], ['b', 'd'])
    """
    return units[index::count]


def write_record(path: Path, record: dict) -> Path:
    """Write ``record`` atomically (a temporary file renamed into place)."""
    return atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def read_record(path: Path, unit: Unit, want_hash: str) -> dict:
    """The record at ``path`` for ``unit``; a record made under another config (its
    ``config_hash`` differs from ``want_hash``), for another unit or malformed is refused."""
    rec = read_json(path, what="experiment record")
    if rec.get("spectrumkd") != "record" or rec.get("version") != RECORD_VERSION:
        raise SpectrumKDError(f"{path}: not a spectrumkd record (version {RECORD_VERSION})")
    if unit.unit == "arm":
        same = (rec.get("unit"), rec.get("arm"), rec.get("seed")) == ("arm", unit.name, unit.seed)
    else:
        same = (rec.get("unit"), rec.get("reference")) == ("reference", unit.name)
    if not same:
        raise SpectrumKDError(f"{path}: a record of another run than {unit.label}")
    if rec.get("config_hash") != want_hash:
        raise SpectrumKDError(
            f"{path}: config hash {rec.get('config_hash')} differs from this experiment's "
            f"{want_hash} for {unit.label} (made with another config, commit "
            f"{rec.get('commit')}); remove it or run with the config that made it")
    for key in ("panel", "per_prompt"):
        if not isinstance(rec.get(key), (dict if key == "panel" else list)):
            raise SpectrumKDError(f"{path}: record lacks {key!r}")
    return rec


def curves_from_metrics(rows: Iterable[Mapping]) -> dict[str, list[list[float]]]:
    """``{measure: [[step, value], ...]}`` of the ``kind: curve`` lines of ``metrics.jsonl``."""
    curves: dict[str, list[list[float]]] = {}
    for row in rows:
        if row.get("kind") != "curve":
            continue
        for key in CURVE_KEYS:
            value = row.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                curves.setdefault(key, []).append([int(row["step"]), float(value)])
    return curves


def record_scores(rec: Mapping) -> dict[tuple[int, str], float]:
    """``{(generation seed, prompt id): ROUGE-L}`` of a record."""
    return {(int(r["gen_seed"]), str(r["id"])): float(r["rougeL"]) for r in rec["per_prompt"]}


def seed_values(records: Mapping[int, Mapping], metric: str) -> dict[int, float]:
    """``{training seed: value}`` of ``metric`` over an arm's records: a panel value, or for
    ``<curve>_auc`` the normalised area under that held-out curve (seeds without it left out)."""
    from spectrumkd.evaluate.stats import curve_auc

    out = {}
    for seed, rec in records.items():
        if metric.endswith("_auc"):
            curve = rec.get("curves", {}).get(metric.removesuffix("_auc"))
            if curve:
                out[seed] = curve_auc(curve)
        elif isinstance(rec["panel"].get(metric), (int, float)):
            out[seed] = float(rec["panel"][metric])
    return out


def per_prompt_tests(runs: Mapping[int, Mapping], base: Mapping[int, Mapping]) -> dict:
    """Wilcoxon p over ROUGE-L scores ``{seed: {(gen seed, id): score}}`` of the common seeds:
    ``p_pairs`` over every (training seed, generation seed, prompt) pair (correlated pairs taken as
    independent) and ``p_prompts`` over prompts, each averaged over all its seeds (secondary)."""
    from spectrumkd.evaluate.stats import wilcoxon_p

    a, b = [], []
    by_prompt: dict[str, tuple[list, list]] = {}
    for seed in sorted(set(runs) & set(base)):
        keys = sorted(set(runs[seed]) & set(base[seed]))
        if len(keys) != len(runs[seed]) or len(keys) != len(base[seed]):
            raise SpectrumKDError(f"seed {seed}: the arm and the baseline were evaluated on "
                                  "different prompts or generation seeds")
        for key in keys:
            a.append(runs[seed][key])
            b.append(base[seed][key])
            pa, pb = by_prompt.setdefault(key[1], ([], []))
            pa.append(runs[seed][key])
            pb.append(base[seed][key])
    if not a:
        return {"p_pairs": None, "p_prompts": None, "n_pairs": 0, "n_prompts": 0}
    prompts = sorted(by_prompt)
    means = [[sum(by_prompt[k][i]) / len(by_prompt[k][i]) for k in prompts] for i in (0, 1)]
    return {"p_pairs": wilcoxon_p(a, b), "p_prompts": wilcoxon_p(*means), "n_pairs": len(a),
            "n_prompts": len(prompts)}


def comparisons(arms: Mapping[str, Mapping[int, Mapping]], baseline: str) -> list[dict]:
    """Every non-baseline arm × :data:`COMPARED` metric over paired training seeds (see module)."""
    from spectrumkd.evaluate.stats import paired_seeds

    base = arms.get(baseline, {})
    out = []
    for name, records in arms.items():
        if name == baseline:
            continue
        for metric in COMPARED:
            stats = paired_seeds(seed_values(records, metric), seed_values(base, metric))
            if not stats["n_seeds"]:
                continue
            row = {"arm": name, "baseline": baseline, "metric": metric, **stats}
            if metric == "rougeL":
                scores = {s: record_scores(r) for s, r in records.items()}
                base_scores = {s: record_scores(r) for s, r in base.items()}
                row["p_per_prompt_secondary"] = per_prompt_tests(scores, base_scores)["p_prompts"]
            out.append(row)
    return out


def build_study(arms: Mapping[str, Mapping[int, Mapping]], references: Mapping[str, Mapping],
                *, baseline: str, checkpoint: str) -> dict:
    """``study.json`` from records alone: ``arms`` is ``{arm: {seed: record}}``, ``references``
    ``{name: record}`` (see the module docstring for the layout)."""
    n_train = sorted({r["n_train"] for recs in arms.values() for r in recs.values()
                      if r.get("n_train") is not None})
    runs = [{"arm": name, "seed": seed, "kind": rec.get("kind"), "steps": rec.get("steps"),
             "planned_steps": rec.get("planned_steps"), "curves": rec.get("curves", {}),
             "panel": rec["panel"], "config_hash": rec["config_hash"], "commit": rec.get("commit")}
            for name, recs in arms.items() for seed, rec in sorted(recs.items())]
    return {
        "spectrumkd": "study", "baseline": baseline, "checkpoint": checkpoint,
        "n_train": n_train[0] if len(n_train) == 1 else (n_train or None),
        "arms": {name: {"n_seeds": len(recs), "seeds": sorted(recs)} for name, recs in arms.items()},
        "runs": runs,
        "references": {name: dict(rec["panel"]) for name, rec in references.items()},
        "comparisons": comparisons(arms, baseline),
        "test": "per arm vs the baseline over paired training seeds: mean difference (arm − "
                "baseline), 95% percentile bootstrap CI over seeds (10,000 resamples, seed 0), "
                "exact two-sided Wilcoxon signed-rank p (>= 2/2^n for n seeds); "
                "p_per_prompt_secondary: Wilcoxon over prompts averaged over all seeds",
    }
