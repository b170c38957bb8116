# The coserve orchestrator for the compose stack (docker-compose.yml): `coserve serve` against
# an external Triton (NVIDIA's container). Build: docker compose build orchestrator
FROM python:3.11-slim-bookworm

WORKDIR /opt/coserve
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY exporter ./exporter
COPY profiler ./profiler
COPY deploy/requirements-serve.txt ./deploy/requirements-serve.txt

# The package without its dependencies, then only what serving imports: no torch, no embedded
# tritonserver (deploy/requirements-serve.txt says why; tests/unit/test_compose.py checks it).
RUN pip install --no-cache-dir --no-deps . \
 && pip install --no-cache-dir -r deploy/requirements-serve.txt \
 && useradd --system --home-dir /var/lib/coserve --create-home coserve

# the verdict log and anything else the service writes lives here (a volume in docker-compose.yml)
USER coserve
WORKDIR /var/lib/coserve

# factory gRPC API and Prometheus metrics (deploy/serve.compose.yaml: listen, metrics.listen)
EXPOSE 50051 9464
ENTRYPOINT ["coserve"]
CMD ["serve", "--config", "/etc/coserve/serve.yaml"]
