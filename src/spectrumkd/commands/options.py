"""Command-line options built from a dataclass: one ``--flag`` per field, its docstring as help.

The dataclass stays the single source of truth (litgpt's habit): names, types, defaults and help
texts come from its fields, the string literal under each field, and ``metadata["choices"]``.
Also the small argument types and checks that several subcommands share. Standard library only,
so building the parser imports nothing heavy.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

__all__ = ["add_field_options", "field_docs", "fields_from_args", "non_negative_int", "out_file",
           "positive_int", "positive_seconds"]


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass and its dataclass bases (the string under each field)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(inspect.getsource(klass)).body[0].body
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _int_at_least(text: str, low: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0 (``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds > 0, got {text!r}")
    return value


def _number_or_auto(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None


def _pair(text: str) -> list[float]:
    try:
        low, high = (float(x) for x in text.split(":"))
    except ValueError:
        message = f"expected LOW:HIGH such as 0.1:0.9, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    return [low, high]


def _parser_for(tp: Any) -> tuple[Any, str | None]:
    """``(argparse type, metavar)`` for a field's annotation."""
    args = set(typing.get_args(tp)) - {type(None)}
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if args == {float, str}:
            return _number_or_auto, "NUMBER|auto"
        (tp,) = args
    if typing.get_origin(tp) is list:
        return _pair, "LOW:HIGH"
    return {int: int, float: float}.get(tp, str), None


def add_field_options(
    parser: argparse.ArgumentParser, cls: type, *, aliases: dict[str, tuple[str, ...]] | None = None
) -> None:
    """One option per field of ``cls``: ``--field-name`` (plus ``aliases[name]``), the field's type,
    default and docstring. ``metadata["choices"]`` become the metavar, not an argparse check: the
    library checks them with its own message. A ``bool`` field is a switch."""
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flags = (f"--{f.name.replace('_', '-')}", *(aliases or {}).get(f.name, ()))
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        text = docs.get(f.name, "").replace("``", "")  # docstrings are RST; --help is plain
        if hints[f.name] is bool:
            parser.add_argument(*flags, dest=f.name, action="store_true", help=text)
            continue
        shown = ":".join(map(str, default)) if isinstance(default, list) else default
        kind, metavar = _parser_for(hints[f.name])
        if f.metadata.get("positive"):
            kind = positive_int
        if "choices" in f.metadata:
            metavar = "|".join(f.metadata["choices"])
        parser.add_argument(*flags, dest=f.name, type=kind, default=default, metavar=metavar,
                            help=f"{text} (default: {shown})")


def fields_from_args(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The values of ``cls``'s fields from parsed options added by :func:`add_field_options`."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}


def out_file(text: str, *, what: str, example: str, flag: str = "--out") -> Path:
    """``--out`` as a file path; a directory (or a path ending in a separator) is a one-line error
    that suggests ``<dir>/<example>``."""
    from spectrumkd import SpectrumKDError

    path = Path(text)
    if path.is_dir() or text.endswith(os.sep):
        raise SpectrumKDError(
            f"{flag} {text}: is a directory; name the {what}, e.g. {path / example}"
        )
    return path
