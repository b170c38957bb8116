from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FP32: _ClassVar[DType]

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_PASS: _ClassVar[Outcome]
    OUTCOME_DEFECT: _ClassVar[Outcome]
    OUTCOME_DETECTOR_FAIL: _ClassVar[Outcome]
    OUTCOME_ERROR: _ClassVar[Outcome]
DTYPE_UNSPECIFIED: DType
DTYPE_FP32: DType
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_PASS: Outcome
OUTCOME_DEFECT: Outcome
OUTCOME_DETECTOR_FAIL: Outcome
OUTCOME_ERROR: Outcome

class Tensor(_message.Message):
    __slots__ = ("shape", "dtype", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: DType
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[DType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class InspectRequest(_message.Message):
    __slots__ = ("board_id", "component_id", "component_type", "tensor", "encoded", "deadline_ms")
    BOARD_ID_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_ID_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    board_id: str
    component_id: str
    component_type: str
    tensor: Tensor
    encoded: bytes
    deadline_ms: int
    def __init__(self, board_id: _Optional[str] = ..., component_id: _Optional[str] = ..., component_type: _Optional[str] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ..., encoded: _Optional[bytes] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class ExpertUse(_message.Message):
    __slots__ = ("expert", "version")
    EXPERT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    expert: str
    version: str
    def __init__(self, expert: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("board_id", "component_id", "component_type", "outcome", "defect_class", "scores", "experts", "queue_s", "compute_s", "switch_s", "error")
    BOARD_ID_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_ID_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DEFECT_CLASS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    EXPERTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_S_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    SWITCH_S_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    board_id: str
    component_id: str
    component_type: str
    outcome: Outcome
    defect_class: int
    scores: _containers.RepeatedScalarFieldContainer[float]
    experts: _containers.RepeatedCompositeFieldContainer[ExpertUse]
    queue_s: float
    compute_s: float
    switch_s: float
    error: str
    def __init__(self, board_id: _Optional[str] = ..., component_id: _Optional[str] = ..., component_type: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., defect_class: _Optional[int] = ..., scores: _Optional[_Iterable[float]] = ..., experts: _Optional[_Iterable[_Union[ExpertUse, _Mapping]]] = ..., queue_s: _Optional[float] = ..., compute_s: _Optional[float] = ..., switch_s: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class BoardSummary(_message.Message):
    __slots__ = ("board_id", "components", "passed", "defects", "detector_fails", "errors", "wall_s")
    BOARD_ID_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    DEFECTS_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FAILS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    WALL_S_FIELD_NUMBER: _ClassVar[int]
    board_id: str
    components: int
    passed: int
    defects: int
    detector_fails: int
    errors: int
    wall_s: float
    def __init__(self, board_id: _Optional[str] = ..., components: _Optional[int] = ..., passed: _Optional[int] = ..., defects: _Optional[int] = ..., detector_fails: _Optional[int] = ..., errors: _Optional[int] = ..., wall_s: _Optional[float] = ...) -> None: ...

class InspectBoardResponse(_message.Message):
    __slots__ = ("verdict", "summary")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    summary: BoardSummary
    def __init__(self, verdict: _Optional[_Union[Verdict, _Mapping]] = ..., summary: _Optional[_Union[BoardSummary, _Mapping]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerStatus(_message.Message):
    __slots__ = ("name", "url", "embedded", "healthy", "accounting")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDED_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTING_FIELD_NUMBER: _ClassVar[int]
    name: str
    url: str
    embedded: bool
    healthy: bool
    accounting: str
    def __init__(self, name: _Optional[str] = ..., url: _Optional[str] = ..., embedded: _Optional[bool] = ..., healthy: _Optional[bool] = ..., accounting: _Optional[str] = ...) -> None: ...

class ResidentExpert(_message.Message):
    __slots__ = ("expert", "bytes", "version")
    EXPERT_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    expert: str
    bytes: int
    version: str
    def __init__(self, expert: _Optional[str] = ..., bytes: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...

class ExecutorStatus(_message.Message):
    __slots__ = ("name", "kind", "server", "budget_bytes", "used_bytes", "queue_depth", "resident")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    server: str
    budget_bytes: int
    used_bytes: int
    queue_depth: int
    resident: _containers.RepeatedCompositeFieldContainer[ResidentExpert]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., server: _Optional[str] = ..., budget_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., queue_depth: _Optional[int] = ..., resident: _Optional[_Iterable[_Union[ResidentExpert, _Mapping]]] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("policy", "serving", "servers", "executors", "queued", "queue_bound", "notes")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    EXECUTORS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    QUEUE_BOUND_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    policy: str
    serving: bool
    servers: _containers.RepeatedCompositeFieldContainer[ServerStatus]
    executors: _containers.RepeatedCompositeFieldContainer[ExecutorStatus]
    queued: int
    queue_bound: int
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, policy: _Optional[str] = ..., serving: _Optional[bool] = ..., servers: _Optional[_Iterable[_Union[ServerStatus, _Mapping]]] = ..., executors: _Optional[_Iterable[_Union[ExecutorStatus, _Mapping]]] = ..., queued: _Optional[int] = ..., queue_bound: _Optional[int] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...
