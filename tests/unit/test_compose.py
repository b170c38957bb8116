"""The compose stack (docker-compose.yml, Dockerfile, deploy/) and the ONNX pin of its Triton.

- ``docker-compose config`` accepts the file and ``promtool check config`` the scrape config
  (each skips, naming the Debian package to install, where the tool is missing; .ci/run installs
  both);
- the compose file agrees with the orchestrator's config for it (deploy/serve.compose.yaml) and
  with the scrape config: ports, paths, flags, networks (Triton only on the internal network, only
  the factory API and metrics published);
- the GPU variant (deploy/compose.gpu.yaml over the compose file) reserves the GPUs for Triton and
  swaps in deploy/serve.compose.gpu.yaml, which differs from the CPU config only in its executors;
- the orchestrator's image installs exactly what serving imports (deploy/requirements-serve.txt,
  with pyproject's specifiers);
- the ``onnxruntime`` target writes what Triton 24.10's ONNX Runtime (1.19) reads: IR <= 10,
  opset <= 21, and refuses a file beyond that.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomllib
import yaml

from exporter import repository
from exporter.build import export_coe
from exporter.export import MAX_IR_VERSION, _pin_ir_version, ort_session
from orchestrator.errors import ExportError
from orchestrator.serve_file import load_serve_file
from orchestrator.triton.model_config import ModelConfig
from tests.unit.exporter_factories import user_onnx
from tests.unit.test_exporter_repository import tiny_coe

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SERVE = ROOT / "deploy" / "serve.compose.yaml"
SCRAPE = ROOT / "deploy" / "prometheus.yml"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"


def compose() -> dict[str, Any]:
    """The compose file with ``${VAR:-default}`` read as its default (as with VAR unset)."""
    text = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", COMPOSE.read_text())
    assert "${" not in text  # every variable has a default: the file works without an .env
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def flags(command: list[str]) -> dict[str, str]:
    """``--key=value`` (and bare ``--key``) items of a command list."""
    out = {}
    for item in command:
        if item.startswith("--"):
            key, _, val = item[2:].partition("=")
            out[key] = val
    return out


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """container path -> (host source, mode) of a service's short-syntax volumes."""
    out = {}
    for v in service.get("volumes", []):
        parts = v.split(":")
        src, dst, mode = parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"
        out[dst] = (src, mode)
    return out


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of a service's short-syntax ports."""
    out = []
    for p in service.get("ports", []):
        parts = str(p).split(":")
        host = parts[0] if len(parts) == 3 else "0.0.0.0"
        out.append((host, int(parts[-2]), int(parts[-1])))
    return out


def port_of(hostport: str) -> int:
    return int(hostport.rsplit(":", 1)[1])


def scrape_targets() -> dict[str, list[str]]:
    data = yaml.safe_load(SCRAPE.read_text())
    return {job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]] for job in data["scrape_configs"]}


