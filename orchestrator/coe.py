"""The CoE definition file: experts, routing rules and a board's component mix.

A CoE (Collaboration-of-Experts) definition is a YAML file of this shape::

    name: demo                      # used in logs and reports
    seed: 7                         # seeds expert weights and the synthetic board
    image: {channels: 3, height: 64, width: 64}   # default input of every expert (NCHW, FP32)
    experts:
      - name: cls_t000              # Triton model name: [A-Za-z0-9_]+
        arch: classifier            # classifier | detector
        size_mb: 2.0                # target fp32 weight size; the zoo picks depth/width to match
        num_classes: 4              # classifier: defect classes, class 0 means "no defect";
                                    # detector: object classes
        params: {}                  # optional explicit zoo parameters (override size_mb)
        input_shape: [3, 64, 64]    # optional, defaults to `image`
    routing:
      - component_type: t000        # one rule per component type
        classifier: cls_t000        # the preliminary expert for this type
        no_defect_prob: 0.9         # share of this type's images the classifier calls "no defect"
        detector: det_0             # optional shared subsequent expert, run when the classifier
                                    # says "no defect"
    board:
      name: board-demo
      mix: {t000: 40, t001: 12}     # components of each type on one board

``parse_coe`` is pure: it validates a parsed document, and every error names the file, the field
and the problem (``ConfigError``). ``load_coe`` reads the file through
``orchestrator.config_reader.read_yaml_file``; ``dump_coe`` writes one. The expert dependency graph
(``orchestrator.core.graph.DependencyGraph``) is built from a definition by ``workload_from_coe`` in
``orchestrator/simulate/workload.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.config_reader import Reader, read_yaml_file

ARCHITECTURES = ("classifier", "detector")


@dataclass(frozen=True)
class ImageSpec:
    """Shape of one component image as the experts take it (CHW; the batch axis is dynamic)."""

    channels: int = 3
    height: int = 64
    width: int = 64

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


@dataclass(frozen=True)
class ExpertSpec:
    """One expert model of the CoE."""

    name: str
    arch: str
    size_mb: float
    num_classes: int
    input_shape: tuple[int, int, int]
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RoutingRule:
    """Component type -> preliminary classifier (-> shared detector when it says "no defect")."""

    component_type: str
    classifier: str
    no_defect_prob: float
    detector: str | None = None


@dataclass(frozen=True)
class BoardMix:
    """How many components of each type one board has."""

    name: str
    mix: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.mix.values())


@dataclass(frozen=True)
class CoEDefinition:
    """A validated CoE definition. Experts keep file order; ``routing`` is keyed by component type."""

    name: str
    seed: int
    image: ImageSpec
    experts: Mapping[str, ExpertSpec]
    routing: Mapping[str, RoutingRule]
    board: BoardMix

    def classifiers(self) -> list[ExpertSpec]:
        return [e for e in self.experts.values() if e.arch == "classifier"]

    def detectors(self) -> list[ExpertSpec]:
        return [e for e in self.experts.values() if e.arch == "detector"]

    def type_probabilities(self) -> dict[str, float]:
        """Share of the board's components of each type (sums to 1)."""
        total = self.board.total
        return {t: n / total for t, n in self.board.mix.items()}

    def to_dict(self) -> dict[str, Any]:
        """The YAML-ready form; ``parse_coe(d.to_dict())`` gives an equal definition."""
        experts = []
        for e in self.experts.values():
            item: dict[str, Any] = {
                "name": e.name,
                "arch": e.arch,
                "size_mb": e.size_mb,
                "num_classes": e.num_classes,
            }
            if e.input_shape != self.image.shape:
                item["input_shape"] = list(e.input_shape)
            if e.params:
                item["params"] = dict(e.params)
            experts.append(item)
        routing = []
        for r in self.routing.values():
            rule: dict[str, Any] = {
                "component_type": r.component_type,
                "classifier": r.classifier,
                "no_defect_prob": r.no_defect_prob,
            }
            if r.detector is not None:
                rule["detector"] = r.detector
            routing.append(rule)
        return {
            "name": self.name,
            "seed": self.seed,
            "image": {"channels": self.image.channels, "height": self.image.height, "width": self.image.width},
            "experts": experts,
            "routing": routing,
            "board": {"name": self.board.name, "mix": dict(self.board.mix)},
        }


def load_coe(path: str | Path) -> CoEDefinition:
    """Read and validate a CoE definition file. Raises ``ConfigError`` naming file, field, problem."""
    source = str(Path(path))
    return parse_coe(read_yaml_file(path, source), source=source)


def dump_coe(coe: CoEDefinition, path: str | Path) -> None:
    """Write a definition as YAML (round-trips through ``load_coe``)."""
    Path(path).write_text(yaml.safe_dump(coe.to_dict(), sort_keys=False))


