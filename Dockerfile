# chat-gateway: the gateway (HTTP + WebSocket + in-process batch writer) for a production-like
# stack with an external PostgreSQL and Redis; see compose.yaml. Set GATEWAY_DATABASE_URL,
# GATEWAY_REDIS_URL and GATEWAY_AUTH_SECRET: without the URLs `serve` would start embedded
# servers inside the container, and without the secret it refuses to bind 0.0.0.0.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A non-installed copy of the sources; only the installed package runs.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sql ./sql
COPY storage ./storage
COPY gateway ./gateway
# A regular (not editable) install: the wheel carries sql/ as storage/sql, which `migrate` reads.
RUN pip install . && rm -rf /src

# Unprivileged runtime user with a home of its own (the working folder, so an embedded-mode
# `.gateway-data` would be writable; unused when the URLs are set).
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/gateway gateway
USER gateway
WORKDIR /home/gateway

EXPOSE 8000
# Migrations are applied at start (under an advisory lock, so replicas may start together).
CMD ["chat-gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]
