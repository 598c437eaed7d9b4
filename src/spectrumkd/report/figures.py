"""Matplotlib figures of a run: pure functions from plain data to a ``Figure``.

- :func:`difficulty_figure` — histogram of the difficulty scores with the fitted log-normal
  density and the zone boundaries (paper Figure 3a);
- :func:`spectrum_figure` — scores in ascending order, coloured by zone (paper Figure 3b);
- :func:`curriculum_figure` — per epoch: window start, subset size, total subset difficulty, τ;
- :func:`training_figure` — CE and KD parts per step, validation loss and ROUGE-L per epoch,
  several runs overlaid;
- :func:`heldout_figure` — the held-out curve: CE and KL(teacher‖student) against the optimizer
  step, one line per run.

Figures are built with :class:`matplotlib.figure.Figure` and an explicit Agg canvas, never through
``pyplot``, so nothing touches the global figure registry or the interactive backend and the
functions can run in tests and on headless machines. matplotlib is imported inside the functions
(it is the optional ``plot`` extra). These functions do not read files (see
:mod:`spectrumkd.report.rundir`) or save them (see :mod:`spectrumkd.report.build`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Zone order along the spectrum, with the colours of the spectrum figure (colour-blind safe).
ZONE_COLOURS: dict[str, str] = {
    "early": "#0072B2",
    "continuous": "#009E73",
    "late": "#E69F00",
    "excluded": "#D55E00",
}
ZONE_TITLES: dict[str, str] = {
    "early": "Early learning",
    "continuous": "Continuous learning",
    "late": "Late learning",
    "excluded": "Excluded (no learning)",
}

TITLE_PT = 13
LABEL_PT = 12
TICK_PT = 11
LEGEND_PT = 10
DPI = 120
#: Line styles cycled per run, so that runs with identical curves stay distinguishable.
LINESTYLES = ("-", "--", ":", "-.")


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style(ax: Axes, *, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=TITLE_PT)
    ax.set_xlabel(xlabel, fontsize=LABEL_PT)
    ax.set_ylabel(ylabel, fontsize=LABEL_PT)
    ax.tick_params(labelsize=TICK_PT)
    ax.grid(True, alpha=0.3, linewidth=0.6)


def _no_data(ax: Axes, what: str) -> None:
    ax.text(
        0.5, 0.5, f"no {what} logged", ha="center", va="center",
        transform=ax.transAxes, fontsize=LABEL_PT, color="0.4",
    )  # fmt: skip


def lognormal_pdf(x: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    """Density of a log-normal with log-mean ``mu`` and log-sd ``sigma``; 0 for ``x <= 0``.

    >>> float(np.round(lognormal_pdf(np.array([1.0]), 0.0, 1.0)[0], 6))
    0.398942
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    pos = x > 0
    z = (np.log(x[pos]) - mu) / sigma
    out[pos] = np.exp(-0.5 * z * z) / (x[pos] * sigma * math.sqrt(2 * math.pi))
    return out


def zone_runs(labels: Sequence[str]) -> list[tuple[str, int, int]]:
    """Maximal runs of equal zone labels along the spectrum as ``(zone, start, stop)``.

    >>> zone_runs(["early", "early", "continuous", "excluded"])
    [('early', 0, 2), ('continuous', 2, 3), ('excluded', 3, 4)]
    """
    runs: list[tuple[str, int, int]] = []
    for i, zone in enumerate(labels):
        if runs and runs[-1][0] == zone:
            runs[-1] = (zone, runs[-1][1], i + 1)
        else:
            runs.append((zone, i, i + 1))
    return runs


