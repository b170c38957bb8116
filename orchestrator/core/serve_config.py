"""The serve config: which executors exist, and which policy and switches drive them.

YAML format::

    executors:
      - {name: gpu0, kind: gpu, budget_bytes: 3.6e9}
      - {name: cpu0, kind: cpu, budget_bytes: 12e9}
    cpu_cache_bytes: 0              # CPU memory used as a cache tier for GPU executors' loads
    policy: coserve                 # a registered policy (orchestrator.core.policies)
    switches:                       # beyond-paper switches, each off by default
      starvation_bound_s: null      # a step older than this is served next
      prefetch: false               # load likely subsequent experts into free memory
      cpu_cache: false              # use cpu_cache_bytes as a cache tier (coserve policies)
      online_probabilities: false   # follow the observed mix (decayed counts)
      online_half_life: 400         # observations until an old one weighs half
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.config_reader import Reader, parse_yaml_text
from orchestrator.core.profile import PROCESSOR_KINDS


@dataclass(frozen=True)
class ExecutorConfig:
    name: str
    kind: str
    budget_bytes: int


@dataclass(frozen=True)
class Switches:
    starvation_bound_s: float | None = None
    prefetch: bool = False
    cpu_cache: bool = False
    online_probabilities: bool = False
    online_half_life: float = 400.0


@dataclass(frozen=True)
class ServeConfig:
    executors: tuple[ExecutorConfig, ...]
    policy: str = "coserve"
    cpu_cache_bytes: int = 0
    switches: Switches = field(default_factory=Switches)

    def with_switches(self, **kw: Any) -> ServeConfig:
        return replace(self, switches=replace(self.switches, **kw))


def parse_executors(raw: Any, r: Reader, path: str) -> tuple[ExecutorConfig, ...]:
    items = r.seq(raw, path)
    if not items:
        raise r.fail(path, "must list at least one executor")
    out: list[ExecutorConfig] = []
    names: set[str] = set()
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        m = r.mapping(item, p)
        r.unknown(m, {"name", "kind", "budget_bytes"}, p)
        name = r.string(r.required(m, "name", p), f"{p}.name")
        if name in names:
            raise r.fail(f"{p}.name", f"duplicate executor name {name!r}")
        names.add(name)
        kind = r.string(r.required(m, "kind", p), f"{p}.kind", PROCESSOR_KINDS)
        budget = int(r.number(r.required(m, "budget_bytes", p), f"{p}.budget_bytes", positive=True))
        out.append(ExecutorConfig(name, kind, budget))
    return tuple(out)


def parse_serve_config(data: Any, source: str = "<serve-config>") -> ServeConfig:
    from orchestrator.core.policies import POLICIES

    r = Reader(source)
    top = r.mapping(data, "(top level)")
    r.unknown(top, {"executors", "policy", "cpu_cache_bytes", "switches"}, "")
    executors = parse_executors(r.required(top, "executors", ""), r, "executors")
    policy = r.string(top.get("policy", "coserve"), "policy", tuple(sorted(POLICIES)))
    cache = int(r.number(top.get("cpu_cache_bytes", 0), "cpu_cache_bytes"))
    sw = r.mapping(top.get("switches", {}) or {}, "switches")
    r.unknown(
        sw,
        {"starvation_bound_s", "prefetch", "cpu_cache", "online_probabilities", "online_half_life"},
        "switches",
    )
    bound = sw.get("starvation_bound_s")
    switches = Switches(
        starvation_bound_s=None
        if bound is None
        else r.number(bound, "switches.starvation_bound_s", positive=True),
        prefetch=r.boolean(sw.get("prefetch", False), "switches.prefetch"),
        cpu_cache=r.boolean(sw.get("cpu_cache", False), "switches.cpu_cache"),
        online_probabilities=r.boolean(
            sw.get("online_probabilities", False), "switches.online_probabilities"
        ),
        online_half_life=r.number(
            sw.get("online_half_life", 400.0), "switches.online_half_life", positive=True
        ),
    )
    if switches.cpu_cache and cache <= 0:
        raise r.fail("cpu_cache_bytes", "must be > 0 when switches.cpu_cache is true")
    return ServeConfig(executors=executors, policy=policy, cpu_cache_bytes=cache, switches=switches)


def load_serve_config_text(text: str, source: str) -> ServeConfig:
    return parse_serve_config(parse_yaml_text(text, source), source)
