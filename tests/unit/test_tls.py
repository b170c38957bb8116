"""Security of the factory API: TLS and mutual TLS, with certificates made here by the ``openssl``
CLI, and no method that loads or unloads a model.

A TLS client that trusts the CA gets answers; a plaintext client is refused; a client that does
not trust the server's CA is refused; with ``client_ca_file`` a client without a certificate, or
with one from another CA, is refused and one with a certificate from that CA is served. The serve
config's ``tls`` block resolves paths against the config and names the field of a bad file.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.client import InspectionClient, RemoteError, SyncInspectionClient, tls_credentials
from orchestrator.config_reader import ConfigError
from orchestrator.engine.types import InspectRequest
from orchestrator.frontend.server import InspectionServer
from orchestrator.frontend.server import tls_credentials as server_tls
from orchestrator.serve_file import parse_serve_file
from tests.unit.test_frontend import SHAPES, FakeEngine, run


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=d)


def make_cert(d: Path, name: str, ca: str, san: str | None = None) -> None:
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-extfile", ext.name, "-out", f"{name}.crt", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI (apt-get install openssl)")
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "other_ca")
    make_cert(d, "server", "ca", "IP:127.0.0.1,DNS:localhost")
    make_cert(d, "client", "ca")
    make_cert(d, "rogue", "other_ca")
    return d


def request() -> InspectRequest:
    return InspectRequest("b", "c1", "cap", np.zeros(SHAPES["cap"], np.float32))


async def outcome(address: str, **kw: Any) -> str:
    """What a client gets: ``ok`` or the gRPC status name of its refusal."""
    async with InspectionClient(address, timeout=3, **kw) as client:
        try:
            verdict = await client.inspect(request())
        except RemoteError as exc:
            return exc.status
        return "ok" if verdict.outcome == "pass" else verdict.outcome


def test_tls_client_connects_and_plaintext_is_refused(pki: Path) -> None:
    async def body() -> dict[str, str]:
        creds = server_tls(pki / "server.crt", pki / "server.key")
        server = InspectionServer(FakeEngine(), "127.0.0.1:0", credentials=creds)
        await server.start()
        try:
            return {
                "tls": await outcome(server.address, credentials=tls_credentials(pki / "ca.crt")),
                "plaintext": await outcome(server.address),
                "untrusted": await outcome(server.address, credentials=tls_credentials(pki / "other_ca.crt")),
                "name": await outcome(f"localhost:{server.port}", credentials=tls_credentials(pki / "ca.crt")),
            }
        finally:
            await server.stop(grace=0.2)

    assert run(body) == {"tls": "ok", "plaintext": "UNAVAILABLE", "untrusted": "UNAVAILABLE", "name": "ok"}


def test_client_certificates_are_required_with_a_client_ca(pki: Path) -> None:
    async def body() -> dict[str, str]:
        creds = server_tls(pki / "server.crt", pki / "server.key", pki / "ca.crt")
        server = InspectionServer(FakeEngine(), "127.0.0.1:0", credentials=creds)
        await server.start()
        ca = pki / "ca.crt"
        try:
            return {
                "no cert": await outcome(server.address, credentials=tls_credentials(ca)),
                "rogue cert": await outcome(
                    server.address, credentials=tls_credentials(ca, pki / "rogue.crt", pki / "rogue.key")),
                "client cert": await outcome(
                    server.address, credentials=tls_credentials(ca, pki / "client.crt", pki / "client.key")),
                "plaintext": await outcome(server.address),
            }
        finally:
            await server.stop(grace=0.2)

    assert run(body) == {"no cert": "UNAVAILABLE", "rogue cert": "UNAVAILABLE", "client cert": "ok",
                         "plaintext": "UNAVAILABLE"}


def test_the_sync_client_speaks_tls_and_checks_the_name_it_is_told(pki: Path) -> None:
    async def body() -> tuple[str, str]:
        server = InspectionServer(FakeEngine(), "127.0.0.1:0", credentials=server_tls(pki / "server.crt", pki / "server.key"))
        await server.start()
        try:
            def use(server_name: str) -> str:
                with SyncInspectionClient(server.address, timeout=3, credentials=tls_credentials(pki / "ca.crt"),
                                          server_name=server_name) as client:
                    try:
                        return client.health()
                    except RemoteError as exc:
                        return exc.status

            # the certificate names localhost and 127.0.0.1, not "elsewhere"
            return await asyncio.to_thread(use, "localhost"), await asyncio.to_thread(use, "elsewhere")
        finally:
            await server.stop(grace=0.2)

    assert run(body) == ("SERVING", "UNAVAILABLE")
    with pytest.raises(ValueError, match="go together"):
        tls_credentials(pki / "ca.crt", cert_file=pki / "client.crt")


def serve_data(tls: Any) -> dict[str, Any]:
    return {"coe": "coe.yaml", "repo": "repo", "tls": tls,
            "executors": [{"name": "cpu0", "kind": "cpu", "budget_bytes": 1e8}]}


def test_the_serve_config_tls_block(pki: Path, tmp_path: Path) -> None:
    for name in ("server.crt", "server.key", "ca.crt", "client.key"):
        shutil.copy(pki / name, tmp_path / name)
    spec = parse_serve_file(serve_data({"cert_file": "server.crt", "key_file": "server.key",
                                        "client_ca_file": "ca.crt"}), "serve.yaml", tmp_path)
    assert spec.tls is not None
    assert (spec.tls.cert_file, spec.tls.key_file, spec.tls.client_ca_file) == (
        tmp_path / "server.crt", tmp_path / "server.key", tmp_path / "ca.crt")
    plain = parse_serve_file(serve_data({"cert_file": "server.crt", "key_file": "server.key"}), "serve.yaml", tmp_path)
    assert plain.tls is not None and plain.tls.client_ca_file is None
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    for bad, words in (
        ({"cert_file": "server.crt"}, "tls.key_file: is required"),
        ({"cert_file": "nope.crt", "key_file": "server.key"}, "tls.cert_file: no such file"),
        ({"cert_file": "server.crt", "key_file": "client.key"}, "tls.key_file: .* not a PEM certificate and its private key"),
        ({"cert_file": "server.crt", "key_file": "server.key", "client_ca_file": "junk.pem"}, "tls.client_ca_file"),
        ({"cert_file": "server.crt", "key_file": "server.key", "ca": "x"}, "tls.ca: unknown field"),
    ):
        with pytest.raises(ConfigError, match=words) as err:
            parse_serve_file(serve_data(bad), "serve.yaml", tmp_path)
        assert "serve.yaml" in str(err.value)


def test_no_method_of_the_api_loads_or_unloads_a_model() -> None:
    # Triton's model-control API has no authentication; the factory API must not pass it on
    from orchestrator.frontend import inspection_pb2 as pb
    from orchestrator.frontend.server import SERVICE_NAMES

    methods = {m.name for svc in pb.DESCRIPTOR.services_by_name.values() for m in svc.methods}
    assert methods == {"Inspect", "InspectBoard", "Status"}
    assert not [m for m in methods if re.search("load|unload|model|repositor", m, re.I)]
    assert set(SERVICE_NAMES) == {"coserve.v1.Inspection", "grpc.health.v1.Health",
                                  "grpc.reflection.v1alpha.ServerReflection"}


def test_the_metrics_endpoint_over_https(pki: Path) -> None:
    import ssl
    import urllib.error
    import urllib.request

    from prometheus_client import CollectorRegistry, Counter

    from orchestrator.metrics.endpoint import MetricsEndpoint

    registry = CollectorRegistry()
    Counter("coserve_probe", "probe", registry=registry).inc()

    def scrape(url: str, cert: bool) -> str:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        if cert:
            ctx.load_cert_chain(pki / "client.crt", pki / "client.key")
        try:
            with urllib.request.urlopen(url, timeout=5, context=ctx) as resp:
                return "ok" if b"coserve_probe_total 1.0" in resp.read() else "wrong"
        except (urllib.error.URLError, ssl.SSLError, ConnectionError) as exc:
            return type(exc).__name__

    for client_ca in (None, pki / "ca.crt"):
        endpoint = MetricsEndpoint(registry, "127.0.0.1:0", cert_file=pki / "server.crt",
                                   key_file=pki / "server.key", client_ca_file=client_ca)
        endpoint.start()
        try:
            assert endpoint.url.startswith("https://")
            assert scrape(endpoint.url, cert=True) == "ok"
            assert scrape(endpoint.url.replace("https", "http"), cert=True) != "ok"  # no plaintext
            assert (scrape(endpoint.url, cert=False) == "ok") == (client_ca is None)  # mTLS wants a cert
        finally:
            endpoint.stop()


def test_metrics_over_tls_needs_the_tls_block(pki: Path, tmp_path: Path) -> None:
    for name in ("server.crt", "server.key"):
        shutil.copy(pki / name, tmp_path / name)
    tls = {"cert_file": "server.crt", "key_file": "server.key"}
    data = {**serve_data(tls), "metrics": {"listen": "127.0.0.1:9464", "tls": True}}
    assert parse_serve_file(data, "serve.yaml", tmp_path).metrics_tls
    del data["tls"]
    with pytest.raises(ConfigError, match="metrics.tls: needs the tls block"):
        parse_serve_file(data, "serve.yaml", tmp_path)
