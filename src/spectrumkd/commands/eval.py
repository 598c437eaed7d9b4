"""``spectrumkd eval``: generate and score with the paper's protocols; write DIR/results.json.

``spectrumkd eval --model PATH [--gguf-file F] [--suite instruct|math|code] [--sets a,b]
[--data FILE] [--completions FILE] [--seeds 10,20,30,40,50] [--limit N] [--batch-size N]
[--max-new-tokens N] --out DIR`` writes ``DIR/generations/{set}/...jsonl`` and
``DIR/results.json`` (see :mod:`spectrumkd.evaluate.results`). ``--completions`` scores a file of
``{"task_id"|"id", "completion"}`` instead of generating (HumanEval's samples format for code).
Interrupted runs resume: finished set/seed files are skipped, partial ones continue.
torch is imported only when a model is loaded.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HELP = "Evaluate a model (or a completions file): ROUGE-L, math pass@1, sandboxed code pass@1."


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("no seeds given")
    return seeds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="hub id, folder, .gguf file or tiny-random:llama")
    p.add_argument("--gguf-file", help="GGUF file name inside the --model folder")
    p.add_argument("--suite", default="instruct", choices=["instruct", "math", "code"],
                   help="instruct (ROUGE-L, default), math (GSM8K/MATH) or code (HumanEval/MBPP)")
    p.add_argument("--sets", help="comma-separated sets (instruct: dolly,self-inst,vicuna,sinst,"
                   "unni; math: gsm8k,math; code: humaneval,mbpp); default: the suite's sets")
    p.add_argument("--data", help="local data file for the (single) set instead of the lookup")
    p.add_argument("--data-root", help="folder holding {set}/valid.jsonl etc. (default: "
                   "$SPECTRUMKD_DATA, ./data, ../shared/data, then the hub)")
    p.add_argument("--completions", help="JSON Lines of {task_id|id, completion}: score these "
                   "instead of generating (no --model needed)")
    p.add_argument("--seeds", type=_seeds, default=[10, 20, 30, 40, 50],
                   help="sampling seeds of the instruct suite (default 10,20,30,40,50)")
    p.add_argument("--limit", type=int, help="evaluate only the first N examples of each set")
    p.add_argument("--batch-size", type=int, default=8, help="generation batch size (default 8)")
    p.add_argument("--max-new-tokens", type=int, help="cap on new tokens (default: instruct "
                   "512 minus the prompt, math/code 1024)")
    p.add_argument("--shots", type=int, help="math few-shot examples (default 8 GSM8K, 4 MATH)")
    p.add_argument("--timeout", type=float, default=10.0, help="code: seconds per program")
    p.add_argument("--memory-mb", type=int, default=1024, help="code: address-space limit (MiB)")
    p.add_argument("--workers", type=int, default=2, help="code: programs run in parallel")
    p.add_argument("--allow-unsandboxed", action="store_true",
                   help="code: run model-written programs without OS isolation when bubblewrap "
                   "is missing (at your own risk; the default refuses)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--dtype", help="float32 (default on CPU), bfloat16, float16")
    p.add_argument("--out", required=True, help="output directory")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _model_seed_batches(model, tokenizer, settings, batch_size: int):
    from spectrumkd.evaluate import suites

    def make(seed, prompts):
        return suites.model_batches(model, tokenizer, prompts, settings=settings, seed=seed,
                                    batch_size=batch_size)

    return make


def _list_seed_batches(texts: list[str], batch_size: int):
    from spectrumkd.evaluate import suites

    def make(seed, prompts):
        return suites.list_batches(texts, batch_size)

    return make


def run(args: argparse.Namespace) -> int:
    from spectrumkd import SpectrumKDError
    from spectrumkd.evaluate import code as code_eval
    from spectrumkd.evaluate import suites
    from spectrumkd.evaluate.results import finish_results, new_results, write_results
    from spectrumkd.evaluate.sets import file_fingerprint, load_set, parse_set_names

    if (args.model is None) == (args.completions is None):
        raise SpectrumKDError("give either --model (generate) or --completions (score a file)")
    if args.limit is not None and args.limit < 1:
        raise SpectrumKDError(f"--limit must be >= 1, got {args.limit}")
    names = parse_set_names(args.sets, args.suite)
    if (args.data or args.completions) and len(names) != 1:
        raise SpectrumKDError("--data and --completions need exactly one set (use --sets NAME)")
    if args.suite == "code":  # before anything is written or loaded
        isolation = code_eval.check_isolation(allow_unsandboxed=args.allow_unsandboxed)
        if isolation == "none":
            _log("warning: bubblewrap is unavailable; running programs WITHOUT OS isolation "
                 "(--allow-unsandboxed)")
        limits = code_eval.SandboxLimits(timeout=args.timeout, memory_bytes=args.memory_mb << 20,
                                         isolation=isolation)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    model = tokenizer = None
    settings = None
    if args.model is not None:
        from spectrumkd.evaluate.generation import GREEDY, INSTRUCT
        from spectrumkd.models import load_model, load_tokenizer, model_fingerprint

        _log(f"loading {args.model} ...")
        model = load_model(args.model, gguf_file=args.gguf_file, dtype=args.dtype,
                           device=args.device)
        tokenizer = load_tokenizer(args.model, gguf_file=args.gguf_file)
        fingerprint = model_fingerprint(model)
        model_name = args.model + (f"#{args.gguf_file}" if args.gguf_file else "")
        if args.suite == "instruct":
            settings = INSTRUCT.with_(max_new_tokens=args.max_new_tokens)
        else:
            from spectrumkd.evaluate.math import STOP_STRINGS

            settings = GREEDY.with_(max_new_tokens=args.max_new_tokens)
            if args.suite == "math":
                settings = settings.with_(stop_strings=STOP_STRINGS)
    else:
        fingerprint = file_fingerprint(args.completions)
        model_name = f"completions:{args.completions}"

    run_settings = {
        "decoding": settings.to_dict() if settings else None,
        "seeds": args.seeds if args.suite == "instruct" and model is not None else None,
        "batch_size": args.batch_size,
        "limit": args.limit,
        "shots": args.shots,
    }
    if args.suite == "code":
        run_settings["sandbox"] = {"timeout": limits.timeout, "memory_bytes": limits.memory_bytes,
                                   "network_namespace": isolation == "bwrap",
                                   "isolation": isolation}
    header_base = {"suite": args.suite, "model_fingerprint": fingerprint,
                   "settings": {k: run_settings[k] for k in ("decoding", "shots")}}
    results = new_results(suite=args.suite, model=model_name, model_fingerprint=fingerprint,
                          settings=run_settings)

    for name in names:
        eval_set = load_set(name, args.suite, data=args.data, data_root=args.data_root,
                            limit=args.limit)
        _log(f"{name}: {len(eval_set.items)} examples from {eval_set.source}")
        if args.suite == "instruct":
            if model is not None:
                from spectrumkd.evaluate.generation import encode_prompts

                batches_for_seed = _model_seed_batches(model, tokenizer, settings, args.batch_size)
                seeds = args.seeds
                _, n_cut = encode_prompts(tokenizer, [i.prompt for i in eval_set.items],
                                          max_prompt_length=settings.max_prompt_length)
            else:
                texts = [t[0] for t in suites.read_completions(args.completions, eval_set.items)]
                batches_for_seed = _list_seed_batches(texts, args.batch_size)
                seeds, n_cut = ["completions"], 0
            entry = suites.run_instruct(eval_set, out_dir=out, seeds=seeds,
                                        header_base=header_base,
                                        batches_for_seed=batches_for_seed, log=_log)
            entry["truncated_prompts"] = n_cut
        elif args.suite == "math":
            if model is not None:
                prompts = suites.math_prompts(eval_set, shots=args.shots)
                batches = suites.model_batches(model, tokenizer, prompts, settings=settings,
                                               seed=0, batch_size=args.batch_size)
                tag = "greedy"
            else:
                texts = [t[0] for t in suites.read_completions(args.completions, eval_set.items)]
                batches, tag = suites.list_batches(texts, args.batch_size), "completions"
            entry = suites.run_math(eval_set, out_dir=out, header_base=header_base,
                                    batches=batches, tag=tag, log=_log)
        else:
            if model is not None:
                batches = suites.model_batches(model, tokenizer, suites.code_prompts(eval_set),
                                               settings=settings, seed=0,
                                               batch_size=args.batch_size)
                entry = suites.run_code_model(eval_set, out_dir=out, header_base=header_base,
                                              batches=batches, limits=limits,
                                              workers=args.workers, log=_log)
            else:
                samples = suites.read_completions(args.completions, eval_set.items,
                                                  allow_many=True)
                entry = suites.run_code_samples(eval_set, samples, out_dir=out,
                                                header_base=header_base, limits=limits,
                                                workers=args.workers, log=_log)
        results["sets"][name] = entry
        write_results(out / "results.json", finish_results(results))  # progress survives
        metric = entry["metric"]
        extra = f" ± {entry['std']:.2f}" if "std" in entry else ""
        print(f"{name}: {metric} {entry[metric]:.2f}{extra} (n={entry['n']})", flush=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    write_results(out / "results.json", finish_results(results))
    if len(names) > 1:
        print(f"average: {results['average']:.2f}")
    print(f"wrote {out / 'results.json'}")
    return 0
