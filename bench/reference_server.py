"""The minimal batched reference: the gateway's design and nothing else (issue 15).

    python -m bench.reference_server --port 8001 --database-url U --redis-url U

* The frames of all connections that arrive in one event-loop tick go to Redis as one
  `EVALSHA`: per message a dedup lookup, a seq from the session's counter, and one stream
  entry for all the new ones; the acks follow the reply.
* One Redis connection, pipelined: a tick's call is written without waiting for the previous
  reply, and replies come back in order (RESP is FIFO), so order holds with no lock.
* A writer task reads the stream and COPYs the rows into `messages`, then deletes the entries.

No validation, auth, sessions beyond one per port, fan-out, metrics, search, rate limits,
caps, crash recovery or read-your-writes: the design's throughput limit on this machine, which
the gateway, with all of those, is measured against (`python -m bench.e2e`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import hiredis
import orjson
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bench.baseline_wire import USER, WELCOME, ack, items_of, serve
from bench.baseline_wire import session_id as session_of
from storage.rows import COLUMNS

# ARGV: key prefix, then (session id, dedup key, row JSON) per message. Replies one seq per
# message (negative: a duplicate of that seq). New rows go to the stream as "seq,row" values.
INGEST = """
local prefix, out, fields = ARGV[1], {}, {}
for i = 2, #ARGV, 3 do
  local dedup = prefix .. 'dk:' .. ARGV[i]
  local seen = redis.call('HGET', dedup, ARGV[i + 1])
  if seen then
    out[#out + 1] = -tonumber(seen)
  else
    local seq = redis.call('HINCRBY', prefix .. 'seq', ARGV[i], 1)
    redis.call('HSET', dedup, ARGV[i + 1], seq)
    out[#out + 1] = seq
    fields[#fields + 1] = tostring(#fields)
    fields[#fields + 1] = seq .. ',' .. ARGV[i + 2]
    if #fields >= 2000 then  -- unpack's stack limit: one entry per 1,000 rows
      redis.call('XADD', prefix .. 'stream', '*', unpack(fields))
      fields = {}
    end
  end
end
if #fields > 0 then redis.call('XADD', prefix .. 'stream', '*', unpack(fields)) end
return out
"""
WRITER_READ_COUNT = 50  # stream entries per COPY: about as many rows as the gateway's batch


class PipelinedRedis:
    """One Redis connection: commands written back to back, replies matched in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._parser = hiredis.Reader()
        self._waiting: collections.deque[asyncio.Future[object]] = collections.deque()

    def call(self, *args: str | bytes) -> asyncio.Future[object]:
        """Write the command now; the future gets its reply."""
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode() if isinstance(arg, str) else arg
            parts += (b"$%d\r\n" % len(data), data, b"\r\n")
        self._writer.writelines(parts)
        self._waiting.append(future := asyncio.get_running_loop().create_future())
        return future

    async def read_replies(self) -> None:
        while data := await self._reader.read(1 << 16):
            self._parser.feed(data)
            while (reply := self._parser.gets()) is not False:
                waiting = self._waiting.popleft()
                if isinstance(reply, hiredis.ReplyError):
                    waiting.set_exception(reply)
                else:
                    waiting.set_result(reply)


async def open_pipelined(url: str) -> tuple[PipelinedRedis, asyncio.StreamWriter]:
    """A raw connection to the server of a redis:// URL, logged in and on its database."""
    where = urlsplit(url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port or 6379)
    pipe = PipelinedRedis(reader, writer)
    replies = asyncio.create_task(pipe.read_replies())
    try:
        if where.password:
            await pipe.call("AUTH", where.username or "default", where.password)
        await pipe.call("SELECT", where.path.strip("/") or "0")
    finally:
        replies.cancel()
        await asyncio.gather(replies, return_exceptions=True)
    return pipe, writer


Frame = tuple[asyncio.Queue[str], object, int, int]  # the ack's outbox, ref, port, item count


class Batcher:
    """Collects the frames of one event-loop tick and sends them as one script call."""

    def __init__(self, pipe: PipelinedRedis, sha: str, prefix: str) -> None:
        self._pipe, self._sha = pipe, sha
        self._frames: list[Frame] = []
        self._argv: list[str] = [prefix]

    def add(self, outbox: asyncio.Queue[str], frame: dict[str, Any]) -> None:
        port, items = frame["port"], items_of(frame)
        sid = session_of(port)
        for item in items:
            row = [sid, str(uuid.uuid4()), port, item.client_id, item.dedup_key, item.role,
                   item.content]  # fmt: skip
            self._argv += (sid, item.dedup_key, orjson.dumps(row).decode())
        if not self._frames:
            asyncio.get_running_loop().call_soon(self._flush)
        self._frames.append((outbox, frame.get("ref"), port, len(items)))

    def _flush(self) -> None:
        frames, argv = self._frames, self._argv
        self._frames, self._argv = [], [argv[0]]
        reply = self._pipe.call("EVALSHA", self._sha, "0", *argv)
        reply.add_done_callback(lambda done: self._answer(frames, done))

    @staticmethod
    def _answer(frames: list[Frame], done: asyncio.Future[object]) -> None:
        """Each frame's ack, or an error frame if the call failed: never no answer."""
        seqs = done.exception() or done.result()
        at = 0
        for outbox, ref, port, count in frames:
            if isinstance(seqs, list):
                outbox.put_nowait(ack(ref, port, seqs[at : at + count]))
            else:
                error = {"type": "error", "code": "internal", "ref": ref, "message": str(seqs)}
                outbox.put_nowait(orjson.dumps(error).decode())
            at += count


async def write_forever(redis: aioredis.Redis, pool: asyncpg.Pool, prefix: str) -> None:
    """Drain the stream into `messages` with COPY, oldest first, forever (cancelled at exit)."""
    last, sessions = "0", set[str]()
    while True:
        read = await redis.xread({prefix + "stream": last}, WRITER_READ_COUNT, 1000)
        if not read:
            continue
        entries, records, now = read[0][1], [], datetime.now(UTC)
        for _entry_id, fields in entries:
            for value in fields.values():
                seq, row = value.split(b",", 1)
                sid, mid, port, cid, dk, role, content = orjson.loads(row)
                records.append((sid, int(seq), mid, USER, port, cid, dk, role, content, "text",
                                "ide_extraction", None, now, None, "{}"))  # fmt: skip
        async with pool.acquire() as conn, conn.transaction():
            for sid, port in {(r[0], r[4]) for r in records if r[0] not in sessions}:
                await conn.execute(
                    "INSERT INTO sessions (id, user_id, port, ide_type)"
                    " VALUES ($1, $2, $3, 'unknown') ON CONFLICT DO NOTHING", sid, USER, port,
                )  # fmt: skip
                sessions.add(sid)
            await conn.copy_records_to_table("messages", records=records, columns=COLUMNS)
        last = entries[-1][0].decode()
        await redis.xdel(prefix + "stream", *(e[0] for e in entries))


def create_app(args: argparse.Namespace) -> Starlette:
    batcher: list[Batcher] = []  # set once the lifespan connected

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        pipe, writer = await open_pipelined(args.redis_url)
        redis = aioredis.Redis.from_url(args.redis_url)
        sha = await redis.script_load(INGEST)
        batcher.append(Batcher(pipe, sha, args.key_prefix))
        pool = await asyncpg.create_pool(args.database_url, min_size=1, max_size=2)
        tasks = [asyncio.create_task(pipe.read_replies()),
                 asyncio.create_task(write_forever(redis, pool, args.key_prefix))]  # fmt: skip
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        await redis.aclose()
        await pool.close()

    async def send_acks(websocket: WebSocket, outbox: asyncio.Queue[str]) -> None:
        while True:
            await websocket.send_text(await outbox.get())

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        outbox: asyncio.Queue[str] = asyncio.Queue()
        sender = asyncio.create_task(send_acks(websocket, outbox))
        try:
            while True:
                frame = orjson.loads(await websocket.receive_text())
                if frame["type"] == "hello":
                    outbox.put_nowait(WELCOME)
                else:
                    batcher[0].add(outbox, frame)
        except WebSocketDisconnect:
            pass
        finally:
            sender.cancel()

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)], lifespan=lifespan)


if __name__ == "__main__":
    serve(create_app, __doc__.split("\n\n")[0])
