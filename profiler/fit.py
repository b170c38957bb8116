"""Pure statistics of the profiler: medians with spreads, least-squares fits and the stated rules.

Nothing here measures; every function takes numbers and returns numbers, so each rule is unit
tested on made-up data. The rules (also in docs/profiler.md):

- **A figure** is the median of its repetitions; its *spread* is (max - min) / median, so 0.1
  means the repetitions lay within 10% of the median's size.
- **Batch latency** ``t(n) = K * n + B`` is fitted by ordinary least squares over every measured
  batch size (each point the median of its repetitions); R^2 is kept with it.
- **Max batch** is the smallest swept size ``n`` after which per-item latency stops improving:
  the next swept size's per-item latency ``t(m)/m`` is not at least ``PLATEAU_GAIN`` (5%) below
  ``t(n)/n``. The largest swept size when it keeps improving.
- **Concurrent loads** is the number of simultaneous loads (of those tried, e.g. 1, 2, 4) with
  the highest load throughput ``k / wall(k)``, taking a larger ``k`` only when it beats every
  smaller one by at least ``CONCURRENCY_GAIN`` (10%): on a 2-core box two loads overlap and four
  only queue.
- **Per-process overhead**: an expert's footprint ``= fixed + per_file_byte * file_bytes``, fitted
  by least squares over the measured experts (exact for two; with one, all of it is ``fixed``).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PLATEAU_GAIN = 0.05
CONCURRENCY_GAIN = 0.10


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


def fit_linear(xs: Sequence[float], ys: Sequence[float]) -> LinearFit:
    """Ordinary least squares. One distinct x: slope 0 through the mean (R^2 1 if all equal)."""
    if len(xs) != len(ys) or not xs:
        raise ValueError("fit_linear needs as many ys as xs, at least one")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return LinearFit(0.0, my, 1.0)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return LinearFit(slope, intercept, r2)


def max_batch(latency_s: Mapping[int, float]) -> int:
    """The swept batch size where per-item latency stops improving (module doc)."""
    sizes = sorted(latency_s)
    if not sizes:
        raise ValueError("max_batch needs at least one batch size")
    for n, m in zip(sizes, sizes[1:], strict=False):
        if latency_s[m] / m > (1.0 - PLATEAU_GAIN) * (latency_s[n] / n):
            return n
    return sizes[-1]


def concurrent_loads(wall_s: Mapping[int, float]) -> int:
    """How many loads at once this box does best (module doc); ``wall_s[k]``: k loads' wall time."""
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
