"""The factory gRPC front end and the typed client, end to end over a real ``grpc.aio`` server on
127.0.0.1 (port 0) backed by ``FakeEngine``, an ``InspectionService`` with configurable delays,
gates, errors and a bounded queue that records what it received, what is queued now and what
was cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest

from orchestrator import client as client_mod
from orchestrator.client import (
    BoardSummary,
    ExpertFailed,
    InspectionClient,
    RemoteBackendUnavailable,
    RemoteBadRequest,
    RemoteDeadlinePassed,
    RemoteError,
    RemoteNotServing,
    RemoteQueueFull,
    SyncInspectionClient,
    refusal_status,
)
from orchestrator.engine import types as engine_types
from orchestrator.engine.types import (
    BackendUnavailable,
    BadRequest,
    DeadlinePassed,
    EngineStatus,
    ExecutorStatus,
    ExpertUse,
    InspectionError,
    InspectRequest,
    NotServing,
    QueueFull,
    ResidentExpert,
    ServerStatus,
    Verdict,
)
from orchestrator.frontend import inspection_pb2 as pb
from orchestrator.frontend import inspection_pb2_grpc as pb_grpc
from orchestrator.frontend.server import InspectionServer, ListenError
from orchestrator.frontend.servicer import SERVICE_NAME
from orchestrator.frontend.status_codes import ERROR_CLASS_KEY, ERROR_STATUS
from orchestrator.images import encode_png

T = TypeVar("T")
SHAPES = {"cap": (3, 8, 8), "res": (1, 4, 6)}
TEST_TIMEOUT_S = 5.0


class FakeEngine:
    """An ``InspectionService`` for front-end tests.

    - ``delay_s``: how long each inspect takes (per component id in ``delays``);
    - ``gates``: component ids whose inspect waits until ``release(cid)`` (``hold_all``: every id);
    - ``raises``: component id -> the ``InspectionError`` (or any exception) inspect raises;
    - ``outcomes``: component id -> the verdict's outcome (default ``pass``);
    - ``queue_bound``: more than this many inspects at once -> ``QueueFull`` (nothing queued);
    - deadlines are honoured: ``DeadlinePassed`` when the request's deadline passes first.

    Records ``received`` (every request), ``queued`` (component ids inside inspect now),
    ``cancelled`` (component ids whose inspect was cancelled) and ``completed``.
    """

    def __init__(self, *, serving: bool = True, delay_s: float = 0.0, queue_bound: int = 64) -> None:
        self.is_serving = serving
        self.delay_s = delay_s
        self.delays: dict[str, float] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.hold_all = False
        self.raises: dict[str, BaseException] = {}
        self.outcomes: dict[str, str] = {}
        self.queue_bound = queue_bound
        self.received: list[InspectRequest] = []
        self.queued: set[str] = set()
        self.cancelled: list[str] = []
        self.completed: list[str] = []
        self.engine_status = EngineStatus(policy="fake", serving=serving)

    # InspectionService
    def serving(self) -> bool:
        return self.is_serving

    def component_types(self) -> Sequence[str]:
        return list(SHAPES)

    def input_shape(self, component_type: str) -> tuple[int, int, int]:
        return SHAPES[component_type]

    def status(self) -> EngineStatus:
        return self.engine_status

    async def inspect(self, request: InspectRequest) -> Verdict:
        self.received.append(request)
        cid = request.component_id
        if cid in self.raises:
            raise self.raises[cid]
        if len(self.queued) >= self.queue_bound:
            raise QueueFull(f"queue full: {len(self.queued)} of {self.queue_bound} queued")
        self.queued.add(cid)
        try:
            await asyncio.wait_for(self._work(cid), self._left(request))
        except asyncio.TimeoutError:
            raise DeadlinePassed(f"deadline passed for component {cid!r}") from None
        except asyncio.CancelledError:
            self.cancelled.append(cid)
            raise
        finally:
            self.queued.discard(cid)
        self.completed.append(cid)
        outcome = self.outcomes.get(cid, "pass")
        return Verdict(
            board_id=request.board_id,
            component_id=cid,
            component_type=request.component_type,
            outcome=outcome,  # type: ignore[arg-type]
            defect_class=1 if outcome == "defect" else None,
            scores=(float(np.asarray(request.image).mean()),) if outcome != "error" else (),
            experts=(ExpertUse("det", "7"),),
            queue_s=0.001,
            compute_s=0.002,
            error="expert cls-cap failed to infer: boom" if outcome == "error" else None,
        )

    # test controls
    def gate(self, cid: str) -> asyncio.Event:
        return self.gates.setdefault(cid, asyncio.Event())

    def release(self, cid: str) -> None:
        self.gate(cid).set()

    @staticmethod
    def _left(request: InspectRequest) -> float | None:
        return None if request.deadline is None else max(0.0, request.deadline - time.monotonic())

    async def _work(self, cid: str) -> None:
        if self.hold_all or cid in self.gates:
            await self.gate(cid).wait()
        await asyncio.sleep(self.delays.get(cid, self.delay_s))


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run one async test body on a fresh loop, bounded so that a hang fails fast."""

    async def bounded() -> T:
        return await asyncio.wait_for(make(), TEST_TIMEOUT_S)

    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def serve(engine: FakeEngine, **kw: Any) -> AsyncIterator[tuple[InspectionServer, InspectionClient]]:
    server = InspectionServer(engine, "127.0.0.1:0", health_poll_s=0.01, **kw)
    await server.start()
    try:
        async with InspectionClient(server.address) as client:
            yield server, client
    finally:
        await server.stop(grace=0.2)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 2.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def tensor(component_type: str = "cap", value: float = 0.5) -> np.ndarray:
    return np.full(SHAPES[component_type], value, dtype=np.float32)


