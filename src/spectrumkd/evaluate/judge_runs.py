"""Judge two ``spectrumkd eval`` runs against each other: pair answers by id, write ``judge.json``.

:func:`pair_runs` reads the candidate's and the baseline's eval folders (``results.json`` and the
per-set generations files, see :mod:`spectrumkd.evaluate.results`), picks one file per set (the
``--seed`` file ``generations/{set}/seed{S}.jsonl``, or the set's only file when there is a single
one, as for ``greedy``/``completions`` runs), pairs the answers by example id and looks the
questions up in the evaluation set both runs answered (their ``data_fingerprint`` must agree).
Ids present in one run and not the other are an error naming them, never silently dropped.

:func:`judge_pairs` asks a :class:`~spectrumkd.evaluate.judge.JudgeClient` for each pair in both
orders (the client caches every verdict on disk as it arrives) and computes each set's winning
rate with :func:`~spectrumkd.evaluate.judge.winning_rate` (ties count half). :func:`write_judge`
writes ``judge.json``::

    {"spectrumkd": "judge", "protocol": {"name": "spectrumkd-judge/1", "prompt": "figure6-pairwise",
     "prompt_sha256": "...", "both_orders": true, "tie_score": 0.5, "temperature": 0.7},
     "judge": {"model": "...", "base_url": "...", "max_tokens": 1024},
     "candidate": {"path", "model", "model_fingerprint"}, "baseline": {...}, "seed": 10,
     "sets": {"dolly": {"winning_rate": 53.2, "wins": 9, "ties": 3, "losses": 8, "n": 10,
                        "verdicts": 20, "candidate_file", "baseline_file", "data_fingerprint"}},
     "average": 53.2, "verdicts_file": "judge_verdicts.jsonl", "requests": 20}

and ``judge_verdicts.jsonl``: one ``{"set", "id", "candidate_first", "baseline_first", "score"}``
per example (``candidate_first`` is the verdict with the candidate as assistant A; ``score`` is
the candidate's mean over both orders, 0–100), with the judge's texts.

Not here: the HTTP client, prompt and arithmetic (``judge.py``); the command line
(``commands/judge.py``). Reference: the paper's §C.4 (students judged against the teacher).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from spectrumkd import SpectrumKDError, __version__
from spectrumkd.evaluate.judge import (
    JUDGE_SYSTEM,
    JUDGE_USER,
    JudgeClient,
    WinRate,
    judge_messages,
    winning_rate,
)
from spectrumkd.evaluate.results import read_results, read_rows_only
from spectrumkd.evaluate.sets import (
    LOCAL_FILES,
    EvalSet,
    canonical_name,
    default_data_roots,
    load_set,
)
from spectrumkd.fileio import atomic_write_text, read_json
from spectrumkd.rundir import find_results

JUDGE_PROTOCOL = "spectrumkd-judge/1"
JUDGE_FILE = "judge.json"
VERDICTS_FILE = "judge_verdicts.jsonl"
CACHE_FILE = "judge_cache.jsonl"


@dataclass(frozen=True)
class PairedSet:
    """One set's questions with the candidate's and the baseline's answers, in the same order."""

    name: str
    ids: list[str]
    questions: list[str]
    candidate: list[str]
    baseline: list[str]
    candidate_file: str
    baseline_file: str
    source: str
    data_fingerprint: str


def find_eval_dir(path: str | os.PathLike) -> Path:
    """The folder holding ``results.json`` (:func:`spectrumkd.rundir.find_results`)."""
    return find_results(path).parent


def pick_file(eval_dir: Path, results: dict, set_name: str, seed: int) -> Path:
    """The generations file of ``set_name`` to judge: ``seed{seed}.jsonl``, else the only one."""
    files = list(results["sets"][set_name].get("files", []))
    wanted = f"seed{seed}.jsonl"
    chosen = [f for f in files if Path(f).name == wanted]
    if not chosen and len(files) == 1:
        chosen = files  # a greedy / completions run has one file per set
    if not chosen:
        raise SpectrumKDError(
            f"{eval_dir}: set {set_name!r} has no {wanted} (files: {', '.join(files) or 'none'});"
            " choose another --seed"
        )
    file = eval_dir / chosen[0]
    if not file.is_file():
        raise SpectrumKDError(f"{eval_dir / 'results.json'}: generations file {chosen[0]} is missing")
    return file


