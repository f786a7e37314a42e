"""`python -m bench.e2e` at a tiny scale: every baseline speaks enough of the protocol for the
load client, acks every frame, and the ones that store do the gateway's work (re-sends come
back duplicate, every new message lands in PostgreSQL), so the benchmark's ratios compare
like with like."""

from __future__ import annotations

import pytest

from bench.e2e import TARGETS, Result, run_target, table
from gateway import loadtest

PLAN = loadtest.Plan(url="", connections=4, ports=2, messages=200, in_flight=4)
RESENDS = 4 * int(50 * PLAN.resend_share)  # 50 new frames per connection


@pytest.mark.timeout(180)
@pytest.mark.parametrize("target", TARGETS)
async def test_each_target_acks_every_frame(
    target: str, server_database_url: str, redis_url: str
) -> None:
    """Every frame is acked without error; storing targets dedup re-sends and persist all."""
    result = await run_target(target, PLAN, server_database_url, redis_url)
    assert result.errors == 0, result
    if target == "copy":  # no WebSocket: the same number of rows, COPYed
        assert result.acked == PLAN.messages and result.persisted_per_s, result
        return
    assert result.acked == PLAN.messages + RESENDS, result
    assert result.p50_ms is not None and result.p99_ms is not None
    if target == "echo":  # keeps nothing: re-sends are acked as new, nothing is persisted
        assert result.duplicates == 0 and result.persisted_per_s is None, result
    else:  # persisted_per_s is only set once PostgreSQL holds every message acked as new
        assert result.duplicates == RESENDS and result.persisted_per_s, result


def test_table_gives_ratios_against_the_reference_and_naive() -> None:
    """The table's ratios are of persisted throughput against the same run's baselines."""
    results = [
        Result("naive", 1000.0, 800.0, 5.0, 9.0, 0),
        Result("reference", 10_000.0, 8000.0, 2.0, 4.0, 0),
        Result("gateway", 9000.0, 7200.0, 2.5, 5.0, 0),
    ]
    rows = {line.split(" | ")[0].strip("| "): line for line in table(results)[2:]}
    assert rows["gateway"].endswith("| 0.90 | 9.00 |"), rows
    assert rows["reference"].endswith("| 1.00 | 10.00 |"), rows