def req(
    cid: str, component_type: str = "cap", board: str = "b1", image: Any = None, **kw: Any
) -> InspectRequest:
    return InspectRequest(
        board, cid, component_type, tensor(component_type) if image is None else image, **kw
    )


def raw_stub(address: str) -> tuple[grpc.aio.Channel, pb_grpc.InspectionStub]:
    channel = grpc.aio.insecure_channel(address)
    return channel, pb_grpc.InspectionStub(channel)


# --- the error -> status table -----------------------------------------------------------------


def test_table_in_engine_types_matches_the_mapping() -> None:
    """The table documented in orchestrator/engine/types.py is the one the front end applies."""
    doc = engine_types.__doc__ or ""
    documented = {}
    for name, status in re.findall(r"^(\w+)\s{2,}([A-Z_]+)\s{2,}", doc, re.M):
        cls = getattr(engine_types, name, None)
        if isinstance(cls, type) and issubclass(cls, InspectionError):
            documented[cls] = status
    assert documented == {cls: code.name for cls, code in ERROR_STATUS.items()}


ENGINE_ERRORS = [
    (
        BadRequest("image is 5x5, expected 8x8"),
        grpc.StatusCode.INVALID_ARGUMENT,
        RemoteBadRequest,
        BadRequest,
    ),
    (
        QueueFull("queue full: 64 of 64 queued"),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        RemoteQueueFull,
        QueueFull,
    ),
    (
        DeadlinePassed("deadline passed 3 ms ago"),
        grpc.StatusCode.DEADLINE_EXCEEDED,
        RemoteDeadlinePassed,
        DeadlinePassed,
    ),
    (
        BackendUnavailable("triton 127.0.0.1:8001 unreachable"),
        grpc.StatusCode.UNAVAILABLE,
        RemoteBackendUnavailable,
        BackendUnavailable,
    ),
    (NotServing("initial placement not loaded"), grpc.StatusCode.UNAVAILABLE, RemoteNotServing, NotServing),
]


