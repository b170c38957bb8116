"""The serve config: which executors exist, the policy (a registered name) and the features.

YAML format::

    executors:
      - {name: gpu0, kind: gpu, budget_bytes: 3.6e9}
      - {name: cpu0, kind: cpu, budget_bytes: 12e9}
    cpu_cache_bytes: 0              # CPU memory used as a cache tier for GPU executors' loads
    gpu_context_bytes: 0.6e9        # GPU memory each executor process costs (its CUDA context);
                                    # the budgets above already leave it out. A layout with fewer
                                    # processes on the GPU gets it back (single-executor Samba-CoE)
    policy: coserve                 # a registered policy (orchestrator.core.policies)
    features:                       # beyond-paper features, each off by default
      prefetch: false               # (orchestrator.core.features lists them all)

The same file also carries what only ``coserve serve`` needs (the servers, each executor's
``server``, the listen address, the queue bound, the CoE, repository and profile paths); the core
accepts and ignores those keys (``SHELL_KEYS``, ``SHELL_EXECUTOR_KEYS``), so ``coserve simulate
--config`` reads a serving config unchanged. ``orchestrator.serve_file`` parses them.

``switches:`` is the old name of ``features:``: it is still read, with a ``ConfigDeprecation``
warning (the word "switches" now means only expert-switch counts). The policy is held as a plain
name; the registry (``orchestrator.core.policies``) validates it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.config_reader import Reader, parse_yaml_text
from orchestrator.core.features import Features, parse_features
from orchestrator.core.policies import policy_names
from orchestrator.core.profile import PROCESSOR_KINDS

#: top-level keys for ``coserve serve`` only (parsed by ``orchestrator.serve_file``)
SHELL_KEYS = frozenset(
    {"servers", "listen", "queue_bound", "coe", "repo", "profile", "tls", "metrics", "verdict_log", "version_poll_s",
     "memory_sampler"}
)
#: executor keys for ``coserve serve`` only
SHELL_EXECUTOR_KEYS = frozenset({"server", "gpus"})


class ConfigDeprecation(FutureWarning):
    """A config key that still works but has a new name (shown to users by default)."""


@dataclass(frozen=True)
class ExecutorConfig:
    name: str
    kind: str
    budget_bytes: int


@dataclass(frozen=True)
class ServeConfig:
    executors: tuple[ExecutorConfig, ...]
    policy: str = "coserve"
    cpu_cache_bytes: int = 0
    features: Features = field(default_factory=Features)
    gpu_context_bytes: int = 0

    def with_features(self, **kw: Any) -> ServeConfig:
        return replace(self, features=replace(self.features, **kw))


def parse_executors(raw: Any, r: Reader, path: str) -> tuple[ExecutorConfig, ...]:
    items = r.seq(raw, path)
    if not items:
        raise r.fail(path, "must list at least one executor")
    out: list[ExecutorConfig] = []
    names: set[str] = set()
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        m = r.mapping(item, p)
        r.unknown(m, {"name", "kind", "budget_bytes", *SHELL_EXECUTOR_KEYS}, p)
        name = r.string(r.required(m, "name", p), f"{p}.name")
        if name in names:
            raise r.fail(f"{p}.name", f"duplicate executor name {name!r}")
        names.add(name)
        kind = r.string(r.required(m, "kind", p), f"{p}.kind", PROCESSOR_KINDS)
        budget = int(r.number(r.required(m, "budget_bytes", p), f"{p}.budget_bytes", positive=True))
        out.append(ExecutorConfig(name, kind, budget))
    return tuple(out)


def parse_serve_config(data: Any, source: str = "<serve-config>") -> ServeConfig:
    r = Reader(source)
    top = r.mapping(data, "(top level)")
    r.unknown(
        top,
        {"executors", "policy", "cpu_cache_bytes", "gpu_context_bytes", "features", "switches", *SHELL_KEYS},
        "",
    )
    executors = parse_executors(r.required(top, "executors", ""), r, "executors")
    policy = r.string(top.get("policy", "coserve"), "policy", policy_names())
    cache = int(r.number(top.get("cpu_cache_bytes", 0), "cpu_cache_bytes"))
    key = "features"
    if "switches" in top:
        if "features" in top:
            raise r.fail("switches", "give either features: or its old name switches:, not both")
        key = "switches"
        warnings.warn(
            f"{source}: 'switches:' is deprecated, rename it to 'features:'", ConfigDeprecation, stacklevel=2
        )
    features = parse_features(r.mapping(top.get(key, {}) or {}, key), r, key)
    if features.cpu_cache and cache <= 0:
        raise r.fail("cpu_cache_bytes", f"must be > 0 when {key}.cpu_cache is true")
    context = int(r.number(top.get("gpu_context_bytes", 0), "gpu_context_bytes"))
    return ServeConfig(
        executors=executors,
        policy=policy,
        cpu_cache_bytes=cache,
        features=features,
        gpu_context_bytes=context,
    )


def load_serve_config_text(text: str, source: str) -> ServeConfig:
    return parse_serve_config(parse_yaml_text(text, source), source)
