"""The web UI on a 10,000-message session: time to open it, and frame times while scrolling.

    python -m bench.ui_long_session [--messages 10000] [--baseline 100] [--frames 600]

One `chat-gateway serve` (uvicorn on a free 127.0.0.1 port; embedded PostgreSQL and Valkey
unless BENCH_DATABASE_URL / BENCH_REDIS_URL are set) gets two sessions through the real ingest
path, one IDE WebSocket sending `extracted` frames with a few in flight: `--messages` on one
port and, as the baseline, the first `--baseline` of the same messages on another port. The
messages are a chat's mix (generated, seeded): user questions, some with pasted code or a long
log; assistant replies of paragraphs, lists, fenced code blocks, a few tables, and some long
enough to show collapsed behind "Show more". Measuring starts once the API counts every
message committed and the writer and the search indexer have nothing left to do (polled, with
a timeout), so no background work of the gateway's lands in the figures.

Then Debian's Chromium (headless, through Playwright, as tests/test_ui.py drives it) opens the
page on each port in a fresh profile, the baseline first, after one unrecorded open:

1. open: navigation start to the first frame drawn after the newest message is in view (an
   init script watches from the document's start, every animation frame), with the Resource
   Timing of the newest page of messages (requested, received: the rest is rendering), the
   main thread's script, layout and style time until then, the DOM (messages, elements, the
   renderer's node count, listeners) and the JS heap after a forced garbage collection (CDP).
2. idle: `IDLE_FRAMES` animation frames with nothing happening, the floor of the figures.
3. newest, wheel: scrolling up from the bottom, `--step` px per animation frame for
   `--frames` frames; at the top the script clicks "Load earlier messages" (the UI shows the
   newest 200 messages and 200 more per load, by click or by scrolling to the button, and
   keeps at most 1,000 on the page, dropping the newest as older ones come) and scrolls on
   once they are in, so frames during a load count too; with nothing older it turns down.
4. loads: that button clicked until every message has been shown (the first one is on the
   page), each load timed from the click to the first frame drawn after its messages were
   added; on the way, after each of `--checkpoints` messages read, a `--frames // 4` wheel
   run from the bottom.
5. all, wheel and all, jump: with the first message reached, `--frames` frames of wheel from
   the bottom, then `--frames // 2` frames at `--jump` px (each frame draws content not seen
   before, as when dragging the scroll bar). With `--trace`, one more wheel run of
   `--frames // 4` frames is traced, and the renderer main thread's self time by trace event
   is shown per frame (tracing slows the page: read it as shares, not as frame times).

A frame's time is the delta of consecutive requestAnimationFrame timestamps: 16.7 ms at 60 Hz,
a multiple of it when the main thread was busy. The table gives p50/p95/p99/max, the share of
frames over 16.7 and 50 ms, and per frame what Chromium's Performance domain counted in
script, layout, style recalculation and all main-thread tasks (the rest of those is paint,
pre-paint, intersection observers, garbage collection). Headless with --disable-gpu, tiles are
rastered in software off the main thread: a frame can reach the screen late without its rAF
delta showing it, so these are the main thread's figures, the part the UI's code decides. The
long session's p95 is given as a ratio to the baseline's (its checkpoint runs against the
baseline's `all, wheel`), measured the same way in the same run; other processes' CPU use
during each round is printed, since a busy machine stretches frames too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from playwright.async_api import Browser, CDPSession, Page, ViewportSize, async_playwright
from rich import box
from rich.console import Console
from rich.table import Table
from websockets.asyncio.client import connect

from bench.harness import (
    CHAT_GATEWAY,
    BenchError,
    Server,
    free_port,
    fresh_database,
    machine,
    machine_busy_seconds,
    percentile,
    server_process,
    servers,
    tree_cpu_seconds,
)
from gateway.http.ui_routes import UI_DIR
from gateway.progress import progress_bar

# As tests/test_ui.py launches it: Playwright's own browsers cannot be downloaded here.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
VIEWPORT: ViewportSize = {"width": 1100, "height": 720}  # the UI tests' window
LONG_PORT, BASELINE_PORT = 9222, 9223
FRAME_MS = 1000 / 60
SLOW_FRAME_MS = 50.0
IDLE_FRAMES = 120
MAX_FRAME_BYTES = 256 << 10  # an `extracted` frame stays well under the gateway's 1 MiB
PERSIST_TIMEOUT_S = 300.0
POLL_INTERVAL_S = 0.1
PAGE_TIMEOUT_S = 120.0  # any one step in the browser (an open, a scroll run, a load)
LOAD_TIMEOUT_MS = 30_000  # one "Load earlier messages"


# -- the messages --------------------------------------------------------------------------

WORDS = [
    "the", "a", "to", "of", "and", "in", "is", "it", "that", "for", "on", "with", "this", "we",
    "can", "be", "not", "as", "if", "when", "then", "so", "but", "request", "response",
    "handler", "session", "message", "page", "scroll", "render", "layout", "cache", "index",
    "query", "test", "fails", "passes", "config", "value", "error", "timeout", "retry",
    "connection", "socket", "buffer", "writer", "stream", "batch", "commit", "row", "column",
    "table", "schema", "migration", "function", "return", "async", "await", "loop", "event",
    "browser", "server", "client", "port", "token", "user", "field", "list", "item", "node",
]  # fmt: skip
NAMES = ["load_older", "scrollTop", "placeMessage", "render_page", "fetch_rows", "seq_of"]
LANGUAGES = ("python", "js", "sh", "sql", "")


def _sentence(rng: random.Random, low: int = 6, high: int = 18) -> str:
    words = rng.choices(WORDS, k=rng.randint(low, high))
    if rng.random() < 0.3:
        words[rng.randrange(len(words))] = f"`{rng.choice(NAMES)}`"
    if rng.random() < 0.1:
        at = rng.randrange(len(words))
        words[at] = f"**{words[at]}**"
    text = " ".join(words)
    return text[0].upper() + text[1:] + ("?" if rng.random() < 0.1 else ".")


def _paragraph(rng: random.Random, low: int = 1, high: int = 4) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(low, high)))


def _code(rng: random.Random, lines: int) -> str:
    out = []
    for _ in range(lines):
        indent = "    " * rng.randint(0, 2)
        a, b = rng.choice(NAMES), rng.choice(WORDS)
        out.append(f"{indent}{b}_{rng.randint(0, 99)} = {a}({b}, {rng.randint(0, 9999)})")
    return f"```{rng.choice(LANGUAGES)}\n" + "\n".join(out) + "\n```"


def _list(rng: random.Random) -> str:
    ordered = rng.random() < 0.4
    items = []
    for n in range(1, rng.randint(3, 7) + 1):
        items.append((f"{n}. " if ordered else "- ") + _sentence(rng, 4, 12))
        if rng.random() < 0.15:
            items.append("   - " + _sentence(rng, 3, 8))
    return "\n".join(items)


def _md_table(rng: random.Random) -> str:
    rows = [
        f"| `{rng.choice(NAMES)}` | {rng.randint(1, 999)} ms | {_sentence(rng, 2, 6)} |"
        for _ in range(rng.randint(3, 6))
    ]
    return "| name | time | note |\n|---|---:|---|\n" + "\n".join(rows)


def chat_message(rng: random.Random, index: int) -> tuple[str, str]:
    """(role, markdown content) of a conversation's `index`th message: users ask (some paste
    code, a few a long log), the assistant answers in paragraphs with lists, code and tables
    (some long enough to show collapsed: over 3,000 characters or 40 lines)."""
    if index % 2 == 0:
        draw = rng.random()
        if draw < 0.70:
            return "user", _paragraph(rng, 1, 2)
        if draw < 0.90:
            return "user", _sentence(rng) + "\n\n" + _code(rng, rng.randint(3, 15))
        if draw < 0.97:
            return "user", "Here is the log:\n\n" + _code(rng, rng.randint(50, 120))
        return "user", "\n\n".join(_paragraph(rng, 2, 5) for _ in range(rng.randint(3, 5)))
    parts = [_paragraph(rng) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.12:  # long: sections with headings and a big code block each
        for _ in range(rng.randint(3, 5)):
            parts += [f"## {_sentence(rng, 2, 5)}", _paragraph(rng, 2, 5)]
            parts += [_code(rng, rng.randint(10, 40)), _list(rng)]
    else:
        if rng.random() < 0.45:
            parts.insert(1, _list(rng))
        if rng.random() < 0.40:
            parts.insert(rng.randint(1, len(parts)), _code(rng, rng.randint(5, 40)))
        if rng.random() < 0.05:
            parts.append(_md_table(rng))
    return "assistant", "\n\n".join(parts)


def conversation(n: int, seed: int) -> Iterator[dict[str, Any]]:
    """`n` message items for an `extracted` frame, the same for the same seed, timestamped
    over the last 14 days."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=14)
    for i in range(n):
        role, content = chat_message(rng, i)
        at = start + timedelta(days=14) * i / n
        yield {"id": f"ui-{seed}-{i}", "role": role, "content": content,
               "content_type": "markdown", "timestamp": at.isoformat()}  # fmt: skip


