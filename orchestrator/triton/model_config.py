"""Triton model configurations: one typed value, three renderings.

``ModelConfig`` is what the exporter writes as ``config.pbtxt`` and what the adapter sends as the
*whole* config override of a load (Triton replaces config.pbtxt with the override, docs/triton.md).
Rendering and parsing go through Triton's own protobuf schema (``model_config_pb2``), so a config
that round-trips here is one the server parses too. Because the server runs with
``--disable-auto-complete-config``, every config must be complete: name, backend, max batch size,
inputs and outputs with dims and types, an explicit instance group kind and count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as pb

from orchestrator.errors import ConfigError

#: backend name of the project's Python-based ONNX Runtime backend (embedded server)
PYTHON_ORT_BACKEND = "coserve_ort"
#: backend name of Triton's native ONNX Runtime backend (NVIDIA's container)
NATIVE_ORT_BACKEND = "onnxruntime"
#: export targets -> backend name written into config.pbtxt
TARGET_BACKENDS = {"python-ort": PYTHON_ORT_BACKEND, "onnxruntime": NATIVE_ORT_BACKEND}

KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor; ``dims`` excludes the batch axis (-1 = variable)."""

    name: str
    data_type: str  # Triton type name, e.g. "TYPE_FP32"
    dims: tuple[int, ...]


@dataclass(frozen=True)
class InstanceGroup:
    """Where and how many instances of a model run."""

    kind: str = "KIND_CPU"  # KIND_CPU | KIND_GPU
    count: int = 1
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    """A complete Triton model configuration (the subset this project uses)."""

    name: str
    backend: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    instance_groups: tuple[InstanceGroup, ...] = (InstanceGroup(),)
    dynamic_batching: bool = True
    max_queue_delay_us: int = 0
    parameters: Mapping[str, str] = field(default_factory=dict)
    #: ``version_policy: {specific: {versions: [...]}}`` when set; empty: Triton's default
    #: (the newest version). The engine names the version of every load it issues.
    versions: tuple[int, ...] = ()

    # -- renderings -------------------------------------------------------------------------
    def to_proto(self) -> pb.ModelConfig:
        msg = pb.ModelConfig(name=self.name, backend=self.backend, max_batch_size=self.max_batch_size)
        for spec, target in ((self.inputs, msg.input), (self.outputs, msg.output)):
            for t in spec:
                target.add(name=t.name, data_type=pb.DataType.Value(t.data_type), dims=list(t.dims))
        for g in self.instance_groups:
            msg.instance_group.add(
                kind=pb.ModelInstanceGroup.Kind.Value(g.kind), count=g.count, gpus=list(g.gpus)
            )
        if self.dynamic_batching:
            msg.dynamic_batching.max_queue_delay_microseconds = self.max_queue_delay_us
        for key, value in sorted(self.parameters.items()):
            msg.parameters[key].string_value = value
        if self.versions:
            msg.version_policy.specific.versions.extend(self.versions)
        return msg

    def to_pbtxt(self) -> str:
        return text_format.MessageToString(self.to_proto())

    def to_json(self) -> str:
        """The JSON string Triton's ``load_model(config=...)`` takes as a whole-config override."""
        return json_format.MessageToJson(self.to_proto(), preserving_proto_field_name=True, indent=None)

    # -- derived configs ----------------------------------------------------------------------
    def with_instances(self, kind: str, count: int, gpus: Sequence[int] = ()) -> ModelConfig:
        """The same config with one instance group replacing all others.

        ``kind`` is "cpu" / "gpu" (or a Triton KIND_* name); ``count`` >= 1.
        """
        triton_kind = KINDS.get(kind.lower(), kind)
        if triton_kind not in KINDS.values():
            raise ValueError(f"instance kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if count < 1:
            raise ValueError(f"instance count must be >= 1, got {count}")
        if triton_kind == "KIND_CPU" and gpus:
            raise ValueError("device ids (gpus) only apply to kind gpu")
        return replace(self, instance_groups=(InstanceGroup(triton_kind, count, tuple(gpus)),))

    def with_version(self, version: int) -> ModelConfig:
        """The same config serving exactly ``version`` (``version_policy: specific``)."""
        if version < 1:
            raise ValueError(f"a model version is >= 1, got {version}")
        return replace(self, versions=(int(version),))

    # -- parsing -----------------------------------------------------------------------------
    @classmethod
    def from_proto(cls, msg: pb.ModelConfig) -> ModelConfig:
        def tensors(items: Sequence[pb.ModelInput] | Sequence[pb.ModelOutput]) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(t.name, pb.DataType.Name(t.data_type), tuple(t.dims)) for t in items)

        groups = tuple(
            InstanceGroup(pb.ModelInstanceGroup.Kind.Name(g.kind), g.count, tuple(g.gpus))
            for g in msg.instance_group
        )
        return cls(
            name=msg.name,
            backend=msg.backend,
            max_batch_size=msg.max_batch_size,
            inputs=tensors(msg.input),
            outputs=tensors(msg.output),
            instance_groups=groups,
            dynamic_batching=msg.HasField("dynamic_batching"),
            max_queue_delay_us=msg.dynamic_batching.max_queue_delay_microseconds,
            parameters={k: v.string_value for k, v in msg.parameters.items()},
            versions=tuple(int(v) for v in msg.version_policy.specific.versions)
            if msg.HasField("version_policy") and msg.version_policy.HasField("specific")
            else (),
        )

    @classmethod
    def from_pbtxt(cls, text: str, source: str = "config.pbtxt") -> ModelConfig:
        """Parse and check completeness; errors name the source file and the problem."""
        try:
            msg = text_format.Parse(text, pb.ModelConfig())
        except text_format.ParseError as exc:
            raise ConfigError(source, "", f"not a valid Triton model config ({exc})") from None
        config = cls.from_proto(msg)
        for fieldname, ok in (
            ("name", bool(config.name)),
            ("backend", bool(config.backend)),
            ("input", bool(config.inputs)),
            ("output", bool(config.outputs)),
            ("instance_group", bool(config.instance_groups) and all(g.count >= 1 for g in config.instance_groups)),
        ):
            if not ok:
                raise ConfigError(source, fieldname, "is required (configs must be complete: auto-complete is off)")
        return config

    @classmethod
    def read(cls, model_dir: str | Path) -> ModelConfig:
        """Read ``<model_dir>/config.pbtxt``."""
        path = Path(model_dir) / "config.pbtxt"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(str(path), "", f"cannot read model config ({exc.strerror or exc})") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(str(path), "", f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
        return cls.from_pbtxt(text, source=str(path))

    def write(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / "config.pbtxt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_pbtxt())
        return path
