"""Run reports: ``report.md`` with matplotlib figures and the results table (docs/design.md §7).

- :mod:`~spectrumkd.report.rundir` reads a run directory into :class:`RunData`;
- :mod:`~spectrumkd.report.figures` draws figures from plain data (pure; matplotlib imported
  inside the functions, Agg canvas, no ``pyplot``);
- :mod:`~spectrumkd.report.build` assembles the sections, saves the PNGs and writes report.md.

Typical use::

    from spectrumkd.report import write_report
    write_report(["runs/demo/spectrumkd", "runs/demo/full"])   # → runs/demo/spectrumkd/report/report.md
"""

from spectrumkd.report.build import write_report
from spectrumkd.report.rundir import RunData, load_run, load_runs, read_metrics

__all__ = ["RunData", "load_run", "load_runs", "read_metrics", "write_report"]
