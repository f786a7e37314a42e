"""The Lua scripts shipped in storage/lua/, read once by whoever registers them."""

from __future__ import annotations

from importlib import resources


def lua(name: str) -> str:
    """The source of `storage/lua/<name>`."""
    return resources.files("storage").joinpath("lua", name).read_text()
