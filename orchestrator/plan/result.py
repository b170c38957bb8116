"""Both methods, the choice between them, and the serve config written with its comment block.

Contract: ``make_plan`` runs the requested method(s) on one ``Evaluator`` (so ``best`` compares
the two on the same search seeds, and the simulated search reuses the paper's count trials) and
returns a ``Plan``; ``serve_config_text`` is the YAML a user gets: a comment block (what was
searched, the runs spent, the predicted throughput, the runner-up, the overheads) and a serve
config that ``coserve serve``, ``coserve bench`` and ``coserve simulate --config`` read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import yaml

from orchestrator.core.features import Features
from orchestrator.plan.evaluate import Evaluator
from orchestrator.plan.memory import batch_reserve_bytes, typical_expert_bytes
from orchestrator.plan.paper import paper_method
from orchestrator.plan.simulated import simulated_method
from orchestrator.plan.trials import DEFAULT_TOLERANCE, MethodResult, Trial

METHODS = ("paper", "simulated", "best")


@dataclass
class Plan:
    workload: str
    policy: str
    methods: dict[str, MethodResult]
    chosen_method: str
    chosen: Trial
    reason: str
    runs: int
    max_runs: int
    seeds: tuple[int, ...]
    overhead_notes: tuple[str, ...]
    devices: int
    resident: dict[str, int]  # executor -> experts of typical size its budget holds beside one max batch

    @property
    def runner_up(self) -> Trial | None:
        """The best other layout any method tried."""
        seen = [t for m in self.methods.values() for t in m.trials if t.layout.written != self.chosen.layout.written]
        return max(seen, key=lambda t: t.score, default=None)

    def to_json_obj(self) -> dict[str, object]:
        ru = self.runner_up
        return {
            "workload": self.workload,
            "policy": self.policy,
            "chosen_method": self.chosen_method,
            "chosen": self.chosen.label,
            "predicted_img_s": round(self.chosen.score, 3),
            "runner_up": None if ru is None else ru.label,
            "runner_up_img_s": None if ru is None else round(ru.score, 3),
            "reason": self.reason,
            "runs": self.runs,
            "max_runs": self.max_runs,
            "seeds": list(self.seeds),
            "methods": {
                name: {
                    "chosen": m.chosen.label if m.chosen else None,
                    "predicted_img_s": round(m.chosen.score, 3) if m.chosen else None,
                    "budget_spent": m.budget_spent,
                    "searched": m.searched,
                    "trials": [t.row() for t in m.trials],
                }
                for name, m in self.methods.items()
            },
        }


def make_plan(
    ev: Evaluator,
    method: str = "best",
    *,
    max_gpu_per_device: int = 6,
    max_cpu: int = 2,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Plan:
    """Run ``method`` (``paper``, ``simulated`` or ``best``: both, the better one chosen)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    methods: dict[str, MethodResult] = {}
    if method in ("paper", "best"):
        methods["paper"] = paper_method(ev, max_gpu_per_device=max_gpu_per_device, max_cpu=max_cpu, tolerance=tolerance)
    if method in ("simulated", "best"):
        methods["simulated"] = simulated_method(
            ev, max_gpu_per_device=max_gpu_per_device, max_cpu=max_cpu, tolerance=tolerance
        )
    done = {n: m for n, m in methods.items() if m.chosen is not None}
    if not done:
        raise ValueError("no layout fits the memory given (every executor too small for its smallest expert)")
    if method == "best" and len(done) == 2:
        p, s = done["paper"].chosen, done["simulated"].chosen
        assert p is not None and s is not None
        if s.score > p.score * (1.0 + tolerance):
            name = "simulated"
            why = (f"the simulated search's {s.label} predicts {s.score:.2f} img/s against the paper method's "
                   f"{p.label} at {p.score:.2f}")
        elif s.score >= p.score * (1 - tolerance) and s.executors < p.executors:
            name = "simulated"
            why = (f"the simulated search's {s.label} ({s.score:.2f} img/s) is within {tolerance:.0%} of the paper "
                   f"method's {p.label} ({p.score:.2f}) with fewer executors")
        else:
            name = "paper"
            why = (f"the paper method's {p.label} predicts {p.score:.2f} img/s; the simulated search's best "
                   f"{s.label} ({s.score:.2f}) is not better by more than {tolerance:.0%}")
    else:
        name = next(iter(done))
        why = f"--method {method}"
    chosen = done[name].chosen
    assert chosen is not None
    counts = [t for m in done.values() for t in m.trials if t.stage == "count"]
    fewer = [t for t in counts if t.executors < chosen.executors and t.score >= chosen.score * (1 - tolerance)]
    if not fewer and chosen.executors > 1:
        why += "; fewer executors predict less"
    elif chosen.executors == 1:
        why += "; one executor is enough (loads, not compute, bound the task)"
    graph = ev.graph
    resident = {}
    for ex in chosen.layout.simulated.executors:
        w = typical_expert_bytes(graph, ex.kind) or 1
        resident[ex.name] = max(0, (ex.budget_bytes - batch_reserve_bytes(ev.profile, ex.kind)) // w)
    return Plan(
        workload=ev.workload.name,
        policy=ev.policy,
        methods=methods,
        chosen_method=name,
        chosen=chosen,
        reason=why,
        runs=ev.runs,
        max_runs=ev.max_runs,
        seeds=tuple(ev.seeds),
        overhead_notes=ev.overheads.notes,
        devices=len(ev.machine.gpu_bytes),
        resident=resident,
    )


def _features(features: Features) -> dict[str, object]:
    default = Features()
    return {f.name: getattr(features, f.name) for f in fields(Features) if getattr(features, f.name) != getattr(default, f.name)}


def serve_config_text(plan: Plan, shell: Mapping[str, str] | None = None, command: str = "") -> str:
    """The serve config of ``plan.chosen`` with its comment block; ``shell`` adds ``coserve
    serve``'s keys (coe, repo, profile), written first."""
    cfg = plan.chosen.layout.written
    ru = plan.runner_up
    lines = [
        "# Serve config written by `coserve plan`" + (f": {command}" if command else ""),
        f"# workload {plan.workload}, policy {plan.policy}; chosen by the {plan.chosen_method} method: {plan.reason}",
        f"# predicted throughput {plan.chosen.score:.2f} img/s (simulator, mean over seeds "
        f"{', '.join(map(str, plan.seeds))}: not the workload's own seed)",
        "# runner-up: " + (f"{ru.label} at {ru.score:.2f} img/s" if ru else "none"),
        f"# simulated runs: {plan.runs} of a budget of {plan.max_runs}",
    ]
    for name, m in plan.methods.items():
        pick = f"{m.chosen.label} at {m.chosen.score:.2f} img/s" if m.chosen else "nothing fits"
        lines.append(f"# method {name}: {pick}" + (" (budget spent)" if m.budget_spent else ""))
        lines.extend(f"#   {s}" for s in m.searched)
    lines.append("# memory overheads (from the cost profile / preset):")
    lines.extend(f"#   {n}" for n in plan.overhead_notes)
    lines.append(
        "# resident experts of typical size beside one max batch: "
        + ", ".join(f"{k} {v}" for k, v in plan.resident.items())
    )
    body: dict[str, object] = dict(shell or {})
    text = "\n".join(lines) + "\n"
    if body:
        text += yaml.safe_dump(body, sort_keys=False)
        # one embedded server per executor, named explicitly (coserve serve's default, spelt out)
        text += "servers:\n" + "".join(f"  - {{name: local_{ex.name}}}\n" for ex in cfg.executors)
    text += "executors:\n"
    gpu_i = 0
    per_device = plan.chosen.candidate.gpus_per_device
    for ex in cfg.executors:
        extra = ""
        if ex.kind == "gpu" and plan.devices > 1 and per_device:
            extra = f", gpus: [{gpu_i // per_device}]"
            gpu_i += 1
        if body:
            extra += f", server: local_{ex.name}"
        text += f"  - {{name: {ex.name}, kind: {ex.kind}, budget_bytes: {ex.budget_bytes}{extra}}}\n"
    rest: dict[str, object] = {"policy": cfg.policy, "cpu_cache_bytes": cfg.cpu_cache_bytes,
                               "gpu_context_bytes": cfg.gpu_context_bytes}
    feats = _features(cfg.features)
    if feats:
        rest["features"] = feats
    text += yaml.safe_dump(rest, sort_keys=False)
    return text