def zone_boundaries(sorted_scores: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """Score values where the zone changes along the ascending spectrum.

    Each boundary is the midpoint between the last score of one zone and the first of the next,
    keyed ``"lower|upper"``. When a zone occurs in more than one run (a baseline plan that
    excludes both ends), the boundaries are still drawn at every change but keyed with a suffix.

    >>> zone_boundaries(np.array([1., 2., 3., 4., 5.]),
    ...                 ["early", "continuous", "continuous", "continuous", "excluded"])
    {'early|continuous': 1.5, 'continuous|excluded': 4.5}
    """
    out: dict[str, float] = {}
    runs = zone_runs(labels)
    for (lower, _, stop), (upper, _, _) in zip(runs, runs[1:]):
        key = f"{lower}|{upper}"
        while key in out:
            key += "'"
        out[key] = float(0.5 * (sorted_scores[stop - 1] + sorted_scores[stop]))
    return out


def difficulty_figure(
    scores: np.ndarray,
    *,
    score_label: str,
    fit: tuple[float, float] | None = None,
    fit_note: str = "",
    boundaries: Mapping[str, float] | None = None,
    title: str = "Difficulty distribution",
    bins: int | None = None,
) -> Figure:
    """Histogram of the scores, the fitted log-normal density scaled to counts, zone boundaries.

    ``fit`` is ``(mu, sigma)`` of the log-normal; ``fit_note`` (e.g. the KS statistic) goes into
    its legend entry; ``boundaries`` come from :func:`zone_boundaries`.
    """
    scores = np.asarray(scores, dtype=np.float64)
    fig = _new_figure(7.5, 5.6)
    ax = fig.add_subplot()
    n = scores.size
    nbins = bins or int(np.clip(2 * round(n ** (1 / 3)) + 10, 10, 80))
    counts, edges, _ = ax.hist(
        scores, bins=nbins, color="#9BB7D4", edgecolor="white", linewidth=0.5,
        label=f"scores (N = {n:,})",
    )  # fmt: skip
    if fit is not None:
        mu, sigma = fit
        grid = np.linspace(max(edges[0], 1e-9), edges[-1], 400)
        width = edges[1] - edges[0]
        label = f"log-normal fit (μ = {mu:.3g}, σ = {sigma:.3g})"
        if fit_note:
            label += f"\n{fit_note}"
        ax.plot(grid, lognormal_pdf(grid, mu, sigma) * n * width, color="black", lw=2, label=label)
    styles = {"early": ":", "continuous": "--", "late": "-.", "excluded": (0, (5, 1, 1, 1))}
    for key, value in (boundaries or {}).items():
        lower, upper = key.rstrip("'").split("|")
        # The line takes the colour of the zone it leads into (or out of, into "continuous").
        zone = upper if upper != "continuous" else lower
        ax.axvline(
            value, color=ZONE_COLOURS[zone], lw=2, ls=styles[zone],
            label=f"{lower} | {upper} boundary = {value:.3g}",
        )  # fmt: skip
    ax.set_ylim(0, max(counts.max() * 1.15, 1))
    _style(ax, title=title, xlabel=score_label, ylabel="examples per bin")
    # Below the axes: boundary lines span the full height, so no corner inside is free.
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2,
               fontsize=LEGEND_PT)  # fmt: skip
    return fig


def spectrum_figure(
    sorted_scores: np.ndarray,
    labels: Sequence[str],
    *,
    score_label: str,
    title: str = "Difficulty spectrum",
) -> Figure:
    """Scores in ascending order against their rank, the area under each zone filled in its colour.

    ``labels[i]`` is the zone (``early``, ``continuous``, ``late`` or ``excluded``) of the example
    at rank ``i``.
    """
    y = np.asarray(sorted_scores, dtype=np.float64)
    if len(labels) != y.size:
        raise ValueError(f"{len(labels)} zone labels for {y.size} scores")
    fig = _new_figure(7.5, 5.2)
    ax = fig.add_subplot()
    x = np.arange(y.size)
    counts = {zone: 0 for zone in ZONE_COLOURS}
    for zone in labels:
        counts[zone] += 1
    lo_y, hi_y = float(y.min()), float(y.max())
    span = hi_y - lo_y
    # Fill down to 0 as in the paper's Figure 3b, unless the scores sit in a band far above 0
    # (an untrained random student), where a 0-based axis would flatten the spectrum.
    zoomed = lo_y > 0 and span < 0.5 * lo_y
    floor = lo_y - 0.05 * span if zoomed else min(0.0, lo_y)
    labelled: set[str] = set()
    for zone, lo, hi in zone_runs(labels):
        # Close each band at the next zone's first point so the filled areas touch.
        stop = min(hi + 1, y.size)
        label = None
        if zone not in labelled:
            share = 100.0 * counts[zone] / y.size
            label = f"{ZONE_TITLES[zone]}: {counts[zone]:,} ({share:.0f}%)"
            labelled.add(zone)
        colour = ZONE_COLOURS[zone]
        ax.fill_between(x[lo:stop], floor, y[lo:stop], color=colour, alpha=0.35, linewidth=0,
                        label=label)  # fmt: skip
        ax.plot(x[lo:stop], y[lo:stop], color=colour, lw=2)
    ax.set_xlim(0, max(y.size - 1, 1))
    top = hi_y + 0.05 * (span if zoomed else max(hi_y - floor, 1e-12))
    ax.set_ylim(floor, top if top > floor else floor + 1)
    if zoomed:
        title += " (axis does not start at 0)"
    _style(ax, title=title, xlabel="rank (examples sorted by ascending difficulty)",
           ylabel=score_label)  # fmt: skip
    # Legend entries in spectrum order, whatever order the runs came in.
    handles, names = ax.get_legend_handles_labels()
    order = sorted(range(len(names)), key=lambda i: list(ZONE_TITLES.values()).index(
        names[i].split(":")[0]))
    fig.legend([handles[i] for i in order], [names[i] for i in order], fontsize=LEGEND_PT,
               loc="outside lower center", ncols=2)  # fmt: skip
    return fig


