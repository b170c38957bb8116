"""Regenerate the committed protobuf/gRPC code from ``inspection.proto`` (a developer tool).

Run ``python -m orchestrator.frontend.generate`` after editing the ``.proto``; it needs
``grpcio-tools`` (the ``dev`` extra). The proto is compiled with the repository root as the
include path, so the generated gRPC module imports ``orchestrator.frontend.inspection_pb2`` (a
package import, not grpc_tools' top-level ``import inspection_pb2``) and the descriptor's file
name is ``orchestrator/frontend/inspection.proto``.

Writes ``inspection_pb2.py``, ``inspection_pb2.pyi`` and ``inspection_pb2_grpc.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: the repository root (the include path) and the proto relative to it
ROOT = Path(__file__).resolve().parents[2]
PROTO = "orchestrator/frontend/inspection.proto"
GENERATED = ("inspection_pb2.py", "inspection_pb2.pyi", "inspection_pb2_grpc.py")


def generate(out_dir: Path, *, descriptor_set: Path | None = None) -> list[Path]:
    """Compile ``inspection.proto`` into ``out_dir`` (which then holds ``orchestrator/frontend/...``).

    ``descriptor_set``: also write the serialized ``FileDescriptorSet`` there. Returns the
    generated files. Raises ``RuntimeError`` with protoc's exit status if compilation fails and
    ``ModuleNotFoundError`` if grpcio-tools is not installed.
    """
    from grpc_tools import protoc  # a dev-only dependency: imported only when generating

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
    ]
    if descriptor_set is not None:
        args.append(f"--descriptor_set_out={descriptor_set}")
    args.append(str(ROOT / PROTO))
    status = protoc.main(args)
    if status != 0:
        raise RuntimeError(f"grpc_tools.protoc failed with status {status} on {PROTO}")
    gen_dir = out_dir / Path(PROTO).parent
    return [gen_dir / name for name in GENERATED]


def main() -> int:
    """Regenerate in place (the files beside ``inspection.proto``)."""
    for path in generate(ROOT):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