def test_docker_compose_accepts_the_file() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("needs docker-compose (apt-get install docker-compose); .ci/run installs it")
    # `config` parses, interpolates and validates against the schema; no engine needed
    done = subprocess.run([tool, "-f", str(COMPOSE), "config"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    normalized = yaml.safe_load(done.stdout)
    assert set(normalized["services"]) == {"triton", "orchestrator", "prometheus"}
    assert normalized["networks"]["backend"]["internal"] is True


def test_promtool_accepts_the_scrape_config() -> None:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("needs promtool (apt-get install prometheus); .ci/run installs it")
    done = subprocess.run([tool, "check", "config", str(SCRAPE)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_stack_agrees_with_the_orchestrator_config_and_the_scrape_config() -> None:
    c = compose()
    assert "version" not in c  # obsolete in Compose v2 (v1.29 reads the spec without it too)
    triton, orch, prom = (c["services"][n] for n in ("triton", "orchestrator", "prometheus"))
    spec = load_serve_file(SERVE)

    # Triton: the pinned image, explicit model control, the repository where the flag says
    assert triton["image"] == TRITON_IMAGE
    tf = flags(triton["command"])
    assert triton["command"][0] == "tritonserver"
    assert tf["model-control-mode"] == "explicit"
    assert "disable-auto-complete-config" in tf  # the exporter writes complete configs
    assert tf["strict-readiness"] == "false"  # as the embedded server: one bad model must not fail health
    t_mounts = mounts(triton)
    assert t_mounts[tf["model-repository"]][1] == "ro"

    # the orchestrator reaches Triton by service name and gRPC port, on a shared network
    [server] = spec.servers.values()
    assert server.url is not None
    host, grpc_port = server.url.rsplit(":", 1)
    assert host == "triton" and int(grpc_port) == int(tf["grpc-port"])
    assert set(triton["networks"]) & set(orch["networks"])
    assert spec.executor_server == {"cpu0": server.name}

    # the orchestrator's config file is mounted where its command reads it
    command = orch["command"]
    config_path = command[command.index("--config") + 1]
    o_mounts = mounts(orch)
    assert (ROOT / o_mounts[config_path][0]).resolve() == SERVE.resolve()
    # the same model repository for both, at the path the serve config names
    assert o_mounts[str(spec.repo)][0] == t_mounts[tf["model-repository"]][0]
    assert str(spec.repo) == tf["model-repository"]
    assert spec.coe.parent == spec.repo
    # the verdict log and the profile (measured in the stack) are on the data volume: the config
    # and the repository are read-only mounts
    assert spec.verdict_log is not None and spec.profile is not None
    [(data_dir, (volume, mode))] = [(d, m) for d, m in o_mounts.items() if spec.verdict_log.path.is_relative_to(d)]
    assert mode == "rw" and volume in c["volumes"] and spec.profile.parent == Path(data_dir)
    assert f"WORKDIR {data_dir}" in (ROOT / "Dockerfile").read_text()  # the image's user owns it

    # published: exactly the factory API and the metrics, on the ports the config listens on
    assert spec.metrics_listen is not None
    assert spec.listen.startswith("0.0.0.0:") and spec.metrics_listen.startswith("0.0.0.0:")  # inside a container
    assert {cport for _, _, cport in published(orch)} == {port_of(spec.listen), port_of(spec.metrics_listen)}
    assert "ports" not in triton and "expose" not in triton
    # Prometheus's own UI only on the host's loopback
    assert all(host == "127.0.0.1" for host, _, _ in published(prom))

    # Triton's networks are all internal (its model control has no authentication)
    nets = c["networks"]
    assert all(nets[n].get("internal") is True for n in triton["networks"])
    assert any(not (nets[n] or {}).get("internal") for n in orch["networks"])  # the API is reachable

    # Prometheus scrapes both, on the ports they serve metrics on, with the config it is given
    targets = scrape_targets()
    assert targets["coserve"] == [f"orchestrator:{port_of(spec.metrics_listen)}"]
    assert targets["triton"] == [f"triton:{tf['metrics-port']}"]
    pf = flags(prom["command"])
    assert (ROOT / mounts(prom)[pf["config.file"]][0]).resolve() == SCRAPE.resolve()
    assert set(prom["networks"]) & set(triton["networks"]) and set(prom["networks"]) & set(orch["networks"])
    assert ":" in prom["image"] and not prom["image"].endswith(":latest")

    # the image: built from the Dockerfile, which exposes the same ports and reads the same config
    assert orch["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    docker = (ROOT / "Dockerfile").read_text()
    [expose] = re.findall(r"^EXPOSE (.+)$", docker, re.M)
    assert {int(p) for p in expose.split()} == {port_of(spec.listen), port_of(spec.metrics_listen)}
    [cmd] = re.findall(r"^CMD (.+)$", docker, re.M)
    assert json.loads(cmd) == command
    assert "coserve_serving 1.0" in " ".join(orch["healthcheck"]["test"])  # the metric's exposition text


GPU_OVERRIDE = ROOT / "deploy" / "compose.gpu.yaml"
GPU_SERVE = ROOT / "deploy" / "serve.compose.gpu.yaml"


def test_the_gpu_variant_gives_triton_the_gpus_and_the_orchestrator_its_gpu_config() -> None:
    """deploy/compose.gpu.yaml over docker-compose.yml: Triton reserves NVIDIA GPUs, the
    orchestrator reads the GPU serve config at the path its command names, and that config is
    the CPU one but for its executors (mutations killed: the override mounting its config at
    another path, so the CPU config stays in force; a GPU config drifting from the CPU one in
    ports, paths or servers; an executor left on the CPU)."""
    override = yaml.safe_load(GPU_OVERRIDE.read_text())
    [device] = override["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "deploy" not in override["services"]["orchestrator"]  # it neither computes nor reads NVML
    command = compose()["services"]["orchestrator"]["command"]
    config_path = command[command.index("--config") + 1]
    o_mounts = mounts(override["services"]["orchestrator"])
    assert (ROOT / o_mounts[config_path][0]).resolve() == GPU_SERVE.resolve() and o_mounts[config_path][1] == "ro"

    cpu, gpu = load_serve_file(SERVE), load_serve_file(GPU_SERVE)
    same = ("coe", "repo", "profile", "listen", "queue_bound", "metrics_listen", "tls", "verdict_log")
    assert {f: getattr(gpu, f) for f in same} == {f: getattr(cpu, f) for f in same}
    assert {n: s.url for n, s in gpu.servers.items()} == {n: s.url for n, s in cpu.servers.items()}
    # the GPU executor's memory is read from Triton's metrics port, the one the compose file gives it
    triton_command = compose()["services"]["triton"]["command"]
    port = next(a.split("=", 1)[1] for a in triton_command if str(a).startswith("--metrics-port="))
    assert [s.metrics_url for s in gpu.servers.values()] == [f"http://triton:{port}/metrics"]
    assert gpu.config.policy == cpu.config.policy
    assert [e.kind for e in gpu.config.executors] == ["gpu"]
    assert all(gpu.executor_gpus[e.name] for e in gpu.config.executors)
    assert set(gpu.executor_server.values()) == set(cpu.executor_server.values())

    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("needs docker-compose (apt-get install docker-compose); .ci/run installs it")
    done = subprocess.run([tool, "-f", str(COMPOSE), "-f", str(GPU_OVERRIDE), "config"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    merged = yaml.safe_load(done.stdout)["services"]
    assert merged["triton"]["deploy"]["resources"]["reservations"]["devices"] == [device]
    # the override's mount replaces the CPU config's (same container path), it is not added beside it
    served = [v for v in merged["orchestrator"]["volumes"] if str(v).split(":")[1] == config_path]
    assert len(served) == 1 and Path(str(served[0]).split(":")[0]).resolve() == GPU_SERVE.resolve()


def test_the_image_installs_what_serving_imports() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = [line.strip() for line in (ROOT / "deploy" / "requirements-serve.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert set(reqs) <= set(deps), set(reqs) - set(deps)  # pyproject's specifiers, unchanged

    def dist(req: str) -> str:
        return re.split(r"[\[<>=!~ ]", req, maxsplit=1)[0].lower().replace("_", "-")

    # what serving imports, in a fresh interpreter, mapped to distributions
    code = (
        "import sys, json, importlib.metadata as md\n"
        "import orchestrator.cli, orchestrator.cli_serve, orchestrator.serve, orchestrator.images\n"
        "import orchestrator.metrics, orchestrator.verdicts, orchestrator.engine.triton_backend, profiler.run\n"
        "import profiler.cli, profiler.measure, tqdm  # coserve profile --triton-url, in the stack\n"
        "import PIL.Image\n"
        "dists = md.packages_distributions()\n"
        "tops = {m.split('.')[0] for m in sys.modules}\n"
        "print(json.dumps(sorted({d for t in tops for d in dists.get(t, [])})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    imported = {d.lower().replace("_", "-") for d in json.loads(done.stdout)}
    ours = {dist(d) for d in deps}
    needed = imported & ours  # third-party distributions the project depends on and serving loads
    assert needed <= {dist(r) for r in reqs}, needed - {dist(r) for r in reqs}
    assert {"torch", "nvidia-pytriton", "onnx", "onnxruntime"}.isdisjoint({dist(r) for r in reqs})


def test_the_onnxruntime_target_writes_what_triton_24_10_reads(tmp_path: Path) -> None:
    coe = tiny_coe()
    export_coe(coe, tmp_path, "onnxruntime", jobs=1, calibrate=False)
    import onnx

    max_ir, max_opset = repository.ONNX_LIMITS["onnxruntime"]
    assert (max_ir, max_opset) == (10, 21) and max_ir >= MAX_IR_VERSION
    for name in coe.experts:
        path = tmp_path / name / "1" / "model.onnx"
        model = onnx.load(str(path), load_external_data=False)
        opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        assert model.ir_version <= max_ir and opset <= max_opset, (name, model.ir_version, opset)
        assert ModelConfig.read(tmp_path / name).backend == "onnxruntime"
        # and the installed ONNX Runtime runs it
        outs = ort_session(path).run(None, {"image": np.zeros((2, 3, 32, 32), np.float32)})
        assert outs and all(o.shape[0] == 2 for o in outs)


def test_a_newer_onnx_file_is_refused_for_the_onnxruntime_target(tmp_path: Path) -> None:
    import onnx

    path = user_onnx(tmp_path / "user.onnx", np.eye(4, 2))
    model = onnx.load(str(path))
    model.ir_version = 11
    onnx.save(model, str(path))
    info_in = (repository.TensorSpec("image", "TYPE_FP32", (4,)),)
    info_out = (repository.TensorSpec("logits", "TYPE_FP32", (2,)),)
    native = repository.expert_config("user", info_in, info_out, "onnxruntime")
    with pytest.raises(ExportError, match=r"user: .* is ONNX IR 11, opset 18; target onnxruntime .* reads IR <= 10"):
        repository.install_model(tmp_path / "repo", "user", path, native)
    assert not (tmp_path / "repo" / "user" / "1" / "model.onnx").exists()
    # the embedded python-ort backend runs this venv's onnxruntime, which reads it
    python_ort = repository.expert_config("user", info_in, info_out, "python-ort")
    repository.install_model(tmp_path / "repo", "user", path, python_ort)
    # and the exporter lowers a newer IR version it produced to the pin
    pinned = onnx.load_from_string(_pin_ir_version(model.SerializeToString()))
    assert pinned.ir_version == MAX_IR_VERSION
    onnx.checker.check_model(pinned)