def curriculum_figure(
    plans: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    difficulty_label: str = "sum of scores",
    warmup: Mapping[str, int] | None = None,
) -> Figure:
    """Four panels per epoch — window start, subset size, total difficulty, τ — runs overlaid.

    ``plans`` maps a run name to its epochs, each a mapping with ``epoch`` (1-based), ``start``
    (window start, a rank in the ascending spectrum), ``size`` (examples), ``total_difficulty``
    and ``temperature``. ``warmup`` (run name → warm-up epochs k) shades epochs 1..k+1, which all
    use the first window.
    """
    fig = _new_figure(11, 7.2)
    axes = fig.subplots(2, 2)
    panels = [
        ("start", "Window start position", "rank of first example"),
        ("size", "Subset size", "examples"),
        ("total_difficulty", "Total subset difficulty", difficulty_label),
        ("temperature", "Distillation temperature τ", "τ"),
    ]
    markers = "osD^v<>p"
    # Shade the warm-up of the first run that has one (the runs' warm-ups rarely differ).
    shaded = next(((n, k) for n, k in (warmup or {}).items() if k > 0 and n in plans), None)
    for ax, (key, title, ylabel) in zip(axes.flat, panels):
        for i, (name, epochs) in enumerate(plans.items()):
            xs = [int(e["epoch"]) for e in epochs]
            ys = [float(e[key]) for e in epochs]
            ax.plot(xs, ys, marker=markers[i % len(markers)], ms=5, lw=1.8,
                    ls=LINESTYLES[i % len(LINESTYLES)], label=name)
        if shaded is not None:
            ax.axvspan(0.5, shaded[1] + 1.5, color="0.85", alpha=0.5, lw=0, zorder=0)
        _style(ax, title=title, xlabel="epoch", ylabel=ylabel)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if key in ("start", "size"):  # counts of examples
            ax.yaxis.get_major_locator().set_params(integer=True)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if shaded is not None:
        from matplotlib.patches import Patch

        text = f"{shaded[0]}: warm-up k = {shaded[1]}, epochs 1–{shaded[1] + 1} on the first window"
        handles.append(Patch(color="0.85", alpha=0.5, label=text))
        labels.append(text)
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4),
               fontsize=LEGEND_PT)  # fmt: skip
    fig.suptitle("Curriculum per epoch", fontsize=TITLE_PT + 1)
    return fig


