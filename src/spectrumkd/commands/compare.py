"""``spectrumkd compare RUN_A RUN_B ...``: a Table-1-like comparison with Wilcoxon p-values.

Prints a Markdown table (per set, average, relative gain over the first run, Wilcoxon p-value of
per-example scores against the first run) and writes it to ``--out`` (default ``compare.md``)
plus the table data as JSON beside it. Runs evaluated on different data (``data_fingerprint``),
with no example id in common, or with a NaN metric are refused with a one-line error and exit
status 2; nothing is printed as "nan". A set that the runs evaluated with different ``--limit``s
is compared on the ids all runs have, with a note under the table. Never imports torch.
"""

from __future__ import annotations

import argparse

HELP = "Compare evaluation runs: per-set scores, average, relative gain, Wilcoxon p-value."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run directories (with eval/results.json), eval directories or "
                   "results.json files; the first is the baseline")
    p.add_argument("--out", default="compare.md",
                   help="Markdown file to write (and .json beside it; default compare.md)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from spectrumkd import SpectrumKDError
    from spectrumkd.evaluate.compare import compare_runs, render_markdown, write_comparison

    if Path(args.out).is_dir():
        raise SpectrumKDError(f"--out {args.out}: is a directory; name the Markdown file, e.g. "
                              f"{Path(args.out) / 'compare.md'}")
    table = compare_runs(args.runs)
    print(render_markdown(table), end="")
    markdown, data = write_comparison(table, args.out)
    print(f"wrote {markdown} and {data}")
    return 0
