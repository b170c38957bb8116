"""The demo: one synthetic board inspected through a real embedded tritonserver.

What it does, in order (and prints as it goes):
1. starts the embedded tritonserver on the exported model repository (explicit model control);
2. takes one board from the deterministic board source as PNG component images and decodes
   them the way the orchestrator will in production (``orchestrator.images``);
3. for each classifier needed, most-used first: loads it through the Triton adapter, runs its
   components' images in batches of the model's ``max_batch_size``, reads the verdicts, and
   unloads it (confirmed: index and model processes gone; the confirmation overlaps the next
   load), so at most ``max_resident`` experts ever hold memory at once;
4. sends every "no defect" component whose type routes to a shared detector to that detector,
   the same way (preliminary step strictly before subsequent step);
5. prints per-expert timings, the board's verdicts and the server's memory, and stops the server.

This is deliberately the simplest correct schedule (group by expert, load each once); the
dependency-aware scheduler of ``orchestrator.core`` drives the real server in a later step.

Faults, and what the board gets (a result never claims more than happened):
- an expert whose model process died (Triton keeps it READY, requests fail "not healthy") is
  reloaded once and its batch retried; a load that failed that way is retried once;
- an expert that still fails gives its components an "error" verdict, and the board carries on;
- a server that stops answering or dies ends the board: every component not yet inspected gets
  an "error" verdict naming the cause, said once, and nothing more is sent to it;
- ``DemoReport.exit_code()`` is non-zero whenever a component has no real verdict.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from orchestrator import experts_io
from orchestrator.board_source import BoardSource
from orchestrator.coe import CoEDefinition
from orchestrator.errors import CoserveError, ServerUnavailableError
from orchestrator.images import decode_image
from orchestrator.triton import deadlines
from orchestrator.triton.adapter import TritonAdapter, model_process_died
from orchestrator.triton.launcher import EmbeddedTriton
from orchestrator.triton.model_config import ModelConfig

#: ``DemoReport.exit_code`` values (the CLI's codes, ``orchestrator.cli``)
EXIT_OK, EXIT_INCOMPLETE, EXIT_SERVER_LOST = 0, 1, 3


@dataclass
class ExpertRun:
    """What happened to one expert during the demo."""

    name: str
    arch: str
    images: int = 0
    batches: int = 0
    load_s: float = 0.0
    unload_gone_s: float = 0.0
    infer_s: float = 0.0
    peak_model_pss_bytes: int = 0
    error: str | None = None
    recovered: str | None = None  # a fault it recovered from (reloaded after its process died)


@dataclass
class DemoReport:
    """The demo's outcome.

    ``verdicts`` maps request id -> "defect" | "pass" | "fail" | "error" (its expert failed: the
    component was not inspected and must be re-inspected); ``decided_by`` maps request id ->
    the expert whose output gave the final verdict; ``component_types`` request id -> its type.
    """

    components: int
    verdicts: dict[int, str] = field(default_factory=dict)
    decided_by: dict[int, str] = field(default_factory=dict)
    component_types: dict[int, str] = field(default_factory=dict)
    experts: list[ExpertRun] = field(default_factory=list)
    wall_s: float = 0.0
    peak_resident: int = 0
    peak_server_pss_bytes: int = 0
    #: why the board ended early: the server stopped answering or died (None: it did not)
    server_lost: str | None = None
    #: request id -> why it was not inspected (only for "error" verdicts)
    causes: dict[int, str] = field(default_factory=dict)
    #: how the embedded server ended (``ExitReport.describe()``), or None for an external one
    server_end: str | None = None

    def counts(self) -> Counter[str]:
        return Counter(self.verdicts.values())

    def not_inspected(self) -> int:
        return sum(1 for v in self.verdicts.values() if v == "error") + (self.components - len(self.verdicts))

    def exit_code(self) -> int:
        """0 when every component has a real verdict; 3 when the server was lost; 1 otherwise."""
        if self.not_inspected() == 0:
            return EXIT_OK
        return EXIT_SERVER_LOST if self.server_lost else EXIT_INCOMPLETE

    def record(self, request_id: int, component_type: str, verdict: str, expert: str) -> None:
        self.verdicts[request_id] = verdict
        self.decided_by[request_id] = expert
        self.component_types[request_id] = component_type


@dataclass(frozen=True)
class _Item:
    request_id: int
    component_type: str
    tensor: np.ndarray


def _record_errors(report: DemoReport, items: Sequence[_Item], expert: str, cause: str) -> None:
    """The expert failed: its components were not inspected and get an "error" verdict."""
    for item in items:
        report.record(item.request_id, item.component_type, "error", expert)
        report.causes[item.request_id] = cause


class _ServerLost(Exception):
    """The server stopped answering: the board ends, nothing more is sent to it."""


def _holding(server: EmbeddedTriton | None, index_live: set[str]) -> set[str]:
    """Experts holding memory: on the embedded server those with a living model process (a
    model whose process died reads READY or UNLOADING but holds nothing); elsewhere the index."""
    if server is not None:
        return {p.model for p in server.model_processes()}
    return index_live


async def _run_expert(
    adapter: TritonAdapter,
    server: EmbeddedTriton | None,
    repo: Path,
    name: str,
    arch: str,
    items: Sequence[_Item],
    report: DemoReport,
    say: Callable[[str], None],
    unloads: list[asyncio.Task[None]],
    max_resident: int,
) -> list[dict[str, np.ndarray]] | None:
    """Load ``name``, run ``items`` through it in batches, start its confirmed unload.

    Before loading, waits for earlier unloads until fewer than ``max_resident`` experts are
    loaded or still unloading (they hold memory until their process exits), so the number of
    experts holding memory never exceeds ``max_resident``. Returns the outputs per batch, or
    None when the expert failed (load or inference; ``ExpertRun.error`` says why): its components
    then have an "error" verdict recorded here, and the board carries on. A dead model process is
    recovered once (module doc). Raises ``_ServerLost`` when the server stops answering.
    """
    while len([t for t in unloads if not t.done()]) >= max_resident:
        await asyncio.wait([t for t in unloads if not t.done()], return_when=asyncio.FIRST_COMPLETED)
    run = ExpertRun(name, arch, images=len(items))
    report.experts.append(run)
    model_bytes = deadlines.model_file_bytes(repo / name)
    load_timeout = deadlines.load_timeout_s(model_bytes)

    def fail(what: str, exc: CoserveError) -> None:
        run.error = f"{what}: {exc}"
        say(f"  {name:<14} {arch:<10} {run.error}")
        if not isinstance(exc, ServerUnavailableError):  # a lost server is recorded board-wide
            _record_errors(report, items, name, f"expert {name} {what}")

    try:
        config = ModelConfig.read(repo / name)
        try:
            run.load_s = (await adapter.load(name, config, timeout_s=load_timeout)).seconds
        except CoserveError as exc:
            if not model_process_died(exc):
                raise
            run.recovered = f"load retried after its model process died ({exc})"
            run.load_s = (await adapter.load(name, config, timeout_s=load_timeout)).seconds
    except ServerUnavailableError as exc:
        fail("load failed", exc)
        raise _ServerLost(str(exc)) from None
    except CoserveError as exc:  # a failed load leaves nothing loaded: Triton marks it UNAVAILABLE
        fail("load failed", exc)
        return None
    index_live = {e.name for e in await adapter.index() if e.state in ("READY", "UNLOADING")}
    if server is not None:  # an external server's processes cannot be seen from here
        run.peak_model_pss_bytes = sum(p.pss_bytes for p in server.model_processes(name))
        report.peak_server_pss_bytes = max(
            report.peak_server_pss_bytes,
            server.server_memory().pss_bytes + sum(p.pss_bytes for p in server.model_processes()),
        )
    report.peak_resident = max(report.peak_resident, len(_holding(server, index_live)))
    collected: list[dict[str, np.ndarray]] = []
    outputs: list[dict[str, np.ndarray]] | None = collected
    step = max(1, config.max_batch_size)
    t0 = time.perf_counter()
    lost: str | None = None
    try:
        for start in range(0, len(items), step):
            batch = np.stack([it.tensor for it in items[start : start + step]])
            timeout = deadlines.infer_timeout_s(model_bytes, len(batch))
            try:
                collected.append(await adapter.infer(name, {experts_io.INPUT_NAME: batch}, timeout_s=timeout))
            except CoserveError as exc:
                if not model_process_died(exc) or run.recovered:
                    raise
                # Triton keeps a model whose process died READY: reload it once, retry the batch.
                run.recovered = f"reloaded after its model process died ({exc})"
                say(f"  {name:<14} {arch:<10} model process died; reloading once and retrying its batch")
                await adapter.reload(name, config, timeout_s=load_timeout)
                collected.append(await adapter.infer(name, {experts_io.INPUT_NAME: batch}, timeout_s=timeout))
            run.batches += 1
    except ServerUnavailableError as exc:
        fail("inference failed", exc)
        outputs, lost = None, str(exc)
    except CoserveError as exc:
        fail("inference failed", exc)
        outputs = None
    run.infer_s = time.perf_counter() - t0
    if lost is not None:
        raise _ServerLost(lost)

    async def unload() -> None:
        try:
            gone = await adapter.unload(name, timeout_s=deadlines.UNLOAD_S)
        except CoserveError as exc:
            run.error = f"{run.error + '; ' if run.error else ''}unload failed: {exc}"
            say(f"  {name:<14} {arch:<10} {run.error}")
            return
        run.unload_gone_s = gone.gone_seconds
        say(
            f"  {name:<14} {arch:<10} load {run.load_s * 1e3:7.1f} ms  "
            f"{run.images:4d} images in {run.batches:3d} batches {run.infer_s * 1e3:8.1f} ms  "
            f"unload-until-gone {run.unload_gone_s * 1e3:7.1f} ms  model PSS {run.peak_model_pss_bytes / 2**20:6.1f} MiB"
        )

    # The model process takes ~1.2 s to exit after Triton's unload call returns: confirm that in
    # the background while the next expert loads, within the ``max_resident`` bound.
    unloads.append(asyncio.create_task(unload()))
    return outputs


async def inspect_board(
    coe: CoEDefinition,
    repo: str | Path,
    server: EmbeddedTriton | None,
    *,
    triton_url: str | None = None,
    board_seed: int = 0,
    defect_share: float = 0.05,
    max_resident: int = 2,
    say: Callable[[str], None] = print,
) -> DemoReport:
    """Inspect one whole board of ``coe`` on ``server`` (embedded) or at ``triton_url`` (external).

    With an external server, unloads are confirmed by the repository index only (its model
    processes cannot be seen from here) and memory figures stay 0.
    """
    repo = Path(repo)
    t_start = time.perf_counter()
    source = BoardSource(coe, seed=board_seed, defect_share=defect_share)
    requests = list(source.requests(None, order="board", encoding="png"))
    report = DemoReport(components=len(requests))
    say(f"board {coe.board.name}: {len(requests)} components of {len(coe.board.mix)} types, PNG-encoded")

    by_classifier: dict[str, list[_Item]] = defaultdict(list)
    for req in requests:
        assert isinstance(req.image, bytes)
        rule = coe.routing[req.component_type]
        shape = coe.experts[rule.classifier].input_shape
        by_classifier[rule.classifier].append(_Item(req.request_id, req.component_type, decode_image(req.image, shape)))

    if server is not None:
        adapter = TritonAdapter(server.grpc_url, process_probe=server.process_probe())
    elif triton_url is not None:
        adapter = TritonAdapter(triton_url)
    else:
        raise ValueError("inspect_board needs an embedded server or a triton_url")
    unloads: list[asyncio.Task[None]] = []
    try:
        await _inspect_steps(coe, repo, server, adapter, by_classifier, report, say, unloads, max_resident)
    except (_ServerLost, ServerUnavailableError) as lost:
        report.server_lost = str(lost)
        say(f"board stopped: {lost}; nothing more is sent to it")
        everything = [item for items in by_classifier.values() for item in items]
        _record_errors(
            report,
            [item for item in everything if item.request_id not in report.verdicts],
            "-",
            f"the server was lost ({lost})",
        )
    finally:
        for task in unloads:
            task.cancel()
        await adapter.close()
    report.wall_s = time.perf_counter() - t_start
    missing = {r.request_id for r in requests} - set(report.verdicts)
    if missing:  # every accepted request gets a verdict; a gap here is a bug, never silent
        raise RuntimeError(f"{len(missing)} components got no verdict: {sorted(missing)[:10]}")
    return report


async def _inspect_steps(
    coe: CoEDefinition,
    repo: Path,
    server: EmbeddedTriton | None,
    adapter: TritonAdapter,
    by_classifier: dict[str, list[_Item]],
    report: DemoReport,
    say: Callable[[str], None],
    unloads: list[asyncio.Task[None]],
    max_resident: int,
) -> None:
    """The preliminary step for every classifier, then the subsequent step for every detector."""
    say("preliminary step: classifiers, most-used first (load -> infer -> confirmed unload)")
    to_detector: dict[str, list[_Item]] = defaultdict(list)
    for name, items in sorted(by_classifier.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        outputs = await _run_expert(
            adapter, server, repo, name, "classifier", items, report, say, unloads, max_resident
        )
        if outputs is None:  # the expert failed; its components are recorded as "error"
            continue
        logits = np.concatenate([o[experts_io.CLASSIFIER_OUTPUT] for o in outputs])
        for item, no_defect in zip(items, experts_io.classifier_no_defect(logits), strict=True):
            detector = coe.routing[item.component_type].detector
            if not no_defect:
                report.record(item.request_id, item.component_type, "defect", name)
            elif detector is None:
                report.record(item.request_id, item.component_type, "pass", name)
            else:
                to_detector[detector].append(item)

    say("subsequent step: shared detectors for 'no defect' components routed to them")
    for name, items in sorted(to_detector.items()):
        outputs = await _run_expert(
            adapter, server, repo, name, "detector", items, report, say, unloads, max_resident
        )
        if outputs is None:  # the expert failed; its components are recorded as "error"
            continue
        boxes = np.concatenate([o["boxes"] for o in outputs])
        objectness = np.concatenate([o["objectness"] for o in outputs])
        _, h, w = coe.experts[name].input_shape
        passed = experts_io.detector_pass(boxes, objectness, (h, w))
        for item, ok in zip(items, passed, strict=True):
            report.record(item.request_id, item.component_type, "pass" if ok else "fail", name)
    await asyncio.gather(*unloads)


def run_demo(
    coe: CoEDefinition,
    repo: str | Path,
    *,
    board_seed: int = 0,
    max_resident: int = 2,
    triton_url: str | None = None,
    say: Callable[[str], None] = print,
) -> DemoReport:
    """Inspect one board and print a summary.

    Without ``triton_url``: start the embedded server on ``repo`` and stop it afterwards. With it:
    use that running server (e.g. NVIDIA's container, which must serve the same repository in
    explicit model-control mode); ``repo`` still supplies the model configs.
    """
    if triton_url is not None:
        say(f"using the Triton server at {triton_url}")
        report = asyncio.run(
            inspect_board(coe, repo, None, triton_url=triton_url, board_seed=board_seed, max_resident=max_resident, say=say)
        )
        _summary(report, max_resident, say)
        return report
    say(f"starting embedded tritonserver on {repo} (explicit model control)")
    server = EmbeddedTriton(repo)
    with server:
        say(f"  ready at grpc://{server.grpc_url} in {server.start_seconds or 0:.2f} s, "
            f"server PSS {server.server_memory().pss_bytes / 2**20:.1f} MiB")
        report = asyncio.run(
            inspect_board(coe, repo, server, board_seed=board_seed, max_resident=max_resident, say=say)
        )
        leftover = server.model_processes()
    ended = server.exit_report
    report.server_end = ended.describe() if ended is not None else None
    if ended is not None and ended.died_before_stop and report.server_lost is None:
        report.server_lost = ended.describe()
    _summary(report, max_resident, say)
    say(f"model processes left after the last unload: {len(leftover)}; {report.server_end}")
    return report


def _summary(report: DemoReport, max_resident: int, say: Callable[[str], None]) -> None:
    counts = report.counts()
    missing = report.not_inspected()
    say("")
    say(f"board {'inspected' if not missing else 'INCOMPLETE'} in {report.wall_s:.2f} s: "
        f"{report.components} components, "
        f"{counts['pass']} pass, {counts['defect']} defect (classifier), {counts['fail']} fail (detector)"
        + (f", {missing} NOT INSPECTED" if missing else ""))
    for cause, n in sorted(Counter(report.causes.values()).items(), key=lambda kv: (-kv[1], kv[0])):
        say(f"  {n} not inspected: {cause}")
    if report.server_lost:
        say(f"  server lost: {report.server_lost}")
    failed = [run for run in report.experts if run.error]
    for run in failed:
        say(f"  expert {run.name} failed ({run.images} components not inspected): {run.error}")
    for run in report.experts:
        if run.recovered:
            say(f"  expert {run.name} recovered: {run.recovered}")
    loads = len(report.experts) - len(failed)
    say(f"experts loaded: {loads} (each once{', one reload after a dead process' if any(r.recovered for r in report.experts) else ''}), "
        f"at most {report.peak_resident} holding memory at a time (bound {max_resident}), "
        f"peak server+models PSS {report.peak_server_pss_bytes / 2**20:.1f} MiB")
    if missing:
        say(f"exit code {report.exit_code()}: {missing} of {report.components} components have no verdict")
