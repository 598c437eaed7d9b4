from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from spectrumkd.report.figures import (
    curriculum_figure,
    difficulty_figure,
    heldout_figure,
    lognormal_pdf,
    smooth,
    spectrum_figure,
    training_figure,
    zone_boundaries,
    zone_runs,
)

LABEL = "difficulty: mean token cross-entropy (nats/token)"


def texts(fig: Figure) -> list[Text]:
    fig.canvas.draw()  # create tick labels, legends and layout as a saved PNG would
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def assert_readable(fig: Figure) -> None:
    """Every visible text at least 10 pt; every axes with a title and both axis labels."""
    small = [(t.get_text(), t.get_fontsize()) for t in texts(fig) if t.get_fontsize() < 10]
    assert not small, f"texts under 10 pt: {small[:5]}"
    for ax in fig.axes:
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()


def test_lognormal_pdf_integrates_to_one_and_matches_scipy():
    from scipy import stats

    x = np.linspace(1e-6, 60, 200_001)
    pdf = lognormal_pdf(x, 0.9, 0.35)
    assert np.trapezoid(pdf, x) == pytest.approx(1.0, abs=1e-4)
    ref = stats.lognorm.pdf(x[1:50], s=0.35, scale=np.exp(0.9))
    np.testing.assert_allclose(pdf[1:50], ref, rtol=1e-10)
    assert lognormal_pdf(np.array([-1.0, 0.0]), 0.0, 1.0).tolist() == [0.0, 0.0]


def test_zone_runs_and_boundaries():
    labels = ["early"] * 2 + ["continuous"] * 5 + ["late"] * 2 + ["excluded"]
    scores = np.arange(1.0, 11.0)
    assert zone_runs(labels) == [("early", 0, 2), ("continuous", 2, 7), ("late", 7, 9),
                                 ("excluded", 9, 10)]  # fmt: skip
    assert zone_boundaries(scores, labels) == {
        "early|continuous": 2.5, "continuous|late": 7.5, "late|excluded": 9.5,
    }  # fmt: skip
    # A static baseline excludes both ends: two boundaries of the same kind, both kept.
    both = ["excluded", "continuous", "continuous", "excluded"]
    assert zone_boundaries(np.arange(4.0), both) == {
        "excluded|continuous": 0.5, "continuous|excluded": 2.5,
    }  # fmt: skip


def test_smooth_is_a_trailing_mean():
    assert smooth([1.0, 2.0, 3.0], 1).tolist() == [1.0, 2.0, 3.0]
    assert smooth([3.0, 3.0, 6.0, 0.0], 3).tolist() == [3.0, 3.0, 4.0, 3.0]


def test_difficulty_figure_draws_fit_and_boundaries():
    rng = np.random.default_rng(0)
    scores = np.sort(rng.lognormal(0.9, 0.35, 500))
    fig = difficulty_figure(scores, score_label=LABEL, fit=(0.9, 0.35), fit_note="KS = 0.01",
                            boundaries={"early|continuous": 1.6, "late|excluded": 3.9})
    (ax,) = fig.axes
    assert ax.get_xlabel() == LABEL and "examples" in ax.get_ylabel()
    vlines = [line for line in ax.get_lines() if len(set(line.get_xdata())) == 1]
    assert sorted(line.get_xdata()[0] for line in vlines) == [1.6, 3.9]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("log-normal" in t and "KS = 0.01" in t for t in legend)
    assert any("N = 500" in t for t in legend)
    # The density curve is scaled to counts: its area equals N (within the histogram's range).
    curve = next(line for line in ax.get_lines() if len(line.get_xdata()) == 400)
    area = np.trapezoid(curve.get_ydata(), curve.get_xdata()) / (
        (scores.max() - scores.min()) / len(ax.patches))
    assert area == pytest.approx(500, rel=0.05)
    assert_readable(fig)