def parse_coe(data: Any, source: str = "<coe>") -> CoEDefinition:
    """Validate a parsed YAML document into a ``CoEDefinition``."""
    r = Reader(source)
    top = r.mapping(data, "(top level)")
    r.unknown(top, {"name", "seed", "image", "experts", "routing", "board"}, "")
    name = r.name(r.required(top, "name", ""), "name")
    seed = r.integer(top.get("seed", 0), "seed", minimum=0)

    img = r.mapping(top.get("image", {}), "image")
    r.unknown(img, {"channels", "height", "width"}, "image")
    image = ImageSpec(
        channels=r.integer(img.get("channels", 3), "image.channels", minimum=1),
        height=r.integer(img.get("height", 64), "image.height", minimum=8),
        width=r.integer(img.get("width", 64), "image.width", minimum=8),
    )

    experts: dict[str, ExpertSpec] = {}
    raw_experts = r.seq(r.required(top, "experts", ""), "experts")
    if not raw_experts:
        raise r.fail("experts", "must list at least one expert")
    for i, raw in enumerate(raw_experts):
        path = f"experts[{i}]"
        m = r.mapping(raw, path)
        r.unknown(m, {"name", "arch", "size_mb", "num_classes", "params", "input_shape"}, path)
        ename = r.name(r.required(m, "name", path), f"{path}.name")
        if ename in experts:
            raise r.fail(f"{path}.name", f"duplicate expert name {ename!r}")
        arch = r.required(m, "arch", path)
        if arch not in ARCHITECTURES:
            raise r.fail(f"{path}.arch", f"must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
        size_mb = r.number(r.required(m, "size_mb", path), f"{path}.size_mb", 0.0, positive=True, maximum=2000.0)
        num_classes = r.integer(m.get("num_classes", 4 if arch == "classifier" else 3), f"{path}.num_classes", 1)
        if arch == "classifier" and num_classes < 2:
            raise r.fail(f"{path}.num_classes", "a classifier needs at least 2 classes (0 = no defect)")
        params = dict(r.mapping(m.get("params", {}) or {}, f"{path}.params"))
        shape = image.shape
        if "input_shape" in m:
            s = r.seq(m["input_shape"], f"{path}.input_shape")
            if len(s) != 3:
                raise r.fail(f"{path}.input_shape", f"must be [channels, height, width], got {s!r}")
            shape = tuple(r.integer(v, f"{path}.input_shape[{j}]", 1) for j, v in enumerate(s))  # type: ignore[assignment]
        experts[ename] = ExpertSpec(ename, arch, size_mb, num_classes, shape, params)

    routing: dict[str, RoutingRule] = {}
    raw_routing = r.seq(r.required(top, "routing", ""), "routing")
    for i, raw in enumerate(raw_routing):
        path = f"routing[{i}]"
        m = r.mapping(raw, path)
        r.unknown(m, {"component_type", "classifier", "no_defect_prob", "detector"}, path)
        ctype = r.name(r.required(m, "component_type", path), f"{path}.component_type")
        if ctype in routing:
            raise r.fail(f"{path}.component_type", f"duplicate rule for component type {ctype!r}")
        cls = r.required(m, "classifier", path)
        if cls not in experts:
            raise r.fail(f"{path}.classifier", f"unknown expert {cls!r}")
        if experts[cls].arch != "classifier":
            raise r.fail(f"{path}.classifier", f"expert {cls!r} is a {experts[cls].arch}, not a classifier")
        p = r.number(m.get("no_defect_prob", 0.9), f"{path}.no_defect_prob", 0.0, maximum=1.0)
        det = m.get("detector")
        if det is not None:
            if det not in experts:
                raise r.fail(f"{path}.detector", f"unknown expert {det!r}")
            if experts[det].arch != "detector":
                raise r.fail(f"{path}.detector", f"expert {det!r} is a {experts[det].arch}, not a detector")
        routing[ctype] = RoutingRule(ctype, cls, p, det)
    if not routing:
        raise r.fail("routing", "must list at least one rule")

    b = r.mapping(r.required(top, "board", ""), "board")
    r.unknown(b, {"name", "mix"}, "board")
    bname = str(b.get("name", f"{name}-board"))
    raw_mix = r.mapping(r.required(b, "mix", "board"), "board.mix")
    mix: dict[str, int] = {}
    for ctype, count in raw_mix.items():
        if ctype not in routing:
            raise r.fail(f"board.mix.{ctype}", f"no routing rule for component type {ctype!r}")
        mix[ctype] = r.integer(count, f"board.mix.{ctype}", minimum=0)
    if sum(mix.values()) <= 0:
        raise r.fail("board.mix", "must have at least one component")

    return CoEDefinition(name, seed, image, experts, routing, BoardMix(bname, mix))
