"""Replay every paper task on both presets with every policy and both bounds; check acceptance.

    .venv/bin/python benchmarks/paper_table.py [--out benchmarks/sim_results/paper_table.json]

Writes one JSON object keyed "preset/task" -> policy -> the ``coserve simulate --json`` fields plus
``busy_share``, and prints a table and the acceptance checks of issue 3 (exit 1 if one fails).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from orchestrator.core.policies import PAPER_POLICIES
from orchestrator.simulate.presets import load_preset
from orchestrator.simulate.report import format_table, run_report
from orchestrator.simulate.workload import PAPER_TASKS, build_workload

SAMBA = ("samba-lru", "samba-fifo", "samba-parallel")
# issue 3: paper-numa throughput within 30% (coserve) / 50% (the others) of the published figures
NUMA_BANDS = {
    "coserve": (26.0, 30.0, 0.30),
    "samba-lru": (3.5, 4.3, 0.50),
    "samba-fifo": (2.3, 3.2, 0.50),
    "samba-parallel": (4.8, 6.3, 0.50),
    "none": (4.5, 5.5, 0.50),
    "em": (6.0, 7.0, 0.50),
    "em-ra": (12.0, 14.5, 0.50),
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).with_name("sim_results") / "paper_table.json"))
    ap.add_argument("--presets", nargs="*", default=["paper-numa", "paper-uma"])
    ap.add_argument("--tasks", nargs="*", default=list(PAPER_TASKS))
    args = ap.parse_args()
    out: dict[str, object] = {}
    failures: list[str] = []
    for preset_name in args.presets:
        preset = load_preset(preset_name)
        for task in args.tasks:
            spec = PAPER_TASKS[task]
            wl = build_workload(spec, preset.profile)
            rep = run_report(wl, preset.config(spec.board), preset.profile, list(PAPER_POLICIES))
            key = f"{preset_name}/{task}"
            print(f"\n== {key} (distinct experts used: {len(wl.distinct_experts())})")
            print(format_table(rep))
            obj = rep.to_json_obj()
            for name, r in rep.results.items():
                obj[name]["busy_share"] = {k: round(v, 4) for k, v in sorted(r.busy_share.items())}  # type: ignore[index]
                obj[name]["makespan_s"] = round(r.makespan_s, 4)  # type: ignore[index]
            out[key] = obj
            r = rep.results
            co = r["coserve"]
            for b in SAMBA:
                ratio = co.throughput_img_s / r[b].throughput_img_s
                cut = 1 - co.switches / r[b].switches
                print(f"   coserve vs {b}: {ratio:.2f}x throughput, {cut:.1%} fewer switches")
                if ratio < 4.5:
                    failures.append(f"{key}: coserve only {ratio:.2f}x {b}")
                if cut < 0.75:
                    failures.append(f"{key}: switches cut only {cut:.1%} vs {b}")
            order = [r[p].throughput_img_s for p in ("none", "em", "em-ra", "coserve")]
            if not all(a < b for a, b in zip(order, order[1:], strict=False)):
                failures.append(f"{key}: ablations out of order {order}")
            if preset_name == "paper-numa":
                for p, (lo, hi, tol) in NUMA_BANDS.items():
                    v = r[p].throughput_img_s
                    if not lo * (1 - tol) <= v <= hi * (1 + tol):
                        failures.append(
                            f"{key}: {p} {v:.2f} img/s outside [{lo * (1 - tol):.2f}, {hi * (1 + tol):.2f}]"
                        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, sort_keys=True, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    if failures:
        print("ACCEPTANCE FAILURES:\n  " + "\n  ".join(failures))
        return 1
    print("acceptance: all checks pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
