"""The 100-type CPU-scaled bench board shared by ``serve_bench.py`` and ``plan_grid.py``:
generated, exported into ``<work>/repo`` (unchanged experts reused) and profiled (the cached
``<repo>/profile.yaml`` when it is current and was measured with the full plan, else a full profile
measured now: a quick one can fall in one of this box's slow spells, ``orchestrator.bench.ensure_profile``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from exporter.build import export_coe
from exporter.generate import generate, preset_options, write_coe
from orchestrator.bench import budget_serve_file, ensure_profile
from orchestrator.coe import CoEDefinition
from orchestrator.core.profile import CostProfile
from profiler.measure import Plan


@dataclass(frozen=True)
class BenchBoard:
    coe: CoEDefinition
    coe_path: Path
    repo: Path
    profile_path: Path
    profile: CostProfile


def prepare_board(work: Path, types: int, say: Callable[[str], None]) -> BenchBoard:
    coe = generate(preset_options("pcb-a", types=types))
    coe_path = write_coe(coe, work / "coe.yaml")
    repo = work / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    summary = export_coe(coe, repo, jobs=2)
    say(f"board {coe.name}: {len(coe.routing)} types, {len(coe.experts)} experts, {coe.board.total} components; "
        f"exported {summary.exported} (reused {len(summary.experts) - summary.exported}) in {time.perf_counter() - t:.0f} s")
    probe = budget_serve_file(coe_path, repo, 2)  # the budget does not matter for profiling
    profile_path, profile = ensure_profile(probe, coe, plan=Plan(), say=say)
    return BenchBoard(coe, coe_path, repo, profile_path, profile)
