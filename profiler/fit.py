"""Pure statistics of the profiler: medians with spreads, least-squares fits and the stated rules.

Nothing here measures; every function takes numbers and returns numbers, so each rule is unit
tested on made-up data. The rules (also in docs/profiler.md):

- **A figure** is the median of its repetitions; its *spread* is (max - min) / median, so 0.1
  means the repetitions lay within 10% of the median's size.
- **CPU work** (seconds of CPU a load or an unload takes) is the *trimmed mean* of its
  repetitions (``work_mean``: the lowest and highest ``TRIM`` fifth dropped), not the median:
  ``/proc`` counts CPU time in 10 ms clock ticks, and a median of tick-quantized samples sticks to a
  tick (0.02 or 0.03 s from run to run for a ~0.025 s unload) where a mean averages the
  quantization out; work also adds up, which is what a mean measures.
- **Batch latency** ``t(n) = K * n + B`` is fitted by least squares over every measured batch size
  (each point the median of its repetitions), weighted by ``1 / t(n)^2`` so that every size counts
  by its *relative* error (``fit_batch_line``): unweighted, the largest sizes' millisecond noise
  set the intercept B, which moved 32% from run to run for a detector whose one-item batch is a
  tenth of its 16-item one. R^2 (unweighted, of the line against the medians) is kept with it.
- **Max batch** is the smallest batch size ``n`` (any integer up to the largest swept size) for
  which doubling the batch improves per-item latency by less than ``PLATEAU_GAIN`` (5%), read on
  the fitted line (``plateau_batch``): ``t(2n)/2n`` is not 5% below ``t(n)/n``, which on
  ``t = K n + B`` is the first ``n > 9 B / K``. Any integer, not only the swept powers of two: the
  rule is a threshold on ``B / K``, and between powers of two it jumped 8 <-> 16 (50%) when
  ``B / K`` read 0.88 and 1.05 in two runs (the 8|16 boundary is 0.89); on integers the same
  readings give 8 and 10.
- **Concurrent loads** is the number of simultaneous loads (of those tried, e.g. 1, 2, 4) with
  the highest load throughput ``k / wall(k)`` (``wall(k)``: the median over repetitions), taking a
  larger ``k`` only when its throughput beats the level chosen so far by a clear margin,
  ``CONCURRENCY_GAIN`` (25%): a further load channel is worth it only if it buys clearly more
  loads per second, and single wall times moved by 20-50% from repetition to repetition here, so
  with a 10% margin two full profiles chose 4 and 2 on the same box.
- **Per-process overhead**: an expert's footprint ``= fixed + per_file_byte * file_bytes``, fitted
  by least squares over the measured experts (exact for two; with one, all of it is ``fixed``).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PLATEAU_GAIN = 0.05
CONCURRENCY_GAIN = 0.25
#: the fraction of the samples dropped at each end by ``work_mean``
TRIM = 0.2


@dataclass(frozen=True)
class Figure:
    """One measured figure: the median of ``n`` repetitions and their relative spread."""

    median: float
    spread: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Figure:
        if not values:
            raise ValueError("a figure needs at least one measurement")
        med = statistics.median(values)
        spread = (max(values) - min(values)) / med if med > 0 else 0.0
        return cls(float(med), float(spread), len(values))


@dataclass(frozen=True)
class LinearFit:
    """``y = slope * x + intercept`` with its coefficient of determination."""

    slope: float
    intercept: float
    r2: float

    def __call__(self, x: float) -> float:
        return self.slope * x + self.intercept


def fit_linear(xs: Sequence[float], ys: Sequence[float], weights: Sequence[float] | None = None) -> LinearFit:
    """Least squares, ordinary or with ``weights`` (each point's weight in the squared residuals).
    One distinct x: slope 0 through the (weighted) mean. R^2 is the unweighted one of the line
    against the points (1 if they are all equal)."""
    if len(xs) != len(ys) or not xs or (weights is not None and len(weights) != len(xs)):
        raise ValueError("fit_linear needs as many ys (and weights) as xs, at least one")
    ws = [1.0] * len(xs) if weights is None else [float(w) for w in weights]
    if any(w < 0 for w in ws) or sum(ws) <= 0:
        raise ValueError("fit_linear needs non-negative weights, not all zero")
    total = sum(ws)
    mx = sum(w * x for w, x in zip(ws, xs, strict=True)) / total
    my = sum(w * y for w, y in zip(ws, ys, strict=True)) / total
    sxx = sum(w * (x - mx) ** 2 for w, x in zip(ws, xs, strict=True))
    if sxx == 0:
        return LinearFit(0.0, my, 1.0)
    slope = sum(w * (x - mx) * (y - my) for w, x, y in zip(ws, xs, ys, strict=True)) / sxx
    intercept = my - slope * mx
    mean_y = statistics.fmean(ys)
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return LinearFit(slope, intercept, r2)


def fit_batch_line(latency_s: Mapping[int, float]) -> LinearFit:
    """``t(n) = K n + B`` through the per-size median latencies, each weighted by ``1 / t(n)^2``
    (least squares of the relative residuals; module doc). Sizes with a latency of 0 (nothing
    measurable) weigh as much as the smallest positive one."""
    if not latency_s:
        raise ValueError("fit_batch_line needs at least one batch size")
    sizes = sorted(latency_s)
    positive = [latency_s[n] for n in sizes if latency_s[n] > 0]
    floor = min(positive) if positive else 1.0
    weights = [1.0 / max(latency_s[n], floor) ** 2 for n in sizes]
    return fit_linear([float(n) for n in sizes], [latency_s[n] for n in sizes], weights)


def work_mean(values: Sequence[float]) -> float:
    """The mean of ``values`` with the lowest and highest ``TRIM`` of them dropped (module doc):
    ``int(TRIM * len)`` at each end, so nothing is dropped from fewer than five samples."""
    if not values:
        raise ValueError("work_mean needs at least one value")
    ordered = sorted(values)
    cut = int(TRIM * len(ordered))
    return statistics.fmean(ordered[cut : len(ordered) - cut])


def plateau_batch(line: LinearFit, largest: int) -> int:
    """The batch size where per-item latency on ``line`` stops improving (module doc): the
    smallest ``n`` in ``1..largest`` whose doubling gains less than ``PLATEAU_GAIN`` per item;
    ``largest`` when every doubling still gains (nothing beyond the sweep is read off the line)."""
    if largest < 1:
        raise ValueError("plateau_batch needs a largest batch size of at least 1")
    for n in range(1, largest):
        per_item, doubled = line(n) / n, line(2 * n) / (2 * n)
        if doubled > (1.0 - PLATEAU_GAIN) * per_item:
            return n
    return largest


def concurrent_loads(wall_s: Mapping[int, float]) -> int:
    """How many loads at once this box does best (module doc); ``wall_s[k]``: k loads' wall time
    (the median of its repetitions)."""
    if not wall_s:
        raise ValueError("concurrent_loads needs at least one measurement")
    best = min(wall_s)
    for k in sorted(wall_s):
        if k > best and k / wall_s[k] >= (1.0 + CONCURRENCY_GAIN) * best / wall_s[best]:
            best = k
    return best


def overhead(file_bytes: Sequence[float], footprint_bytes: Sequence[float]) -> LinearFit:
    """Footprint as ``fixed + per_file_byte * file`` (slope and intercept of a LinearFit)."""
    fit = fit_linear(file_bytes, footprint_bytes)
    if fit.slope < 0:  # noise across near-equal sizes: keep the physical reading
        mean = statistics.fmean(footprint_bytes)
        return LinearFit(0.0, mean, fit.r2)
    return fit