def read_answers(path: Path) -> tuple[dict, dict[str, str]]:
    """(header, ``{id: prediction}`` in file order) of one generations file; one answer per id."""
    with open(path, encoding="utf-8") as handle:
        first = handle.readline()
    try:
        header = json.loads(first) if first.strip() else {}
    except json.JSONDecodeError as exc:
        raise SpectrumKDError(f"{path}:1: not valid JSON") from exc
    if header.get("spectrumkd") != "generations":
        raise SpectrumKDError(f"{path}: not a generations file (no header line)")
    answers: dict[str, str] = {}
    for row in read_rows_only(path):
        key = str(row.get("id"))
        if row.get("id") is None or not isinstance(row.get("prediction"), str):
            raise SpectrumKDError(f"{path}: a row lacks an 'id' or a 'prediction' string")
        if key in answers:
            raise SpectrumKDError(
                f"{path}: several answers for id {key!r}; the judge needs one per example "
                "(judge a greedy or a per-seed file)"
            )
        answers[key] = row["prediction"]
    return header, answers


def _id_list(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def pair_ids(
    candidate: dict[str, str], baseline: dict[str, str], *, where: str
) -> list[str]:
    """The ids of ``candidate`` (its order), which must be exactly those of ``baseline``.

    >>> pair_ids({"a": "1", "b": "2"}, {"b": "x", "a": "y"}, where="dolly")
    ['a', 'b']
    """
    only_c = [k for k in candidate if k not in baseline]
    only_b = [k for k in baseline if k not in candidate]
    if only_c or only_b:
        parts = []
        if only_c:
            parts.append(f"only the candidate has {_id_list(only_c)}")
        if only_b:
            parts.append(f"only the baseline has {_id_list(only_b)}")
        raise SpectrumKDError(
            f"{where}: the runs answered different examples: " + "; ".join(parts)
            + " (evaluate both with the same --limit and data)"
        )
    return list(candidate)


def _local_source(source: str | None) -> Path | None:
    if not source or "://" in source:
        return None
    path = Path(source)
    return path if path.is_file() else None


def load_questions(
    set_name: str, suite: str, *, fingerprint: str, sources: Sequence[str | None],
    limit: int | None, data: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
) -> EvalSet:
    """The evaluation set whose fingerprint is ``fingerprint``.

    Tried in order: ``data`` alone if given; else the runs' recorded source files, then
    ``{root}/{set}/...`` under each data root; the hub only when a run recorded a hub source.
    """
    if data is not None:
        candidates: list[str | os.PathLike | None] = [data]
    else:
        local = [p for p in map(_local_source, sources) if p is not None]
        local += [root / LOCAL_FILES[set_name] for root in default_data_roots(data_root)
                  if (root / LOCAL_FILES[set_name]).is_file()]
        candidates = list(dict.fromkeys(local))
        if any(s and "://" in s for s in sources):
            candidates.append(None)  # a hub set: load_set downloads it
    tried: list[str] = []
    for source in candidates:
        eval_set = load_set(set_name, suite, data=source, data_root=data_root, limit=limit)
        if eval_set.fingerprint == fingerprint:
            return eval_set
        tried.append(f"{eval_set.source} ({eval_set.fingerprint[:20]}...)")
    raise SpectrumKDError(
        f"set {set_name!r}: no copy of the evaluated data (fingerprint {fingerprint[:20]}...) "
        f"found; tried {', '.join(tried) or 'nothing'} (recorded: "
        f"{', '.join(dict.fromkeys(str(s) for s in sources))}); pass --data FILE with the file "
        "both runs evaluated"
    )


def pair_runs(
    candidate_dir: str | os.PathLike,
    baseline_dir: str | os.PathLike,
    *,
    sets: Sequence[str] | None = None,
    seed: int = 10,
    limit: int | None = None,
    data: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[dict, dict, list[PairedSet]]:
    """(candidate results, baseline results, paired sets) of two eval folders (module docstring).

    ``sets`` defaults to the sets both runs have; ``limit`` keeps the first N paired examples.
    """
    dirs = [find_eval_dir(candidate_dir), find_eval_dir(baseline_dir)]
    loaded = [read_results(d / "results.json") for d in dirs]
    have = [list(r["sets"]) for r in loaded]
    if sets is None:
        names = [s for s in have[0] if s in have[1]]
        skipped = [s for s in have[0] + have[1] if s not in names]
        if skipped and log:
            log(f"skipping sets only one run has: {', '.join(dict.fromkeys(skipped))}")
        if not names:
            raise SpectrumKDError(
                f"the runs share no set: candidate has {have[0] or 'none'}, baseline has "
                f"{have[1] or 'none'}"
            )
    else:
        names = [canonical_name(s) for s in sets]
        for role, d, h in zip(("candidate", "baseline"), dirs, have):
            missing = [s for s in names if s not in h]
            if missing:
                raise SpectrumKDError(
                    f"{role} {d}: no results for {', '.join(missing)} (it has {', '.join(h)})"
                )
    if data is not None and len(names) != 1:
        raise SpectrumKDError("--data needs exactly one set (use --sets NAME)")
    paired = []
    for name in names:
        files = [pick_file(d, r, name, seed) for d, r in zip(dirs, loaded)]
        (c_head, c_ans), (b_head, b_ans) = (read_answers(f) for f in files)
        fps = (c_head.get("data_fingerprint"), b_head.get("data_fingerprint"))
        if fps[0] != fps[1] or not fps[0]:
            raise SpectrumKDError(
                f"set {name!r}: the runs answered different questions (data fingerprints "
                f"{fps[0]} in {files[0]} and {fps[1]} in {files[1]})"
            )
        ids = pair_ids(c_ans, b_ans, where=f"set {name!r} ({files[0]} vs {files[1]})")
        if limit is not None:
            ids = ids[:limit]
        suite = c_head.get("suite") or loaded[0].get("suite") or "instruct"
        eval_limit = loaded[0].get("settings", {}).get("limit")
        eval_set = load_questions(
            name, suite, fingerprint=fps[0], data=data, data_root=data_root, limit=eval_limit,
            sources=[r["sets"][name].get("source") for r in loaded],
        )
        items = {item.id: item for item in eval_set.items}
        unknown = [k for k in ids if k not in items]
        if unknown:
            raise SpectrumKDError(
                f"set {name!r}: {eval_set.source} has no example {_id_list(unknown)}"
            )
        questions = [items[k].extra.get("question") or items[k].prompt for k in ids]
        paired.append(PairedSet(
            name=name, ids=ids, questions=questions, candidate=[c_ans[k] for k in ids],
            baseline=[b_ans[k] for k in ids], candidate_file=str(files[0]),
            baseline_file=str(files[1]), source=eval_set.source, data_fingerprint=fps[0],
        ))
    return loaded[0], loaded[1], paired


def judge_pairs(
    client: JudgeClient, paired: Sequence[PairedSet], *, log: Callable[[str], None] | None = None,
) -> tuple[dict[str, WinRate], list[dict]]:
    """Winning rate per set and per-example verdict rows; every verdict is cached as it comes.

    A failure after the client's retries raises :class:`SpectrumKDError` naming the set and id.
    """
    rates: dict[str, WinRate] = {}
    rows: list[dict] = []
    for pair in paired:
        for index, (key, q, ours, theirs) in enumerate(
            zip(pair.ids, pair.questions, pair.candidate, pair.baseline), start=1
        ):
            try:
                first = client.verdict(q, ours, theirs)
                second = client.verdict(q, theirs, ours)
            except SpectrumKDError as exc:
                raise SpectrumKDError(f"set {pair.name!r} example {key!r}: {exc}") from exc
            score = 50.0 * ({"A": 1.0, "B": 0.0, "C": 0.5}[first]
                            + {"A": 0.0, "B": 1.0, "C": 0.5}[second])
            texts = [client.redact(client.cache.get(client.cache_key(m))["judgment"])
                     for m in _messages(q, ours, theirs)]  # redacted again: an older cache
            rows.append({"set": pair.name, "id": key, "candidate_first": first,
                         "baseline_first": second, "score": score, "judgments": texts})
            if log and (index % 25 == 0 or index == len(pair.ids)):
                log(f"{pair.name}: {index}/{len(pair.ids)} judged ({client.requests} requests)")
        # every verdict is cached now: winning_rate sends no request and owns the arithmetic
        rates[pair.name] = winning_rate(client, pair.questions, pair.candidate, pair.baseline)
    return rates, rows


def _messages(question: str, ours: str, theirs: str) -> list[list[dict]]:
    return [judge_messages(question, ours, theirs), judge_messages(question, theirs, ours)]


def judge_report(
    client: JudgeClient, paired: Sequence[PairedSet], rates: dict[str, WinRate], *,
    candidate: tuple[Path, dict], baseline: tuple[Path, dict], seed: int, limit: int | None,
) -> dict:
    """The ``judge.json`` object (module docstring)."""
    prompt_hash = hashlib.sha256((JUDGE_SYSTEM + "\n" + JUDGE_USER).encode()).hexdigest()
    sets = {}
    for pair in paired:
        rate = rates[pair.name]
        sets[pair.name] = {
            "winning_rate": rate.rate, "wins": rate.wins, "ties": rate.ties,
            "losses": rate.losses, "n": len(pair.ids), "verdicts": rate.wins + rate.ties + rate.losses,
            "candidate_file": pair.candidate_file, "baseline_file": pair.baseline_file,
            "source": pair.source, "data_fingerprint": pair.data_fingerprint,
        }
    values = [entry["winning_rate"] for entry in sets.values()]

    def run_info(item: tuple[Path, dict]) -> dict:
        path, results = item
        return {"path": str(path), "model": results.get("model"),
                "model_fingerprint": results.get("model_fingerprint")}

    return {
        "spectrumkd": "judge",
        "protocol": {"name": JUDGE_PROTOCOL, "prompt": "figure6-pairwise",
                     "prompt_sha256": prompt_hash, "both_orders": True, "tie_score": 0.5,
                     "temperature": client.config.temperature},
        "spectrumkd_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "judge": {"model": client.config.model, "base_url": client.config.base_url,
                  "max_tokens": client.config.max_tokens},
        "candidate": run_info(candidate), "baseline": run_info(baseline),
        "seed": seed, "limit": limit, "sets": sets,
        "average": sum(values) / len(values) if values else None,
        "verdicts_file": VERDICTS_FILE, "requests": client.requests,
    }


def write_judge(out_dir: str | os.PathLike, report: dict, rows: list[dict]) -> Path:
    """Write ``judge_verdicts.jsonl`` then ``judge.json`` (each atomically); return the latter."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (
        (VERDICTS_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)),
        (JUDGE_FILE, json.dumps(report, indent=2, ensure_ascii=False) + "\n"),
    ):
        atomic_write_text(out_dir / name, text)
    return out_dir / JUDGE_FILE


def read_judge(path: str | os.PathLike) -> dict:
    """Read and check a ``judge.json`` (``sets`` with a ``winning_rate`` each)."""
    path = Path(path)
    report = read_json(path, what="judge file")
    if report.get("spectrumkd") != "judge":
        raise SpectrumKDError(f"{path}: not a spectrumkd judge file")
    for name, entry in report.get("sets", {}).items():
        if not isinstance(entry.get("winning_rate"), (int, float)):
            raise SpectrumKDError(f"{path}: set {name!r} has no winning_rate")
    return report


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_judge(candidate: str | os.PathLike, baseline: str | os.PathLike, config, *,
              sets: Sequence[str] | None = None, seed: int = 10, limit: int | None = None,
              data: str | None = None, data_root: str | None = None,
              out: str | os.PathLike | None = None) -> tuple[dict, Path]:
    """The ``spectrumkd judge`` pipeline: pair two eval runs, judge both orders, write judge.json.

    ``config`` is a :class:`~spectrumkd.evaluate.judge.JudgeConfig`; ``out`` defaults to the
    candidate's eval folder. Returns ``(report, path of judge.json)``. A rerun asks only for the
    verdicts not yet in the cache.
    """
    from spectrumkd.evaluate.judge import JudgeClient

    cand_results, base_results, paired = pair_runs(
        candidate, baseline, sets=sets, seed=seed, limit=limit, data=data, data_root=data_root,
        log=_log,
    )
    cand_dir, base_dir = find_eval_dir(candidate), find_eval_dir(baseline)
    out = Path(out) if out else cand_dir
    cache_path = out / CACHE_FILE
    client = JudgeClient(config, cache_path=cache_path)
    _log(f"judge {config.model} at {config.base_url}; {len(client.cache.entries)} cached "
         f"verdicts in {cache_path}")
    try:
        rates, rows = judge_pairs(client, paired, log=_log)
    except SpectrumKDError as exc:
        raise SpectrumKDError(f"{exc}; rerun the same command to continue from {cache_path}")\
            from exc
    report = judge_report(client, paired, rates, candidate=(cand_dir, cand_results),
                          baseline=(base_dir, base_results), seed=seed, limit=limit)
    path = write_judge(out, report, rows)
    for name, entry in report["sets"].items():
        print(f"{name}: WR {entry['winning_rate']:.2f} (wins {entry['wins']}, ties "
              f"{entry['ties']}, losses {entry['losses']}; n={entry['n']})", flush=True)
    if len(report["sets"]) > 1:
        print(f"average: WR {report['average']:.2f}")
    print(f"{client.requests} judge requests; wrote {path} and {out / VERDICTS_FILE}")
    return report, path