# -- the gateway and its data --------------------------------------------------------------


@contextlib.asynccontextmanager
async def gateway(server_url: str, redis_url: str) -> AsyncIterator[Server]:
    """`chat-gateway serve` on a free loopback port, on a fresh database and its own Redis
    key prefix, in a throw-away data folder."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    argv = [str(CHAT_GATEWAY), "serve", "--port", str(port), "--log-level", "warning"]
    async with fresh_database(server_url) as database_url:
        env |= {"GATEWAY_DATABASE_URL": database_url, "GATEWAY_REDIS_URL": redis_url,
                "GATEWAY_KEY_PREFIX": f"cgui{uuid.uuid4().hex[:8]}:"}  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="cg-ui-bench-") as tmp:
            env["GATEWAY_DATA_DIR"] = f"{tmp}/data"  # not the user's own data folder
            async with server_process("gateway", argv, port, Path(tmp), env) as server:
                yield server


def frames_of(port: int, items: Sequence[dict[str, Any]], batch: int) -> list[dict[str, Any]]:
    """`extracted` frames of up to `batch` items and MAX_FRAME_BYTES each."""
    frames: list[dict[str, Any]] = []
    chunk: list[dict[str, Any]] = []
    size = 0
    for item in items:
        item_size = len(orjson.dumps(item))
        if chunk and (len(chunk) == batch or size + item_size > MAX_FRAME_BYTES):
            frames.append({"type": "extracted", "port": port, "messages": chunk})
            chunk, size = [], 0
        chunk.append(item)
        size += item_size
    if chunk:
        frames.append({"type": "extracted", "port": port, "messages": chunk})
    return frames


async def ingest(server: Server, sessions: dict[int, int], seed: int, batch: int,
                 in_flight: int) -> dict[int, str]:  # fmt: skip
    """Send each port's messages (port -> how many) as an IDE does, `in_flight` frames
    unanswered at most, re-sending a frame refused with a retry time after that time; the
    session id of each port."""
    frames = [
        frame
        for port, n in sessions.items()
        for frame in frames_of(port, list(conversation(n, seed)), batch)
    ]
    for ref, frame in enumerate(frames):
        frame["ref"] = str(ref)
    todo, waiting, acked = list(reversed(frames)), 0, 0
    session_of: dict[int, str] = {}
    with progress_bar("seeding over WebSocket", sum(sessions.values())) as done:
        async with connect(server.url, max_size=None) as ws, asyncio.timeout(PERSIST_TIMEOUT_S):
            hello = {"type": "hello", "client": "bench", "kind": "ide", "ports": list(sessions)}
            await ws.send(orjson.dumps(hello).decode())
            while todo or waiting:
                while todo and waiting < in_flight:
                    await ws.send(orjson.dumps(todo.pop()).decode())
                    waiting += 1
                reply = orjson.loads(await ws.recv())
                if reply["type"] == "ack":
                    waiting -= 1
                    frame = frames[int(reply["ref"])]
                    results = reply["results"]
                    if any(r["duplicate"] for r in results) or len(results) != len(
                        frame["messages"]
                    ):
                        raise BenchError(f"unexpected ack {reply}")
                    session_of[frame["port"]] = reply["session_id"]
                    acked += len(results)
                    done(acked)
                elif reply["type"] == "error" and "retry_after_ms" in reply.get("details", {}):
                    waiting -= 1  # nothing of it was stored: send it again once allowed
                    await asyncio.sleep(reply["details"]["retry_after_ms"] / 1000)
                    todo.append(frames[int(reply["ref"])])
                elif reply["type"] == "error":
                    raise BenchError(f"ingest refused: {reply}")
    return session_of


async def until_settled(server: Server, counts: dict[str, int]) -> float:
    """Wait until the API counts every message committed (session id -> how many) and the
    writer and the search indexer have nothing left to do; the seconds it took."""
    started = time.perf_counter()
    base = f"http://127.0.0.1:{server.port}"
    with progress_bar("committed and indexed", sum(counts.values())) as done:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            async with asyncio.timeout(PERSIST_TIMEOUT_S):
                while True:
                    committed = 0
                    for session_id in counts:
                        reply = (await http.get(f"/api/sessions/{session_id}")).raise_for_status()
                        committed += reply.json()["message_count"]
                    done(committed)
                    metrics = (await http.get("/metrics")).raise_for_status().text
                    backlog = sum(
                        int(float(m)) for m in re.findall(
                            r"^gateway_(?:buffer_entries|search_backlog) (\S+)$", metrics, re.M
                        )
                    )  # fmt: skip
                    if committed == sum(counts.values()) and backlog == 0:
                        return time.perf_counter() - started
                    await asyncio.sleep(POLL_INTERVAL_S)  # polled: nothing announces it


# -- in the page ---------------------------------------------------------------------------

# From the document's start: every animation frame, is the newest message in view? Once it
# is, the next frame's callback (the frame showing it was drawn) notes the time.
OPEN_WATCH_JS = """(newest) => {
  const poll = () => {
    const el = document.querySelector(`[data-testid="message"][data-seq="${newest}"]`);
    const scroller = document.getElementById("scroller");
    if (el && scroller) {
      const box = el.getBoundingClientRect(), view = scroller.getBoundingClientRect();
      if (box.bottom > view.top && box.top < view.bottom) {
        const inView = performance.now();
        requestAnimationFrame(() => { window.__benchOpened = {inView, drawn: performance.now()}; });
        return;
      }
    }
    requestAnimationFrame(poll);
  };
  requestAnimationFrame(poll);
}"""

OPEN_TIMING_JS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const page = performance.getEntriesByType("resource").find((e) => e.name.includes("/messages?"));
  return {dcl: nav.domContentLoadedEventEnd, requested: page ? page.startTime : 0,
          received: page ? page.responseEnd : 0, bytes: page ? page.encodedBodySize : 0};
}"""

