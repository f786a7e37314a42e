"""The layering docs/architecture.md draws: storage never imports the gateway, and the
WebSocket and HTTP paths of the gateway only meet in the modules both use.

Read from the source (ast), not by importing: an import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """The modules `path` imports, absolute names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_storage_never_imports_the_gateway() -> None:
    """storage/ faces PostgreSQL and Redis only: it shapes nothing for clients."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in _imports(path) if m.startswith("gateway"))
        for path in _modules("storage")
    }
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_the_http_path_does_not_import_the_websocket_path() -> None:
    """gateway/http/ reads storage and the shared modules; the WebSocket connection, its
    feeds and its frames are not its business (presence and the hub come through the
    process's `Gateway`)."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m
            for m in _imports(path)
            if m.startswith("gateway.ws.") and m.split(".")[2] in {"connection", "live", "frames"}
        )
        for path in _modules("gateway/http")
    }
    assert {path: mods for path, mods in offenders.items() if mods} == {}