@pytest.mark.parametrize(
    ("error", "code", "remote", "domain"), ENGINE_ERRORS, ids=lambda x: getattr(x, "__name__", "")
)
def test_engine_error_becomes_its_status_with_its_message(
    error: InspectionError, code: grpc.StatusCode, remote: type, domain: type
) -> None:
    engine = FakeEngine()
    engine.raises["c1"] = error

    async def body() -> None:
        async with serve(engine) as (server, client):
            channel, stub = raw_stub(server.address)
            async with channel:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Inspect(convert_req(req("c1")))
            assert info.value.code() == code
            assert info.value.details() == str(error)
            assert dict(info.value.trailing_metadata())[ERROR_CLASS_KEY] == domain.__name__
            # the typed client raises the same domain error, carrying status and message
            with pytest.raises(remote) as typed:
                await client.inspect(req("c1"))
            assert isinstance(typed.value, domain) and isinstance(typed.value, RemoteError)
            assert typed.value.code == code and typed.value.status == code.name
            assert typed.value.details == str(error) and str(error) in str(typed.value)
            # and the next request is served as if nothing happened
            assert (await client.inspect(req("c2"))).outcome == "pass"

    run(body)


def convert_req(request: InspectRequest) -> pb.InspectRequest:
    from orchestrator.frontend import convert

    return convert.request_to_proto(request, now=time.monotonic())


@pytest.mark.parametrize(
    ("msg", "words"),
    [
        (pb.InspectRequest(), ("empty request",)),
        (pb.InspectRequest(board_id="b", component_id="c", component_type="cap"), ("missing", "image")),
        (
            pb.InspectRequest(board_id="b", component_id="c", component_type="diode", encoded=b"x"),
            ("unknown component type", "'diode'"),
        ),
        (
            pb.InspectRequest(
                board_id="b",
                component_id="c",
                component_type="cap",
                tensor=pb.Tensor(shape=[3, 8, 8], dtype=pb.DTYPE_FP32, data=b"\0" * 12),
            ),
            ("tensor.data", "too short"),
        ),
        (
            pb.InspectRequest(
                board_id="b", component_id="c", component_type="cap", encoded=b"\x89PNG garbage"
            ),
            ("encoded", "cannot decode"),
        ),
    ],
    ids=["empty", "no-image", "unknown-type", "wrong-size", "undecodable"],
)
def test_bad_requests_are_invalid_argument_and_never_reach_the_engine(
    msg: pb.InspectRequest, words: tuple[str, ...]
) -> None:
    engine = FakeEngine()

    async def body() -> None:
        async with serve(engine) as (server, _):
            channel, stub = raw_stub(server.address)
            async with channel:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Inspect(msg)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            for word in words:
                assert word in (info.value.details() or "")
            assert dict(info.value.trailing_metadata())[ERROR_CLASS_KEY] == "BadRequest"

    run(body)
    assert engine.received == []


def test_oversized_image_is_invalid_argument_up_to_the_transport_limit() -> None:
    engine = FakeEngine()

    async def body() -> None:
        async with serve(engine, max_encoded_bytes=1000, max_message_bytes=3000) as (_, client):
            with pytest.raises(RemoteBadRequest, match="encoded is oversized: 2000 bytes, the limit is 1000"):
                await client.inspect(req("c1", image=b"\x89PNG" + b"\0" * 1996))
            # beyond what gRPC accepts at all: its own RESOURCE_EXHAUSTED, which is *not* a full queue
            with pytest.raises(RemoteError) as info:
                await client.inspect(req("c2", image=b"\0" * 5000))
            assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert not isinstance(info.value, QueueFull)

    run(body)
    assert engine.received == []


