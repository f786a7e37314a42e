"""chat-gateway: what faces clients. `ws/` is the WebSocket path, `http/` the HTTP API and the
web UI; the modules here are what both use and the process plumbing (docs/architecture.md)."""

import importlib.metadata

# The installed distribution's version (pyproject.toml), shown in `welcome`, --version and
# the OpenAPI document: one place to bump it.
VERSION = importlib.metadata.version("chat-gateway")
