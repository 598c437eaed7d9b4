"""Load instruction data from JSONL / JSON / Parquet files or the Hugging Face hub into Records.

What it does: reads rows, maps common field names (``instruction``/``question``/``problem``,
``input``/``context``, ``output``/``response``/``answer``/``solution``/``completion``,
``references``), and gives every row a stable id: the dataset's own ``id`` field if present, else
``"{file-stem}-{line}"`` (1-based line of a JSONL file, 1-based row of JSON/Parquet/hub data;
docs/design.md §3). Malformed rows raise :class:`SpectrumKDError` naming the file and line.

What it does not do: render templates or tokenize (see ``templates.py`` and ``tokenize.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spectrumkd import SpectrumKDError
from spectrumkd.fileio import read_json
from spectrumkd.jsonl import iter_lines

FIELD_CANDIDATES: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "question", "problem", "query"),  # query: MetaMathQA
    "input": ("input", "context"),
    "output": ("output", "response", "answer", "solution", "completion"),
    "references": ("references",),
}


@dataclass
class Record:
    """One row, with mapped fields. ``where`` is ``"file:line"`` for error messages.

    ``output`` is the training target (``None`` when absent); ``references`` the evaluation
    references (the output, or the row's list of references).
    """

    id: str | int
    instruction: str
    input: str = ""
    output: str | None = None
    references: list[str] = field(default_factory=list)
    where: str = ""
    raw: dict = field(default_factory=dict, repr=False)


def _pick(row: Mapping, names: Iterable[str]) -> tuple[str | None, Any]:
    for name in names:
        if name in row and row[name] is not None:
            return name, row[name]
    return None, None


def record_from_row(
    row: Mapping,
    *,
    default_id: str | int,
    where: str,
    fields: Mapping[str, str] | None = None,
    id_field: str = "id",
) -> Record:
    """Map one raw row to a :class:`Record`; ``fields`` overrides a mapping, e.g. ``{"instruction": "prompt"}``.

    >>> r = record_from_row({"question": "1+1?", "answer": "2"}, default_id="gsm-1", where="gsm.jsonl:1")
    >>> (r.id, r.instruction, r.output, r.references)
    ('gsm-1', '1+1?', '2', ['2'])
    """
    if not isinstance(row, Mapping):
        raise SpectrumKDError(f"{where}: expected a JSON object, got {type(row).__name__}")
    fields = dict(fields or {})

    def get(key: str, required: bool) -> Any:
        names = (fields[key],) if key in fields else FIELD_CANDIDATES[key]
        _, value = _pick(row, names)
        if value is None and required:
            raise SpectrumKDError(
                f"{where}: missing field {' / '.join(repr(n) for n in names)} "
                f"(row has {sorted(row)}); map it with fields={{'{key}': NAME}}"
            )
        return value

    instruction = get("instruction", True)
    inp = get("input", False) or ""
    output = get("output", False)
    references = get("references", False)
    if isinstance(output, list):  # several references and no single target (S-NI)
        references = references if references is not None else output
        output = None
    for name, value in (("instruction", instruction), ("input", inp)):
        if not isinstance(value, str):
            raise SpectrumKDError(f"{where}: field {name!r} must be a string, got {value!r:.60}")
    if output is not None and not isinstance(output, str):
        raise SpectrumKDError(f"{where}: the output must be a string, got {output!r:.60}")
    if references is None:
        references = [] if output is None else [output]
    if isinstance(references, str):
        references = [references]
    rid = row.get(id_field, default_id)
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise SpectrumKDError(f"{where}: id {rid!r} must be a string or an integer")
    return Record(
        id=rid,
        instruction=instruction,
        input=inp,
        output=output,
        references=[str(r) for r in references],
        where=where,
        raw=dict(row),
    )


def _read_jsonl(path: Path) -> Iterable[tuple[int, Any]]:
    for lineno, raw in iter_lines(path):  # gzip errors: one line naming the file and line
        if not raw.strip():
            continue
        try:
            yield lineno, json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise SpectrumKDError(f"{path}:{lineno}: not UTF-8 text (column {exc.start + 1})") from None
        except json.JSONDecodeError as exc:
            raise SpectrumKDError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None
        except RecursionError:
            raise SpectrumKDError(f"{path}:{lineno}: JSON nested too deeply") from None
        except ValueError as exc:  # an integer past Python's digit limit
            raise SpectrumKDError(f"{path}:{lineno}: not usable JSON ({exc})") from None


def _read_json(path: Path) -> Iterable[tuple[int, Any]]:
    data = read_json(path, what="data file", expect=object)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise SpectrumKDError(f"{path}: expected a JSON list of objects (or {{'data': [...]}})")
    return enumerate(data, start=1)


def _read_parquet(path: Path) -> Iterable[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:  # not parquet, cut short, corrupt pages
        first = " ".join(str(exc).split())[:200]
        raise SpectrumKDError(f"{path}: not a readable parquet file ({first})") from None
    return enumerate(table.to_pylist(), start=1)


PACKAGED_PREFIX = "spectrumkd:"


def packaged_data(name: str) -> Path:
    """Path of a data file shipped in the package, e.g. ``dolly/train.jsonl`` (see its NOTICE.md).

    Sources written ``spectrumkd:dolly/train.jsonl`` in configs and on the command line resolve here,
    so the offline demo and smoke runs need no data beside the checkout.

    >>> packaged_data("dolly/train.jsonl").name
    'train.jsonl'
    """
    from importlib.resources import files

    path = Path(str(files("spectrumkd") / "resources" / name))
    if not path.is_file():
        shipped = sorted(str(p.relative_to(path.parents[len(Path(name).parts) - 1]))
                         for p in path.parents[len(Path(name).parts) - 1].rglob("*.jsonl"))
        raise SpectrumKDError(f"no packaged data file {name!r}; shipped: {', '.join(shipped)}")
    return path


def _is_file_like(source: str) -> bool:
    return source.endswith((".jsonl", ".jsonl.gz", ".json", ".parquet")) or Path(source).exists()


def load_records(
    source: str | Path,
    *,
    split: str = "train",
    fields: Mapping[str, str] | None = None,
    id_field: str = "id",
    limit: int | None = None,
) -> list[Record]:
    """Read ``source`` (a ``.jsonl[.gz]``/``.json``/``.parquet`` file, a packaged file written
    ``spectrumkd:dolly/train.jsonl``, or a hub dataset name).

    Ids are the row's ``id_field`` if present, else ``"{file-stem}-{line}"``; duplicate ids are an
    error. ``limit`` keeps the first rows (before any filtering).
    """
    source = str(source)
    if source.startswith(PACKAGED_PREFIX):
        source = str(packaged_data(source[len(PACKAGED_PREFIX):]))
    if _is_file_like(source):
        path = Path(source)
        if not path.is_file():
            raise SpectrumKDError(f"data file {path} does not exist")
        name = path.name
        stem = name.split(".")[0]
        if name.endswith((".jsonl", ".jsonl.gz")):
            rows: Iterable[tuple[int, Any]] = _read_jsonl(path)
        elif name.endswith(".json"):
            rows = _read_json(path)
        elif name.endswith(".parquet"):
            rows = _read_parquet(path)
        else:
            raise SpectrumKDError(f"{path}: unknown format; use .jsonl, .jsonl.gz, .json or .parquet")
        label = str(path)
    else:
        try:
            import datasets
        except ImportError as exc:  # pragma: no cover - datasets is in the train extra
            raise SpectrumKDError(f"loading {source!r} from the hub needs `datasets`") from exc
        try:
            ds = datasets.load_dataset(source, split=split)
        except Exception as exc:
            raise SpectrumKDError(f"cannot load dataset {source!r} (split {split!r}): {exc}") from exc
        stem = f"{source.split('/')[-1]}-{split}"
        label = f"{source}[{split}]"
        rows = enumerate(ds, start=1)
    records: list[Record] = []
    seen: dict[str | int, str] = {}
    for lineno, row in rows:
        if limit is not None and len(records) >= limit:
            break
        where = f"{label}:{lineno}"
        rec = record_from_row(
            row, default_id=f"{stem}-{lineno}", where=where, fields=fields, id_field=id_field
        )
        if rec.id in seen:
            raise SpectrumKDError(f"{where}: duplicate id {rec.id!r} (first at {seen[rec.id]})")
        seen[rec.id] = where
        records.append(rec)
    if not records:
        raise SpectrumKDError(f"{label}: no rows")
    return records