def test_spectrum_figure_colours_each_zone():
    scores = np.sort(np.random.default_rng(1).lognormal(size=100))
    labels = ["early"] * 10 + ["continuous"] * 70 + ["late"] * 10 + ["excluded"] * 10
    fig = spectrum_figure(scores, labels, score_label=LABEL)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["Early learning: 10 (10%)", "Continuous learning: 70 (70%)",
                      "Late learning: 10 (10%)", "Excluded (no learning): 10 (10%)"]  # fmt: skip
    assert_readable(fig)
    assert fig.axes[0].get_ylim()[0] == 0.0  # a wide spectrum is drawn from 0, as in Figure 3b
    with pytest.raises(ValueError, match="99 zone labels for 100 scores"):
        spectrum_figure(scores, labels[:-1], score_label=LABEL)


def test_spectrum_figure_zooms_on_a_narrow_band_far_from_zero():
    # An untrained random student: every score within 0.1 nats of 7.35.
    scores = np.linspace(7.30, 7.40, 40)
    fig = spectrum_figure(scores, ["continuous"] * 40, score_label=LABEL)
    lo, hi = fig.axes[0].get_ylim()
    assert 7.29 < lo < 7.30 and 7.40 < hi < 7.41
    assert "does not start at 0" in fig.axes[0].get_title()
    assert_readable(fig)


def test_curriculum_figure_overlays_runs():
    def epochs(n, starts):
        return [{"epoch": j + 1, "start": s, "size": 80, "total_difficulty": 100.0 + s,
                 "temperature": 1 + j / (n - 1)} for j, s in enumerate(starts)]  # fmt: skip

    fig = curriculum_figure({"spectrumkd": epochs(4, [0, 0, 5, 10]), "full": epochs(3, [0, 0, 0])},
                            difficulty_label="sum of scores (nats)", warmup={"spectrumkd": 1})
    assert len(fig.axes) == 4
    start_ax = fig.axes[0]
    assert [list(line.get_ydata()) for line in start_ax.get_lines()] == [[0, 0, 5, 10], [0, 0, 0]]
    assert [t.get_text() for t in fig.legends[0].get_texts()][:2] == ["spectrumkd", "full"]
    assert "warm-up k = 1" in fig.legends[0].get_texts()[2].get_text()
    assert_readable(fig)


def test_training_figure_overlays_runs_and_tolerates_missing_fields():
    steps = [{"step": i, "ce": 3.0 - i / 50, "kd": 1.0 - i / 100} for i in range(1, 51)]
    epochs = [{"epoch": e, "val_loss": 2.0 - e / 10, "val_rougeL": 10.0 + e} for e in (1, 2, 3)]
    sft = [{"step": i, "loss": 3.0 - i / 60} for i in range(1, 41)]  # no ce/kd parts, no epochs
    fig = training_figure({"kd": (steps, epochs), "sft": (sft, [])}, smoothing=5)
    ce_ax, kd_ax, val_ax, rouge_ax = fig.axes
    assert [t.get_text() for t in ce_ax.get_legend().get_texts()] == ["kd", "sft (total loss)"]
    assert [t.get_text() for t in kd_ax.get_legend().get_texts()] == ["kd"]
    assert [t.get_text() for t in rouge_ax.get_legend().get_texts()] == ["kd"]
    assert list(rouge_ax.get_lines()[0].get_ydata()) == [11.0, 12.0, 13.0]
    assert "5-step mean" in ce_ax.get_title()
    assert_readable(fig)


def test_training_figure_says_when_nothing_was_logged():
    fig = training_figure({"run": ([{"step": 1, "ce": 2.0}], [])})
    messages = [t.get_text() for t in texts(fig)]
    assert "no kd logged" in messages and "no val_rougeL logged" in messages


def test_heldout_figure_draws_ce_and_kl_per_run():
    curve = [{"kind": "curve", "step": s, "heldout_ce": 5 - s / 10, "heldout_kl": 1 - s / 20}
             for s in (0, 3, 6)]
    no_teacher = [{k: v for k, v in row.items() if k != "heldout_kl"} for row in curve]
    fig = heldout_figure({"full": curve, "spectrumkd": curve, "sft": no_teacher})
    assert_readable(fig)
    ce, kl = fig.axes
    assert len(ce.get_lines()) == 3 and len(kl.get_lines()) == 2  # no KL without the teacher
    assert list(kl.get_lines()[0].get_ydata()) == [1.0, 0.85, 0.7]
    empty = heldout_figure({"sft": no_teacher})
    assert any("no heldout_kl logged" in t.get_text() for t in texts(empty))
