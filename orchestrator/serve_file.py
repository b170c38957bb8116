"""What ``coserve serve`` reads from a serve config beyond the core's part (servers, paths, limits).

One YAML file for both (``orchestrator.core.serve_config`` parses the executors, policy and
features, and ignores these keys)::

    coe: coe.yaml                   # paths are relative to this file
    repo: model_repository
    profile: profile.yaml           # optional: default <repo>/profile.yaml (measured if missing)
    listen: 127.0.0.1:50051         # the factory API
    queue_bound: 10000              # components accepted and not yet answered
    memory_sampler: true            # measure embedded servers' memory (and external GPU executors'
                                    # from their server's metrics_url) and count what exceeds the
                                    # profile's figures against the budget (false: profile only)
    version_poll_s: 2.0             # seconds between looks for new expert versions in repo
                                    # (expert add --replace / rollback; 0: never look)
    metrics: {listen: 127.0.0.1:9464}   # optional: Prometheus /metrics (orchestrator.metrics);
                                        # tls: true serves it over HTTPS with the tls block's files
    tls:                            # optional: TLS for the factory API (paths relative to this file)
      cert_file: server.crt         # PEM certificate chain
      key_file: server.key          # PEM private key
      client_ca_file: clients.crt   # optional: require client certificates signed by these (mTLS)
    verdict_log:                    # optional: default verdicts.sqlite beside this file, on
      path: verdicts.sqlite         # (orchestrator.verdicts.config has every key; enabled: false = off)
    servers:                        # optional: default one embedded server per executor
      - {name: local0}              # embedded (started by coserve on loopback)
      - {name: box2, url: 10.0.0.2:8001}   # external, by gRPC URL
      # optional for an external server: its Prometheus metrics; a GPU executor on it is then
      # corrected by Triton's nv_gpu_memory_used_bytes (docs/serving.md, "Memory")
      # - {name: gpubox, url: 10.0.0.3:8001, metrics_url: "http://10.0.0.3:8002/metrics"}
    executors:
      - {name: cpu0, kind: cpu, budget_bytes: 2.0e8, server: local0}
      - {name: gpu0, kind: gpu, budget_bytes: 1.0e10, server: box2, gpus: [0]}

One executor per server (``orchestrator.engine.triton_backend`` says why): two executors naming
the same server is an error naming both. Every error names the file and the field.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config_reader import Reader, read_yaml_file
from orchestrator.core.serve_config import ServeConfig, parse_serve_config
from orchestrator.triton.adapter import check_grpc_url
from orchestrator.triton.gpu_metrics import GpuMetricsError, check_metrics_url
from orchestrator.verdicts.config import VerdictLogConfig, parse_verdict_log

DEFAULT_LISTEN = "127.0.0.1:50051"


@dataclass(frozen=True)
class ServerSpec:
    name: str
    url: str | None = None  # None: embedded, started by coserve
    #: an external server's Prometheus metrics (``http://HOST:8002/metrics``): its GPU executor's
    #: accounting is corrected by ``nv_gpu_memory_used_bytes`` (``GpuMemoryWatch``); None: not read
    metrics_url: str | None = None

    @property
    def embedded(self) -> bool:
        return self.url is None


@dataclass(frozen=True)
class TlsFiles:
    """TLS for the factory API: PEM files, checked to load (and the key to match) when parsed."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None  # set: clients must present a certificate it signed


@dataclass(frozen=True)
class ServeFile:
    """A whole serve config: the core's part and the shell's."""

    source: str
    config: ServeConfig
    coe: Path
    repo: Path
    profile: Path | None
    listen: str
    queue_bound: int
    servers: dict[str, ServerSpec]
    executor_server: dict[str, str]
    executor_gpus: dict[str, tuple[int, ...]]
    metrics_listen: str | None = None  # HOST:PORT of /metrics; None: no metrics endpoint
    tls: TlsFiles | None = None  # None: the factory API is plaintext
    metrics_tls: bool = False  # the metrics endpoint over HTTPS with ``tls``'s files (and client CA)
    #: None: no verdict log (the default of a ServeFile built in code: demo, bench, benchmarks);
    #: a parsed file logs unless ``verdict_log: {enabled: false}`` (orchestrator.verdicts.config)
    verdict_log: VerdictLogConfig | None = None
    #: seconds between looks for a new expert version in ``repo`` (0: never; Engine.version_poll_s)
    version_poll_s: float = 2.0
    #: measure the embedded servers' memory while serving and correct the accounting with it
    #: (``orchestrator.serve.attach_memory_sampler``)
    memory_sampler: bool = True


