"""`chat-gateway loadtest` as a subprocess against a real gateway: its figures add up, a
paced run keeps its pace, and anything acked but not persisted fails the run."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.conftest import RunningGateway
from tests.processes import run_command


async def loadtest(url: str, *args: str) -> tuple[int, dict[str, Any], str]:
    code, out, err = await run_command("loadtest", url, "--json", *args)
    assert "Traceback" not in err, err
    report: dict[str, Any] = json.loads(out) if out.strip() else {}
    return code, report, err


async def test_a_flat_out_run_adds_up_and_is_persisted(gateway: RunningGateway) -> None:
    """5 connections, 200 new frames and a tenth re-sent: every message acked once as new,
    every re-send acked as a duplicate, nothing refused, all of it in PostgreSQL."""
    code, report, err = await loadtest(
        gateway.http_url, "--connections", "5", "--ports", "2", "--messages", "200"
    )
    assert code == 0, err
    assert report["frames_offered"] == 220 and report["messages_offered"] == 220
    assert (report["created"], report["duplicates"]) == (200, 20), report
    assert report["acked"] == 220 and report["errors"] == {}
    assert report["persisted"] and report["not_persisted"] == 0
    assert report["sessions"] == 2
    assert set(report["ack_latency_ms"]) == {"p50", "p95", "p99", "max"}
    assert 0 < report["ack_latency_ms"]["p50"] <= report["ack_latency_ms"]["max"]


async def test_batches_and_a_paced_rate(gateway: RunningGateway) -> None:
    """At 200 frames/s, 60 frames of 3 messages take at least the 0.3 s the pace asks."""
    started = time.monotonic()
    code, report, err = await loadtest(
        gateway.http_url, "--connections", "3", "--messages", "60", "--batch", "3",
        "--rate", "200", "--resend-share", "0",
    )  # fmt: skip
    assert code == 0, err
    assert (report["acked"], report["created"], report["duplicates"]) == (180, 180, 0), report
    assert report["duration_s"] >= 59 / 200 and time.monotonic() - started >= 59 / 200


async def test_acked_but_not_persisted_fails_the_run(gateway_no_writer: RunningGateway) -> None:
    """With no writer running nothing reaches PostgreSQL: the report says so, exit 1."""
    code, report, _ = await loadtest(
        gateway_no_writer.http_url, "--connections", "2", "--messages", "10",
        "--persist-wait", "0.5",
    )  # fmt: skip
    assert code == 1
    assert report["acked"] == 10 and not report["persisted"] and report["not_persisted"] >= 10


async def test_bad_options_are_one_line(gateway: RunningGateway) -> None:
    """A URL that is no http(s) URL, or a count below 1, is one line and exit 2."""
    for args in (("ws://127.0.0.1:1",), (gateway.http_url, "--connections", "0")):
        code, out, err = await run_command("loadtest", *args)
        assert code == 2 and out == "", err
        assert err.startswith("chat-gateway: error:") and len(err.splitlines()) == 1, err