def _series(rows: Sequence[Mapping[str, Any]], x: str, y: str) -> tuple[list[float], list[float]]:
    pairs = [(float(r[x]), float(r[y])) for r in rows if r.get(x) is not None and r.get(y) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (shorter at the start).

    >>> smooth([0.0, 2.0, 4.0, 6.0], 2).tolist()
    [0.0, 1.0, 3.0, 5.0]
    """
    v = np.asarray(values, dtype=np.float64)
    if window <= 1 or v.size == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, v.size + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def training_figure(
    runs: Mapping[str, tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]],
    *,
    smoothing: int | None = None,
) -> Figure:
    """CE and KD per step, validation loss and ROUGE-L per epoch, one line per run.

    ``runs`` maps a run name to ``(step_lines, epoch_lines)`` of its ``metrics.jsonl``. Step
    lines use ``step`` and ``ce``/``kd`` (``loss`` stands in for ``ce`` when a run logs only the
    total, e.g. SFT); epoch lines use ``epoch`` and ``val_loss``/``val_rougeL``. A missing field
    leaves its panel saying so. Step curves are smoothed by a trailing moving average over
    ``smoothing`` steps (default: about 1/25 of the longest run), the raw values drawn faintly.
    """
    from matplotlib.colors import to_rgba

    fig = _new_figure(11, 7.2)
    axes = fig.subplots(2, 2)
    longest = max((len(steps) for steps, _ in runs.values()), default=0)
    window = smoothing if smoothing is not None else max(1, longest // 25)
    panels = [
        ("steps", "ce", "Cross-entropy part (per step)", "optimizer step", "CE (nats/token)"),
        ("steps", "kd", "KD divergence part (per step)", "optimizer step", "divergence (nats/token)"),
        ("epochs", "val_loss", "Validation loss (per epoch)", "epoch", "loss (nats/token)"),
        ("epochs", "val_rougeL", "Validation ROUGE-L (per epoch)", "epoch", "ROUGE-L F1 (0–100)"),
    ]
    colours = [f"C{i}" for i in range(10)]
    for ax, (where, key, title, xlabel, ylabel) in zip(axes.flat, panels):
        drawn = False
        for i, (name, (steps, epochs)) in enumerate(runs.items()):
            colour = colours[i % len(colours)]
            style = LINESTYLES[i % len(LINESTYLES)]
            if where == "steps":
                rows = steps
                field = key
                if key == "ce" and not any(r.get("ce") is not None for r in rows):
                    field = "loss"
                xs, ys = _series(rows, "step", field)
                if not xs:
                    continue
                if window > 1:
                    ax.plot(xs, ys, color=to_rgba(colour, 0.25), lw=0.8)
                lbl = name if field == key else f"{name} (total loss)"
                ax.plot(xs, smooth(ys, window), color=colour, lw=1.8, ls=style, label=lbl)
            else:
                xs, ys = _series(epochs, "epoch", key)
                if not xs:
                    continue
                ax.plot(xs, ys, color=colour, marker="os^D"[i % 4], ms=5, lw=1.8, ls=style,
                        label=name)
                ax.xaxis.get_major_locator().set_params(integer=True)
            drawn = True
        if drawn:
            ax.legend(fontsize=LEGEND_PT, framealpha=0.9)
        else:
            _no_data(ax, key)
        if where == "steps" and window > 1:
            title += f", {window}-step mean"
        _style(ax, title=title, xlabel=xlabel, ylabel=ylabel)
    fig.suptitle("Training curves", fontsize=TITLE_PT + 1)
    return fig


def heldout_figure(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> Figure:
    """Held-out CE and KL(teacher‖student) (nats/token) against the optimizer step, one line per run.

    ``runs`` maps a run name to its curve lines (``step``, ``heldout_ce``, ``heldout_kl``); step 0
    is the student before training. A run without ``heldout_kl`` (no teacher) is left out of that
    panel, which says so when no run has it.
    """
    fig = _new_figure(11, 4.2)
    axes = fig.subplots(1, 2)
    panels = [("heldout_ce", "Held-out CE of the reference answers", "CE (nats/token)"),
              ("heldout_kl", "Held-out KL(teacher ‖ student), τ = 1", "KL (nats/token)")]
    for ax, (key, title, ylabel) in zip(axes, panels):
        drawn = False
        for i, (name, rows) in enumerate(runs.items()):
            xs, ys = _series(rows, "step", key)
            if not xs:
                continue
            ax.plot(xs, ys, color=f"C{i % 10}", marker="os^D"[i % 4], ms=5, lw=1.8,
                    ls=LINESTYLES[i % len(LINESTYLES)], label=name)
            drawn = True
        if drawn:
            ax.legend(fontsize=LEGEND_PT, framealpha=0.9)
            ax.xaxis.get_major_locator().set_params(integer=True)
        else:
            _no_data(ax, key)
        _style(ax, title=title, xlabel="optimizer step (0 = before training)", ylabel=ylabel)
    fig.suptitle("Held-out curves", fontsize=TITLE_PT + 1)
    return fig


def results_figure(results: Mapping[str, Any]) -> Figure:
    """An experiment's ROUGE-L per arm: mean ± std over training seeds, one dot per seed, the
    exact Wilcoxon p over paired training seeds against the baseline (``comparisons``), and the
    reference models (student before training, teacher) as horizontal lines."""
    seed_p = {c["arm"]: c["p"] for c in results.get("comparisons") or [] if c["metric"] == "rougeL"}
    fig = _new_figure(6.4, 3.8)
    ax = fig.add_subplot()
    arms = list(results["arms"])
    for i, name in enumerate(arms):
        row = results["arms"][name]
        values = list(row.get("rougeL_per_seed", {}).values())
        if not values:
            continue
        colour = "#777777" if name == results["baseline"] else "#0072B2"
        ax.bar(i, row["rougeL_mean"], yerr=row["rougeL_std"], color=colour, alpha=0.6,
               capsize=6, width=0.6)
        ax.scatter([i] * len(values), values, color="black", s=14, zorder=3)
        p = seed_p.get(name)
        if p is not None:
            ax.annotate(f"p = {p:.3g}", (i, max(values)), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=LEGEND_PT)
    refs = results.get("references", {})
    for ref, style, label in (("before", ":", "student before training"), ("teacher", "--", "teacher")):
        value = (refs.get(ref) or {}).get("rougeL_mean")
        if value is not None:
            ax.axhline(value, linestyle=style, color="#D55E00", label=f"{label} ({value:.2f})")
    ax.set_xticks(range(len(arms)), arms)
    _style(ax, title="DollyEval ROUGE-L by arm", xlabel="arm", ylabel="ROUGE-L")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=LEGEND_PT, loc="lower right")
    return fig
