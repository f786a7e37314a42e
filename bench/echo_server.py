"""The transport limit: a WebSocket server that acks every message and stores nothing.

    python -m bench.echo_server --port 8001

Each frame is parsed and its ack encoded, as every server must; seqs come from a counter per
port in memory. Re-sends are not recognised (nothing is kept), so they are acked as new.
"""

from __future__ import annotations

import argparse
import collections
from typing import Any

from starlette.applications import Starlette

from bench.baseline_wire import ack, answering_each_frame, items_of, serve


def create_app(_args: argparse.Namespace) -> Starlette:
    seqs: collections.Counter[int] = collections.Counter()

    async def answer(frame: dict[str, Any]) -> str:
        port = frame["port"]
        first = seqs[port] + 1
        seqs[port] += len(items := items_of(frame))
        return ack(frame.get("ref"), port, list(range(first, first + len(items))))

    return Starlette(routes=[answering_each_frame(answer)])


if __name__ == "__main__":
    serve(create_app, __doc__.split("\n\n")[0])