def test_error_verdict_is_internal_with_its_message_and_the_verdict() -> None:
    engine = FakeEngine()
    engine.outcomes["c1"] = "error"

    async def body() -> None:
        async with serve(engine) as (_, client):
            with pytest.raises(ExpertFailed) as info:
                await client.inspect(req("c1"))
            assert info.value.code == grpc.StatusCode.INTERNAL
            assert info.value.details == "expert cls-cap failed to infer: boom"
            assert info.value.verdict is not None and info.value.verdict.outcome == "error"
            assert info.value.verdict.experts == (ExpertUse("det", "7"),)

    run(body)


def test_engine_bug_is_internal_not_a_bad_request() -> None:
    engine = FakeEngine()
    engine.raises["c1"] = ZeroDivisionError("oops")
    engine.outcomes["c2"] = "maybe"  # a verdict the API cannot express

    async def body() -> None:
        async with serve(engine) as (_, client):
            for cid, words in (("c1", "ZeroDivisionError"), ("c2", "'maybe'")):
                with pytest.raises(RemoteError) as info:
                    await client.inspect(req(cid))
                assert info.value.code == grpc.StatusCode.INTERNAL and words in info.value.details
                assert not isinstance(info.value, BadRequest)
            # in a stream each becomes that component's error verdict; the others go on
            verdicts, summary = await client.inspect_board_all([req("c1"), req("c2"), req("c3")])
            errors = {v.component_id: v.error for v in verdicts if v.outcome == "error"}
            assert set(errors) == {"c1", "c2"} and all(
                e and e.startswith("INTERNAL: engine error") for e in errors.values()
            )
            assert (summary.components, summary.passed, summary.errors) == (3, 1, 2)

    run(body)


# --- inputs, deadlines -------------------------------------------------------------------------


def test_raw_tensor_and_png_reach_the_engine_as_the_input_tensor() -> None:
    engine = FakeEngine()
    raw = np.random.default_rng(3).random(SHAPES["cap"], dtype=np.float32)
    pixels = np.random.default_rng(4).integers(0, 256, size=(4, 6), dtype=np.uint8)  # 1 channel, H=4, W=6

    async def body() -> None:
        async with serve(engine) as (_, client):
            v1 = await client.inspect(req("c1", image=raw))
            v2 = await client.inspect(req("c2", "res", image=encode_png(pixels)))
            assert (v1.component_id, v1.outcome, v1.experts) == ("c1", "pass", (ExpertUse("det", "7"),))
            assert v1.scores == pytest.approx((float(raw.mean()),))
            assert v2.component_type == "res"

    run(body)
    np.testing.assert_array_equal(engine.received[0].image, raw)
    np.testing.assert_allclose(np.asarray(engine.received[1].image), pixels[None] / 255.0, atol=1e-7)


def test_request_deadline_reaches_the_engine_and_expires_as_deadline_exceeded() -> None:
    engine = FakeEngine()
    engine.hold_all = True

    async def body() -> None:
        async with serve(engine) as (_, client):
            sent = time.monotonic()
            with pytest.raises(RemoteDeadlinePassed, match="deadline passed for component 'c1'"):
                await client.inspect(req("c1", deadline=sent + 0.05))
            answered = time.monotonic()
            # 50 ms from when the server received it: not before the client's 50 ms, and passed by
            # the time the answer came (a fixed 20 ms window around sent + 50 ms failed when the
            # first call's transit took longer on a loaded box)
            deadline = engine.received[0].deadline
            assert deadline is not None and sent + 0.045 <= deadline <= answered + 0.005
            assert engine.queued == set()

    run(body)


def test_call_timeout_also_bounds_the_engine_and_leaves_nothing_queued() -> None:
    engine = FakeEngine()
    engine.hold_all = True

    async def body() -> None:
        async with serve(engine) as (_, client):
            start = time.monotonic()
            with pytest.raises(RemoteDeadlinePassed):
                await client.inspect(req("c1"), timeout=0.1)
            assert engine.received[0].deadline is not None
            assert engine.received[0].deadline <= start + 0.11
            await until(lambda: not engine.queued, "the engine to drop the request")

    run(body)


