"""Assemble ``report.md`` and its PNG figures from one or more run directories.

:func:`write_report` loads the runs (:mod:`spectrumkd.report.rundir`), draws the figures
(:mod:`spectrumkd.report.figures`), saves them beside ``report.md`` and links each one from it,
and embeds the results table of :mod:`spectrumkd.evaluate` when the runs hold evaluation results.

Runs that share the same scores (same ids and values, e.g. a SpectrumKD run and its full-data
baseline) get one difficulty/spectrum pair, drawn with the zones of the first of them whose plan has
non-trivial zones. This module computes no statistics itself and never retrains or re-evaluates.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spectrumkd import SpectrumKDError
from spectrumkd.curriculum.analyzer import fit_lognormal
from spectrumkd.report.rundir import RunData, load_runs

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SAVE_DPI = 150

#: Axis label of each difficulty metric (docs/design.md §4), by (metric, reduction).
METRIC_LABELS: dict[tuple[str, str | None], str] = {
    ("ce", "mean"): "difficulty: mean token cross-entropy (nats/token)",
    ("ce", "sum"): "difficulty: summed cross-entropy (nats/example)",
    ("rougel", None): "difficulty: 1 − ROUGE-L F1 of greedy answer (0–1)",
    ("entropy", None): "difficulty: mean token entropy (nats/token)",
    ("length", None): "difficulty: response length (tokens)",
}


def score_label(header: dict[str, Any] | None) -> str:
    """Axis label with units for a scores file's metric; a generic one without a header.

    >>> score_label({"metric": "ce", "reduction": "mean"})
    'difficulty: mean token cross-entropy (nats/token)'
    >>> score_label(None)
    'difficulty score'
    """
    if not header:
        return "difficulty score"
    metric = str(header.get("metric", ""))
    reduction = header.get("reduction", "mean" if metric == "ce" else None)
    label = METRIC_LABELS.get((metric, reduction)) or METRIC_LABELS.get((metric, None))
    return label or f"difficulty: {metric or 'score'}"


def slug(name: str) -> str:
    """A file-name-safe version of a run name.

    >>> slug("runs/demo/spectrum kd")
    'runs-demo-spectrum-kd'
    """
    return re.sub(r"[^A-Za-z0-9._]+", "-", name).strip("-") or "run"


def _scores_key(run: RunData) -> str:
    assert run.scores is not None
    h = hashlib.sha256()
    h.update(repr(run.scores.ids).encode())
    h.update(np.ascontiguousarray(run.scores.scores).tobytes())
    return h.hexdigest()


def zone_labels_by_rank(run: RunData) -> tuple[np.ndarray, list[str] | None]:
    """Scores sorted ascending (stable, as the curriculum sorts) and the zone of each rank.

    The zones come from the run's plan; ``None`` when there is no plan. A plan whose zones do not
    cover exactly the scored ids raises an error naming both files.
    """
    assert run.scores is not None
    order = np.argsort(run.scores.scores, kind="stable")
    sorted_scores = run.scores.scores[order]
    if run.plan is None:
        return sorted_scores, None
    zone_of = {i: zone for zone, ids in run.plan.zones.items() for i in ids}
    ids = run.scores.ids
    missing = [ids[i] for i in order if ids[i] not in zone_of]
    if missing or len(zone_of) != len(ids):
        raise SpectrumKDError(
            f"{run.path / 'plan.json'} does not match {run.path / 'scores.jsonl'}: "
            f"{len(zone_of)} ids in the plan's zones, {len(ids)} scored"
            + (f"; not in the plan: {missing[:5]}" if missing else "")
        )
    return sorted_scores, [zone_of[ids[i]] for i in order]


def _nontrivial(labels: list[str] | None) -> bool:
    return labels is not None and len(set(labels)) > 1


def warmup_epochs(params: dict[str, Any]) -> int:
    """Warm-up epochs k recorded in a plan's params (0 when absent)."""
    for key in ("warmup", "warmup_epochs", "k"):
        if isinstance(params.get(key), int):
            return int(params[key])
    return 0


@dataclass
class Section:
    """One part of the report: a heading, Markdown text, figures to save and link, and links to
    images saved elsewhere (``(path relative to the report, alt text)``)."""

    title: str
    text: str
    figures: list[tuple[str, str, Figure]]  # (file name, alt text, figure)
    images: list[tuple[str, str]] = field(default_factory=list)