DOM_JS = """() => ({messages: document.querySelectorAll('[data-testid="message"]').length,
  elements: document.getElementsByTagName("*").length,
  height: document.getElementById("scroller").scrollHeight})"""

# From the bottom (`fromEnd`) or where it is, `frames` animation frames, each moving the
# scroller `step` px (0: idle), up first. At the top it clicks "Load earlier messages" when
# `loadOlder` and the button is shown (and waits, counting frames, while the button is
# disabled: the load is in flight), else turns back down; at the bottom it turns up again.
SCROLL_JS = """async ({frames, step, loadOlder, fromEnd, maxMs}) => {
  const scroller = document.getElementById("scroller");
  const button = document.getElementById("load-older");
  const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
  if (fromEnd) {
    scroller.scrollTop = scroller.scrollHeight;
    for (let i = 0; i < 3; i++) await frame();
  }
  const deltas = [];
  let direction = -1, loads = 0, previous = await frame();
  const started = previous;
  while (deltas.length < frames && previous - started < maxMs) {
    if (step > 0 && direction < 0 && scroller.scrollTop <= 0) {
      if (loadOlder && !button.hidden) {
        if (!button.disabled) { button.click(); loads += 1; }
      } else direction = 1;
    } else if (step > 0 && direction > 0
               && scroller.scrollTop + scroller.clientHeight >= scroller.scrollHeight - 1) {
      direction = -1;
    }
    scroller.scrollTop += direction * step;
    const now = await frame();
    deltas.push(now - previous);
    previous = now;
  }
  return {deltas, loads};
}"""

