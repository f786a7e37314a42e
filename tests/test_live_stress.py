"""Property/stress test of live sync: resumable subscribers see every session exactly."""

from __future__ import annotations

import asyncio
import random
import sys
from typing import Any

import orjson

from tests.conftest import ROOT, RunningGateway

COUNT = 10_000
PORTS = 5
FIRST_PORT = 9400
SUBSCRIBERS = 4


def expected(port: int) -> list[str]:
    """The contents of a port's session in seq order (see tests/stress_producer.py)."""
    return [f"msg {i}" for i in range(port - FIRST_PORT, COUNT, PORTS)]


class Subscriber:
    """Follows every port, disconnecting at random points and resuming with since_seq;
    asserts on the fly that each port's seqs go up by exactly one."""

    def __init__(self, gateway: RunningGateway, seed: int) -> None:
        self._gateway = gateway
        self._random = random.Random(seed)
        self.views: dict[int, list[str]] = {p: [] for p in range(FIRST_PORT, FIRST_PORT + PORTS)}
        self.reconnects = 0

    def done(self) -> bool:
        return all(len(view) == COUNT // PORTS for view in self.views.values())

    async def run(self) -> None:
        while not self.done():
            # max_queue=None: a closing client keeps reading, so the close handshake completes.
            async with self._gateway.connect(max_size=None, max_queue=None) as ws:
                for port, view in self.views.items():
                    frame = {"type": "subscribe", "port": port, "since_seq": len(view)}
                    await ws.send(orjson.dumps(frame).decode())
                budget = self._random.randint(50, 1500)  # frames until we drop the line
                while not self.done() and budget > 0:
                    self._take(orjson.loads(await asyncio.wait_for(ws.recv(), 30)))
                    budget -= 1
                if not self.done():
                    self.reconnects += 1
                    if self._random.random() < 0.5:
                        ws.transport.abort()  # vanish without a close handshake

    def _take(self, frame: dict[str, Any]) -> None:
        if frame["type"] != "message":
            assert frame["type"] in ("subscribed", "session", "presence"), frame
            return
        view = self.views[frame["port"]]
        seq = frame["message"]["seq"]
        assert seq == len(view) + 1, f"port {frame['port']}: got seq {seq} after {len(view)}"
        view.append(frame["message"]["content"])


async def test_resuming_subscribers_see_every_session_exactly(gateway: RunningGateway) -> None:
    """A separate process sends 10,000 messages over 5 ports while 4 subscribers follow all
    ports, drop their connection at random points and resume with since_seq: each ends with
    exactly seqs 1..2000 per port, in order, with the right contents."""
    subscribers = [Subscriber(gateway, seed) for seed in range(SUBSCRIBERS)]
    tasks = [asyncio.create_task(s.run()) for s in subscribers]
    producer = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "tests" / "stress_producer.py"), gateway.ws_url,
        "--count", str(COUNT), "--first-port", str(FIRST_PORT), "--ports", str(PORTS),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(producer.communicate(), 120)
    assert producer.returncode == 0 and out.decode().strip() == f"acked {COUNT}"
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    for subscriber in subscribers:
        for port, view in subscriber.views.items():
            assert view == expected(port)
    assert sum(s.reconnects for s in subscribers) >= SUBSCRIBERS  # they really did resume
