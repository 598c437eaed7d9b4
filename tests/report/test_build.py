from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.report import write_report
from spectrumkd.report.build import score_label

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def linked_images(report: Path) -> list[str]:
    return re.findall(r"!\[[^\]]+\]\(([^)]+)\)", report.read_text(encoding="utf-8"))


def test_report_of_two_runs_links_every_figure(two_runs):
    path = write_report(list(two_runs))
    assert path == two_runs[0] / "report" / "report.md"
    links = linked_images(path)
    pngs = sorted(p.name for p in path.parent.glob("*.png"))
    assert sorted(links) == pngs
    # Same scores in both runs: one difficulty/spectrum pair, zoned by the SpectrumKD plan.
    assert pngs == ["curriculum.png", "difficulty.png", "spectrum.png", "training.png"]
    for name in pngs:
        assert (path.parent / name).read_bytes()[:8] == PNG_MAGIC
    text = path.read_text(encoding="utf-8")
    assert "| `spectrumkd` | spectrumkd | 6 | 1 | 320 of 400 |" in text
    assert "| `full` | full | 5 | 0 | 400 of 400 |" in text
    assert "Zones: early 40, continuous 280, late 40, excluded 40." in text
    assert re.search(r"KS statistic = 0\.0\d+", text)
    assert "| `spectrumkd` | 30 | 6 | 1.9000 | 18.00 (6) |" in text


def test_runs_with_different_scores_get_their_own_spectrum(tmp_path: Path, make_run):
    a = make_run(tmp_path / "a", seed=0)
    b = make_run(tmp_path / "b", seed=1)
    path = write_report([a, b], tmp_path / "out")
    assert path == tmp_path / "out" / "report.md"
    assert {"difficulty-a.png", "difficulty-b.png", "spectrum-a.png", "spectrum-b.png"} <= set(
        linked_images(path)
    )


def test_control_arms_are_drawn_like_the_others(tmp_path: Path, make_run):
    runs = [make_run(tmp_path / k, k, epochs=6, warmup=1)
            for k in ("spectrumkd", "random-window", "curated-shuffle")]
    path = write_report(runs, tmp_path / "out")
    assert "curriculum.png" in linked_images(path)
    text = path.read_text(encoding="utf-8")
    # same window size (320 of 400) and τ as SpectrumKD; kind and warm-up from each plan
    assert "| `random-window` | random-window | 6 | 1 | 320 of 400 | 1,920 | 1 → 2 |" in text
    assert "| `curated-shuffle` | curated-shuffle | 6 | 0 | 320 of 400 | 1,920 | 1 → 2 |" in text


def test_a_training_only_run_gets_training_curves_only(tmp_path: Path):
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"kind": "step", "step": i, "loss": 3.0 / i}) + "\n" for i in range(1, 9))
    )
    path = write_report([tmp_path])
    assert linked_images(path) == ["training.png"]
    assert "## Curriculum" not in path.read_text()


def test_plan_of_other_examples_is_an_error_naming_both_files(tmp_path: Path, make_run):
    run = make_run(tmp_path / "run", n=50)
    other = make_run(tmp_path / "other", n=60)
    (run / "plan.json").write_text((other / "plan.json").read_text())
    with pytest.raises(SpectrumKDError, match=r"plan\.json does not match .*scores\.jsonl"):
        write_report([run])


def test_non_positive_scores_skip_the_fit_and_say_so(tmp_path: Path):
    (tmp_path / "scores.jsonl").write_text(
        '{"spectrumkd": "scores", "metric": "rougel"}\n'
        + "".join(json.dumps({"id": i, "score": i / 10}) + "\n" for i in range(10))
    )
    path = write_report([tmp_path])
    assert "No log-normal fit" in path.read_text()
    assert linked_images(path) == ["difficulty.png"]


def test_score_labels_carry_units():
    assert score_label({"metric": "ce", "reduction": "sum"}).endswith("(nats/example)")
    assert score_label({"metric": "length"}).endswith("(tokens)")
    assert score_label({"metric": "new-metric"}) == "difficulty: new-metric"


def test_cli_round_trip(two_runs, tmp_path: Path):
    out = tmp_path / "report-out"
    proc = subprocess.run(
        [sys.executable, "-m", "spectrumkd.cli", "report", *map(str, two_runs), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"report: {out / 'report.md'}"
    assert sorted(linked_images(out / "report.md")) == sorted(p.name for p in out.glob("*.png"))
    assert len(linked_images(out / "report.md")) == 4


def test_cli_on_an_empty_directory_fails_naming_it(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "spectrumkd.cli", "report", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert str(tmp_path) in proc.stderr and "nothing to report" in proc.stderr
    assert not (tmp_path / "report").exists()


def test_results_table_follows_the_paper_layout(two_evaluated_runs):
    from spectrumkd.evaluate.compare import compare_runs

    path = write_report(list(two_evaluated_runs))
    text = path.read_text(encoding="utf-8")
    section = text.split("## Results", 1)[1]
    assert "| Run | DollyEval (rougeL) | Avg. | P. Gains (%) | p (Wilcoxon) |" in section
    expected = compare_runs(list(two_evaluated_runs))
    gain = expected.gain["spectrumkd"]
    assert gain is not None and gain > 0
    assert f"| {gain:.2f} |" in section
    assert "| full |" in section and "baseline" in section
    # The table comes after the figures' sections and nothing links a missing file.
    assert text.index("## Training") < text.index("## Results")
    for link in linked_images(path):
        assert (path.parent / link).is_file()