# "Load earlier messages" until the newest `until` messages have been read (the oldest shown
# is that far back; the UI keeps at most 1,000 on the page, dropping the newest as older ones
# come) or the button goes (nothing older): per load, from the click to the first frame drawn
# after its messages were added.
LOAD_JS = """async ({until, newest, timeoutMs}) => {
  const scroller = document.getElementById("scroller");
  const button = document.getElementById("load-older");
  const oldest = () => Number(document.querySelector('[data-testid="message"]').dataset.seq);
  const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
  const loads = [];
  while (!button.hidden && newest - oldest() + 1 < until) {
    scroller.scrollTop = 0;
    await frame();
    const before = oldest();
    const clicked = performance.now();
    button.click();
    while (oldest() === before) {
      if (performance.now() - clicked > timeoutMs) throw new Error("a load took too long");
      await frame();
    }
    await frame();  // the frame that draws them has been drawn once the next one starts
    loads.push(performance.now() - clicked);
  }
  return loads;
}"""

FETCHES_JS = """() => performance.getEntriesByType("resource")
  .filter((e) => e.name.includes("/messages?")).slice(1).map((e) => e.duration)"""


# -- figures -------------------------------------------------------------------------------

WORK = ("ScriptDuration", "LayoutDuration", "RecalcStyleDuration", "TaskDuration")
TRACE_CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "blink", "cc"]


async def work_counters(cdp: CDPSession) -> dict[str, float]:
    """Chromium's cumulative Performance metrics of the page (durations in seconds)."""
    reply = await cdp.send("Performance.getMetrics")
    return {m["name"]: float(m["value"]) for m in reply["metrics"]}


Work = tuple[float, float, float, float]  # ms of script, layout, style, all tasks


def work_ms(before: dict[str, float], after: dict[str, float], per: int) -> Work:
    """Milliseconds of each of WORK between two readings of `work_counters`, / `per`."""
    script, layout, style, task = (
        (after.get(n, 0.0) - before.get(n, 0.0)) * 1000 / max(1, per) for n in WORK
    )
    return script, layout, style, task


