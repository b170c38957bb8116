"""The committed generated code (orchestrator/frontend/inspection_pb2*.py) matches inspection.proto.

Regenerates into a temporary directory with grpc_tools and compares: the descriptor always (a
.proto edited without regenerating fails here, whatever the grpcio-tools version), the files
byte for byte when the installed grpcio-tools is the one the committed code was generated with.
Fix a failure with ``python -m orchestrator.frontend.generate``.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Any

import pytest

from orchestrator.frontend import generate

FRONTEND = generate.ROOT / "orchestrator" / "frontend"
FIX = "regenerate with: python -m orchestrator.frontend.generate"


def _committed_tools_version() -> str:
    text = (FRONTEND / "inspection_pb2_grpc.py").read_text()
    match = re.search(r"^GRPC_GENERATED_VERSION = '([^']+)'", text, re.M)
    assert match, "inspection_pb2_grpc.py has no GRPC_GENERATED_VERSION"
    return match.group(1)


def _drop_json_names(file: Any) -> None:
    def walk(message: Any) -> None:
        for field in message.field:
            field.ClearField("json_name")
        for nested in message.nested_type:
            walk(nested)

    for message in file.message_type:
        walk(message)


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip(
        "grpc_tools",
        reason="grpcio-tools is not installed (pip install -e '.[dev]'); cannot check the generated code",
    )
    out = tmp_path_factory.mktemp("gen")
    descriptor = out / "inspection.desc"
    generate.generate(out, descriptor_set=descriptor)
    return out / "orchestrator" / "frontend", descriptor


def test_descriptor_matches_proto(regenerated: tuple[Path, Path]) -> None:
    from google.protobuf import descriptor_pb2

    from orchestrator.frontend import inspection_pb2

    _, descriptor = regenerated
    fresh = descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes()).file[0]
    committed = descriptor_pb2.FileDescriptorProto.FromString(inspection_pb2.DESCRIPTOR.serialized_pb)
    _drop_json_names(fresh)  # protoc's descriptor set has them, the embedded descriptor does not
    _drop_json_names(committed)
    assert fresh.name == "orchestrator/frontend/inspection.proto"
    assert committed == fresh, f"inspection_pb2.py is stale against inspection.proto; {FIX}"


@pytest.mark.parametrize("name", generate.GENERATED)
def test_files_match_byte_for_byte(regenerated: tuple[Path, Path], name: str) -> None:
    installed = importlib.metadata.version("grpcio-tools")
    committed_version = _committed_tools_version()
    if installed != committed_version:
        pytest.skip(
            f"installed grpcio-tools {installed} differs from the {committed_version} the committed code "
            "was generated with; only the descriptor is compared"
        )
    gen_dir, _ = regenerated
    assert (gen_dir / name).read_text() == (FRONTEND / name).read_text(), f"{name} differs; {FIX}"


def test_generated_code_imports_as_a_package_module() -> None:
    from orchestrator.frontend import inspection_pb2_grpc

    text = (FRONTEND / "inspection_pb2_grpc.py").read_text()
    assert "from orchestrator.frontend import inspection_pb2" in text
    assert not re.search(r"^import inspection_pb2", text, re.M)
    assert hasattr(inspection_pb2_grpc, "InspectionStub")