def spectrum_sections(runs: list[RunData]) -> list[Section]:
    """Difficulty histogram + fit + boundaries and the zoned spectrum, per distinct scores."""
    from spectrumkd.report.figures import difficulty_figure, spectrum_figure, zone_boundaries

    groups: dict[str, list[tuple[RunData, np.ndarray, list[str] | None]]] = {}
    for run in runs:
        if run.scores is not None:
            groups.setdefault(_scores_key(run), []).append((run, *zone_labels_by_rank(run)))
    sections = []
    for members in groups.values():
        run, sorted_scores, labels = next(
            (m for m in members if _nontrivial(m[2])), members[0]
        )
        names = ", ".join(f"`{m[0].name}`" for m in members)
        suffix = "" if len(groups) == 1 else f"-{slug(run.name)}"
        label = score_label(run.scores.header if run.scores else None)
        lines = [f"Scores of {len(sorted_scores):,} examples from {names}"
                 + (f", zones from `{run.name}`'s plan." if labels else " (no plan: no zones).")]
        fit = note = None
        if np.all(sorted_scores > 0) and sorted_scores[0] < sorted_scores[-1]:
            lf = fit_lognormal(sorted_scores)
            fit, note = (lf.mu, lf.sigma), f"KS statistic = {lf.ks_statistic:.3f}"
            lines.append(
                f"Log-normal fit (MLE on log scores): μ = {lf.mu:.4g}, σ = {lf.sigma:.4g}, "
                f"KS statistic = {lf.ks_statistic:.4f} (p = {lf.ks_pvalue:.3g})."
            )
        else:
            lines.append("No log-normal fit: the scores are not all positive and distinct.")
        if labels:
            counts = {z: labels.count(z) for z in ("early", "continuous", "late", "excluded")}
            lines.append("Zones: " + ", ".join(f"{z} {c:,}" for z, c in counts.items()) + ".")
        boundaries = zone_boundaries(sorted_scores, labels) if _nontrivial(labels) else None
        figs = [(
            f"difficulty{suffix}.png",
            "Histogram of difficulty scores with the log-normal fit and zone boundaries",
            difficulty_figure(sorted_scores, score_label=label, fit=fit, fit_note=note or "",
                              boundaries=boundaries,
                              title=f"Difficulty distribution — {run.name}"),
        )]  # fmt: skip
        if labels:
            figs.append((
                f"spectrum{suffix}.png",
                "Scores sorted ascending, coloured by zone",
                spectrum_figure(sorted_scores, labels, score_label=label,
                                title=f"Difficulty spectrum — {run.name}"),
            ))  # fmt: skip
        sections.append(Section("Difficulty spectrum", "\n".join(lines), figs))
    return sections


def curriculum_section(runs: list[RunData]) -> Section | None:
    """Window start, subset size, total difficulty and τ per epoch for every run with a plan."""
    from spectrumkd.report.figures import curriculum_figure

    planned = [r for r in runs if r.plan is not None]
    if not planned:
        return None
    plans = {
        r.name: [
            {"epoch": e.epoch, "start": e.start, "size": len(e.ids),
             "total_difficulty": e.total_difficulty, "temperature": e.temperature}
            for e in r.plan.epochs  # type: ignore[union-attr]
        ]  # fmt: skip
        for r in planned
    }
    warm = {r.name: warmup_epochs(r.plan.params) for r in planned}  # type: ignore[union-attr]
    header = score_label(planned[0].scores.header if planned[0].scores else None)
    unit = header.split("(")[-1].rstrip(")") if "(" in header else "score units"
    fig = curriculum_figure(plans, difficulty_label=f"sum of scores ({unit.split('/')[0]})",
                            warmup=warm)  # fmt: skip
    rows = ["| run | curriculum | epochs | warm-up | examples per epoch | examples in all | τ |",
            "|---|---|---:|---:|---|---:|---|"]
    for r in planned:
        p = r.plan
        assert p is not None
        sizes = p.subset_sizes()
        size_text = f"{sizes[0]:,}" if len(set(sizes)) == 1 else f"{min(sizes):,}–{max(sizes):,}"
        temps = [e.temperature for e in p.epochs]
        rows.append(
            f"| `{r.name}` | {p.params.get('curriculum', p.params.get('kind', '?'))} "
            f"| {p.num_epochs} | {warm[r.name]} | {size_text} of {p.n_total:,} "
            f"| {p.total_examples():,} | {temps[0]:g} → {temps[-1]:g} |"
        )
    return Section("Curriculum", "\n".join(rows),
                   [("curriculum.png", "Window start, subset size, total difficulty and τ per epoch",
                     fig)])  # fmt: skip


def training_section(runs: list[RunData]) -> Section | None:
    """Training curves of every run that logged metrics, overlaid."""
    from spectrumkd.report.figures import training_figure

    trained = [r for r in runs if r.has_training]
    if not trained:
        return None
    fig = training_figure({r.name: (r.step_metrics, r.epoch_metrics) for r in trained})
    rows = ["| run | steps logged | epochs logged | last val loss | best val ROUGE-L (epoch) |",
            "|---|---:|---:|---:|---:|"]
    for r in trained:
        val = [e for e in r.epoch_metrics if e.get("val_loss") is not None]
        rouge = [e for e in r.epoch_metrics if e.get("val_rougeL") is not None]
        best = max(rouge, key=lambda e: e["val_rougeL"]) if rouge else None
        last_val = f"{val[-1]['val_loss']:.4f}" if val else "–"
        best_text = f"{best['val_rougeL']:.2f} ({best['epoch']})" if best else "–"
        rows.append(f"| `{r.name}` | {len(r.step_metrics):,} | {len(r.epoch_metrics)} "
                    f"| {last_val} | {best_text} |")  # fmt: skip
    return Section("Training", "\n".join(rows),
                   [("training.png", "CE and KD loss per step, validation loss and ROUGE-L per "
                     "epoch", fig)])  # fmt: skip