def parse_serve_file(data: object, source: str, base: Path) -> ServeFile:
    r = Reader(source)
    top = r.mapping(data, "(top level)")
    config = parse_serve_config(data, source)

    def path(key: str, required: bool) -> Path | None:
        if top.get(key) is None:
            if required:
                raise r.fail(key, "is required for coserve serve")
            return None
        p = Path(r.string(top[key], key))
        return p if p.is_absolute() else base / p

    coe, repo = path("coe", True), path("repo", True)
    assert coe is not None and repo is not None
    listen = r.string(top.get("listen", DEFAULT_LISTEN), "listen")
    if ":" not in listen or not listen.rsplit(":", 1)[1].isdigit() or not 0 <= int(listen.rsplit(":", 1)[1]) <= 65535:
        raise r.fail("listen", f"must be HOST:PORT (port 0-65535), got {listen!r}")
    queue_bound = r.integer(top.get("queue_bound", 10_000), "queue_bound", 1)

    servers: dict[str, ServerSpec] = {}
    for i, raw in enumerate(r.seq(top.get("servers", []) or [], "servers")):
        p = f"servers[{i}]"
        m = r.mapping(raw, p)
        r.unknown(m, {"name", "url", "metrics_url"}, p)
        name = r.name(r.required(m, "name", p), f"{p}.name")
        if name in servers:
            raise r.fail(f"{p}.name", f"duplicate server name {name!r}")
        url = None
        if m.get("url") is not None:
            url = r.string(m["url"], f"{p}.url")
            try:
                check_grpc_url(url)
            except Exception as exc:  # CoserveError naming the URL problem
                raise r.fail(f"{p}.url", str(exc)) from None
        metrics_url = None
        if m.get("metrics_url") is not None:
            if url is None:
                raise r.fail(f"{p}.metrics_url", "only an external server (one with a url) takes a metrics_url: "
                             "an embedded server is measured from its processes")
            metrics_url = r.string(m["metrics_url"], f"{p}.metrics_url")
            try:
                check_metrics_url(metrics_url)
            except GpuMetricsError as exc:
                raise r.fail(f"{p}.metrics_url", str(exc)) from None
        servers[name] = ServerSpec(name, url, metrics_url)

    listed = sorted(servers)  # the servers the file lists (embedded defaults are added below)
    executor_server: dict[str, str] = {}
    executor_gpus: dict[str, tuple[int, ...]] = {}
    raw_execs = r.seq(top["executors"], "executors")
    for i, (raw, ex) in enumerate(zip(raw_execs, config.executors, strict=True)):
        p = f"executors[{i}]"
        m = r.mapping(raw, p)
        if m.get("server") is None:
            if listed:
                raise r.fail(f"{p}.server", f"is required when servers are listed ({', '.join(listed)})")
            name = f"embedded_{ex.name}"
            servers[name] = ServerSpec(name)
        else:
            name = r.string(m["server"], f"{p}.server")
            if name not in servers:
                raise r.fail(f"{p}.server", f"names no listed server (servers: {', '.join(servers) or 'none'})")
        other = next((e for e, s in executor_server.items() if s == name), None)
        if other is not None:
            raise r.fail(
                f"{p}.server", f"server {name!r} already runs executor {other!r}: one executor per Triton server"
            )
        executor_server[ex.name] = name
        gpus = tuple(r.integer(g, f"{p}.gpus[{j}]", 0) for j, g in enumerate(r.seq(m.get("gpus", []) or [], f"{p}.gpus")))
        if gpus and ex.kind != "gpu":
            raise r.fail(f"{p}.gpus", "device ids only apply to kind gpu")
        executor_gpus[ex.name] = gpus
    tls = _parse_tls(r, top.get("tls"), base)
    metrics_tls = _metrics_tls(r, top.get("metrics"), tls)
    return ServeFile(
        source, config, coe, repo, path("profile", False), listen, queue_bound, servers, executor_server, executor_gpus,
        metrics_listen=_parse_metrics(r, top.get("metrics")), tls=tls, metrics_tls=metrics_tls,
        verdict_log=parse_verdict_log(top.get("verdict_log"), r, base),
        version_poll_s=r.number(top.get("version_poll_s", 2.0), "version_poll_s", 0.0, maximum=3600.0),
        memory_sampler=r.boolean(top.get("memory_sampler", True), "memory_sampler"),
    )


def _parse_metrics(r: Reader, raw: object) -> str | None:
    if raw is None:
        return None
    m = r.mapping(raw, "metrics")
    r.unknown(m, {"listen", "tls"}, "metrics")
    listen = r.string(r.required(m, "listen", "metrics"), "metrics.listen")
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise r.fail("metrics.listen", f"must be HOST:PORT (port 0-65535), got {listen!r}")
    return listen


def _metrics_tls(r: Reader, raw: object, tls: TlsFiles | None) -> bool:
    if raw is None:
        return False
    on = r.boolean(r.mapping(raw, "metrics").get("tls", False), "metrics.tls")
    if on and tls is None:
        raise r.fail("metrics.tls", "needs the tls block (its certificate and key serve the metrics too)")
    return on


def _parse_tls(r: Reader, raw: object, base: Path) -> TlsFiles | None:
    """The ``tls`` block, with its files loaded once by ``ssl`` so that a wrong path, a bad PEM
    or a key that does not match the certificate is an error naming the field, not a failed bind."""
    if raw is None:
        return None
    m = r.mapping(raw, "tls")
    r.unknown(m, {"cert_file", "key_file", "client_ca_file"}, "tls")

    def file(key: str) -> Path:
        p = Path(r.string(r.required(m, key, "tls"), f"tls.{key}"))
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            raise r.fail(f"tls.{key}", f"no such file: {p}")
        return p

    cert, key = file("cert_file"), file("key_file")
    ca = file("client_ca_file") if m.get("client_ca_file") is not None else None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise r.fail("tls.key_file", f"{cert} and {key} are not a PEM certificate and its private key: {exc}") from None
    if ca is not None:
        try:
            ctx.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as exc:
            raise r.fail("tls.client_ca_file", f"{ca} holds no PEM CA certificate: {exc}") from None
    return TlsFiles(cert, key, ca)


def load_serve_file(path: str | Path) -> ServeFile:
    path = Path(path)
    return parse_serve_file(read_yaml_file(path), str(path), path.parent)
