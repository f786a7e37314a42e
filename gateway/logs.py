"""Logging set-up: human-readable lines, or one JSON object per line for log shippers."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson

from gateway.settings import Settings

_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message"}` plus `exception` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(settings: Settings) -> None:
    """Root logging for the process. In JSON mode uvicorn's loggers are routed here too
    (uvicorn is then started without its own log config; see gateway/server.py)."""
    if settings.log_format not in ("text", "json"):
        raise ValueError(f"log format must be text or json, not {settings.log_format!r}")
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
