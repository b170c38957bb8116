"""Security and metrics of ``coserve serve`` on a real embedded tritonserver.

- The embedded tritonserver's listening sockets (read from ``/proc``: its own file descriptors
  against the kernel's socket tables) are all on 127.0.0.1: Triton's model-control API has no
  authentication, so it must not be reachable from the network.
- One service from a serve config with ``tls`` and ``metrics`` (over HTTPS): a TLS client streams
  a board and gets every verdict, a plaintext client is refused, and a scrape of ``/metrics``
  agrees with the verdicts and the engine's status; Triton's own metrics port (what deploy/prometheus.yml scrapes
  beside ours) answers in Prometheus format.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import socket
import ssl
import urllib.request
from pathlib import Path

import pytest
import yaml

from orchestrator.board_source import BoardSource
from orchestrator.client import InspectionClient, RemoteError, tls_credentials
from orchestrator.coe import CoEDefinition, dump_coe
from orchestrator.core.profile import profile_to_data
from orchestrator.engine.types import InspectRequest, Verdict
from orchestrator.frontend.board import BoardSummary
from orchestrator.serve import Service, serve_until_done
from orchestrator.serve_file import load_serve_file
from orchestrator.triton.launcher import EmbeddedTriton, free_port
from tests.integration.test_engine_triton import MB, PROFILE
from tests.unit.test_metrics import parse, value
from tests.unit.test_tls import make_ca, make_cert

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def listening_addresses(pid: int) -> set[str]:
    """``IP:PORT`` of every TCP socket process ``pid`` listens on (IPv4 and IPv6)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hexip, hexport = local.split(":")
            # the kernel prints each 32-bit word of the address in host (little-endian) order
            raw = b"".join(bytes.fromhex(hexip[i : i + 8])[::-1] for i in range(0, width, 8))
            ip = ipaddress.ip_address(raw)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped  # gRPC binds 127.0.0.1 as [::ffff:127.0.0.1]
            found.add(f"{ip}:{int(hexport, 16)}")
    return found


def test_the_embedded_triton_listens_on_loopback_only(triton: EmbeddedTriton) -> None:
    # the check itself sees a wildcard listener (this process's own, for a moment) as not loopback
    with socket.socket(socket.AF_INET6) as wild:
        wild.bind(("::", 0))
        wild.listen()
        mine = listening_addresses(os.getpid())
        assert f":::{wild.getsockname()[1]}" in mine
        assert not all(ipaddress.ip_address(a.rsplit(":", 1)[0]).is_loopback for a in mine)
    assert triton.pid is not None
    found = listening_addresses(triton.pid)
    # gRPC, HTTP and metrics, each on loopback (HTTP and metrics may share a socket: at least two)
    ports = {int(a.rsplit(":", 1)[1]) for a in found}
    assert {triton.grpc_port, triton.http_port, triton.metrics_port} <= ports, found
    assert all(ipaddress.ip_address(a.rsplit(":", 1)[0]).is_loopback for a in found), found


def test_a_tls_service_serves_a_board_refuses_plaintext_and_is_scraped(
    tiny_board: tuple[CoEDefinition, Path], tmp_path: Path
) -> None:
    coe, repo = tiny_board
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI (apt-get install openssl)")
    make_ca(tmp_path, "ca")
    make_cert(tmp_path, "server", "ca", "IP:127.0.0.1,DNS:localhost")
    dump_coe(coe, tmp_path / "coe.yaml")
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile_to_data(PROFILE)))
    config = {
        "coe": "coe.yaml", "repo": str(repo), "profile": "profile.yaml", "listen": f"127.0.0.1:{free_port()}",
        "metrics": {"listen": f"127.0.0.1:{free_port()}", "tls": True},
        "tls": {"cert_file": "server.crt", "key_file": "server.key"},
        "executors": [{"name": "cpu0", "kind": "cpu", "budget_bytes": 130 * MB}],
    }
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    spec = load_serve_file(tmp_path / "serve.yaml")
    requests = list(BoardSource(coe, seed=3, defect_share=0.2).requests(None, order="board", encoding="png"))[:16]
    got: list[Verdict] = []
    seen: dict[str, object] = {}

    async def client_side(service: Service) -> None:
        creds = tls_credentials(tmp_path / "ca.crt")
        async with InspectionClient(service.address, timeout=60, credentials=creds) as client:
            await client.wait_until_serving(10.0)
            images = [InspectRequest("board-tls", str(r.request_id), r.component_type, r.image) for r in requests]
            async for item in client.inspect_board(images):
                if not isinstance(item, BoardSummary):
                    got.append(item)
            seen["status"] = await client.status()
        async with InspectionClient(service.address, timeout=5) as plain:
            try:
                await plain.status()
                seen["plaintext"] = "answered"
            except RemoteError as exc:
                seen["plaintext"] = exc.status
        assert service.metrics is not None and service.metrics.endpoint is not None
        url = service.metrics.endpoint.url
        assert url.startswith("https://")  # metrics.tls: the API's certificate serves them too
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        seen["metrics"] = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10, context=ctx).read())
        triton_url = next(iter(service.embedded.values())).metrics_url
        seen["triton"] = await asyncio.to_thread(lambda: urllib.request.urlopen(triton_url, timeout=10).read())

    asyncio.run(serve_until_done(spec, client_side))
    assert len(got) == len(requests) and all(v.outcome != "error" for v in got)
    assert seen["plaintext"] == "UNAVAILABLE"
    s, _ = parse(seen["metrics"])  # type: ignore[arg-type]
    for outcome in ("pass", "defect", "fail"):
        assert value(s, "coserve_verdicts_total", outcome=outcome) == sum(v.outcome == outcome for v in got)
    assert value(s, "coserve_requests_total", result="verdict") == len(requests)
    [ex] = seen["status"].executors  # type: ignore[attr-defined]
    labels = {"executor": "cpu0", "kind": "cpu", "server": ex.server}
    assert value(s, "coserve_executor_budget_bytes", **labels) == ex.budget_bytes
    assert 0 < value(s, "coserve_executor_resident_bytes", **labels) <= ex.budget_bytes
    assert value(s, "coserve_expert_loads_total", executor="cpu0") >= 1
    assert value(s, "coserve_serving") == 1
    assert b"nv_inference_count" in seen["triton"]  # type: ignore[operator]
