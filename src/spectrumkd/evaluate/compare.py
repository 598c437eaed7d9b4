"""Compare evaluation runs: a table like the paper's Table 1 and Wilcoxon p-values.

``compare_runs([A, B, ...])`` reads each run's ``results.json`` (a run directory with
``eval/results.json``, an eval directory, or the file itself) and its generations files, and
returns a :class:`Comparison`: per set the main metric of each run (ROUGE-L or pass@1), the
average over the sets every run has, the relative gain of each run's average over the first
run's (the baseline, "P. Gains (%)"), and a two-sided Wilcoxon signed-rank p-value of each run
against the baseline over the per-example scores of all shared sets (each example's score
averaged over seeds first; examples paired by set and id). :func:`render_markdown` prints it.

When a run's eval folder also holds a ``judge.json`` (written by ``spectrumkd judge``), its
winning rates (WR, in %) are shown beside each set's metric, with their mean over the sets.

Runs are compared only on like data. A shared set whose ``data_fingerprint`` differs between
runs is refused (same ids in different files are unrelated prompts). When the fingerprints agree
but the runs scored different examples (another ``--limit``), the set is compared on the ids every
run has: its values are recomputed over those ids from the per-example scores (the mean of the
per-example scores is the set's metric for every suite), the p-values pair only those, and the
table says so. Runs with no id in common, or whose ids differ without fingerprints to show that
they come from the same file, are refused. A NaN or infinite metric or per-example score is an
error too, never printed as a number.

Not here: judging itself (``judge.py``, ``judge_runs.py``).
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from spectrumkd import SpectrumKDError
from spectrumkd.evaluate.judge_runs import JUDGE_FILE, read_judge
from spectrumkd.evaluate.results import read_results, read_rows_only
from spectrumkd.evaluate.stats import relative_gain, wilcoxon_p
from spectrumkd.fileio import atomic_write_text, refuse_overlap
from spectrumkd.rundir import find_results

SET_TITLES = {"dolly": "DollyEval", "self-inst": "SelfInst", "vicuna": "VicunaEval",
              "sinst": "S-NI", "unni": "UnNI", "gsm8k": "GSM8K", "math": "MATH",
              "humaneval": "HumanEval", "mbpp": "MBPP"}


@dataclass
class Comparison:
    """Table data: ``values[run][set]``, ``average[run]``, ``gain[run]`` (%), ``p_value[run]``."""

    runs: list[str]
    paths: list[str]
    sets: list[str]
    metrics: dict[str, str]
    values: dict[str, dict[str, float | None]]
    average: dict[str, float | None]
    gain: dict[str, float | None]
    p_value: dict[str, float | None]
    n_pairs: dict[str, int]
    wr: dict[str, dict[str, float | None]] = field(default_factory=dict)  # from judge.json
    wr_baseline: dict[str, str] = field(default_factory=dict)  # run -> judged against
    restricted: dict[str, int] = field(default_factory=dict)  # set -> ids shared by all runs

    def to_dict(self) -> dict:
        return asdict(self)


def per_example_scores(results_path: Path, entry: dict) -> dict[str, float]:
    """Mean score per example id over the files (seeds, samples) of one set entry."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for rel in entry.get("files", []):
        file = results_path.parent / rel
        if not file.is_file():
            raise SpectrumKDError(f"{results_path}: generations file {rel} is missing")
        for row in read_rows_only(file):
            score = row.get("score")
            if "id" not in row or not _is_number(score) or not math.isfinite(score):
                raise SpectrumKDError(
                    f"{file}: row {row.get('id')!r} has no finite score ({score!r})"
                )
            sums[str(row["id"])] += float(score)
            counts[str(row["id"])] += 1
    return {key: sums[key] / counts[key] for key in sums}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_comparable(names: list[str], files: list[Path], loaded: list[dict], shared: list[str],
                      metrics: dict[str, str]) -> None:
    """Refuse runs that are not on the same data, or whose metric is not a finite number."""
    for name, f, results in zip(names, files, loaded):
        for s, entry in results["sets"].items():
            value = entry[metrics[s]]
            if not _is_number(value) or not math.isfinite(value):
                raise SpectrumKDError(f"{f}: set {s!r} has {metrics[s]} = {value!r}, not a finite "
                                      f"number (run {name}); re-run its evaluation")
    for s in shared:
        found = {name: r["sets"][s].get("data_fingerprint") for name, r in zip(names, loaded)}
        if None not in found.values() and len(set(found.values())) > 1:
            raise SpectrumKDError(
                f"set {s!r} was evaluated on different data (data_fingerprint "
                f"{', '.join(f'{n}: {v}' for n, v in found.items())}); compare runs evaluated "
                "on the same set"
            )


def _common_ids(s: str, names: list[str], loaded: list[dict], scores: list[dict]) -> set[str] | None:
    """The ids of set ``s`` every run scored, or None when all runs scored the same ids."""
    id_sets = [set(run[s]) for run in scores]
    if all(ids == id_sets[0] for ids in id_sets):
        return None
    common = set.intersection(*id_sets)
    prints = [r["sets"][s].get("data_fingerprint") for r in loaded]
    if not common or None in prints:
        sizes = ", ".join(f"{n}: {len(ids)}" for n, ids in zip(names, id_sets))
        why = "no id in common" if not common else "no data fingerprints to show the same file"
        raise SpectrumKDError(f"set {s!r}: the runs scored different examples ({sizes} ids; "
                              f"{why}); compare runs evaluated on the same examples")
    return common


def _run_name(path: Path, taken: set[str]) -> str:
    folder = path.parent
    name = folder.parent.name if folder.name == "eval" else folder.name
    base, k = name or str(path), 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name


