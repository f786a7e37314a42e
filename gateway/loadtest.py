"""`chat-gateway loadtest URL`: K IDE connections over P ports, flat out or at a paced rate,
and a report of what was offered, acked, refused and persisted.

Each connection sends `message` frames (or `extracted` batches) with unique client ids, and
re-sends a share of what it already sent, as IDE extensions re-send transcripts: those must
come back `duplicate`. Paced runs are open loop: each frame has a due time and its latency
is measured from that time, not from when a busy client got round to sending it, so a
slow gateway cannot hide behind the client (coordinated omission).

Persistence is checked through the API once the run ends: seqs are gap-free per session, so a
session whose committed `message_count` reaches the highest seq acked in it holds every
message acked in it. The exit status is 1 when something acked was not persisted in time.

Not yet here (issue 15): subscriber tabs and fan-out latency, streamed edits, the plot.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import orjson
from websockets.asyncio.client import ClientConnection, connect

_PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class Plan:
    """What to offer: how many frames, over how many connections and ports, how fast."""

    url: str  # the gateway's base URL, http(s)://host:port
    connections: int = 50
    ports: int = 10
    messages: int = 10_000  # frames of new messages, re-sends not counted
    rate: float = 0.0  # frames per second over all connections; 0: flat out
    in_flight: int = 10  # per connection, flat out only (paced runs are open loop)
    batch: int = 1  # messages per frame: 1 sends `message`, more send `extracted`
    resend_share: float = 0.1  # share of frames re-sent (the dedup path)
    content_bytes: int = 300
    token: str = ""
    first_port: int = 9222
    persist_wait_s: float = 60.0  # how long the writers get to commit what was acked


class Report(msgspec.Struct, kw_only=True):
    """The run's figures (`--json` prints this)."""

    frames_offered: int = 0
    messages_offered: int = 0
    acked: int = 0
    created: int = 0
    duplicates: int = 0
    errors: dict[str, int] = msgspec.field(default_factory=dict)
    duration_s: float = 0.0
    acked_per_s: float = 0.0
    ack_latency_ms: dict[str, float] = msgspec.field(default_factory=dict)
    sessions: int = 0
    persisted: bool = False
    not_persisted: int = 0  # messages acked but missing from PostgreSQL after the wait

    def lines(self) -> list[str]:
        latency = ", ".join(f"{k} {v:.1f}" for k, v in self.ack_latency_ms.items())
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        return [
            f"offered    {self.frames_offered} frames, {self.messages_offered} messages",
            f"acked      {self.acked} messages: {self.created} new, {self.duplicates} duplicates",
            f"errors     {errors}",
            f"throughput {self.acked_per_s:,.0f} messages/s acked over {self.duration_s:.2f} s",
            f"ack (ms)   {latency}",
            f"persisted  {'yes' if self.persisted else 'NO'}: {self.sessions} sessions checked,"
            f" {self.not_persisted} acked messages missing",
        ]


@dataclass
class _Tally:
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    acked: int = 0
    created: int = 0
    duplicates: int = 0
    frames: int = 0
    messages: int = 0
    newest_seq: dict[str, int] = field(default_factory=dict)  # session id -> highest seq acked


async def run(plan: Plan, progress: Callable[[int], None] | None = None) -> Report:
    """Run the plan against the gateway and check what it acked is persisted."""
    tally = _Tally()
    frames_each = _split(plan.messages, plan.connections)
    start = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(_connect(plan, index))
            for index in range(plan.connections)
        ]
        beat = asyncio.create_task(_progress_beat(tally, progress))
        try:
            await asyncio.gather(
                *(
                    _drive(plan, ws, index, frames, start, tally)
                    for index, (ws, frames) in enumerate(zip(sockets, frames_each, strict=True))
                )
            )
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
    if progress is not None:
        progress(tally.acked)
    duration = time.perf_counter() - start
    missing = await _missing_persisted(plan, tally.newest_seq)
    latencies = sorted(tally.latencies_ms)
    return Report(
        frames_offered=tally.frames,
        messages_offered=tally.messages,
        acked=tally.acked,
        created=tally.created,
        duplicates=tally.duplicates,
        errors=dict(tally.errors),
        duration_s=duration,
        acked_per_s=tally.acked / duration if duration else 0.0,
        ack_latency_ms=_percentiles(latencies),
        sessions=len(tally.newest_seq),
        persisted=missing == 0,
        not_persisted=missing,
    )


def expected_acks(plan: Plan) -> int:
    """Messages the run will have acked if nothing is refused, re-sends included."""
    frames = _split(plan.messages, plan.connections)
    return sum(f + int(f * plan.resend_share) for f in frames) * plan.batch


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@contextlib.asynccontextmanager
async def _connect(plan: Plan, index: int) -> AsyncIterator[ClientConnection]:
    ws_url = plan.url.replace("http", "ws", 1).rstrip("/") + "/ws"
    async with connect(ws_url, additional_headers=_auth(plan), open_timeout=30) as ws:
        port = plan.first_port + index % plan.ports
        hello = {"type": "hello", "kind": "ide", "ports": [port], "client": {"name": "loadtest"}}
        await ws.send(orjson.dumps(hello).decode())
        welcome = orjson.loads(await ws.recv())
        if welcome.get("type") != "welcome":
            raise ConnectionError(f"the gateway refused the hello: {welcome}")
        yield ws


