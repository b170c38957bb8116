"""Beyond-paper features: on/off flags (and their parameters) a serve config or a policy turns on.

Every feature is off by default, so a policy without features behaves as the CoServe paper
describes. YAML (the ``features:`` mapping of a serve config; ``switches:`` is the old name)::

    features:
      starvation_bound_s: null      # a step older than this is served next
      prefetch: false               # load likely subsequent experts into free memory
      cpu_cache: false              # use cpu_cache_bytes as a cache tier (coserve policies)
      online_probabilities: false   # follow the observed mix (decayed counts)
      online_half_life: 400         # observations until an old one weighs half
      queue_aware_eviction: false   # never evict what queued steps need while another victim exists
      lookahead_loading: false      # load the next queued groups' experts while the executor works
      serve_resident: false         # run a group whose expert is ready while the head's loads
      unload_headroom: false        # evict ahead so that a load never waits for a slow unload
      dedup_eviction: false         # evict first what another executor also holds (duplicates)
      disk_aware_assign: false      # a disk switch also waits for the loads ahead on the storage
      batch_room: false             # evict experts no queued step needs so that batches are full

``coserve+`` (``orchestrator.core.policies``) turns on the ones that help on the paper's tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from orchestrator.config_reader import Reader


@dataclass(frozen=True)
class Features:
    """The beyond-paper flags; the defaults are the paper's behaviour."""

    starvation_bound_s: float | None = None
    prefetch: bool = False
    cpu_cache: bool = False
    online_probabilities: bool = False
    online_half_life: float = 400.0
    queue_aware_eviction: bool = False
    lookahead_loading: bool = False
    serve_resident: bool = False
    unload_headroom: bool = False
    dedup_eviction: bool = False
    disk_aware_assign: bool = False
    batch_room: bool = False


#: the features that push the core toward the compulsory bound (issue 7, section 2;
#: benchmarks/sim_beyond.py measures each alone and all together)
BOUND_FLAGS: tuple[str, ...] = (
    "queue_aware_eviction",
    "lookahead_loading",
    "serve_resident",
    "unload_headroom",
    "dedup_eviction",
    "disk_aware_assign",
    "batch_room",
)
#: the boolean features (a policy may turn these on)
FLAGS: tuple[str, ...] = ("prefetch", "cpu_cache", "online_probabilities", *BOUND_FLAGS)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Features))


def parse_features(raw: Mapping[str, Any], r: Reader, path: str) -> Features:
    """``raw`` (the YAML mapping at ``path``) as ``Features``; unknown keys and bad values are
    ``ConfigError``s naming ``path.key``."""
    r.unknown(raw, set(FEATURE_NAMES), path)
    bound = raw.get("starvation_bound_s")
    return Features(
        starvation_bound_s=None
        if bound is None
        else r.number(bound, f"{path}.starvation_bound_s", positive=True),
        prefetch=r.boolean(raw.get("prefetch", False), f"{path}.prefetch"),
        cpu_cache=r.boolean(raw.get("cpu_cache", False), f"{path}.cpu_cache"),
        online_probabilities=r.boolean(
            raw.get("online_probabilities", False), f"{path}.online_probabilities"
        ),
        online_half_life=r.number(
            raw.get("online_half_life", 400.0), f"{path}.online_half_life", positive=True
        ),
        queue_aware_eviction=r.boolean(
            raw.get("queue_aware_eviction", False), f"{path}.queue_aware_eviction"
        ),
        lookahead_loading=r.boolean(raw.get("lookahead_loading", False), f"{path}.lookahead_loading"),
        serve_resident=r.boolean(raw.get("serve_resident", False), f"{path}.serve_resident"),
        unload_headroom=r.boolean(raw.get("unload_headroom", False), f"{path}.unload_headroom"),
        dedup_eviction=r.boolean(raw.get("dedup_eviction", False), f"{path}.dedup_eviction"),
        disk_aware_assign=r.boolean(raw.get("disk_aware_assign", False), f"{path}.disk_aware_assign"),
        batch_room=r.boolean(raw.get("batch_room", False), f"{path}.batch_room"),
    )


def with_flags(features: Features, flags: tuple[str, ...]) -> Features:
    """``features`` with the boolean features named in ``flags`` turned on."""
    unknown = set(flags) - set(FLAGS)
    if unknown:
        raise ValueError(f"unknown feature flags {sorted(unknown)}")
    return replace(features, **dict.fromkeys(flags, True)) if flags else features