def test_unary_call_cancelled_by_the_client_withdraws_the_request() -> None:
    engine = FakeEngine()
    engine.hold_all = True

    async def body() -> None:
        async with serve(engine) as (_, client):
            task = asyncio.create_task(client.inspect(req("c1")))
            await until(lambda: engine.queued == {"c1"}, "the request to be queued")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await until(lambda: engine.cancelled == ["c1"], "the engine task to be cancelled")
            assert engine.queued == set()

    run(body)


# --- InspectBoard ------------------------------------------------------------------------------


def test_first_verdict_arrives_before_the_last_image_is_sent() -> None:
    """The client sends the second image only after the first verdict has arrived: a server that
    read the whole stream before answering would deadlock here (and time out)."""
    engine = FakeEngine()
    events: list[str] = []

    async def body() -> None:
        got_first = asyncio.Event()

        async def images() -> AsyncIterator[InspectRequest]:
            events.append("sent c1")
            yield req("c1")
            await asyncio.wait_for(got_first.wait(), 2.0)
            events.append("sent c2")
            yield req("c2")

        async with serve(engine) as (_, client):
            async for item in client.inspect_board(images()):
                if isinstance(item, Verdict):
                    events.append(f"verdict {item.component_id}")
                    got_first.set()
                else:
                    events.append("summary")

    run(body)
    assert events == ["sent c1", "verdict c1", "sent c2", "verdict c2", "summary"]


def test_verdicts_stream_in_completion_order_then_the_summary() -> None:
    engine = FakeEngine()
    engine.gate("slow")
    engine.outcomes.update({"d": "defect", "f": "fail"})

    async def body() -> None:
        async with serve(engine) as (_, client):
            order: list[str] = []
            summary: BoardSummary | None = None
            async for item in client.inspect_board([req("slow"), req("d"), req("f", "res")]):
                if isinstance(item, BoardSummary):
                    summary = item
                    continue
                order.append(item.component_id)
                if len(order) == 2:
                    engine.release("slow")  # the slow one finishes only after the others were sent
            assert order[2] == "slow" and set(order[:2]) == {"d", "f"}
            assert summary is not None and 0 < summary.wall_s < 2
            counts = (summary.board_id, summary.components, summary.passed, summary.defects)
            assert counts + (summary.detector_fails, summary.errors) == ("b1", 3, 1, 1, 1, 0)

    run(body)


def test_bad_image_in_a_stream_is_an_error_verdict_and_the_stream_goes_on() -> None:
    engine = FakeEngine()
    engine.outcomes["x"] = "error"

    async def body() -> None:
        async with serve(engine) as (server, client):
            channel, stub = raw_stub(server.address)
            good = convert_req(req("ok1"))
            bad = pb.InspectRequest(
                board_id="b1",
                component_id="bad",
                component_type="cap",
                tensor=pb.Tensor(shape=[3, 4, 4], dtype=pb.DTYPE_FP32, data=b"\0" * 192),
            )
            other_board = convert_req(req("ob", board="b2"))
            async with channel:
                call = stub.InspectBoard(
                    iter([good, bad, other_board, convert_req(req("x")), convert_req(req("ok2"))])
                )
                responses = [r async for r in call]
            verdicts = {r.verdict.component_id: r.verdict for r in responses if r.HasField("verdict")}
            assert responses[-1].HasField("summary") and len(responses) == 6
            assert verdicts["bad"].outcome == pb.OUTCOME_ERROR
            assert verdicts["bad"].error.startswith("INVALID_ARGUMENT: tensor.shape is [3, 4, 4]")
            assert verdicts["ob"].error.startswith("INVALID_ARGUMENT: board_id is 'b2'")
            assert (
                verdicts["x"].error == "expert cls-cap failed to infer: boom"
            )  # an engine failure keeps its text
            assert verdicts["ok1"].outcome == verdicts["ok2"].outcome == pb.OUTCOME_PASS
            s = responses[-1].summary
            assert (s.board_id, s.components, s.passed, s.errors) == ("b1", 5, 2, 3)

    run(body)
    assert sorted(r.component_id for r in engine.received) == ["ok1", "ok2", "x"]


