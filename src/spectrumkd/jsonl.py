"""Read JSON Lines files with errors that name the file and line (stdlib only, no torch).

Scores, metrics, evaluation sets and generations files are all JSON Lines; this is their one
reader. Blank lines are skipped; ``.gz`` files are read transparently. Every way a file can be
bad — missing, not UTF-8, not gzip or cut short (``.gz``), a line that is not JSON or not an
object — is one :class:`~spectrumkd.SpectrumKDError` naming the file and the line. Writing stays
with each format's owner, since each has its own flushing and atomic-replace rules
(:mod:`spectrumkd.fileio` has the shared primitives).
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from spectrumkd import SpectrumKDError

__all__ = ["has_torn_tail", "iter_jsonl", "iter_lines", "parse_line"]


_BLANK = object()


def _decode(raw: bytes, path: Path, lineno: int):
    """The JSON value of one line (``_BLANK`` for a blank line), or a one-line error."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpectrumKDError(
            f"{path}:{lineno}: not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1})"
        ) from None
    if not line.strip():
        return _BLANK
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise SpectrumKDError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise SpectrumKDError(f"{path}:{lineno}: JSON nested too deeply") from None
    except ValueError as exc:  # an integer past Python's digit limit (sys.set_int_max_str_digits)
        raise SpectrumKDError(f"{path}:{lineno}: not usable JSON ({exc})") from None


def parse_line(raw: bytes, path: Path, lineno: int) -> dict | None:
    """One line of a JSON Lines file as an object (``None`` for a blank line), or a clear error."""
    obj = _decode(raw, path, lineno)
    if obj is _BLANK:
        return None
    if not isinstance(obj, dict):
        raise SpectrumKDError(f"{path}:{lineno}: expected a JSON object, got {obj!r:.60}")
    return obj


def iter_jsonl(path: str | os.PathLike, *, skip_torn: bool = False) -> Iterator[tuple[int, dict]]:
    """``(1-based line number, object)`` for each non-blank line; every line must be an object.
    With ``skip_torn``, a last line without its newline (a write cut short, see
    :func:`has_torn_tail`) is passed over instead of parsed.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "x.jsonl"
    >>> _ = p.write_text('{"a": 1}\\n\\n{"a": 2}\\n')
    >>> list(iter_jsonl(p))
    [(1, {'a': 1}), (3, {'a': 2})]
    >>> _ = p.write_text('{"a": 1}\\n[2]\\n')
    >>> list(iter_jsonl(p))
    Traceback (most recent call last):
    ...
    spectrumkd.SpectrumKDError: ...x.jsonl:2: expected a JSON object, got [2]
    """
    path = Path(path)
    for lineno, raw in iter_lines(path):
        if skip_torn and not raw.endswith(b"\n"):
            return  # only the last line can lack its newline
        obj = parse_line(raw, path, lineno)
        if obj is not None:
            yield lineno, obj


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """``(1-based line number, raw bytes)`` of a text or ``.gz`` file; a missing file, a file that
    is not gzip and gzip data cut short are one-line errors naming the file and line."""
    path = Path(path)
    gz = path.suffix == ".gz"
    try:
        handle = gzip.open(path, "rb") if gz else open(path, "rb")
    except FileNotFoundError:
        raise SpectrumKDError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SpectrumKDError(f"{path}: is a directory, expected a JSON Lines file") from None
    lineno = 0
    with handle:
        lines = iter(handle)
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
                bad = isinstance(exc, gzip.BadGzipFile)
                what = "not a gzip file" if bad else "gzip data cut short or corrupt"
                raise SpectrumKDError(f"{path}:{lineno + 1}: {what} ({exc})") from None
            lineno += 1
            yield lineno, raw


def has_torn_tail(path: str | os.PathLike) -> bool:
    """True when a non-empty (uncompressed) file does not end in a newline: its last append was
    cut short, and readers that resume it pass that line over."""
    with open(path, "rb") as handle:
        if handle.seek(0, os.SEEK_END) == 0:
            return False
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"
