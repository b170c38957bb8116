"""Benchmark: how fast this box's CPU is from minute to minute, on a fixed piece of work.

Why: figures measured minutes apart on this 2-vCPU VM disagree by more than the code explains
(a profile's small-expert times by 20-30% between runs, ``profile_accuracy``; the same direct
Triton infer at 1.5 to 2.3 ms p50 between runs of ``serve_overhead``). If the CPU itself does a
fixed piece of work in more CPU time at some moments than at others (another tenant on the host's
cores or caches, frequency), no measurement on the box can agree better than that.

What it does: every ``--every-s`` for ``--minutes``, one unit of fixed work (a numpy matrix
product and a pure-Python loop, about 10 ms), timed in this thread's CPU time
(``time.thread_time``), so waiting for a core does not count, only how long the core took over
it; ``--units`` units per sample, the sample their median. Prints and writes the samples, their
median and the spread (max - min) / median, the worst and best minute, and the load average
before and after (run it on an otherwise idle box; its own duty cycle is about 1%).

Run:  .venv/bin/python benchmarks/box_speed.py [--minutes 10] [--every-s 2] [--units 5]
      [--out benchmarks/results/box_speed.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import numpy as np
from bench_io import write_result  # benchmarks/ is sys.path[0] when run as a script

from profiler.run import machine_description


def unit(a: np.ndarray) -> float:
    """One unit of fixed work; returns its CPU seconds in this thread."""
    began = time.thread_time()
    a @ a  # BLAS; at 160 x 160 OpenBLAS stays on the calling thread
    total = 0
    for i in range(60_000):
        total += i * i % 7
    return time.thread_time() - began


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--every-s", type=float, default=2.0)
    ap.add_argument("--units", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/box_speed.json")
    args = ap.parse_args()
    a = np.random.default_rng(0).random((160, 160))
    for _ in range(20):
        unit(a)  # warm caches and the interpreter
    load_before = os.getloadavg()[0]
    began = time.monotonic()
    samples: list[tuple[float, float]] = []
    while time.monotonic() - began < args.minutes * 60:
        at = time.monotonic() - began
        samples.append((round(at, 1), statistics.median(unit(a) for _ in range(args.units))))
        time.sleep(max(0.0, args.every_s - (time.monotonic() - began - at)))
    cpu = [s for _, s in samples]
    med = statistics.median(cpu)
    per_minute: dict[int, list[float]] = {}
    for at, s in samples:
        per_minute.setdefault(int(at // 60), []).append(s)
    minutes = {m: statistics.median(v) for m, v in per_minute.items()}
    result: dict[str, Any] = {
        "machine": machine_description(),
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "unit_cpu_ms": {"median": round(med * 1e3, 3), "min": round(min(cpu) * 1e3, 3), "max": round(max(cpu) * 1e3, 3),
                        "spread": round((max(cpu) - min(cpu)) / med, 3)},
        "minute_medians_ms": {str(m): round(v * 1e3, 3) for m, v in minutes.items()},
        "minute_spread": round((max(minutes.values()) - min(minutes.values())) / med, 3),
        "samples": [[at, round(s * 1e6)] for at, s in samples],
    }
    u = result["unit_cpu_ms"]
    print(f"{len(samples)} samples over {args.minutes:g} min: unit of work {u['median']:.2f} ms CPU median, "
          f"{u['min']:.2f}-{u['max']:.2f} (spread {u['spread']:.0%}); per-minute medians "
          + " ".join(f"{v:.2f}" for v in result["minute_medians_ms"].values())
          + f" (spread {result['minute_spread']:.0%}); load average {result['load_avg_1m']}")
    write_result(args.out, result, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
