"""Synthetic CoE definitions: ``coserve coe generate --preset demo|pcb-a|pcb-b``.

No torch here (the command must stay cheap). A generated board has ``types`` component types
``t000..``, one classifier per type (``cls_<type>``), ``detectors`` shared detectors
(``det_<k>``), and a component mix whose per-type counts follow a Zipf law with exponent ``zipf``
over a seeded random ranking of the types, apportioned to ``components`` parts (largest
remainder, every type at least one part). A ``detector_share`` fraction of the types (seeded
choice) routes "no defect" images to a detector, the detectors dealt round-robin over them so
each is shared by many classifiers. ``no_defect_prob`` per type is seeded uniform in
``no_defect_range``.

Presets (scaled for CPU machines; ``--classifier-mb 179 --detector-mb 84`` gives paper-sized
experts):

* ``demo``: 20 types, 4 detectors (24 experts), classifiers 1.5 MB, detectors 6 MB, 64x64
  images, 400 components -- exports in well under a minute on 2 cores.
* ``pcb-a``: the paper's board A: 352 types, 4 detectors, 2,500 components; the Zipf exponent
  is solved (``zipf=None``) so that the 35 most used types hold ~60% of the components, as in the
  paper (for 352 types and 2,500 parts that is ~1.07).
* ``pcb-b``: board B: 342 types, 3 detectors, 3,500 components, same skew.

Everything is a pure function of the options and the seed; the result is validated by
``orchestrator.coe.parse_coe`` before it is returned.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from orchestrator.coe import CoEDefinition, parse_coe
from orchestrator.errors import ConfigError


@dataclass(frozen=True)
class GeneratorOptions:
    """Every knob of the generator (presets fill them; the CLI overrides single fields)."""

    name: str
    types: int
    detectors: int
    detector_share: float
    zipf: float | None  # None: solved so the top ``top_k`` types hold ``top_target`` of the parts
    seed: int
    classifier_mb: float
    detector_mb: float
    components: int
    image_size: int = 64
    channels: int = 3
    classifier_classes: int = 4
    detector_classes: int = 3
    no_defect_range: tuple[float, float] = (0.8, 0.97)
    top_k: int = 35
    top_target: float = 0.6


PRESETS: dict[str, GeneratorOptions] = {
    "demo": GeneratorOptions(
        name="demo", types=20, detectors=4, detector_share=0.5, zipf=1.0, seed=7,
        classifier_mb=1.5, detector_mb=6.0, components=400,
    ),
    "pcb-a": GeneratorOptions(
        name="pcb_a", types=352, detectors=4, detector_share=0.4, zipf=None, seed=11,
        classifier_mb=2.0, detector_mb=8.0, components=2500,
    ),
    "pcb-b": GeneratorOptions(
        name="pcb_b", types=342, detectors=3, detector_share=0.4, zipf=None, seed=13,
        classifier_mb=2.0, detector_mb=8.0, components=3500,
    ),
}


def _rng(seed: int, what: str) -> np.random.Generator:
    digest = hashlib.blake2b(f"{seed}:{what}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def zipf_counts(types: int, components: int, exponent: float) -> list[int]:
    """Counts for ranks 1..types: Zipf weights apportioned to ``components`` (each >= 1)."""
    if components < types:
        raise ValueError(f"components ({components}) must be >= types ({types}) so every type appears")
    w = 1.0 / np.arange(1, types + 1, dtype=np.float64) ** exponent
    spare = components - types  # one part per type first, then Zipf shares of the rest
    quota = w / w.sum() * spare
    counts = np.floor(quota).astype(np.int64)
    for i in np.argsort(-(quota - counts), kind="stable")[: spare - int(counts.sum())]:
        counts[i] += 1
    return [int(c) + 1 for c in counts]


def solve_zipf(types: int, components: int, top_k: int = 35, target: float = 0.6) -> float:
    """The exponent whose counts give the ``top_k`` types ``target`` of the parts (bisection).

    When ``top_k >= types`` every exponent gives 100%; then 1.0 (plain Zipf) is returned.
    """
    if top_k >= types:
        return 1.0

    def share(s: float) -> float:
        c = zipf_counts(types, components, s)
        return sum(c[:top_k]) / sum(c)

    lo, hi = 0.0, 6.0
    if share(lo) >= target:
        return lo
    if share(hi) <= target:
        return hi
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if share(mid) < target else (lo, mid)
    return round((lo + hi) / 2, 4)


def top_share(mix: dict[str, int], k: int = 35) -> float:
    """Share of the components held by the ``k`` most frequent types."""
    counts = sorted(mix.values(), reverse=True)
    return sum(counts[:k]) / max(1, sum(counts))


def generate(opts: GeneratorOptions, source: str = "<generated>") -> CoEDefinition:
    """Build and validate a CoE definition from ``opts`` (``ConfigError`` on bad options)."""
    def bad(fieldname: str, problem: str) -> ConfigError:
        return ConfigError(source, fieldname, problem)

    if opts.types < 1:
        raise bad("types", f"must be >= 1, got {opts.types}")
    if opts.detectors < 0:
        raise bad("detectors", f"must be >= 0, got {opts.detectors}")
    if not 0.0 <= opts.detector_share <= 1.0:
        raise bad("detector_share", f"must be in [0, 1], got {opts.detector_share}")
    if opts.detector_share > 0 and opts.detectors == 0:
        raise bad("detectors", "must be >= 1 when detector_share > 0")
    if opts.zipf is not None and opts.zipf < 0:
        raise bad("zipf", f"must be >= 0, got {opts.zipf}")
    if opts.seed < 0:
        raise bad("seed", f"must be >= 0, got {opts.seed}")
    for fieldname, mb in (("classifier_mb", opts.classifier_mb), ("detector_mb", opts.detector_mb)):
        if not 0 < mb <= 2000:
            raise bad(fieldname, f"must be in (0, 2000] MB, got {mb}")
    components = max(opts.components, opts.types)

    names = [f"t{i:03d}" for i in range(opts.types)]
    # which type gets which Zipf rank: a seeded ranking, so popular types are spread over the ids
    ranking = _rng(opts.seed, "ranking").permutation(opts.types)
    exponent = opts.zipf if opts.zipf is not None else solve_zipf(opts.types, components, opts.top_k, opts.top_target)
    counts = zipf_counts(opts.types, components, exponent)
    mix = {names[i]: 0 for i in range(opts.types)}
    for rank, type_idx in enumerate(ranking):
        mix[names[type_idx]] = counts[rank]

    lo, hi = opts.no_defect_range
    probs = _rng(opts.seed, "no_defect").uniform(lo, hi, opts.types)
    n_routed = round(opts.detector_share * opts.types)
    routed = sorted(_rng(opts.seed, "routed").choice(opts.types, size=n_routed, replace=False).tolist())
    detector_of = {t: f"det_{k % max(1, opts.detectors)}" for k, t in enumerate(routed)}

    experts: list[dict[str, Any]] = [
        {"name": f"cls_{t}", "arch": "classifier", "size_mb": opts.classifier_mb, "num_classes": opts.classifier_classes}
        for t in names
    ]
    experts += [
        {"name": f"det_{k}", "arch": "detector", "size_mb": opts.detector_mb, "num_classes": opts.detector_classes}
        for k in range(opts.detectors)
    ]
    routing: list[dict[str, Any]] = []
    for i, t in enumerate(names):
        rule: dict[str, Any] = {"component_type": t, "classifier": f"cls_{t}", "no_defect_prob": round(float(probs[i]), 3)}
        if i in detector_of:
            rule["detector"] = detector_of[i]
        routing.append(rule)
    doc = {
        "name": opts.name,
        "seed": opts.seed,
        "image": {"channels": opts.channels, "height": opts.image_size, "width": opts.image_size},
        "experts": experts,
        "routing": routing,
        "board": {"name": f"{opts.name}_board", "mix": mix},
    }
    return parse_coe(doc, source=source)


def preset_options(preset: str, **overrides: Any) -> GeneratorOptions:
    """The preset's options with the non-None overrides applied (``ConfigError`` for a bad preset)."""
    if preset not in PRESETS:
        raise ConfigError("--preset", "", f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    opts = PRESETS[preset]
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(opts, **changes) if changes else opts


def write_coe(coe: CoEDefinition, path: str | Path) -> Path:
    """Write the definition as YAML with a short header comment (round-trips through load_coe)."""
    p = Path(path)
    header = (
        f"# CoE definition generated by `coserve coe generate` ({len(coe.routing)} component types,\n"
        f"# {len(coe.classifiers())} classifiers, {len(coe.detectors())} detectors, {coe.board.total} components per board)\n"
    )
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(header + yaml.safe_dump(coe.to_dict(), sort_keys=False))
    except OSError as exc:
        raise ConfigError(str(p), "", f"cannot write file ({exc.strerror or exc})") from None
    return p
