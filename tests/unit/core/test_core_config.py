from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.layout import executors_for
from orchestrator.core.policies import POLICIES, get_policy
from orchestrator.core.profile import load_profile_text
from orchestrator.core.serve_config import load_serve_config_text
from orchestrator.errors import ConfigError
from orchestrator.simulate.presets import load_preset, preset_names

from .factories import make_config

GOOD_PROFILE = """
processors: {gpu: {concurrent_loads: 2}}
architectures:
  classifier:
    gpu: {k_s: 0.0064, b_s: 0.0086, max_batch: 16, load_time_s: {disk: 1.35, cpu: 0.07}}
"""


def test_profile_parses_with_units() -> None:
    p = load_profile_text(GOOD_PROFILE, "p.yaml")
    c = p.cost("classifier", "gpu")
    assert c is not None and c.batch_time_s(2) == pytest.approx(0.0214)
    assert p.processor("gpu").concurrent_loads == 2
    assert p.cost("classifier", "cpu") is None


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (GOOD_PROFILE.replace("k_s: 0.0064", "k_s: -1"), "architectures.classifier.gpu.k_s"),
        (GOOD_PROFILE.replace("max_batch: 16", "max_batch: 0"), "architectures.classifier.gpu.max_batch"),
        (GOOD_PROFILE.replace("disk: 1.35, ", ""), "architectures.classifier.gpu.load_time_s.disk"),
        (GOOD_PROFILE.replace("gpu: {k_s", "tpu: {k_s"), "architectures.classifier.tpu"),
        (GOOD_PROFILE.replace("k_s: 0.0064", "k_s: 0.0064, speed: 3"), "architectures.classifier.gpu.speed"),
        ("architectures: [1]", "architectures"),
        ("a: [", ""),
    ],
)
def test_profile_errors_name_file_and_field(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_profile_text(text, "prof.yaml")
    assert ei.value.source == "prof.yaml"
    assert ei.value.field == field


def test_serve_config_parse_and_errors() -> None:
    cfg = load_serve_config_text(
        "executors: [{name: g, kind: gpu, budget_bytes: 4e9}]\npolicy: em-ra\nfeatures: {prefetch: true}\n",
        "s.yaml",
    )
    assert cfg.executors[0].budget_bytes == 4_000_000_000 and cfg.policy == "em-ra" and cfg.features.prefetch
    bad = {
        "executors: []": "executors",
        "executors: [{name: g, kind: tpu, budget_bytes: 1}]": "executors[0].kind",
        "executors: [{name: g, kind: gpu, budget_bytes: -1}]": "executors[0].budget_bytes",
        "executors: [{name: g, kind: gpu, budget_bytes: 1}]\npolicy: magic": "policy",
        "executors: [{name: g, kind: gpu, budget_bytes: 1}]\nfeatures: {cpu_cache: true}": "cpu_cache_bytes",
        "executors: [{name: g, kind: gpu, budget_bytes: 1}]\nfeatures: {starvation_bound_s: 0}": "features.starvation_bound_s",
    }
    for text, field in bad.items():
        with pytest.raises(ConfigError) as ei:
            load_serve_config_text(text, "s.yaml")
        assert ei.value.field == field, text


def test_registry_has_paper_policies_and_derives_samba_executors() -> None:
    assert {"coserve", "samba-lru", "samba-fifo", "samba-parallel", "none", "em", "em-ra"} <= set(POLICIES)
    with pytest.raises(ConfigError):
        get_policy("nope")
    cfg = make_config(100, 100, 100, cpu_mb=300)
    single, cache = executors_for(get_policy("samba-lru"), cfg)
    assert [(e.kind, e.budget_bytes) for e in single] == [("gpu", 300 * 10**6)] and cache == 300 * 10**6
    par, cache = executors_for(get_policy("samba-parallel"), cfg)
    assert len(par) == 4 and all(e.kind == "gpu" for e in par) and cache == 300 * 10**6
    same, cache = executors_for(get_policy("em"), cfg)
    assert same == cfg.executors and cache == 0


def test_presets_load() -> None:
    assert {"paper-numa", "paper-uma"} <= set(preset_names())
    for name in ("paper-numa", "paper-uma"):
        p = load_preset(name)
        assert len(p.executors["A"]) == 4 and len(p.executors["B"]) == 5
        assert p.profile.cost("resnet101", "gpu") is not None
    with pytest.raises(ConfigError):
        load_preset("paper-tpu")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: b: c\n", "not valid YAML at line 1, column 5: mapping values are not allowed here"),
        (
            "a: \x01\n",
            "not valid YAML (unacceptable character #x0001: special characters are not allowed, position 3)",
        ),
        ("a: 2001-02-30\n", "not valid YAML (day is out of range for month)"),
        ("[" * 5000, "not valid YAML (nested too deeply)"),
    ],
)
def test_yaml_text_errors_are_one_line_config_errors(text: str, problem: str) -> None:
    for load in (load_profile_text, load_serve_config_text):
        with pytest.raises(ConfigError) as ei:
            load(text, "f.yaml")
        assert (ei.value.source, ei.value.field, ei.value.problem) == ("f.yaml", "", problem)


