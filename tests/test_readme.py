"""The README's client snippet works as printed, against a real gateway."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from typing import Any

from tests.conftest import ROOT, RunningGateway


def readme_client() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- readme-client -->\n```python\n(.*?)```", text, re.S)
    assert match, "the README lost its client snippet"
    return match.group(1)


async def test_readme_snippet_stores_and_reads_back(gateway: RunningGateway) -> None:
    """The snippet, pointed at a test gateway, prints the ack and then the stored content."""
    code = readme_client()
    assert 'base="127.0.0.1:8000"' in code
    # Run it as printed, except for the address and for asyncio.run (we are in a loop).
    code = code.replace("127.0.0.1:8000", f"127.0.0.1:{gateway.port}")
    code = code.replace("asyncio.run(main())", "")
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        # urllib blocks: run the snippet in a thread so the gateway in this loop can answer.
        await asyncio.to_thread(asyncio.run, namespace["main"](f"127.0.0.1:{gateway.port}"))
    lines = output.getvalue().splitlines()
    assert "'seq': 1" in lines[0] and "'duplicate': False" in lines[0]
    assert lines[1] == "hello"
