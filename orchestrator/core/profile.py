"""The cost profile: what the offline profiler measured, per architecture and processor kind.

YAML format (units are in the field names)::

    name: my-box
    storage:
      concurrent_loads: 2           # loads from disk the box runs at once (one SSD; more wait)
    processors:                     # one entry per processor kind (gpu, cpu)
      gpu:
        concurrent_loads: 2         # copies from CPU memory the device runs at once
        unload_time_s: 0.005        # from an unload request until its memory is free
      cpu: {concurrent_loads: 2, unload_time_s: 0.005}
    architectures:                  # keyed by the architecture name experts use
      resnet101:
        gpu:
          k_s: 0.0064               # per-item latency K of the linear batch model K*n + B
          b_s: 0.0086               # fixed per-batch latency B
          max_batch: 32             # where per-item latency stops falling
          load_time_s: {disk: 1.35, cpu: 0.07}   # per tier the expert is loaded from
          weight_bytes: 178600000   # optional: else taken from the CoE file (size_mb * 1e6)
          activation_bytes_per_item: 20000000
        cpu: {...}

Every architecture must list every processor it can run on; an expert whose architecture has no
entry for a processor kind never runs on an executor of that kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.config_reader import Reader, parse_yaml_text

PROCESSOR_KINDS = ("gpu", "cpu")
TIERS = ("disk", "cpu")


@dataclass(frozen=True)
class ArchCost:
    """Profiled costs of one architecture on one processor kind."""

    k_s: float
    b_s: float
    max_batch: int
    load_time_s: Mapping[str, float]
    weight_bytes: int | None = None
    activation_bytes_per_item: int = 0

    def batch_time_s(self, n: int) -> float:
        return self.k_s * n + self.b_s


@dataclass(frozen=True)
class ProcessorSpec:
    concurrent_loads: int = 2
    unload_time_s: float = 0.005


@dataclass(frozen=True)
class CostProfile:
    name: str
    processors: Mapping[str, ProcessorSpec]
    architectures: Mapping[str, Mapping[str, ArchCost]] = field(default_factory=dict)
    storage_concurrent_loads: int = 2

    def cost(self, arch: str, processor: str) -> ArchCost | None:
        return self.architectures.get(arch, {}).get(processor)

    def processor(self, kind: str) -> ProcessorSpec:
        return self.processors.get(kind, ProcessorSpec())


def parse_profile(data: Any, source: str = "<profile>") -> CostProfile:
    r = Reader(source)
    top = r.mapping(data, "(top level)")
    r.unknown(top, {"name", "storage", "processors", "architectures", "description"}, "")
    storage = r.mapping(top.get("storage", {}) or {}, "storage")
    r.unknown(storage, {"concurrent_loads"}, "storage")
    storage_loads = r.integer(storage.get("concurrent_loads", 2), "storage.concurrent_loads", 1)
    name = str(top.get("name", "profile"))
    procs: dict[str, ProcessorSpec] = {}
    for kind, raw in r.mapping(top.get("processors", {}) or {}, "processors").items():
        path = f"processors.{kind}"
        r.string(kind, path, PROCESSOR_KINDS)
        m = r.mapping(raw, path)
        r.unknown(m, {"concurrent_loads", "unload_time_s"}, path)
        procs[kind] = ProcessorSpec(
            concurrent_loads=r.integer(m.get("concurrent_loads", 2), f"{path}.concurrent_loads", 1),
            unload_time_s=r.number(m.get("unload_time_s", 0.005), f"{path}.unload_time_s"),
        )
    archs: dict[str, dict[str, ArchCost]] = {}
    raw_archs = r.mapping(r.required(top, "architectures", ""), "architectures")
    if not raw_archs:
        raise r.fail("architectures", "must list at least one architecture")
    for arch, per_proc in raw_archs.items():
        apath = f"architectures.{arch}"
        archs[str(arch)] = {}
        for kind, raw in r.mapping(per_proc, apath).items():
            path = f"{apath}.{kind}"
            r.string(kind, path, PROCESSOR_KINDS)
            m = r.mapping(raw, path)
            r.unknown(
                m,
                {"k_s", "b_s", "max_batch", "load_time_s", "weight_bytes", "activation_bytes_per_item"},
                path,
            )
            lt = r.mapping(r.required(m, "load_time_s", path), f"{path}.load_time_s")
            r.unknown(lt, set(TIERS), f"{path}.load_time_s")
            if "disk" not in lt:
                raise r.fail(f"{path}.load_time_s.disk", "is required")
            load = {t: r.number(v, f"{path}.load_time_s.{t}") for t, v in lt.items()}
            wb = m.get("weight_bytes")
            archs[str(arch)][kind] = ArchCost(
                k_s=r.number(r.required(m, "k_s", path), f"{path}.k_s", positive=True),
                b_s=r.number(m.get("b_s", 0.0), f"{path}.b_s"),
                max_batch=r.integer(m.get("max_batch", 1), f"{path}.max_batch", 1),
                load_time_s=load,
                weight_bytes=None
                if wb is None
                else r.integer(
                    int(r.number(wb, f"{path}.weight_bytes", positive=True)), f"{path}.weight_bytes", 1
                ),
                activation_bytes_per_item=int(
                    r.number(m.get("activation_bytes_per_item", 0), f"{path}.activation_bytes_per_item")
                ),
            )
            procs.setdefault(kind, ProcessorSpec())
    return CostProfile(
        name=name, processors=procs, architectures=archs, storage_concurrent_loads=storage_loads
    )


def load_profile_text(text: str, source: str) -> CostProfile:
    return parse_profile(parse_yaml_text(text, source), source)
