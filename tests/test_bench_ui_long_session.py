"""`python -m bench.ui_long_session` at a tiny scale: it seeds through the gateway, opens the UI
in Chromium, loads every page, scrolls, and reports every figure it promises. The figures
themselves are not asserted: they are the benchmark's to judge, not a test's."""

from __future__ import annotations

import orjson
import pytest
from rich.console import Console

from bench.ui_long_session import (
    CHROMIUM,
    Config,
    frames_of,
    main_thread_self_times,
    print_report,
    run,
)

CONFIG = Config(messages=450, baseline=20, frames=20, checkpoints=(300,), trace=True)


@pytest.mark.timeout(300)
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")
async def test_tiny_run_reports_every_figure(server_database_url: str, redis_url: str) -> None:
    """Both sessions open with their newest page, load to the end and give every run."""
    report = await run(CONFIG, server_database_url, redis_url)
    [(base, long)] = report.rounds
    assert (base.messages, long.messages) == (20, 450)
    assert base.opened.dom.messages == 20 and long.opened.dom.messages == 200
    assert base.full_dom.messages == 20 and long.full_dom.messages == 450
    assert 0 < long.opened.page_received_ms < long.opened.open_ms
    assert base.loads is None and long.loads is not None and long.loads.count == 2
    assert [r.run for r in base.runs] == ["idle", "newest, wheel", "all, wheel", "all, jump"]
    assert [(r.run, r.shown) for r in long.runs][2:] == [
        ("wheel", 400), ("all, wheel", 450), ("all, jump", 450),
    ]  # fmt: skip
    for r in base.runs + long.runs:
        assert r.frames > 0 and 0 < r.p50_ms <= r.p95_ms <= r.p99_ms <= r.max_ms, r
    assert long.trace and base.trace
    console = Console(record=True, width=240)
    print_report(report, console)
    assert "Load earlier messages" in console.export_text()


def test_frames_stay_under_the_item_and_byte_limits() -> None:
    """Seeding frames hold at most `batch` items, and an item that would take a frame past
    MAX_FRAME_BYTES starts the next one."""
    items = [{"id": str(i), "content": "x" * (150_000 if i in (2, 3) else 10)} for i in range(7)]
    frames = frames_of(9222, items, batch=2)
    assert [[m["id"] for m in f["messages"]] for f in frames] == [
        ["0", "1"], ["2"], ["3", "4"], ["5", "6"],
    ]  # fmt: skip
    assert all(f["type"] == "extracted" and f["port"] == 9222 for f in frames)


def test_trace_self_time_leaves_out_children() -> None:
    """An event's self time is its duration minus the events nested in it, main thread only."""
    main, other = {"pid": 1, "tid": 1}, {"pid": 1, "tid": 2}
    events = [
        {"ph": "M", "name": "thread_name", "args": {"name": "CrRendererMain"}, **main},
        {"ph": "X", "name": "Frame", "ts": 0, "dur": 10_000, **main},
        {"ph": "X", "name": "Paint", "ts": 1_000, "dur": 4_000, **main},
        {"ph": "X", "name": "Paint", "ts": 6_000, "dur": 2_000, **main},
        {"ph": "X", "name": "Raster", "ts": 0, "dur": 50_000, **other},
    ]
    rows = main_thread_self_times(orjson.dumps({"traceEvents": events}), frames=2, top=5)
    assert rows == [("Paint", 3.0, 1.0), ("Frame", 2.0, 0.5)]
