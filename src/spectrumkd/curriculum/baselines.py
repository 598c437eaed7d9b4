"""Baseline curricula as plans of the same format, so every comparison runs through one trainer.

- ``full``: every example, every epoch (the paper's KD baselines).
- ``static``: one fixed band of the spectrum every epoch, ``[floor(low·N), floor(high·N))`` of the
  sorted positions — e.g. the easiest 80% (``0.0–0.8``) or the 10%–90% band of Figure 3c.
- ``babystep`` (TCL Baby Step, Wang et al. 2021 / Zhu et al. 2021): the spectrum is cut into ``B``
  buckets of (nearly) equal size; stage ``s`` trains on buckets ``1..s`` (cumulative).
- ``onepass`` (TCL One-Pass): stage ``s`` trains on bucket ``s`` alone.

Stage lengths: with ``epochs_per_stage`` unset, the epochs are split into ``B`` consecutive stages
as evenly as possible (earlier stages get the extra epoch). With ``epochs_per_stage = E``, stage
``s`` covers epochs ``(s−1)·E + 1 .. s·E``; Baby Step then keeps training on all buckets for any
remaining epochs (as in Baby Step's final phase), while One-Pass needs ``epochs = B·E`` exactly.

The difficulty order is whatever the scores say: TCL's entropy or length proxies are just other
scores files (``spectrumkd score --metric entropy|length``).

Control arms (issue 18). SpectrumKD changes three things at once: which examples (Excluded dropped,
a window of M = N − n_early − n_excluded), their order (easy → hard) and τ (1 → 2). Wu et al.
(ICLR 2021, "When do curricula work?") found a random-order curriculum with the same growing subset
as good as the ordered one, so each control keeps all but one of those:

- ``random-window``: SpectrumKD's window starts (computed on the real spectrum), window size and τ
  schedule, slid over the spectrum in a seeded random order; its zones are cut from that order, so
  its "Excluded" examples are a random 10%, not the hardest.
- ``curated-shuffle``: the curated spectrum (Excluded dropped) as one pool; each epoch reshuffles
  the pool with the seeded generator and trains on its first M examples, so every epoch has
  SpectrumKD's subset size and the step budget is equal without changing the epochs. ``start`` is
  0 and the zones are the pool (``continuous``) and Excluded. With λa = 0 the epoch is the pool.
- τ-only is ``full`` with the linear schedule (the default): every example, τ 1 → 2.

Both seeded kinds draw from ``np.random.default_rng(shuffle_seed)`` (random-window one permutation
of the sorted spectrum; curated-shuffle one permutation of the pool per epoch, in epoch order).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from spectrumkd import SpectrumKDError
from spectrumkd.curriculum.plan import EpochPlan, Plan
from spectrumkd.curriculum.spec import PlanSpec
from spectrumkd.curriculum.spectrum import Spectrum, check_lambda, floor_count

__all__ = ["full_plan", "static_plan", "babystep_plan", "onepass_plan", "stage_of_epochs",
           "random_window_plan", "curated_shuffle_plan"]

_DEFAULT = PlanSpec()


def _plan_from_ranges(
    spectrum: Spectrum, ranges: list[tuple[int, int]], temps: list[float], params: dict
) -> Plan:
    subsets = {r: spectrum.ids[r[0]:r[1]] for r in set(ranges)}  # shared, read-only (builder.py)
    epochs = [
        EpochPlan(
            epoch=j,
            start=lo,
            ids=subsets[(lo, hi)],
            temperature=float(t),
            total_difficulty=spectrum.range_difficulty(lo, hi),
        )
        for j, ((lo, hi), t) in enumerate(zip(ranges, temps), start=1)
    ]
    used = np.zeros(spectrum.n_total, dtype=bool)
    for lo, hi in set(ranges):
        used[lo:hi] = True
    zones = {
        "early": [],
        "continuous": [i for i, u in zip(spectrum.ids, used) if u],
        "late": [],
        "excluded": [i for i, u in zip(spectrum.ids, used) if not u],
    }
    return Plan(n_total=spectrum.n_total, params=params, zones=zones, epochs=epochs)


def full_plan(spectrum: Spectrum, temps: list[float], params: dict | None = None) -> Plan:
    """All examples (in ascending difficulty order) every epoch."""
    ranges = [(0, spectrum.n_total)] * len(temps)
    return _plan_from_ranges(spectrum, ranges, temps, {"curriculum": "full", **(params or {})})


def static_plan(
    spectrum: Spectrum, temps: list[float], low: float = _DEFAULT.static_range[0],
    high: float = _DEFAULT.static_range[1], params: dict | None = None,
) -> Plan:
    """The band ``[floor(low·N), floor(high·N))`` of the spectrum every epoch.

    >>> from spectrumkd.curriculum.spectrum import build_spectrum
    >>> s = build_spectrum(list("abcdefghij"), list(range(10)), 0.0, 0.0)
    >>> static_plan(s, [1.0], 0.1, 0.9).epochs[0].ids
    ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i']
    """
    check_lambda("static low", low)
    check_lambda("static high", high)
    lo, hi = floor_count(low, spectrum.n_total), floor_count(high, spectrum.n_total)
    if hi <= lo:
        raise SpectrumKDError(
            f"static subset [{low}, {high}) of {spectrum.n_total} examples is empty"
        )
    p = {"curriculum": "static", "static_low": low, "static_high": high, **(params or {})}
    return _plan_from_ranges(spectrum, [(lo, hi)] * len(temps), temps, p)


def stage_of_epochs(epochs: int, buckets: int, epochs_per_stage: int | None, *,
                    allow_tail: bool) -> list[int]:
    """0-based stage index of each epoch.

    >>> stage_of_epochs(5, 3, None, allow_tail=True)
    [0, 0, 1, 1, 2]
    >>> stage_of_epochs(5, 2, 2, allow_tail=True)
    [0, 0, 1, 1, 1]
    """
    if buckets < 1:
        raise SpectrumKDError(f"buckets must be ≥ 1, got {buckets}")
    if epochs < buckets:
        raise SpectrumKDError(f"{buckets} buckets need at least {buckets} epochs, got {epochs}")
    if epochs_per_stage is None:
        return [int(s) for s, part in enumerate(np.array_split(np.arange(epochs), buckets))
                for _ in part]
    if epochs_per_stage < 1:
        raise SpectrumKDError(f"epochs per stage must be ≥ 1, got {epochs_per_stage}")
    need = buckets * epochs_per_stage
    if epochs < need or (epochs > need and not allow_tail):
        raise SpectrumKDError(
            f"{buckets} buckets × {epochs_per_stage} epochs per stage = {need} epochs, "
            f"but the plan has {epochs}"
        )
    return [min(buckets - 1, j // epochs_per_stage) for j in range(epochs)]


def _bucket_bounds(n: int, buckets: int) -> list[tuple[int, int]]:
    if buckets > n:
        raise SpectrumKDError(f"{buckets} buckets for {n} examples: some would be empty")
    sizes = [len(p) for p in np.array_split(np.arange(n), buckets)]
    edges = np.concatenate(([0], np.cumsum(sizes))).tolist()
    return list(zip(edges[:-1], edges[1:]))


def _tcl_plan(kind: str, spectrum: Spectrum, temps: list[float], buckets: int,
              epochs_per_stage: int | None, params: dict | None) -> Plan:
    cumulative = kind == "babystep"  # Baby Step keeps the earlier buckets; One-Pass drops them
    stages = stage_of_epochs(len(temps), buckets, epochs_per_stage, allow_tail=cumulative)
    bounds = _bucket_bounds(spectrum.n_total, buckets)  # after the check that buckets >= 1
    ranges = [(0, bounds[s][1]) if cumulative else bounds[s] for s in stages]
    p = {"curriculum": kind, "buckets": buckets, "epochs_per_stage": epochs_per_stage,
         **(params or {})}
    return _plan_from_ranges(spectrum, ranges, temps, p)


def babystep_plan(
    spectrum: Spectrum, temps: list[float], buckets: int = _DEFAULT.buckets,
    epochs_per_stage: int | None = _DEFAULT.epochs_per_stage, params: dict | None = None,
) -> Plan:
    """TCL Baby Step: stage ``s`` trains on buckets ``1..s`` (cumulative)."""
    return _tcl_plan("babystep", spectrum, temps, buckets, epochs_per_stage, params)


def onepass_plan(
    spectrum: Spectrum, temps: list[float], buckets: int = _DEFAULT.buckets,
    epochs_per_stage: int | None = _DEFAULT.epochs_per_stage, params: dict | None = None,
) -> Plan:
    """TCL One-Pass: stage ``s`` trains on bucket ``s`` alone."""
    return _tcl_plan("onepass", spectrum, temps, buckets, epochs_per_stage, params)


def random_window_plan(spectrum: Spectrum, starts: list[int], temps: list[float], seed: int,
                       params: dict | None = None) -> Plan:
    """SpectrumKD's windows ``[w, w + M)`` at ``starts`` over the spectrum in a random order.

    >>> from spectrumkd.curriculum.spectrum import build_spectrum
    >>> s = build_spectrum(list("abcdefghij"), list(range(10)), 0.1, 0.1)
    >>> p = random_window_plan(s, [0, 1], [1.0, 2.0], seed=0)
    >>> p.subset_sizes(), [e.start for e in p.epochs], len(p.zones["excluded"])
    ([8, 8], [0, 1], 1)
    """
    perm = np.random.default_rng(seed).permutation(spectrum.n_total)
    shuffled = replace(spectrum, ids=[spectrum.ids[i] for i in perm], scores=spectrum.scores[perm],
                       order=spectrum.order[perm])
    m = spectrum.window_size
    plan = _plan_from_ranges(shuffled, [(w, w + m) for w in starts], temps,
                             {"curriculum": "random-window", "shuffle_seed": seed,
                              "window_size": m, **(params or {})})
    plan.zones = shuffled.zones()
    return plan


def curated_shuffle_plan(spectrum: Spectrum, temps: list[float], seed: int,
                         params: dict | None = None) -> Plan:
    """Each epoch: the first M of a fresh seeded shuffle of the spectrum without its Excluded zone.

    >>> from spectrumkd.curriculum.spectrum import build_spectrum
    >>> s = build_spectrum(list("abcdefghij"), list(range(10)), 0.1, 0.1)
    >>> p = curated_shuffle_plan(s, [1.0, 2.0], seed=0)
    >>> p.subset_sizes(), p.zones["excluded"], "j" in p.used_ids()
    ([8, 8], ['j'], False)
    """
    rng = np.random.default_rng(seed)
    pool, m = spectrum.n_total - spectrum.n_excluded, spectrum.window_size
    epochs = []
    for j, t in enumerate(temps, start=1):
        drawn = rng.permutation(pool)[:m]
        epochs.append(EpochPlan(epoch=j, start=0, ids=[spectrum.ids[i] for i in drawn],
                                temperature=float(t),
                                total_difficulty=float(spectrum.scores[drawn].sum())))
    zones = {"early": [], "continuous": spectrum.ids[:pool], "late": [],
             "excluded": spectrum.ids[pool:]}
    p = {"curriculum": "curated-shuffle", "shuffle_seed": seed, "window_size": m, **(params or {})}
    return Plan(n_total=spectrum.n_total, params=p, zones=zones, epochs=epochs)