@dataclass
class Frames:
    """Frame times of one scroll run, and the main thread's work per frame meanwhile."""

    run: str
    shown: int  # messages in the DOM at the end of the run
    frames: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    over_16_pct: float  # frames longer than one 60 Hz frame: at least one frame dropped
    over_50_pct: float
    script_ms: float  # per frame: Chromium's ScriptDuration over the run / frames
    layout_ms: float
    style_ms: float
    task_ms: float  # all main-thread tasks, the three above included
    loads: int  # "Load earlier messages" clicked during the run


@dataclass
class Dom:
    messages: int
    elements: int
    nodes: int  # the renderer's DOM nodes (CDP `Nodes`), text nodes included
    listeners: int  # JS event listeners (CDP `JSEventListeners`)
    heap_mb: float  # JS heap in use after a forced garbage collection
    height_px: int  # the conversation's scroll height


@dataclass
class Opened:
    open_ms: float  # navigation start to the first frame drawn with the newest message in view
    in_view_ms: float  # ... to the frame in which it first was laid out in view
    dom_content_loaded_ms: float
    page_requested_ms: float  # the newest page of messages (GET .../messages?before_seq=)
    page_received_ms: float
    page_kb: float
    script_ms: float  # main-thread work until then (CDP Performance metrics)
    layout_ms: float
    style_ms: float
    dom: Dom


@dataclass
class Loads:
    """Every earlier page loaded with "Load earlier messages", one click at a time."""

    count: int
    total_s: float  # every message shown, by clicking one load after another
    first_ms: float  # with the newest page shown
    median_ms: float
    last_ms: float  # with all but one page shown
    max_ms: float
    fetch_median_ms: float  # the HTTP request's own part (Resource Timing)
    script_ms: float  # main-thread work per load (CDP), the waits between loads included
    layout_ms: float
    style_ms: float


@dataclass
class Case:
    name: str
    messages: int
    opened: Opened
    runs: list[Frames]
    loads: Loads | None
    full_dom: Dom
    # With --trace: the renderer main thread's self time by trace event over a last wheel
    # run with every message shown, (event, ms per frame, events per frame), largest first.
    trace: list[tuple[str, float, float]] = field(default_factory=list)


def ui_source() -> str:
    """The commit the UI's files are from, and whether they have uncommitted changes."""

    def git(*args: str) -> str:
        command = ["git", "-C", str(UI_DIR), *args]
        return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip()

    dirty = " + uncommitted changes" if git("status", "--porcelain", "--", ".") else ""
    return (git("rev-parse", "--short", "HEAD") or "unknown") + dirty


@dataclass
class Report:
    machine: str
    date: str
    ui: str  # ui_source()
    config: dict[str, Any]
    seed_s: float = 0.0  # the ingest, every message acked
    settle_s: float = 0.0  # then until committed and indexed
    rounds: list[list[Case]] = field(default_factory=list)  # per round: baseline, long
    other_cpu_pct: list[float] = field(default_factory=list)  # per round, of one core


def main_thread_self_times(trace: bytes, frames: int, top: int) -> list[tuple[str, float, float]]:
    """The `top` trace events by self time (their duration minus their children's) on the
    renderer's main thread, per frame."""
    events = orjson.loads(trace)["traceEvents"]
    main = {
        (e["pid"], e["tid"])
        for e in events
        if e.get("ph") == "M" and e.get("args", {}).get("name") == "CrRendererMain"
    }
    spans = sorted(
        (e["ts"], -e["dur"], e["name"], (e["pid"], e["tid"]))
        for e in events
        if e.get("ph") == "X" and "dur" in e and (e["pid"], e["tid"]) in main
    )
    self_us: dict[str, float] = {}
    count: dict[str, int] = {}
    open_: dict[tuple[int, int], list[tuple[int, str]]] = {}  # per thread: (end, name)
    for ts, minus_dur, name, thread in spans:
        stack = open_.setdefault(thread, [])
        while stack and stack[-1][0] <= ts:
            stack.pop()
        if stack:
            self_us[stack[-1][1]] -= -minus_dur
        self_us[name] = self_us.get(name, 0.0) - minus_dur
        count[name] = count.get(name, 0) + 1
        stack.append((ts - minus_dur, name))
    ranked = sorted(self_us.items(), key=lambda item: -item[1])[:top]
    return [(name, us / 1000 / frames, count[name] / frames) for name, us in ranked]


# -- the measurement -----------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    messages: int = 10_000
    baseline: int = 100
    frames: int = 600
    step: int = 300
    jump: int = 2400
    checkpoints: tuple[int, ...] = (1000, 2000, 5000)
    batch: int = 100
    in_flight: int = 4
    rounds: int = 1
    seed: int = 1
    trace: bool = False


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


