"""Benchmark: how long the watchdog takes to recover from real faults mid-board.

A tiny exported CoE (4 classifiers, 1 shared detector, 40 components, 32x32 images; the
integration tests' board) is served by ``run_service`` with the demo's serve config (one CPU
executor, room for one expert) on an embedded tritonserver. Its board is streamed through the
gRPC API, and after ``--after`` verdicts one fault is made, for real:

- ``model_sigkill``: the model process of the next expert to run is SIGKILLed just before its
  inference (the moment is taken at the adapter seam, as the fault tests do; the kill is real).
  Triton keeps the model READY and answers "not healthy"; the watchdog reloads the expert;
- ``server_sigkill``: the tritonserver is SIGKILLed (restart, resident set put back);
- ``server_sigstop``: the tritonserver is frozen with SIGSTOP (the monitor sees state T,
  kills it, restarts).

Per run: ``detect_s`` (fault -> the watchdog's recovery began), ``recover_s`` (the recovery itself:
for a restart, old server and its model processes gone + new server ready + set restored),
``server_restart_s`` (of that, the server's own restart: killed, reaped, new one ready),
``serving_again_s`` (fault -> health SERVING again, polled every 20 ms; restarts only),
``board_s`` against a run without a fault, and whether every component got exactly one real
verdict. Timings on a shared 2-core box are noisy: the JSON records the machine.

Run:  .venv/bin/python benchmarks/recovery_times.py [--repeats 3] [--out benchmarks/results/recovery_times.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from orchestrator.board_source import BoardSource
from orchestrator.client import InspectionClient
from orchestrator.coe import CoEDefinition, dump_coe
from orchestrator.config_reader import read_yaml_file
from orchestrator.core.profile import parse_profile
from orchestrator.demo import demo_budget_bytes, demo_spec
from orchestrator.engine.types import InspectRequest
from orchestrator.frontend.board import BoardSummary
from orchestrator.serve import Service, run_service
from orchestrator.triton import processes
from orchestrator.triton.adapter import TritonAdapter
from profiler.run import machine_description

FAULTS = ("none", "model_sigkill", "server_sigkill", "server_sigstop")


def build(work: Path) -> tuple[CoEDefinition, Path, Path, Path]:
    from exporter.build import export_coe
    from exporter.generate import generate, preset_options
    from profiler.measure import Plan
    from profiler.run import run_profile, write_profile

    coe = generate(preset_options("demo", types=4, detectors=1, detector_share=0.5, components=40,
                                  classifier_mb=0.5, detector_mb=1.0, image_size=32))
    repo = work / "repo"
    export_coe(coe, repo, jobs=1)
    coe_file = work / "coe.yaml"
    dump_coe(coe, coe_file)
    profile = work / "profile.yaml"
    write_profile(run_profile(coe, repo, ("cpu",), Plan.quick(), command="benchmarks/recovery_times.py"), profile)
    return coe, coe_file, repo, profile


#: armed by ``make_fault("model_sigkill")``: the next inference's model process is killed first
_ARMED: list[bool] = []
_KILLED_AT: list[float] = []  # monotonic time of that kill
_ORIGINAL_INFER = TritonAdapter.infer


async def _infer_with_fault(self: TritonAdapter, name: str, *args: Any, **kwargs: Any) -> Any:
    if _ARMED and self.process_probe is not None:
        _ARMED.clear()
        victims = [p.pid for p in self.process_probe(name)]
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        _KILLED_AT.append(time.monotonic())
        while any(processes.is_alive(pid) for pid in victims):
            await asyncio.sleep(0.005)
    return await _ORIGINAL_INFER(self, name, *args, **kwargs)


def make_fault(kind: str, service: Service) -> None:
    [triton] = service.embedded.values()
    if kind == "model_sigkill":
        _ARMED.append(True)
    elif kind in ("server_sigkill", "server_sigstop"):
        assert triton.pid is not None
        os.kill(triton.pid, signal.SIGKILL if kind == "server_sigkill" else signal.SIGSTOP)


def one_run(coe: CoEDefinition, coe_file: Path, repo: Path, profile_file: Path, kind: str, after: int) -> dict[str, Any]:
    profile = parse_profile(read_yaml_file(profile_file), str(profile_file))
    spec = demo_spec(coe_file, repo, profile_file, demo_budget_bytes(profile, 1), None)
    requests = [
        InspectRequest(f"rec-{kind}", str(r.request_id), r.component_type, r.image)
        for r in BoardSource(coe, seed=0, defect_share=0.05).requests(None, order="board", encoding="png")
    ]
    out: dict[str, Any] = {"fault": kind}
    stop = asyncio.Event()

    async def on_ready(service: Service) -> None:
        ids: list[str] = []
        errors: list[str] = []
        fault_at: list[float] = []  # (monotonic), and the engine clock then
        engine_at: list[float] = []
        serving_again: list[float] = []
        done = asyncio.Event()

        async def watch(client: InspectionClient) -> None:
            was_down = False  # after the fault
            while not done.is_set():
                try:
                    state = await client.health(timeout=1.0)
                except Exception:  # noqa: BLE001 - no answer counts as down
                    state = "NO ANSWER"
                if not fault_at:
                    pass
                elif state != "SERVING":
                    was_down = True
                elif was_down and not serving_again:
                    serving_again.append(time.monotonic() - fault_at[0])
                await asyncio.sleep(0.02)

        began = time.monotonic()
        async with InspectionClient(service.address) as client:
            watcher = asyncio.ensure_future(watch(client))
            try:
                async for item in client.inspect_board(requests, timeout=120):
                    if isinstance(item, BoardSummary):
                        continue
                    ids.append(item.component_id)
                    if item.outcome == "error":
                        errors.append(item.error or "error")
                    if len(ids) == after and kind != "none":
                        fault_at.append(time.monotonic())
                        engine_at.append(service.engine.now())
                        make_fault(kind, service)
                out["board_s"] = time.monotonic() - began
                if kind.startswith("server"):
                    await client.wait_until_serving(20)
                    await asyncio.sleep(0.1)
            finally:
                done.set()
                await watcher
        counts = Counter(ids)
        out["components"] = len(counts)
        out["answered_twice"] = sum(1 for n in counts.values() if n > 1)
        out["error_verdicts"] = len(errors)
        out["errors"] = errors[:3]
        out["complete"] = len(counts) == coe.board.total and out["answered_twice"] == 0 and not errors
        records = list(service.engine.watchdog.records)
        # on the engine's clock: when the fault was made (a model process: the kill at the seam)
        faulted = engine_at[0] + (_KILLED_AT[-1] - fault_at[0] if kind == "model_sigkill" and _KILLED_AT else 0.0) \
            if engine_at else None
        out["recoveries"] = [
            {"action": r.action, "ok": r.ok, "why": r.why[:200], "recover_s": round(r.seconds, 4),
             "detect_s": round(r.detected_s - faulted, 4) if faulted is not None else None, "restored": r.restored,
             "server_restart_s": round(r.server_s, 4)}
            for r in records
        ]
        out["serving_again_s"] = round(serving_again[0], 4) if serving_again else None
        stop.set()

    async def main() -> None:
        await run_service(spec, stop, on_ready=on_ready, drain_timeout_s=5.0)

    asyncio.run(main())
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def stats(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        return {"median": round(statistics.median(values), 4), "min": round(min(values), 4), "max": round(max(values), 4),
                "n": len(values)}

    out: dict[str, Any] = {}
    for kind in FAULTS:
        mine = [r for r in runs if r["fault"] == kind]
        recs = [rec for r in mine for rec in r["recoveries"] if rec["ok"]]
        out[kind] = {
            "runs": len(mine),
            "complete_runs": sum(1 for r in mine if r["complete"]),
            "board_s": stats([r["board_s"] for r in mine]),
            "detect_s": stats([rec["detect_s"] for rec in recs if rec["detect_s"] is not None]),
            "recover_s": stats([rec["recover_s"] for rec in recs]),
            "server_restart_s": stats([rec["server_restart_s"] for rec in recs if rec["action"] == "restart"]),
            "serving_again_s": stats([r["serving_again_s"] for r in mine if r["serving_again_s"] is not None]),
            "actions": dict(Counter(rec["action"] for r in mine for rec in r["recoveries"])),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--after", type=int, default=8, help="verdicts before the fault")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/recovery_times.json"))
    args = parser.parse_args()
    TritonAdapter.infer = _infer_with_fault  # type: ignore[method-assign]  # a no-op until armed
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="coserve-recovery-") as tmp:
        coe, coe_file, repo, profile = build(Path(tmp))
        for _ in range(args.repeats):
            for kind in FAULTS:
                run = one_run(coe, coe_file, repo, profile, kind, args.after)
                runs.append(run)
                print(json.dumps({k: run[k] for k in ("fault", "complete", "board_s", "serving_again_s")}),
                      [(r["action"], r["detect_s"], r["recover_s"]) for r in run["recoveries"]], flush=True)
    result = {
        "benchmark": "recovery_times",
        "command": f"benchmarks/recovery_times.py --repeats {args.repeats} --after {args.after}",
        "machine": machine_description(),
        "note": "shared 2-core box with other work running: timings are noisy",
        "load_average_at_end": list(os.getloadavg()),
        "summary": summary(runs),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
