"""YAML onto dataclasses: the one engine behind the run config and the experiment config.

A config is a tree of dataclasses (:class:`spectrumkd.train.config.RunConfig`,
:class:`spectrumkd.experiment.ExperimentConfig`). This module maps plain data onto such a tree:

- :func:`read_mapping`: a YAML file whose top level is a mapping, or a one-line error naming it
  (a duplicate key, a number too long to convert and nesting too deep are such errors too);
- :func:`apply_overrides`: dotted ``section.key=value`` strings (values parsed as YAML scalars) set
  into the nested dicts, each key checked against the tree first;
- :func:`build`: the dataclass tree from nested dicts, each value converted to its field's
  annotation (``int``, ``float``, ``str``, ``bool``, ``list[T]``, ``dict[K, V]``, ``X | None``,
  a nested dataclass). YAML 1.1 reads ``5e-5`` as a string; a ``float`` field takes it.

A key that does not exist is an error naming the file (``where``), every unknown key of that
mapping and the closest valid key (the root's ``aliases`` first: ``learning_rate`` → ``lr``, then
difflib). Below a ``dict``-typed field one more key level is free (``experiment.arms.full=...``).
Range and cross-field checks are the dataclasses' own, in their ``__post_init__``.

Standard library and PyYAML only; this module knows no spectrumkd section.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from spectrumkd import SpectrumKDError
from spectrumkd.fileio import read_text

__all__ = ["apply_overrides", "build", "field_keys", "load_yaml", "read_mapping"]


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping repeating a key (PyYAML keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, *, where: str) -> Any:
    """``yaml.safe_load`` of ``text`` with duplicate keys refused; every way it can fail (bad
    YAML, a ``!!python`` tag, a duplicate key, a 5000-digit number, nesting too deep) is one
    :class:`SpectrumKDError` starting with ``where``.

    >>> load_yaml("a: 1\\na: 2\\n", where="x.yaml")
    Traceback (most recent call last):
    ...
    spectrumkd.SpectrumKDError: x.yaml: not valid YAML (duplicate key 'a' in "<unicode string>", line 2, column 1...)
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise SpectrumKDError(f"{where}: not valid YAML ({' '.join(str(exc).split())})") from None
    except RecursionError:
        raise SpectrumKDError(f"{where}: YAML nested too deeply") from None
    except ValueError as exc:  # int() of a number past Python's digit limit
        raise SpectrumKDError(f"{where}: not usable YAML ({exc})") from None


def read_mapping(path: str | Path, *, what: str = "config file") -> dict:
    """The YAML mapping in ``path`` (``{}`` for an empty file); one-line errors name the file."""
    loaded = load_yaml(read_text(path, what=what), where=str(path))
    if loaded is not None and not isinstance(loaded, dict):
        raise SpectrumKDError(f"{path}: expected a mapping at the top level")
    return loaded or {}