HELDOUT_TITLE = "Held-out curves"


def heldout_section(runs: list[RunData]) -> Section | None:
    """The held-out curves (CE and KL to the teacher vs step) of every run that logged them."""
    from spectrumkd.report.figures import heldout_figure

    curved = [r for r in runs if r.curve_metrics]
    if not curved:
        return None
    rows = ["| run | points (steps) | held-out CE: start → end | held-out KL: start → end |",
            "|---|---|---:|---:|"]

    def ends(curve: list[dict], key: str) -> str:
        values = [row[key] for row in curve if row.get(key) is not None]
        return f"{values[0]:.3f} → {values[-1]:.3f}" if values else "–"

    for r in curved:
        steps = ", ".join(str(row["step"]) for row in r.curve_metrics)
        rows.append(f"| `{r.name}` | {steps} | {ends(r.curve_metrics, 'heldout_ce')} "
                    f"| {ends(r.curve_metrics, 'heldout_kl')} |")
    rows += ["", "Teacher-forced on the run's fixed held-out rows (`validation.curve_rows`), nats per "
             "response token; KL(teacher‖student) at τ = 1 over the full vocabulary; step 0 is the "
             "student before training."]
    fig = heldout_figure({r.name: r.curve_metrics for r in curved})
    return Section(HELDOUT_TITLE, "\n".join(rows),
                   [("heldout.png", "Held-out CE and KL(teacher‖student) against the step", fig)])


def results_section(runs: list[RunData]) -> Section | None:
    """The paper's Table 1 layout from the runs' ``eval/results.json`` (first run = baseline).

    Per set the main metric, the average, the relative gain over the first evaluated run and a
    Wilcoxon signed-rank p-value over per-example scores — all computed by
    :func:`spectrumkd.evaluate.compare.compare_runs`; this only embeds its Markdown.
    """
    evaluated = [r for r in runs if r.results is not None]
    if not evaluated:
        return None
    from spectrumkd.evaluate.compare import compare_runs, render_markdown

    table = render_markdown(compare_runs([r.path for r in evaluated]))
    return Section("Results", table.rstrip("\n"), [])


def build_sections(runs: list[RunData]) -> list[Section]:
    sections = spectrum_sections(runs)
    for make in (curriculum_section, training_section, heldout_section, results_section):
        section = make(runs)
        if section is not None:
            sections.append(section)
    return sections


def _render(section: Section) -> list[str]:
    out = ["", f"## {section.title}", "", section.text]
    for file_name, alt, _ in section.figures:
        out += ["", f"![{alt}]({file_name})"]
    for path, alt in section.images:
        out += ["", f"![{alt}]({path})"]
    return out


def render_markdown(runs: list[RunData], sections: list[Section], *,
                    lead: Sequence[Section] = ()) -> str:
    """The text of ``report.md``: the leading sections (an experiment's tables), a run list, then
    each section, with its figures and images linked."""
    out = ["# SpectrumKD run report"]
    for section in lead:
        out += _render(section)
    out += ["", "| run | directory |", "|---|---|"]
    out += [f"| `{r.name}` | `{r.path}` |" for r in runs]
    for section in sections:
        out += _render(section)
    return "\n".join(out) + "\n"


def write_report(run_dirs: list[str | Path], out_dir: str | Path | None = None, *,
                 lead: Sequence[Section] = ()) -> Path:
    """Write ``report.md`` and its PNG figures; return the path of ``report.md``.

    ``lead`` sections open the report (their figures are saved too); a built section with the
    title of a lead section is not repeated. ``out_dir`` defaults to ``<first run dir>/report``.
    Existing figures of the same names are overwritten; other files in ``out_dir`` are left alone.
    """
    runs = load_runs(list(run_dirs))
    out = Path(out_dir) if out_dir is not None else runs[0].path / "report"
    titles = {section.title for section in lead}
    sections = [s for s in build_sections(runs) if s.title not in titles]
    out.mkdir(parents=True, exist_ok=True)
    for section in [*lead, *sections]:
        for file_name, _, fig in section.figures:
            fig.savefig(out / file_name, dpi=SAVE_DPI)
    path = out / "report.md"
    path.write_text(render_markdown(runs, sections, lead=list(lead)), encoding="utf-8")
    return path