def test_preset_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "b.yaml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError) as ei:
        load_preset(str(bad))
    assert str(ei.value) == f"{bad}: not UTF-8 text (byte 0xff at offset 0)"
    with pytest.raises(ConfigError, match="cannot read file"):
        load_preset(str(tmp_path))


def test_simulator_sources_cite_only_documents_in_the_repository() -> None:
    """Comments cite docs/*.md or the paper, never a document the repository does not have."""
    import re

    root = Path(__file__).resolve().parents[3]
    files = sorted((root / "orchestrator" / "simulate").rglob("*.yaml"))
    files += sorted((root / "orchestrator" / "simulate").rglob("*.py"))
    files += sorted((root / "orchestrator" / "core").rglob("*.py")) + [root / "orchestrator" / "coe.py"]
    assert len(files) > 10
    for f in files:
        text = f.read_text()
        assert "BRIEF" not in text, f
        for cited in re.findall(r"\b((?:docs|orchestrator|benchmarks)/[\w/.-]*\w)", text):
            assert (root / cited).exists(), f"{f.relative_to(root)} cites {cited}"


def test_old_switches_key_is_read_with_a_deprecation_warning() -> None:
    from orchestrator.core.serve_config import ConfigDeprecation

    text = "executors: [{name: g, kind: gpu, budget_bytes: 4e9}]\nswitches: {prefetch: true}\n"
    with pytest.warns(
        ConfigDeprecation, match=r"s\.yaml: 'switches:' is deprecated, rename it to 'features:'"
    ):
        cfg = load_serve_config_text(text, "s.yaml")
    assert cfg.features.prefetch
    with pytest.raises(ConfigError) as ei:
        load_serve_config_text(text + "features: {prefetch: false}\n", "s.yaml")
    assert ei.value.field == "switches"
    bad = "executors: [{name: g, kind: gpu, budget_bytes: 1}]\nswitches: {starvation_bound_s: 0}\n"
    with pytest.warns(ConfigDeprecation), pytest.raises(ConfigError) as ei:
        load_serve_config_text(bad, "s.yaml")
    assert ei.value.field == "switches.starvation_bound_s"


def test_core_modules_import_no_circle() -> None:
    """policies <-> scheduler <-> serve_config was a circle; the core's imports form a DAG."""
    import ast

    import networkx as nx

    src = Path(__file__).resolve().parents[3] / "orchestrator" / "core"
    g: nx.DiGraph = nx.DiGraph()
    for f in sorted(src.glob("*.py")):
        g.add_node(f.stem)
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("orchestrator.core."):
                g.add_edge(f.stem, node.module.split(".")[2])  # type: ignore[union-attr]
    assert {"policies", "serve_config", "scheduler", "assign"} <= set(g)
    assert list(nx.simple_cycles(g)) == []
    # policies see a narrow view, never the scheduler; the registry imports no other core module
    assert not any(n in ("scheduler", "serve_config") for n in g.successors("policies"))
    assert "scheduler" not in nx.descendants(g, "assign")