def _leaves(cls: type, prefix: str = "") -> dict[str, Any]:
    """Dotted key → annotation of every non-dataclass field under ``cls``."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name, tp = f.name, hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(_leaves(tp, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = tp
    return out


def field_keys(cls: type) -> list[str]:
    """Every dotted key a config of ``cls`` takes, in field order.

    >>> from dataclasses import field, make_dataclass
    >>> Inner = make_dataclass("Inner", [("lr", float, 1e-3)])
    >>> Outer = make_dataclass("Outer", [("seed", int, 0), ("optim", Inner, field(default_factory=Inner))])
    >>> field_keys(Outer)
    ['seed', 'optim.lr']
    """
    return list(_leaves(cls))


def _is_mapping(tp: Any) -> bool:
    """True for ``dict``, ``dict[K, V]`` and unions holding one (``dict | None``)."""
    if tp is dict or typing.get_origin(tp) is dict:
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_is_mapping(arg) for arg in typing.get_args(tp))
    return False


def _closest(key: str, valid: list[str], aliases: Mapping[str, str]) -> str | None:
    section, _, leaf = key.rpartition(".")
    same = [v for v in valid if v.rpartition(".")[0] == section]
    alias = aliases.get(leaf)
    by_alias = [v for v in valid if alias and v.rpartition(".")[2] == alias]
    close = [v for v in by_alias if v in same] or by_alias
    if not close and same:  # compare leaf names within the section first
        leaves = difflib.get_close_matches(leaf, [v.rpartition(".")[2] for v in same], n=1, cutoff=0.5)
        close = [f"{section}.{leaves[0]}" if section else leaves[0]] if leaves else []
    if not close:
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    return close[0] if close else None


def _unknown(keys: list[str], valid: list[str], where: str, aliases: Mapping[str, str],
             prefix: str = ""):
    """The error for unknown dotted ``keys`` of one mapping, with the closest valid key; keys are
    shown with ``prefix`` (the section they were given under), so the suggestion is accepted."""
    close = _closest(keys[0], valid, aliases)
    hint = f"; did you mean {prefix + close!r}?" if close else ""
    names = [k.rpartition(".")[2] for k in keys]
    return SpectrumKDError(
        f"{where}: unknown keys {names} ({', '.join(prefix + k for k in keys)}){hint}")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """``value`` converted to the annotation ``tp``, or an error naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except SpectrumKDError as exc:
                errors.append(str(exc))
        raise SpectrumKDError(errors[0])
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise SpectrumKDError(f"{key}: expected a list, got {value!r}")
        return [_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise SpectrumKDError(f"{key}: expected a mapping, got {value!r}")
        if origin is None:
            return dict(value)
        k_tp, v_tp = typing.get_args(tp)
        return {_convert(k, k_tp, key): _convert(v, v_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "5e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise SpectrumKDError(f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def build(cls: type, data: Any, *, where: str = "config", aliases: Mapping[str, str] | None = None):
    """A ``cls`` from nested dicts: each value converted to its field's annotation.

    ``where`` (a file, ``"override"``) starts every error message.

    >>> from dataclasses import field, make_dataclass
    >>> Optim = make_dataclass("Optim", [("lr", float, 1e-3), ("betas", list[float], (0.9, 0.99))])
    >>> Run = make_dataclass("Run", [("seed", int, 0), ("optim", Optim, field(default_factory=Optim))])
    >>> build(Run, {"seed": 3.0, "optim": {"lr": "5e-5", "betas": [0.8, 1]}})
    Run(seed=3, optim=Optim(lr=5e-05, betas=[0.8, 1.0]))
    >>> build(Run, {"optim": {"learning_rate": 1}}, where="run.yaml", aliases={"learning_rate": "lr"})
    Traceback (most recent call last):
    ...
    spectrumkd.SpectrumKDError: run.yaml: unknown keys ['learning_rate'] (optim.learning_rate); did you mean 'optim.lr'?
    """
    return _build(cls, data, "", where, cls, aliases or {})


def _build(cls: type, data: Any, prefix: str, where: str, root: type, aliases) -> Any:
    if not isinstance(data, dict):
        raise SpectrumKDError(f"{where}: {prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [f"{prefix}{k}" for k in data if k not in names]
    if unknown:  # the valid keys are only walked for the message
        raise _unknown(unknown, field_keys(root), where, aliases)
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, f"{prefix}{key}.", where, root, aliases)
        else:
            kwargs[key] = _convert(value, tp, f"{where}: {prefix}{key}")
    return cls(**kwargs)


def apply_overrides(cls: type, data: dict, overrides: list[str], *,
                    aliases: Mapping[str, str] | None = None, prefix: str = "") -> dict:  # fmt: skip
    """A copy of ``data`` with dotted ``key=value`` strings applied (values parsed as YAML).

    Every key is checked against ``cls`` (:func:`field_keys`) before anything is set; errors
    spell keys with ``prefix`` (``"run."`` for an experiment's ``run.KEY=VALUE``).

    >>> from dataclasses import field, make_dataclass
    >>> Loss = make_dataclass("Loss", [("mode", str, "kd"), ("divergence", str, "fkl")])
    >>> Run = make_dataclass("Run", [("loss", Loss, field(default_factory=Loss)), ("arms", dict, None)])
    >>> apply_overrides(Run, {"loss": {"mode": "kd"}}, ["loss.divergence=rkl", "arms.a={x: 1}"])
    {'loss': {'mode': 'kd', 'divergence': 'rkl'}, 'arms': {'a': {'x': 1}}}
    """
    leaves = _leaves(cls)
    valid = list(leaves)
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpectrumKDError(f"override {item!r}: expected key=value, e.g. {prefix}{valid[-1]}=...")
        parent = key.rpartition(".")[0]
        if key not in leaves and not (parent in leaves and _is_mapping(leaves[parent])):
            raise _unknown([key], valid, "override", aliases or {}, prefix)
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.get(part)
            node[part] = child if isinstance(child, dict) else {}
            node = node[part]
        node[leaf] = load_yaml(raw, where=f"override {item!r}") if raw.strip() else None
    return out
