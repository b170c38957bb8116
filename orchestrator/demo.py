"""The demo: one synthetic board inspected through the service, end to end.

It is a client of ``coserve serve``, with no scheduling of its own:
1. a cost profile: ``<repo>/profile.yaml`` when it was measured with this server's unload mode,
   else a quick ``coserve profile`` of the repository (written there for next time);
2. a serve config in memory: one CPU executor whose budget holds ``max_resident`` of the largest
   profiled experts plus one max batch of activations, on an embedded tritonserver (or the server
   at ``triton_url``), policy ``coserve``;
3. the service in-process (``orchestrator.serve.run_service``): Triton, the engine, the gRPC API;
4. the board's PNG component images streamed through ``InspectBoard`` with the typed client,
   verdicts counted as they arrive (progress bar);
5. a summary: throughput, switches, verdicts, where time went (queue, compute, load, unload),
   peak measured footprint against the budget, and how the server ended.

A result never claims more than happened: ``DemoReport.exit_code()`` is 0 only when every
component has a real verdict, 1 when some expert failed (the causes are listed), 3 when the
Triton server was lost (died, frozen, unreachable) and not recovered: the codes of
``orchestrator.cli``. The service heals itself (``orchestrator.engine.watchdog``): an embedded
server that dies or freezes mid-board is restarted and the board completes, so that is exit 0,
with each recovery listed in the summary (what, why, how long); an external server cannot be
restarted, and one lost is still exit 3.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import aio
from orchestrator.board_source import BoardSource
from orchestrator.client import InspectionClient, RemoteError, refusal_status
from orchestrator.coe import CoEDefinition
from orchestrator.core.profile import CostProfile
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.engine.types import InspectRequest, Verdict
from orchestrator.frontend.board import BoardSummary
from orchestrator.serve import Service, serve_until_done
from orchestrator.serve_file import ServeFile, ServerSpec
from orchestrator.triton import processes
from orchestrator.triton.launcher import free_port

#: ``DemoReport.exit_code`` values (the CLI's codes, ``orchestrator.cli``)
EXIT_OK, EXIT_INCOMPLETE, EXIT_SERVER_LOST = 0, 1, 3
EXECUTOR = "cpu0"


@dataclass
class DemoReport:
    """The demo's outcome. ``verdicts``: component id -> pass | defect | fail | error."""

    components: int
    budget_bytes: int = 0
    verdicts: dict[str, str] = field(default_factory=dict)
    causes: dict[str, str] = field(default_factory=dict)  # component id -> why it has no verdict
    experts: dict[str, list[str]] = field(default_factory=dict)  # component id -> experts that ran
    wall_s: float = 0.0
    switches: int = 0
    reloads: int = 0
    queue_s: float = 0.0
    compute_s: float = 0.0
    switch_s: float = 0.0
    load_s: float = 0.0
    unload_s: float = 0.0
    peak_footprint_bytes: int = 0
    #: the server stopped answering, died or could not be reached (None: it did not)
    server_lost: str | None = None
    #: how the embedded server ended (``ExitReport.describe()``), None for an external one
    server_end: str | None = None
    #: the watchdog's recoveries during the board, one line each (restarts, reloads)
    recoveries: list[str] = field(default_factory=list)

    def counts(self) -> Counter[str]:
        return Counter(self.verdicts.values())

    def not_inspected(self) -> int:
        return sum(1 for v in self.verdicts.values() if v == "error") + (self.components - len(self.verdicts))

    def exit_code(self) -> int:
        if self.not_inspected() == 0:
            return EXIT_OK
        return EXIT_SERVER_LOST if self.server_lost else EXIT_INCOMPLETE


def demo_budget_bytes(profile: CostProfile, max_resident: int) -> int:
    """Room for ``max_resident`` of the largest experts, one max batch of activations, the
    server's own growth while serving and the pages its model processes share (the service takes
    those two from the budget first)."""
    costs = [c for per in profile.architectures.values() for c in per.values()]
    largest = max((c.weight_bytes or 0) for c in costs)
    batch = max(c.activation_bytes_per_item * c.max_batch for c in costs)
    return max_resident * largest + batch + profile.processor("cpu").executor_reserve_bytes()


def demo_spec(coe_path: Path, repo: Path, profile_path: Path, budget: int, triton_url: str | None) -> ServeFile:
    server = ServerSpec("external", triton_url) if triton_url is not None else ServerSpec("embedded")
    config = ServeConfig((ExecutorConfig(EXECUTOR, "cpu", budget),), policy="coserve")
    return ServeFile(
        source="coserve demo", config=config, coe=coe_path, repo=repo, profile=profile_path,
        listen=f"127.0.0.1:{free_port()}", queue_bound=100_000, servers={server.name: server},
        executor_server={EXECUTOR: server.name}, executor_gpus={},
    )


def _footprint(service: Service, idle: dict[str, int]) -> int:
    """The embedded servers' measured footprint now: their growth over idle + model processes."""
    total = 0
    for name, triton in service.embedded.items():
        if triton.pid is None:
            continue
        total += max(0, processes.memory(triton.pid).pss_bytes - idle.get(name, 0))
        total += sum(p.pss_bytes for p in triton.model_processes())
    return total


