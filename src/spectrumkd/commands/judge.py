"""``spectrumkd judge``: winning rate of one eval run's answers over another's, by an LLM judge.

``spectrumkd judge --candidate DIR_A --baseline DIR_B [--sets dolly,...] [--seed 10]
[--base-url URL] [--model NAME] [--api-key-env VAR] [--temperature 0.7] [--limit N] [--out DIR]``
pairs the answers of two ``spectrumkd eval`` folders (or run folders with ``eval/``) by example
id, asks the judge (the paper's Figure 6 prompt, an OpenAI-compatible ``/chat/completions``
endpoint) in both orders, counts ties half, and writes ``DIR/judge.json``,
``DIR/judge_verdicts.jsonl`` and the verdict cache ``DIR/judge_cache.jsonl`` (``DIR`` defaults to
the candidate's eval folder, where ``spectrumkd compare`` finds it). A rerun, or a run after a
failure, asks only for the verdicts not yet cached. Endpoint, model and key come from the flags
or ``SPECTRUMKD_JUDGE_BASE_URL``, ``SPECTRUMKD_JUDGE_MODEL``, ``SPECTRUMKD_JUDGE_API_KEY`` (or
``OPENAI_API_KEY``). See :mod:`spectrumkd.evaluate.judge_runs`. Never imports torch.
"""

from __future__ import annotations

import argparse

from spectrumkd.commands.options import positive_seconds

HELP = "LLM-as-a-judge winning rate of one eval run over a baseline run (both orders, ties half)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--candidate", required=True, metavar="DIR",
                   help="eval output folder (or run folder with eval/) of the model judged")
    p.add_argument("--baseline", required=True, metavar="DIR",
                   help="eval output folder of the baseline (the paper: the teacher)")
    p.add_argument("--sets", help="comma-separated sets (default: every set both runs have)")
    p.add_argument("--seed", type=int, default=10,
                   help="which seed's generations to judge (default 10; a set with a single "
                   "greedy/completions file uses that file)")
    p.add_argument("--base-url", help="judge endpoint such as https://api.deepseek.com/v1 "
                   "(default $SPECTRUMKD_JUDGE_BASE_URL)")
    p.add_argument("--model", help="judge model name (default $SPECTRUMKD_JUDGE_MODEL)")
    p.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API "
                   "key (default $SPECTRUMKD_JUDGE_API_KEY, then $OPENAI_API_KEY)")
    p.add_argument("--temperature", type=float, help="judge sampling temperature (default 0.7)")
    p.add_argument("--max-tokens", type=int, help="cap on the judgment's tokens (default 1024)")
    p.add_argument("--limit", type=int, help="judge only the first N examples of each set")
    p.add_argument("--retries", type=int, help="retries per verdict after a failure (default 5)")
    p.add_argument("--backoff", type=float,
                   help="seconds before the first retry, doubling each time (default 2)")
    p.add_argument("--timeout", type=positive_seconds, help="seconds per HTTP request (default 120)")
    p.add_argument("--data", help="the evaluation file both runs answered, when its recorded "
                   "path has moved (one set)")
    p.add_argument("--data-root", help="folder holding {set}/valid.jsonl etc.")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: the candidate's eval folder)")


def run(args: argparse.Namespace) -> int:
    import os

    from spectrumkd import SpectrumKDError
    from spectrumkd.evaluate.judge import JudgeConfig
    from spectrumkd.evaluate.judge_runs import run_judge

    if args.limit is not None and args.limit < 1:
        raise SpectrumKDError(f"--limit must be >= 1, got {args.limit}")
    if args.retries is not None and args.retries < 0:
        raise SpectrumKDError(f"--retries must be >= 0, got {args.retries}")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise SpectrumKDError(f"--api-key-env: environment variable {args.api_key_env} "
                                  "is not set")
    config = JudgeConfig.from_env(
        base_url=args.base_url, model=args.model, api_key=api_key,
        temperature=args.temperature, max_tokens=args.max_tokens, timeout=args.timeout,
        max_retries=args.retries, backoff=args.backoff,
    )
    sets = [s for s in args.sets.split(",") if s.strip()] if args.sets else None
    run_judge(args.candidate, args.baseline, config, sets=sets, seed=args.seed, limit=args.limit,
              data=args.data, data_root=args.data_root, out=args.out)
    return 0
