"""Small file primitives every stage shares: atomic writes, durable renames, JSON reads, locks.

- :func:`atomic_write_text` / :func:`atomic_write_bytes`: write a temporary file beside the target,
  ``fsync`` it, ``os.replace`` it over the target and ``fsync`` the folder, so a reader (or a
  machine that loses power) sees the old file or the new one, never a torn one.
- :func:`read_text` and :func:`read_json`: read a file the user may have made by hand, turning
  "missing", "not UTF-8" and "not JSON" into one-line :class:`~spectrumkd.SpectrumKDError`\\ s that
  name the file (and the line for JSON).
- :func:`file_lock`: an exclusive, non-blocking ``fcntl.flock`` on ``<path>.lock``; a second writer
  gets a one-line error naming the holder's pid instead of racing the first.
- :func:`refuse_overlap`: the one check, made before anything is written, that no output path is
  an input, lies inside an input folder or is a folder holding an input.

Standard library only (the pure curriculum may use it). This module does not know any spectrumkd
file format; the owners of the formats (plans, scores, results, checkpoints) do.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spectrumkd import SpectrumKDError

__all__ = ["atomic_write_bytes", "atomic_write_text", "file_lock", "fsync_dir", "read_json",
           "read_text", "refuse_overlap"]


def fsync_dir(folder: str | os.PathLike) -> None:
    """``fsync`` a folder so that renames and creations inside it survive a power loss."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Replace ``path`` by ``data`` atomically and durably (temp file, fsync, rename, fsync dir)."""
    path = Path(path)
    if path.is_dir():
        raise SpectrumKDError(f"{path}: is a directory; give a file name")
    for folder in (path.parent, *path.parent.parents):
        if folder.exists() and not folder.is_dir():
            raise SpectrumKDError(f"{path}: cannot be written, {folder} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a.txt"
    >>> atomic_write_text(p, "one") == p and p.read_text() == "one"
    True
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_text(path: str | os.PathLike, *, what: str = "file") -> str:
    """The UTF-8 text of ``path``; a missing or non-UTF-8 file is a one-line error."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpectrumKDError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise SpectrumKDError(f"{path}: is a directory, expected a {what}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SpectrumKDError(
            f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})"
        ) from None


def read_json(path: str | os.PathLike, *, what: str = "JSON file", expect: type = dict) -> Any:
    """Parse ``path`` as JSON whose top level is an ``expect`` (a dict by default).

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "r.json"
    >>> _ = p.write_text('{"a": 1,\\n oops}')
    >>> read_json(p)
    Traceback (most recent call last):
    ...
    spectrumkd.SpectrumKDError: ...r.json:2: not valid JSON (Expecting property name enclosed in double quotes)
    """
    path = Path(path)
    text = read_text(path, what=what)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpectrumKDError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise SpectrumKDError(f"{path}: JSON nested too deeply") from None
    except ValueError as exc:  # an integer past Python's digit limit (sys.set_int_max_str_digits)
        raise SpectrumKDError(f"{path}: not usable JSON ({exc})") from None
    if not isinstance(data, expect):
        raise SpectrumKDError(
            f"{path}: expected a JSON {'object' if expect is dict else expect.__name__} at the top "
            f"level, got {type(data).__name__}"
        )
    return data


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, what: str | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on ``<path>.lock`` (``path`` itself when it ends in ``.lock``).

    Non-blocking: when another process holds it, raise a one-line error naming ``what`` and the
    holder's pid. The lock is released when the block ends or the process dies, however it dies.
    The holder removes the lock file before it lets go; a process that locked a file that was
    removed meanwhile sees that its inode is no longer the path's and tries again, so two
    processes never both hold the lock.
    """
    import fcntl

    path = Path(path)
    lock = path if path.name.endswith(".lock") else path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise SpectrumKDError(
                f"{what or path}: another spectrumkd process (pid {holder}) is writing it; wait for "
                f"it to finish or stop it (lock {lock})"
            ) from None
        try:
            current = os.stat(lock).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the previous holder removed this file as we locked it: start over
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock
    finally:
        lock.unlink(missing_ok=True)  # while still holding it (see above)
        os.close(fd)  # closing the descriptor releases the flock


def _real(path: str | os.PathLike) -> Path:
    """``path`` made absolute with every symlink resolved (a missing tail is kept as written)."""
    return Path(os.path.realpath(os.path.abspath(path)))


def refuse_overlap(outputs: dict[str, str | os.PathLike], inputs: dict[str, str | os.PathLike]) -> None:
    """Refuse outputs that would replace or sit inside the inputs they are computed from.

    ``outputs`` and ``inputs`` map a label (``"--out"``, ``"--scores"``) to a path. An output
    that is an input (also through a symlink or a hard link), lies inside an input folder, or is
    a folder holding an input is a one-line error naming both; call it before writing anything.
    Inputs that do not exist locally (hub names) are passed over.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); _ = (d / "s.jsonl").write_text("{}")
    >>> refuse_overlap({"--out": d / "s.jsonl"}, {"--scores": d / "." / "s.jsonl"})
    Traceback (most recent call last):
    ...
    spectrumkd.SpectrumKDError: --out .../s.jsonl is the input --scores .../s.jsonl: it would be replaced; write elsewhere
    """
    for in_label, in_path in inputs.items():
        if in_path is None or not os.path.lexists(in_path):
            continue
        real_in = _real(in_path)
        for out_label, out_path in outputs.items():
            real_out = _real(out_path)
            same = real_out == real_in or (
                os.path.exists(out_path) and os.path.samefile(out_path, in_path))
            if same:
                raise SpectrumKDError(f"{out_label} {out_path} is the input {in_label} {in_path}: "
                                      "it would be replaced; write elsewhere")
            if real_in in real_out.parents:
                raise SpectrumKDError(f"{out_label} {out_path} lies inside the input {in_label} "
                                      f"{in_path}; write elsewhere")
            if real_out in real_in.parents:
                raise SpectrumKDError(f"{out_label} {out_path} holds the input {in_label} "
                                      f"{in_path}; write elsewhere")
