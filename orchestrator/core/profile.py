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

A profile measured by ``coserve profile`` carries optional fields the core does not decide from
but a reader (planner, operator) needs to trust or extrapolate it::

    measured: {machine: ..., triton: "2.51.0", date: ..., command: ..., unload_mode: stock}
    host:
      cpu_cores: 2                   # cores loads and CPU batches share (the simulator's CPU model)
    processors:
      cpu:
        unload_mode: stock           # how the embedded server releases an unloaded expert
        unload_cpu_s: 0.04           # CPU seconds of an unload on the host (shared-cores model)
        server_idle_bytes: 32000000  # the idle tritonserver's own PSS
        server_growth_bytes: 10000000   # what it keeps growing by while serving (an executor cost)
        shared_bytes: 41000000       # pages its model processes share (libraries): once per executor
        overhead_fixed_bytes: 45000000      # footprint = fixed + per_file_byte * ONNX file bytes
        overhead_bytes_per_file_byte: 1.9
    architectures:
      classifier:
        cpu:
          ...                        # the fields above; weight_bytes is what the expert adds beside
                                     # other loaded experts (its model process's private pages and
                                     # the server's growth), shared_bytes held once beside it
          measured_expert: cls_t000  # the expert measured for this architecture
          file_bytes: 1530000        # its ONNX file
          r2: 0.998                  # of the K, B least-squares fit
          load_time_cold_s: 0.21     # load with the file dropped from the page cache
          load_time_idle_s: 0.18     # warm load on an idle box (load_time_s.disk: while it computes)
          load_cpu_s: 0.22           # CPU seconds one load takes on the host (model process, server)
          load_watch_cores: 0.15     # cores the client's process watch uses while a load runs
          first_batch_extra_s: 0.028 # what the first batch after a load takes over the steady one
          peak_bytes: 98000000       # footprint at its peak while running max_batch
          spread: {k_s: 0.03, load_time_s: 0.12}   # (max - min) / median of the repetitions
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
    # measured by ``coserve profile`` (optional, informational; see the module doc)
    measured_expert: str | None = None
    file_bytes: int | None = None
    r2: float | None = None
    load_time_cold_s: float | None = None
    load_time_idle_s: float | None = None
    #: CPU seconds one load takes on the host (its model process, the server, the client), for
    #: the simulator's shared-cores model (``simulate.cpu``); None: a load takes no host CPU
    load_cpu_s: float | None = None
    #: cores the orchestrator's process watch (the adapter polling ``/proc`` for the model's
    #: process) uses while a load is in flight; None: not measured (0)
    load_watch_cores: float | None = None
    #: the first batch after a load takes this much longer than ``batch_time_s`` (lazy set-up in
    #: the runtime on its first run); None: not measured (0)
    first_batch_extra_s: float | None = None
    peak_bytes: int | None = None
    spread: Mapping[str, float] = field(default_factory=dict)

    def batch_time_s(self, n: int) -> float:
        return self.k_s * n + self.b_s


@dataclass(frozen=True)
class ProcessorSpec:
    concurrent_loads: int = 2
    unload_time_s: float = 0.005
    #: CPU seconds an unload takes on the host (the model process's exit, the server, the
    #: client's watch), for the simulator's shared-cores model; None: none
    unload_cpu_s: float | None = None
    # measured by ``coserve profile`` (optional; see the module doc)
    unload_mode: str | None = None
    server_idle_bytes: int | None = None
    #: what the server itself keeps growing by while it serves (allocations it does not return
    #: after unloads): a fixed cost of the executor, taken from its budget, not per expert
    server_growth_bytes: int | None = None
    #: the pages an executor's model processes share with one another and with other processes
    #: (the Python runtime, numpy, ONNX Runtime): held once per executor while it has any expert
    #: loaded, beside each expert's ``weight_bytes`` (what the expert adds: its private pages and
    #: the server's growth), so taken from its budget like the growth. None: a profile whose
    #: ``weight_bytes`` are whole footprints of one expert alone (older, or an external server)
    shared_bytes: int | None = None
    overhead_fixed_bytes: int | None = None
    overhead_bytes_per_file_byte: float | None = None

    def executor_reserve_bytes(self) -> int:
        """What an executor of this kind on an embedded server holds besides its experts' bytes:
        the server's growth while serving plus the shared pages (``coserve serve`` takes it off
        the budget before the core gets it)."""
        return (self.server_growth_bytes or 0) + (self.shared_bytes or 0)

    def footprint_bytes(self, file_bytes: int) -> int | None:
        """Predicted footprint of an expert with an ONNX file of ``file_bytes`` (None: not measured)."""
        if self.overhead_fixed_bytes is None or self.overhead_bytes_per_file_byte is None:
            return None
        return int(self.overhead_fixed_bytes + self.overhead_bytes_per_file_byte * file_bytes)


@dataclass(frozen=True)
class CostProfile:
    name: str
    processors: Mapping[str, ProcessorSpec]
    architectures: Mapping[str, Mapping[str, ArchCost]] = field(default_factory=dict)
    storage_concurrent_loads: int = 2
    #: where and how it was measured (machine, triton, date, command, unload_mode); {} for presets
    measured: Mapping[str, str] = field(default_factory=dict)
    #: the host's cores that loads and CPU batches share (``host.cpu_cores``); None: loads and
    #: compute do not compete for CPU (the presets; a profile measured before this field)
    host_cpu_cores: int | None = None

    def cost(self, arch: str, processor: str) -> ArchCost | None:
        return self.architectures.get(arch, {}).get(processor)

    def processor(self, kind: str) -> ProcessorSpec:
        return self.processors.get(kind, ProcessorSpec())


