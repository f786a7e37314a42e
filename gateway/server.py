"""The uvicorn configuration, shared by `chat-gateway serve` and the tests' in-loop servers.

Tests run the same configuration as production (WebSocket implementation, frame limit), so
the close codes they check are the ones clients get.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import uvicorn

from gateway.settings import Settings

# The sans-I/O websockets implementation: current, and it closes oversized frames with 1009.
WS_IMPLEMENTATION = "websockets-sansio"


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    json_logs = {"log_config": None} if settings.log_format == "json" else {}
    return json_logs | {
        "ws": WS_IMPLEMENTATION,
        "ws_max_size": settings.max_frame_bytes,
        # Per-message deflate costs CPU on every frame for small chat frames; off.
        "ws_per_message_deflate": False,
        # Pings find connections whose peer vanished without a TCP reset (a sleeping laptop,
        # a dropped network) within 10 s, so their presence ends within seconds too.
        "ws_ping_interval": 5.0,
        "ws_ping_timeout": 5.0,
        "lifespan": "on",
        "log_level": settings.log_level,
        "access_log": False,
        "timeout_graceful_shutdown": 10,
    }


class DenialNoiseFilter(logging.Filter):
    """Drops uvicorn's "returned without completing handshake" error, which its sans-I/O
    WebSocket implementation (0.54) logs after every handshake refused with an HTTP response
    (our 401s): the refusal is intended and the client gets its 401. Our endpoint never
    returns without accepting or refusing, so the message has no other source here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


def tune_gc(young_collection_threshold: int, full_collection_threshold: int) -> None:
    """Make garbage collections rarer; the gateway makes little cyclic garbage (its
    per-message objects are freed by reference counting), so memory barely moves.

    * Young collections: CPython runs one whenever the tracked objects allocated minus
      those freed pass 700. Under load the objects of the frames in flight (about ten per
      message: futures, coroutines, parsed items, 2,000 frames at 200 connections x 10)
      rise and fall by far more than that, so it collected ~17 times per 1,000 messages
      and each time traversed the frames in flight: 7.5 us of GC per message, a tenth of
      the gateway's CPU. Past the in-flight population, young collections come only from
      real growth (or garbage, which they then bound at that many objects, a few MB):
      at 50,000, 2 collections in 110,000 messages, and the gateway's CPU per message fell
      from 79 to 66 us (docs/benchmarks.md). Each such collection pauses for ~18 ms.
    * Full collections: every live event wakes each subscriber's sender, and the futures
      of those waits survive into the oldest generation: with 1,000 subscribers CPython's
      default (a full collection after 10 middle-generation ones) ran a 130-200 ms full
      collection every ~65 messages, and that pause was the fan-out p99. Raising the last
      threshold from 10 to 1,000 cut that p99 from 165 ms to 47 ms (docs/benchmarks.md)."""
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(young_collection_threshold, middle, full_collection_threshold)


def install_log_filters() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, DenialNoiseFilter) for f in logger.filters):
        logger.addFilter(DenialNoiseFilter())


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    return uvicorn.Config(app, **(uvicorn_options(settings) | overrides))