async def _stream_board(
    service: Service, coe: CoEDefinition, board_seed: int, report: DemoReport, progress: Callable[[int], None]
) -> None:
    source = BoardSource(coe, seed=board_seed, defect_share=0.05)
    requests = [
        InspectRequest(f"demo-{board_seed}", str(r.request_id), r.component_type, r.image)
        for r in source.requests(None, order="board", encoding="png")
    ]
    idle = {n: processes.memory(t.pid).pss_bytes for n, t in service.embedded.items() if t.pid is not None}
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            report.peak_footprint_bytes = max(report.peak_footprint_bytes, _footprint(service, idle))
            await asyncio.sleep(0.1)

    sampler = asyncio.ensure_future(sample())
    stats_before = (service.engine.stats.loads, service.engine.stats.reloads)
    began = time.perf_counter()
    try:
        async with InspectionClient(service.address) as client:
            async for item in client.inspect_board(requests):
                if isinstance(item, BoardSummary):
                    continue
                _record(report, item)
                progress(1)
    except RemoteError as exc:  # the stream itself failed: what has no verdict says so
        report.server_lost = report.server_lost or str(exc)
    finally:
        done.set()
        await sampler
    report.wall_s = time.perf_counter() - began
    for r in requests:
        if r.component_id not in report.verdicts:
            report.verdicts[r.component_id] = "error"
            report.causes[r.component_id] = f"no verdict: {report.server_lost or 'the stream ended early'}"
    stats = service.engine.stats
    report.switches = stats.loads - stats_before[0]
    report.reloads = stats.reloads - stats_before[1]
    report.load_s, report.unload_s = stats.load_s, stats.unload_s
    report.recoveries = [
        f"{r.action} of {r.expert or 'the server ' + r.server} {'took' if r.ok else 'FAILED after'} {r.seconds:.2f} s: {r.why}"
        for r in service.engine.watchdog.records
    ]


def _record(report: DemoReport, v: Verdict) -> None:
    report.verdicts[v.component_id] = v.outcome
    report.experts[v.component_id] = [e.expert for e in v.experts]
    report.queue_s += v.queue_s
    report.compute_s += v.compute_s
    report.switch_s += v.switch_s
    if v.outcome == "error":
        report.causes[v.component_id] = v.error or "error"
        if refusal_status(v) == "UNAVAILABLE" and report.server_lost is None:
            report.server_lost = v.error


def run_demo(
    coe: CoEDefinition,
    coe_path: Path,
    repo: str | Path,
    profile_path: Path,
    *,
    board_seed: int = 0,
    max_resident: int = 2,
    triton_url: str | None = None,
    say: Callable[[str], None] = print,
    progress: Callable[[int], None] = lambda _: None,
) -> DemoReport:
    """Inspect one board through the service and print a summary (module doc)."""
    from orchestrator.config_reader import read_yaml_file
    from orchestrator.core.profile import parse_profile

    repo = Path(repo)
    profile = parse_profile(read_yaml_file(profile_path), str(profile_path))
    budget = demo_budget_bytes(profile, max_resident)
    spec = demo_spec(coe_path, repo, profile_path, budget, triton_url)
    report = DemoReport(components=coe.board.total, budget_bytes=budget)
    services: list[Service] = []

    async def stream(service: Service) -> None:
        services.append(service)
        await _stream_board(service, coe, board_seed, report, progress)

    async def main() -> None:
        await serve_until_done(spec, stream, drain_timeout_s=5.0, say=say)

    where = f"the Triton server at {triton_url}" if triton_url else "an embedded tritonserver"
    say(f"serving {coe.name} ({len(coe.experts)} experts) on {where}: one CPU executor, budget "
        f"{budget / 2**20:.0f} MiB (room for {max_resident} of the largest experts), policy coserve")
    aio.run(main())
    for service in services:
        ends = [t.exit_report for t in service.embedded.values() if t.exit_report is not None]
        if ends:
            report.server_end = "; ".join(e.describe() for e in ends)
            if any(e.died_before_stop for e in ends) and report.server_lost is None:
                report.server_lost = report.server_end
    _summary(report, say)
    return report


def _summary(report: DemoReport, say: Callable[[str], None]) -> None:
    counts = report.counts()
    missing = report.not_inspected()
    say("")
    say(f"board {'inspected' if not missing else 'INCOMPLETE'} in {report.wall_s:.2f} s "
        f"({report.components / max(report.wall_s, 1e-9):.1f} img/s): {report.components} components, "
        f"{counts['pass']} pass, {counts['defect']} defect (classifier), {counts['fail']} fail (detector)"
        + (f", {missing} NOT INSPECTED" if missing else ""))
    for cause, n in sorted(Counter(report.causes.values()).items(), key=lambda kv: (-kv[1], kv[0])):
        say(f"  {n} not inspected: {cause}")
    if report.server_lost:
        say(f"  server lost: {report.server_lost}")
    say(f"switches (expert loads while serving): {report.switches}"
        + (f", {report.reloads} reload(s) after a dead model process" if report.reloads else ""))
    say(f"where time went (summed over components): queue {report.queue_s:.1f} s, compute {report.compute_s:.1f} s, "
        f"waiting for switches {report.switch_s:.1f} s; the executor spent {report.load_s:.1f} s loading and "
        f"{report.unload_s:.1f} s unloading")
    say(f"peak measured footprint {report.peak_footprint_bytes / 2**20:.1f} MiB of a "
        f"{report.budget_bytes / 2**20:.1f} MiB budget")
    for line in report.recoveries:
        say(f"  watchdog: {line}")
    if report.server_end:
        say(report.server_end)
    if missing:
        say(f"exit code {report.exit_code()}: {missing} of {report.components} components have no verdict")
