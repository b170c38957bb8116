"""ModelConfig: config.pbtxt generation and parse-back, the JSON load override, validation."""

from __future__ import annotations

import json

import pytest

from orchestrator.errors import ConfigError
from orchestrator.triton.model_config import (
    PYTHON_ORT_BACKEND,
    InstanceGroup,
    ModelConfig,
    TensorSpec,
)


def make_config(**changes: object) -> ModelConfig:
    values: dict[str, object] = dict(
        name="cls_resistor",
        backend=PYTHON_ORT_BACKEND,
        max_batch_size=16,
        inputs=(TensorSpec("image", "TYPE_FP32", (3, 64, 64)),),
        outputs=(TensorSpec("logits", "TYPE_FP32", (4,)),),
        instance_groups=(InstanceGroup("KIND_CPU", 2),),
        dynamic_batching=True,
        max_queue_delay_us=100,
        parameters={"intra_op_threads": "1", "enable_cpu_mem_arena": "false"},
    )
    values.update(changes)
    return ModelConfig(**values)  # type: ignore[arg-type]


def test_pbtxt_round_trips():
    config = make_config()
    text = config.to_pbtxt()
    assert 'name: "cls_resistor"' in text
    assert f'backend: "{PYTHON_ORT_BACKEND}"' in text
    assert "KIND_CPU" in text and "count: 2" in text
    assert "max_queue_delay_microseconds: 100" in text
    assert ModelConfig.from_pbtxt(text) == config


def test_gpu_group_with_device_ids_round_trips():
    config = make_config(instance_groups=(InstanceGroup("KIND_GPU", 1, (0, 1)),), dynamic_batching=False, max_queue_delay_us=0)
    parsed = ModelConfig.from_pbtxt(config.to_pbtxt())
    assert parsed == config
    assert "dynamic_batching" not in config.to_pbtxt()


def test_write_and_read(tmp_path):
    config = make_config()
    path = config.write(tmp_path / "cls_resistor")
    assert path == tmp_path / "cls_resistor" / "config.pbtxt"
    assert ModelConfig.read(tmp_path / "cls_resistor") == config


def test_json_override_is_the_whole_config():
    data = json.loads(make_config().to_json())
    assert data["name"] == "cls_resistor"
    assert data["backend"] == PYTHON_ORT_BACKEND
    assert data["max_batch_size"] == 16
    assert data["input"][0] == {"name": "image", "data_type": "TYPE_FP32", "dims": ["3", "64", "64"]}
    assert data["output"][0]["name"] == "logits"
    assert data["instance_group"] == [{"kind": "KIND_CPU", "count": 2}]
    assert data["parameters"]["intra_op_threads"] == {"string_value": "1"}
    assert "dynamic_batching" in data


@pytest.mark.parametrize(
    ("kind", "count", "gpus", "expected"),
    [
        ("cpu", 3, (), InstanceGroup("KIND_CPU", 3)),
        ("GPU", 1, (0,), InstanceGroup("KIND_GPU", 1, (0,))),
        ("KIND_GPU", 2, (0, 1), InstanceGroup("KIND_GPU", 2, (0, 1))),
    ],
)
def test_with_instances_replaces_all_groups(kind, count, gpus, expected):
    config = make_config(instance_groups=(InstanceGroup("KIND_CPU", 1), InstanceGroup("KIND_GPU", 1, (0,))))
    changed = config.with_instances(kind, count, gpus)
    assert changed.instance_groups == (expected,)
    assert changed.inputs == config.inputs and changed.name == config.name  # nothing else changes


@pytest.mark.parametrize(
    ("kind", "count", "gpus", "message"),
    [
        ("tpu", 1, (), "instance kind must be one of cpu, gpu"),
        ("cpu", 0, (), "count must be >= 1"),
        ("gpu", -2, (), "count must be >= 1"),
        ("cpu", 1, (0,), "only apply to kind gpu"),
    ],
)
def test_with_instances_validation(kind, count, gpus, message):
    with pytest.raises(ValueError, match=message):
        make_config().with_instances(kind, count, gpus)


@pytest.mark.parametrize(
    ("drop", "field"),
    [
        ('name: "cls_resistor"\n', "name"),
        (f'backend: "{PYTHON_ORT_BACKEND}"\n', "backend"),
    ],
)
def test_incomplete_config_names_the_missing_field(drop, field):
    text = make_config().to_pbtxt()
    assert drop in text
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_pbtxt(text.replace(drop, ""), source="repo/x/config.pbtxt")
    assert info.value.field == field
    assert str(info.value).startswith(f"repo/x/config.pbtxt: {field}: is required")


@pytest.mark.parametrize("field", ["input", "output", "instance_group"])
def test_config_without_tensors_or_instances_is_incomplete(field):
    missing = {
        "input": {"inputs": ()},
        "output": {"outputs": ()},
        "instance_group": {"instance_groups": ()},
    }[field]
    with pytest.raises(ConfigError, match=f"{field}: is required"):
        ModelConfig.from_pbtxt(make_config(**missing).to_pbtxt())


def test_zero_instance_count_is_incomplete():
    text = make_config(instance_groups=(InstanceGroup("KIND_CPU", 0),)).to_pbtxt()
    with pytest.raises(ConfigError, match="instance_group"):
        ModelConfig.from_pbtxt(text)


def test_unparsable_pbtxt_names_the_source():
    with pytest.raises(ConfigError, match=r"^m/config.pbtxt: not a valid Triton model config"):
        ModelConfig.from_pbtxt("name: [unclosed", source="m/config.pbtxt")


def test_missing_config_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="cannot read model config") as info:
        ModelConfig.read(tmp_path / "nothing")
    assert str(tmp_path / "nothing" / "config.pbtxt") in str(info.value)
