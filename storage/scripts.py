"""The Lua scripts shipped beside this package, read once by whoever registers them."""

from __future__ import annotations

from importlib import resources


def lua(name: str) -> str:
    """The source of `storage/<name>`."""
    return resources.files("storage").joinpath(name).read_text()