def test_queue_full_in_a_stream_refuses_only_the_overflow() -> None:
    engine = FakeEngine(queue_bound=2)
    engine.hold_all = True

    async def body() -> None:
        async with serve(engine) as (_, client):
            verdicts: list[Verdict] = []

            async def images() -> AsyncIterator[InspectRequest]:
                for i in range(5):
                    yield req(f"c{i}")
                await until(lambda: len(verdicts) == 3, "three refusals")
                for cid in list(engine.queued):
                    engine.release(cid)

            summary = None
            async for item in client.inspect_board(images()):
                if isinstance(item, Verdict):
                    verdicts.append(item)
                else:
                    summary = item
            refused = [v for v in verdicts if v.outcome == "error"]
            assert len(refused) == 3 and {refusal_status(v) for v in refused} == {"RESOURCE_EXHAUSTED"}
            assert all("queue full" in (v.error or "") for v in refused)
            assert summary is not None and (summary.components, summary.passed, summary.errors) == (5, 2, 3)

    run(body)


def _disconnect_case(how: str) -> FakeEngine:
    engine = FakeEngine()
    engine.hold_all = True

    async def body() -> None:
        async with serve(engine) as (server, client):
            if how == "client-breaks-out":
                stream = client.inspect_board([req("c0"), req("c1"), req("c2"), req("done")])
                engine.release("done")
                async for item in stream:  # the first verdict ("done") arrives, then the client leaves
                    assert isinstance(item, Verdict) and item.component_id == "done"
                    await until(lambda: engine.queued == {"c0", "c1", "c2"}, "three queued")
                    break
                await stream.aclose()  # type: ignore[attr-defined]
            else:
                channel, stub = raw_stub(server.address)
                call = stub.InspectBoard()
                for i in range(3):
                    await call.write(convert_req(req(f"c{i}")))
                await until(lambda: len(engine.queued) == 3, "three queued")
                if how == "call-cancelled":
                    call.cancel()
                    await until(lambda: len(engine.cancelled) == 3, "every pending inspect cancelled")
                await channel.close(grace=None)  # channel-closed: the whole connection goes away
            await until(lambda: len(engine.cancelled) == 3, "every pending inspect cancelled")
            assert engine.queued == set()

    run(body)
    return engine


@pytest.mark.parametrize("how", ["client-breaks-out", "call-cancelled", "channel-closed"])
def test_disconnect_mid_stream_cancels_every_pending_inspect(how: str) -> None:
    engine = _disconnect_case(how)
    assert sorted(engine.cancelled) == ["c0", "c1", "c2"] and engine.queued == set()


def test_unsendable_image_ends_the_client_stream_with_bad_request() -> None:
    engine = FakeEngine()
    engine.hold_all = True

    async def body() -> None:
        async with serve(engine) as (_, client):

            async def images() -> AsyncIterator[InspectRequest]:
                yield req("c0")
                await until(lambda: engine.queued == {"c0"}, "c0 queued")
                yield req("c1", image=np.zeros((3, 8, 8), np.float64))

            with pytest.raises(BadRequest, match="float32"):
                async for _ in client.inspect_board(images()):
                    pass
            await until(lambda: engine.cancelled == ["c0"], "c0 withdrawn")

    run(body)


def test_empty_stream_gets_an_empty_summary() -> None:
    async def body() -> None:
        async with serve(FakeEngine()) as (_, client):
            verdicts, summary = await client.inspect_board_all([])
            assert verdicts == [] and summary == BoardSummary("", components=0)

    run(body)


# --- Status, health, reflection, lifecycle -----------------------------------------------------


