"""A separate producer process for the live stress test: one IDE connection that sends
`--count` messages round-robin over `--ports` ports, pipelined, and waits for every ack.

Message i goes to port `first_port + i % ports` with content `msg i`: the test derives every
session's expected contents from that rule.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from websockets.asyncio.client import connect


async def produce(url: str, count: int, first_port: int, ports: int, window: int) -> None:
    async with connect(url, max_size=None) as ws:
        acked = 0
        in_flight = asyncio.Semaphore(window)

        async def read_acks() -> None:
            nonlocal acked
            while acked < count:
                frame = json.loads(await ws.recv())
                if frame["type"] != "ack":
                    raise SystemExit(f"unexpected frame: {frame}")
                acked += 1
                in_flight.release()

        reader = asyncio.create_task(read_acks())
        for i in range(count):
            await in_flight.acquire()
            frame = {"type": "message", "port": first_port + i % ports, "content": f"msg {i}"}
            await ws.send(json.dumps(frame))
        await reader
    print(f"acked {acked}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--first-port", type=int, default=9400)
    parser.add_argument("--ports", type=int, default=5)
    parser.add_argument("--window", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(produce(args.url, args.count, args.first_port, args.ports, args.window))


if __name__ == "__main__":
    main()