def parse_profile(data: Any, source: str = "<profile>") -> CostProfile:
    r = Reader(source)
    top = r.mapping(data, "(top level)")
    r.unknown(top, {"name", "storage", "processors", "architectures", "description", "measured", "host"}, "")
    measured = {
        str(k): str(v) for k, v in r.mapping(top.get("measured", {}) or {}, "measured").items()
    }
    storage = r.mapping(top.get("storage", {}) or {}, "storage")
    r.unknown(storage, {"concurrent_loads"}, "storage")
    storage_loads = r.integer(storage.get("concurrent_loads", 2), "storage.concurrent_loads", 1)
    host = r.mapping(top.get("host", {}) or {}, "host")
    r.unknown(host, {"cpu_cores"}, "host")
    cores = None if host.get("cpu_cores") is None else r.integer(host["cpu_cores"], "host.cpu_cores", 1)
    name = str(top.get("name", "profile"))
    procs: dict[str, ProcessorSpec] = {}
    for kind, raw in r.mapping(top.get("processors", {}) or {}, "processors").items():
        path = f"processors.{kind}"
        r.string(kind, path, PROCESSOR_KINDS)
        m = r.mapping(raw, path)
        r.unknown(m, set(_PROCESSOR_FIELDS), path)
        procs[kind] = ProcessorSpec(
            concurrent_loads=r.integer(m.get("concurrent_loads", 2), f"{path}.concurrent_loads", 1),
            unload_time_s=r.number(m.get("unload_time_s", 0.005), f"{path}.unload_time_s"),
            unload_cpu_s=_opt_number(r, m, "unload_cpu_s", path),
            unload_mode=None if m.get("unload_mode") is None else r.string(m["unload_mode"], f"{path}.unload_mode"),
            server_idle_bytes=_opt_bytes(r, m, "server_idle_bytes", path),
            server_growth_bytes=_opt_bytes(r, m, "server_growth_bytes", path),
            shared_bytes=_opt_bytes(r, m, "shared_bytes", path),
            overhead_fixed_bytes=_opt_bytes(r, m, "overhead_fixed_bytes", path),
            overhead_bytes_per_file_byte=_opt_number(r, m, "overhead_bytes_per_file_byte", path),
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
            r.unknown(m, set(_ARCH_FIELDS), path)
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
                measured_expert=None
                if m.get("measured_expert") is None
                else r.name(m["measured_expert"], f"{path}.measured_expert"),
                file_bytes=_opt_bytes(r, m, "file_bytes", path),
                r2=_opt_number(r, m, "r2", path, minimum=float("-inf")),
                load_time_cold_s=_opt_number(r, m, "load_time_cold_s", path),
                load_time_idle_s=_opt_number(r, m, "load_time_idle_s", path),
                load_cpu_s=_opt_number(r, m, "load_cpu_s", path),
                load_watch_cores=_opt_number(r, m, "load_watch_cores", path),
                first_batch_extra_s=_opt_number(r, m, "first_batch_extra_s", path),
                peak_bytes=_opt_bytes(r, m, "peak_bytes", path),
                spread={
                    str(k): r.number(v, f"{path}.spread.{k}")
                    for k, v in r.mapping(m.get("spread", {}) or {}, f"{path}.spread").items()
                },
            )
            procs.setdefault(kind, ProcessorSpec())
    return CostProfile(
        name=name,
        processors=procs,
        architectures=archs,
        storage_concurrent_loads=storage_loads,
        measured=measured,
        host_cpu_cores=cores,
    )


_PROCESSOR_FIELDS = (
    "concurrent_loads", "unload_time_s", "unload_cpu_s", "unload_mode", "server_idle_bytes", "server_growth_bytes",
    "shared_bytes", "overhead_fixed_bytes",
    "overhead_bytes_per_file_byte",
)
_ARCH_FIELDS = (
    "k_s", "b_s", "max_batch", "load_time_s", "weight_bytes", "activation_bytes_per_item", "measured_expert",
    "file_bytes", "r2", "load_time_cold_s", "load_time_idle_s", "load_cpu_s", "load_watch_cores", "first_batch_extra_s",
    "peak_bytes",
    "spread",
)


def _opt_number(r: Reader, m: Mapping[str, Any], key: str, path: str, minimum: float = 0.0) -> float | None:
    return None if m.get(key) is None else r.number(m[key], f"{path}.{key}", minimum=minimum)


def _opt_bytes(r: Reader, m: Mapping[str, Any], key: str, path: str) -> int | None:
    value = _opt_number(r, m, key, path)
    return None if value is None else int(value)


def profile_to_data(profile: CostProfile) -> dict[str, Any]:
    """The YAML tree of ``profile`` (``parse_profile(profile_to_data(p)) == p``); unset optional
    fields are left out."""

    def fields(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in names:
            value = getattr(obj, key)
            if value is None or (isinstance(value, Mapping) and not value):
                continue
            out[key] = dict(value) if isinstance(value, Mapping) else value
        return out

    data: dict[str, Any] = {"name": profile.name}
    if profile.measured:
        data["measured"] = dict(profile.measured)
    if profile.host_cpu_cores is not None:
        data["host"] = {"cpu_cores": profile.host_cpu_cores}
    data["storage"] = {"concurrent_loads": profile.storage_concurrent_loads}
    data["processors"] = {kind: fields(spec, _PROCESSOR_FIELDS) for kind, spec in profile.processors.items()}
    data["architectures"] = {
        arch: {kind: fields(cost, _ARCH_FIELDS) for kind, cost in per.items()}
        for arch, per in profile.architectures.items()
    }
    return data


def load_profile_text(text: str, source: str) -> CostProfile:
    return parse_profile(parse_yaml_text(text, source), source)