STATUS = EngineStatus(
    policy="coserve",
    serving=True,
    servers=(
        ServerStatus("local", "127.0.0.1:8001", True, True, "measured"),
        ServerStatus("box2", "10.1.1.2:8001", False, True, "profile"),
    ),
    executors=(
        ExecutorStatus("cpu0", "cpu", "local", 4 << 30, 3 << 30, 5, (ResidentExpert("det", 1 << 28),)),
        ExecutorStatus("gpu0", "gpu", "box2", 16 << 30, 0, 0),
    ),
    queued=5,
    queue_bound=128,
    notes=("box2: external server, memory from the profile",),
)


def test_status_round_trips_through_the_api() -> None:
    engine = FakeEngine()
    engine.engine_status = STATUS

    async def body() -> None:
        async with serve(engine) as (_, client):
            assert await client.status() == STATUS

    run(body)


def test_health_follows_the_engine_and_can_be_forced() -> None:
    engine = FakeEngine(serving=False)

    async def body() -> None:
        async with serve(engine) as (server, client):
            assert await client.health() == "NOT_SERVING"
            assert await client.health("") == "NOT_SERVING"
            engine.is_serving = True
            await client.wait_until_serving(1.0)
            assert await client.health("") == "SERVING" and server.serving()
            await server.set_serving(False)  # draining: NOT_SERVING although the engine serves
            assert await client.health() == "NOT_SERVING"
            await asyncio.sleep(0.05)  # the poll must not undo an override
            assert await client.health() == "NOT_SERVING"
            await server.set_serving(None)
            assert await client.health() == "SERVING"
            with pytest.raises(RemoteError) as info:
                await client.health("no.such.Service")
            assert info.value.code == grpc.StatusCode.NOT_FOUND

    run(body)


def _call_everything_through_reflection(address: str) -> dict[str, Any]:
    """A client that knows nothing but the address: services, messages and enums all come from
    server reflection; the message classes are built in a private descriptor pool."""
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("coserve.v1.Inspection")
        methods = {m.name: m for m in service.methods}

        def stub(name: str) -> tuple[Any, Any]:
            method = methods[name]
            req_cls = message_factory.GetMessageClass(method.input_type)
            out_cls = message_factory.GetMessageClass(method.output_type)
            path = f"/{service.full_name}/{name}"
            kind = {(False, False): channel.unary_unary, (True, True): channel.stream_stream}[
                (method.client_streaming, method.server_streaming)
            ]
            return req_cls, kind(
                path, request_serializer=req_cls.SerializeToString, response_deserializer=out_cls.FromString
            )

        fp32 = pool.FindEnumTypeByName("coserve.v1.DType").values_by_name["DTYPE_FP32"].number
        Req, inspect = stub("Inspect")

        def make(cid: str) -> Any:
            r = Req(board_id="b1", component_id=cid, component_type="cap")
            r.tensor.shape.extend([3, 8, 8])
            r.tensor.dtype = fp32
            r.tensor.data = np.full((3, 8, 8), 0.25, "<f4").tobytes()
            return r

        verdict = inspect(make("c1"), timeout=2)
        _, board = stub("InspectBoard")
        board_out = list(board(iter([make("c2"), make("c3")]), timeout=2))
        StatusReq, status = stub("Status")
        status_out = status(StatusReq(), timeout=2)
        return {
            "services": services,
            "methods": set(methods),
            "verdict_type": type(verdict),
            "outcome": verdict.DESCRIPTOR.fields_by_name["outcome"]
            .enum_type.values_by_number[verdict.outcome]
            .name,
            "scores": list(verdict.scores),
            "board_kinds": [r.WhichOneof("kind") for r in board_out],
            "summary_components": board_out[-1].summary.components,
            "policy": status_out.policy,
        }