def compare_runs(paths: list[str | os.PathLike]) -> Comparison:
    """Table-1 data for runs; the first one is the baseline of gains and p-values."""
    if len(paths) < 1:
        raise SpectrumKDError("compare needs at least one run")
    files = [find_results(p) for p in paths]
    loaded = [read_results(f) for f in files]
    names: list[str] = []
    for f in files:
        names.append(_run_name(f, set(names)))
    sets: list[str] = []
    for results in loaded:
        sets += [s for s in results["sets"] if s not in sets]
    metrics = {}
    for s in sets:
        found = {r["sets"][s]["metric"] for r in loaded if s in r["sets"]}
        if len(found) > 1:
            raise SpectrumKDError(f"set {s!r} is scored with different metrics: {sorted(found)}")
        metrics[s] = found.pop()
    shared = [s for s in sets if all(s in r["sets"] for r in loaded)]
    _check_comparable(names, files, loaded, shared, metrics)
    values = {n: {s: r["sets"][s][metrics[s]] if s in r["sets"] else None for s in sets}
              for n, r in zip(names, loaded)}
    scores = [{s: per_example_scores(f, r["sets"][s]) for s in shared} for f, r in zip(files, loaded)]
    restricted: dict[str, int] = {}
    for s in shared:
        common = _common_ids(s, names, loaded, scores)
        if common is None:
            continue
        restricted[s] = len(common)
        for name, run in zip(names, scores):
            run[s] = {key: run[s][key] for key in run[s] if key in common}
            values[name][s] = sum(run[s].values()) / len(common)
    average = {n: (sum(values[n][s] for s in shared) / len(shared) if shared else None)
               for n in names}
    base = names[0]
    gain = {n: (relative_gain(average[n], average[base])
                if average[n] is not None and average[base] is not None else None) for n in names}
    p_value: dict[str, float | None] = {base: None}
    n_pairs: dict[str, int] = {base: 0}
    for index, name in enumerate(names[1:], start=1):
        a, b = [], []
        for s in shared:
            for key, value in scores[index][s].items():
                if key in scores[0][s]:
                    a.append(value)
                    b.append(scores[0][s][key])
        n_pairs[name] = len(a)
        p_value[name] = wilcoxon_p(a, b) if a else None
    wr: dict[str, dict[str, float | None]] = {}
    wr_baseline: dict[str, str] = {}
    for name, f in zip(names, files):
        if (f.parent / JUDGE_FILE).is_file():
            judged = read_judge(f.parent / JUDGE_FILE)
            wr[name] = {s: judged["sets"].get(s, {}).get("winning_rate") for s in sets}
            wr_baseline[name] = str(judged.get("baseline", {}).get("path"))
    return Comparison(runs=names, paths=[str(f) for f in files], sets=sets, metrics=metrics,
                      values=values, average=average, gain=gain, p_value=p_value, n_pairs=n_pairs,
                      wr=wr, wr_baseline=wr_baseline, restricted=restricted)


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def render_markdown(table: Comparison) -> str:
    """A Markdown table: run, one column per set, Avg., P. Gains (%), Wilcoxon p vs baseline.

    With winning rates (``table.wr``), each set also gets a WR column and Avg. WR follows Avg.
    """
    show_wr = bool(table.wr)
    heads = []
    for s in table.sets:
        heads.append(f"{SET_TITLES.get(s, s)} ({table.metrics[s]})")
        heads += [f"{SET_TITLES.get(s, s)} (WR)"] if show_wr else []
    heads.append("Avg.")
    heads += ["Avg. WR"] if show_wr else []
    lines = [
        "| Run | " + " | ".join(heads) + " | P. Gains (%) | p (Wilcoxon) |",
        "|---|" + "---:|" * (len(heads) + 2),
    ]
    for name in table.runs:
        run_wr = table.wr.get(name, {})
        cells = []
        for s in table.sets:
            cells.append(_fmt(table.values[name][s]))
            cells += [_fmt(run_wr.get(s))] if show_wr else []
        cells.append(_fmt(table.average[name]))
        if show_wr:
            found = [run_wr[s] for s in table.sets if run_wr.get(s) is not None]
            cells.append(_fmt(sum(found) / len(found) if found else None))
        p = table.p_value[name]
        p_text = "baseline" if name == table.runs[0] else (
            "–" if p is None else (f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"))
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {_fmt(table.gain[name])} | {p_text} |")
    lines.append("")
    lines.append(f"Baseline: {table.runs[0]}. Avg. is over sets every run has; p-values pair "
                 "per-example scores (mean over seeds) with the baseline's.")
    for s, n in table.restricted.items():
        lines.append(f"{SET_TITLES.get(s, s)}: the runs scored different examples (another "
                     f"--limit); its values and p-values are over the {n} ids all runs have.")
    for name, against in table.wr_baseline.items():
        lines.append(f"WR of {name}: LLM-judge winning rate (%) against {against} (judge.json).")
    return "\n".join(lines) + "\n"


def write_comparison(table: Comparison, out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``out`` (Markdown) and the same path with ``.json`` (table data)."""
    out = Path(out)
    data = out.with_suffix(".json")
    inputs = {}
    for i, results in enumerate(table.paths, start=1):  # what compare_runs read
        folder = Path(results).parent
        inputs[f"(run {i})"] = results
        inputs[f"(run {i} generations)"] = folder / "generations"
        inputs[f"(run {i} {JUDGE_FILE})"] = folder / JUDGE_FILE
    refuse_overlap({"--out": out, "--out (JSON)": data}, inputs)
    atomic_write_text(out, render_markdown(table))  # a directory is a one-line error
    atomic_write_text(data, json.dumps(table.to_dict(), indent=2, allow_nan=False) + "\n")
    return out, data