class Tab:
    """One page of the UI with its CDP session: every measurement in it."""

    def __init__(self, page: Page, cdp: CDPSession) -> None:
        self.page, self.cdp = page, cdp
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    async def dom(self) -> Dom:
        await self.cdp.send("HeapProfiler.collectGarbage")
        heap = await self.cdp.send("Runtime.getHeapUsage")
        counters = await work_counters(self.cdp)
        shown = await self.page.evaluate(DOM_JS)
        return Dom(shown["messages"], shown["elements"], int(counters.get("Nodes", 0)),
                   int(counters.get("JSEventListeners", 0)), heap["usedSize"] / 2**20,
                   shown["height"])  # fmt: skip

    async def open(self, url: str) -> Opened:
        async with asyncio.timeout(PAGE_TIMEOUT_S):
            await self.page.goto(url, wait_until="commit")
            await self.page.wait_for_function("() => window.__benchOpened", polling=100)
        shown = await self.page.evaluate("() => window.__benchOpened")
        timing = await self.page.evaluate(OPEN_TIMING_JS)
        script, layout, style, _ = work_ms({}, await work_counters(self.cdp), 1)
        return Opened(shown["drawn"], shown["inView"], timing["dcl"], timing["requested"],
                      timing["received"], timing["bytes"] / 1024, script, layout, style,
                      await self.dom())  # fmt: skip

    async def scroll(self, run: str, frames: int, step: int, *, load_older: bool = False,
                     from_end: bool = True) -> Frames:  # fmt: skip
        before = await work_counters(self.cdp)
        arg = {"frames": frames, "step": step, "loadOlder": load_older, "fromEnd": from_end,
               "maxMs": PAGE_TIMEOUT_S * 1000 / 2}  # fmt: skip
        async with asyncio.timeout(PAGE_TIMEOUT_S):
            result = await self.page.evaluate(SCROLL_JS, arg)
        work = work_ms(before, await work_counters(self.cdp), len(result["deltas"]))
        deltas = [float(d) for d in result["deltas"]]
        if not deltas:
            raise BenchError("no animation frame was drawn")
        us = sorted(round(d * 1000) for d in deltas)
        p50, p95, p99 = (percentile(us, q) / 1000 for q in (0.5, 0.95, 0.99))
        shown = (await self.page.evaluate(DOM_JS))["messages"]
        return Frames(
            run, shown, len(us), p50, p95, p99, us[-1] / 1000,
            100 * sum(d > FRAME_MS + 0.5 for d in deltas) / len(us),  # 0.5: a frame's jitter
            100 * sum(d > SLOW_FRAME_MS for d in deltas) / len(us), *work, result["loads"],
        )  # fmt: skip

    async def load_until(self, read: int, newest: int) -> list[float]:
        """Click "Load earlier messages" until the newest `read` messages of the `newest` have
        been shown (or there is no more)."""
        async with asyncio.timeout(PAGE_TIMEOUT_S * 4):
            loads: list[float] = await self.page.evaluate(
                LOAD_JS, {"until": read, "newest": newest, "timeoutMs": LOAD_TIMEOUT_MS}
            )
        return loads