async def _progress_beat(tally: _Tally, progress: Callable[[int], None] | None) -> None:
    """Redraw the progress a few times a second until the drivers are done (cancelled)."""
    if progress is None:
        return
    while True:
        progress(tally.acked)
        await asyncio.sleep(0.2)  # a display refresh, not synchronisation


async def _drive(
    plan: Plan, ws: ClientConnection, index: int, frames: int, start: float, tally: _Tally
) -> None:
    """Send this connection's frames (and re-sends) and read every answer."""
    port = plan.first_port + index % plan.ports
    run_id = uuid.uuid4().hex[:8]
    padding = "x" * max(0, plan.content_bytes - 40)
    due: dict[str, float] = {}
    slots = asyncio.Semaphore(plan.in_flight if plan.rate <= 0 else 1 << 30)
    interval = plan.connections / plan.rate if plan.rate > 0 else 0.0
    resends = int(frames * plan.resend_share)
    total = frames + resends

    def schedule() -> Iterator[list[dict[str, Any]]]:
        """New frames, with one re-send of an earlier frame after every `every` of them."""
        sent: list[list[dict[str, Any]]] = []
        every, resent = (frames // resends if resends else 0), 0
        for number in range(frames):
            items = [
                {"role": "user", "content": f"load {run_id} {number}.{i} {padding}",
                 "client_id": f"{run_id}-{number}-{i}"}
                for i in range(plan.batch)
            ]  # fmt: skip
            sent.append(items)
            yield items
            if every and (number + 1) % every == 0 and resent < resends:
                resent += 1
                yield sent[(number * 7919) % len(sent)]

    async def sender() -> None:
        for number, items in enumerate(schedule()):
            await slots.acquire()
            when = start + (number + index / plan.connections) * interval
            if interval and (wait := when - time.perf_counter()) > 0:
                await asyncio.sleep(wait)  # the pace itself: open loop
            ref = f"{index}-{number}"
            body: dict[str, Any] = (
                {"type": "message", "port": port, **items[0]}
                if plan.batch == 1
                else {"type": "extracted", "port": port, "messages": items}
            )
            due[ref] = when if interval else time.perf_counter()
            tally.frames += 1
            tally.messages += len(items)
            await ws.send(orjson.dumps({**body, "ref": ref}).decode())

    async def receiver() -> None:
        for _ in range(total):
            answer = orjson.loads(await ws.recv())
            slots.release()
            ref = answer.get("ref")
            if ref in due:
                tally.latencies_ms.append((time.perf_counter() - due.pop(ref)) * 1000)
            if answer.get("type") != "ack":
                tally.errors[str(answer.get("code", answer.get("type")))] += 1
                continue
            _count_ack(tally, answer)

    await asyncio.gather(sender(), receiver())


def _count_ack(tally: _Tally, ack: dict[str, Any]) -> None:
    session_id = str(ack["session_id"])
    for result in ack["results"]:
        tally.acked += 1
        if result.get("duplicate"):
            tally.duplicates += 1
        else:
            tally.created += 1
        seq = int(result["seq"])
        if seq > tally.newest_seq.get(session_id, 0):
            tally.newest_seq[session_id] = seq


async def _missing_persisted(plan: Plan, newest_seq: dict[str, int]) -> int:
    """Acked messages not committed once the writers had `persist_wait_s` to catch up."""
    deadline = time.monotonic() + plan.persist_wait_s
    committed = dict.fromkeys(newest_seq, 0)  # session id -> message_count last read
    async with httpx.AsyncClient(base_url=plan.url, headers=_auth(plan), timeout=30) as http:
        while True:
            for session_id in [s for s, seq in newest_seq.items() if committed[s] < seq]:
                response = await http.get(f"/api/sessions/{session_id}")
                if response.status_code == 200:
                    committed[session_id] = int(response.json()["message_count"])
            missing = sum(max(0, seq - committed[s]) for s, seq in newest_seq.items())
            if not missing or time.monotonic() > deadline:
                return missing
            await asyncio.sleep(0.2)  # polling the API: the writer has no event for us


def _auth(plan: Plan) -> dict[str, str]:
    return {"Authorization": f"Bearer {plan.token}"} if plan.token else {}


def _percentiles(sorted_ms: list[float]) -> dict[str, float]:
    if not sorted_ms:
        return {}
    picked = {f"p{p}": sorted_ms[min(len(sorted_ms) - 1, len(sorted_ms) * p // 100)]
              for p in _PERCENTILES}  # fmt: skip
    return picked | {"max": sorted_ms[-1]}