def test_a_client_built_from_reflection_alone_calls_every_method() -> None:
    engine = FakeEngine()

    async def body() -> dict[str, Any]:
        async with serve(engine) as (server, _):
            return await asyncio.to_thread(_call_everything_through_reflection, server.address)

    got = run(body)
    assert {SERVICE_NAME, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= got[
        "services"
    ]
    assert got["methods"] == {"Inspect", "InspectBoard", "Status"}
    assert got["verdict_type"] is not pb.Verdict  # not the generated class: built from reflection
    assert got["outcome"] == "OUTCOME_PASS" and got["scores"] == pytest.approx([0.25])
    assert got["board_kinds"] == ["verdict", "verdict", "summary"] and got["summary_components"] == 2
    assert got["policy"] == "fake"


def test_graceful_stop_finishes_calls_in_flight_and_refuses_new_ones() -> None:
    engine = FakeEngine(delay_s=0.3)

    async def body() -> None:
        server = InspectionServer(engine, "127.0.0.1:0", health_poll_s=0.01)
        await server.start()
        async with InspectionClient(server.address) as client, InspectionClient(server.address) as late:
            await late.health()  # connected before the stop
            in_flight = asyncio.create_task(client.inspect(req("c1")))
            await until(lambda: engine.queued == {"c1"}, "c1 in flight")
            stopping = asyncio.create_task(server.stop(grace=2.0))
            await asyncio.sleep(0.05)
            with pytest.raises(RemoteError) as info:
                await late.inspect(req("c2"), timeout=1.0)
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
            assert (await in_flight).outcome == "pass"
            await stopping
        assert engine.cancelled == [] and engine.completed == ["c1"]

    run(body)


def test_stop_after_the_grace_period_cancels_what_is_left() -> None:
    engine = FakeEngine()
    engine.hold_all = True

    async def body() -> None:
        server = InspectionServer(engine, "127.0.0.1:0")
        await server.start()
        async with InspectionClient(server.address) as client:
            stream = asyncio.create_task(client.inspect_board_all([req("c0"), req("c1")]))
            unary = asyncio.create_task(client.inspect(req("c2")))
            await until(lambda: len(engine.queued) == 3, "three in flight")
            await server.stop(grace=0.1)
            for task in (stream, unary):
                with pytest.raises(RemoteError):
                    await task
        await until(lambda: len(engine.cancelled) == 3, "all three withdrawn")

    run(body)


def test_listen_errors() -> None:
    # TLS (credentials) is tested in tests/unit/test_tls.py
    async def body() -> None:
        async with serve(FakeEngine()) as (server, _):
            with pytest.raises(ListenError, match=f"127.0.0.1:{server.port}"):
                await InspectionServer(FakeEngine(), f"127.0.0.1:{server.port}").start()

    run(body)


def test_sync_client() -> None:
    engine = FakeEngine()
    engine.engine_status = STATUS
    engine.raises["full"] = QueueFull("queue full: 1 of 1")

    def use(address: str) -> tuple[Any, ...]:
        with SyncInspectionClient(address, timeout=2) as sync:
            verdict = sync.inspect(req("c1"))
            board = list(sync.inspect_board([req("c2"), req("c3")]))
            with pytest.raises(RemoteQueueFull):
                sync.inspect(req("full"))
            return verdict, board, sync.status(), sync.health()

    async def body() -> tuple[Any, ...]:
        async with serve(engine) as (server, _):
            return await asyncio.to_thread(use, server.address)

    verdict, board, status, health = run(body)
    assert verdict.component_id == "c1" and verdict.outcome == "pass"
    assert [type(x) for x in board] == [Verdict, Verdict, BoardSummary] and board[-1].components == 2
    assert status == STATUS and health == "SERVING"


def test_client_module_exports() -> None:
    assert set(client_mod.__all__) <= set(dir(client_mod))
    assert refusal_status(Verdict("b", "c", "t", "error", error="UNAVAILABLE: no triton")) == "UNAVAILABLE"
    assert refusal_status(Verdict("b", "c", "t", "error", error="expert failed")) is None
    assert refusal_status(Verdict("b", "c", "t", "pass")) is None