async def measure_case(browser: Browser, http_url: str, name: str, port: int, messages: int,
                       config: Config) -> Case:  # fmt: skip
    """Open the UI on `port` (its session holds `messages`) in a fresh profile and measure."""
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        await context.add_init_script(script=f"({OPEN_WATCH_JS})({messages})")
        page = await context.new_page()
        tab = Tab(page, await context.new_cdp_session(page))
        await tab.cdp.send("Performance.enable")
        opened = await tab.open(f"{http_url}/#port={port}")
        runs = [
            await tab.scroll("idle", IDLE_FRAMES, 0, from_end=False),
            await tab.scroll("newest, wheel", config.frames, config.step, load_older=True),
        ]
        before, loads = await work_counters(tab.cdp), []
        for size in [*sorted(c for c in config.checkpoints if c < messages), messages]:
            loads += await tab.load_until(size, messages)
            if size < messages:  # the whole conversation is measured below
                runs.append(await tab.scroll("wheel", config.frames // 4, config.step))
        script, layout, style, _ = work_ms(before, await work_counters(tab.cdp), len(loads))
        full_dom = await tab.dom()
        if not await page.locator('[data-testid="message"][data-seq="1"]').count():
            raise BenchError(f"{name}: the first message was never shown")
        runs.append(await tab.scroll("all, wheel", config.frames, config.step))
        runs.append(await tab.scroll("all, jump", max(1, config.frames // 2), config.jump))
        case = Case(name, messages, opened, runs, None, full_dom)
        if loads:
            fetches = [float(ms) for ms in await page.evaluate(FETCHES_JS)] or [0.0]
            case.loads = Loads(len(loads), sum(loads) / 1000, loads[0], statistics.median(loads),
                               loads[-1], max(loads), statistics.median(fetches), script,
                               layout, style)  # fmt: skip
        if config.trace:
            await browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
            traced = await tab.scroll("traced", max(1, config.frames // 4), config.step)
            trace = await browser.stop_tracing()
            case.trace = main_thread_self_times(trace, traced.frames, top=12)
        if tab.errors:
            raise BenchError(f"{name}: JavaScript errors in the page: {tab.errors}")
        return case
    finally:
        await context.close()


async def run(config: Config, server_url: str, redis_url: str) -> Report:
    """Seed a gateway, then measure the baseline and the long session `config.rounds` times."""
    report = Report(machine(), f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC", ui_source(),
                    dataclasses.asdict(config))  # fmt: skip
    sizes = {LONG_PORT: config.messages, BASELINE_PORT: config.baseline}
    async with gateway(server_url, redis_url) as server:
        started = time.perf_counter()
        session_of = await ingest(server, sizes, config.seed, config.batch, config.in_flight)
        report.seed_s = time.perf_counter() - started
        report.settle_s = await until_settled(
            server, {session_of[port]: n for port, n in sizes.items()}
        )
        http_url = f"http://127.0.0.1:{server.port}"
        async with chromium() as browser:
            warm_up = dataclasses.replace(config, frames=30, trace=False)
            await measure_case(browser, http_url, "warm-up", BASELINE_PORT, config.baseline,
                               warm_up)  # fmt: skip
            for round_ in range(config.rounds):
                print(f"# round {round_ + 1} of {config.rounds}", file=sys.stderr, flush=True)
                busy, (own, below) = machine_busy_seconds(), tree_cpu_seconds(os.getpid())
                clock = time.perf_counter()
                cases = [
                    await measure_case(browser, http_url, "baseline", BASELINE_PORT,
                                       config.baseline, config),
                    await measure_case(browser, http_url, "long", LONG_PORT,
                                       config.messages, config),
                ]  # fmt: skip
                own_after, below_after = tree_cpu_seconds(os.getpid())
                others = machine_busy_seconds() - busy - (own_after + below_after - own - below)
                report.rounds.append(cases)
                report.other_cpu_pct.append(100 * max(0.0, others) / (time.perf_counter() - clock))
    return report


# -- the report ----------------------------------------------------------------------------


def _new_table(title: str, *columns: str) -> Table:
    table = Table(title=title, box=box.MARKDOWN, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right")
    return table


def _ratio(long: float, base: float) -> str:
    return f"{long / base:.1f}x" if base > 0 else "-"


def tables(report: Report) -> list[Table]:
    """The figures of every round: opening, the DOM, frame times, loading earlier pages and,
    with --trace, where the main thread's time goes."""
    opening = _new_table(
        "Opening the page", "round", "session", "open ms", "in view ms", "DOMContentLoaded ms",
        "newest page requested / received ms", "page KB", "script / layout / style ms",
        "messages", "elements", "DOM nodes", "listeners", "JS heap MB",
    )  # fmt: skip
    dom = _new_table("Every message shown", "round", "session", "messages", "elements",
                 "DOM nodes", "listeners", "JS heap MB", "height px")  # fmt: skip
    frames = _new_table(
        "Frame times (ms between animation frames)", "round", "session", "run",
        "messages in DOM", "frames", "p50", "p95", "p99", "max", ">16.7 ms", ">50 ms",
        "script / layout / style / all ms per frame", "loads", "p95 vs baseline",
    )  # fmt: skip
    loads = _new_table('"Load earlier messages" until every message is shown', "round", "loads",
                   "total s", "first ms", "median ms", "last ms", "max ms", "fetch median ms",
                   "script / layout / style ms per load")  # fmt: skip
    traced = _new_table("Main thread, wheel with every message shown: self time by trace event",
                    "round", "event", "long ms / frame", "per frame",
                    "baseline ms / frame")  # fmt: skip
    for number, (base, long) in enumerate(report.rounds, 1):
        base_runs = {r.run: r for r in base.runs}
        for case in (base, long):
            o, d, f = case.opened, case.opened.dom, case.full_dom
            opening.add_row(
                str(number), f"{case.name} ({case.messages:,})", f"{o.open_ms:.0f}",
                f"{o.in_view_ms:.0f}", f"{o.dom_content_loaded_ms:.0f}",
                f"{o.page_requested_ms:.0f} / {o.page_received_ms:.0f}", f"{o.page_kb:.0f}",
                f"{o.script_ms:.0f} / {o.layout_ms:.0f} / {o.style_ms:.0f}", f"{d.messages:,}",
                f"{d.elements:,}", f"{d.nodes:,}", f"{d.listeners:,}", f"{d.heap_mb:.1f}",
            )  # fmt: skip
            dom.add_row(str(number), case.name, f"{f.messages:,}", f"{f.elements:,}",
                        f"{f.nodes:,}", f"{f.listeners:,}", f"{f.heap_mb:.1f}",
                        f"{f.height_px:,}")  # fmt: skip
            for r in case.runs:
                b = base_runs["all, wheel" if r.run == "wheel" else r.run]
                frames.add_row(
                    str(number), case.name, r.run, f"{r.shown:,}", str(r.frames),
                    f"{r.p50_ms:.1f}", f"{r.p95_ms:.1f}", f"{r.p99_ms:.1f}", f"{r.max_ms:.1f}",
                    f"{r.over_16_pct:.1f} %", f"{r.over_50_pct:.1f} %",
                    f"{r.script_ms:.1f} / {r.layout_ms:.1f} / {r.style_ms:.1f} / {r.task_ms:.1f}",
                    str(r.loads), "" if case is base else _ratio(r.p95_ms, b.p95_ms),
                )  # fmt: skip
        if long.loads is not None:
            x = long.loads
            loads.add_row(str(number), str(x.count), f"{x.total_s:.1f}", f"{x.first_ms:.0f}",
                          f"{x.median_ms:.0f}", f"{x.last_ms:.0f}", f"{x.max_ms:.0f}",
                          f"{x.fetch_median_ms:.0f}",
                          f"{x.script_ms:.0f} / {x.layout_ms:.0f} / {x.style_ms:.0f}")  # fmt: skip
        base_trace = {event: ms for event, ms, _ in base.trace}
        for event, ms, per_frame in long.trace:
            traced.add_row(str(number), event, f"{ms:.1f}", f"{per_frame:.1f}",
                           f"{base_trace.get(event, 0.0):.1f}")  # fmt: skip
    return [opening, dom, frames, loads] + ([traced] if report.config["trace"] else [])


def print_report(report: Report, console: Console) -> None:
    c = report.config
    console.print(f"# UI long session: {c['messages']:,} messages against a {c['baseline']:,}"
                  f"-message baseline; UI at {report.ui}")  # fmt: skip
    console.print(f"# {report.machine}; {report.date}")
    console.print(f"# seeded in {report.seed_s:.1f} s, committed and indexed"
                  f" {report.settle_s:.1f} s later; scrolling {c['step']} px per frame"
                  f" ({c['jump']} px for jump), {c['frames']} frames per run")  # fmt: skip
    for t in tables(report):
        console.print(t)
    for number, (base, long) in enumerate(report.rounds, 1):
        ratio = _ratio(long.opened.open_ms, base.opened.open_ms)
        busy = report.other_cpu_pct[number - 1]
        console.print(f"# round {number}: open {long.opened.open_ms:.0f} ms vs"
                      f" {base.opened.open_ms:.0f} ms ({ratio}); other processes used"
                      f" {busy:.0f} % of a core meanwhile")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = Config()
    counts = (
        ("--messages", "messages in the long session"),
        ("--baseline", "messages in the baseline session"),
        ("--frames", "animation frames per scroll run"),
        ("--step", "px scrolled per frame, a fast wheel"),
        ("--jump", "px per frame of the jump run, a scroll-bar drag"),
        ("--batch", "messages per `extracted` frame when seeding"),
        ("--in-flight", "frames unanswered at once when seeding"),
        ("--rounds", "times the baseline and the long session are measured"),
        ("--seed", "of the generated messages"),
    )
    for flag, what in counts:
        default = getattr(d, flag[2:].replace("-", "_"))
        parser.add_argument(flag, type=int, default=default, help=f"{what} (default {default})")
    parser.add_argument(
        "--checkpoints", type=int, nargs="*", default=list(d.checkpoints),
        help="also scroll when this many messages are shown, on the way to all of them"
        " (default 1000 2000 5000)",
    )  # fmt: skip
    parser.add_argument(
        "--trace", action="store_true",
        help="trace a last wheel run and show where the main thread's time goes",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the report here")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        parser.error(f"no {CHROMIUM}: apt-get install -y chromium")
    if min(args.messages, args.baseline, args.frames, args.rounds, args.batch,
           args.in_flight) < 1 or args.baseline > args.messages:  # fmt: skip
        parser.error("every count must be positive, --baseline at most --messages")
    config = Config(args.messages, args.baseline, args.frames, args.step, args.jump,
                    tuple(args.checkpoints), args.batch, args.in_flight, args.rounds,
                    args.seed, args.trace)  # fmt: skip

    async def measured() -> Report:
        with servers() as (server_url, redis_url):
            return await run(config, server_url, redis_url)

    report = asyncio.run(measured())
    print_report(report, Console(width=240))  # markdown tables: never wrapped
    if args.json:
        args.json.write_text(json.dumps(dataclasses.asdict(report), indent=2) + "\n")


if __name__ == "__main__":
    main()
