"""`chat-gateway loadtest` as a subprocess against a real gateway: its figures add up, a
paced or timed run keeps its pace, subscriber tabs get every seq, edits come back updated,
commit lag is measured, --plot draws, and anything acked but not persisted fails the run.
The gap and lag bookkeeping is also checked on its own, fed seqs the gateway would never send."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from gateway.loadtest import CommitWatch, Report, SeqTracker
from tests.conftest import RunningGateway
from tests.processes import command_env, run_command

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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


async def test_bad_options_are_one_line(gateway: RunningGateway, tmp_path: Path) -> None:
    """A URL that is no http(s) URL, a count below 1, a share outside 0..1, a duration that is
    no positive time or comes with --messages, a plot with no folder: one line and exit 2."""
    url = gateway.http_url
    for args in (
        ("ws://127.0.0.1:1",), (url, "--connections", "0"), (url, "--subscribers", "-1"),
        (url, "--edit-share", "1.5"), (url, "--duration", "0"), (url, "--duration", "nan"),
        (url, "--duration", "1", "--messages", "10"),
        (url, "--plot", str(tmp_path / "missing" / "run.png")),
    ):  # fmt: skip
        code, out, err = await run_command("loadtest", *args)
        assert code == 2 and out == "", (args, err)
        assert err.startswith("chat-gateway: error:") and len(err.splitlines()) == 1, err


async def test_tabs_get_every_seq_and_edits_come_back_updated(gateway: RunningGateway) -> None:
    """Two tabs on each of two ports get each new message and each edit once, in seq order,
    with fan-out latency measured; edits are acked updated; commit lag is measured."""
    code, report, err = await loadtest(
        gateway.http_url, "--connections", "4", "--ports", "2", "--messages", "200",
        "--subscribers", "2", "--edit-share", "0.1",
    )  # fmt: skip
    assert code == 0, err
    # 50 new frames per connection: 5 re-sends and 5 edits each.
    assert (report["created"], report["duplicates"], report["edits"]) == (200, 20, 20), report
    assert report["errors"] == {} and report["persisted"]
    assert report["subscribers"] == 4 and report["subscribers_dropped"] == 0
    assert (report["subscriber_gaps"], report["subscriber_duplicates"]) == (0, 0)
    assert report["subscriber_missed_edits"] == 0
    assert report["fanout_events"] == 2 * (200 + 20)  # each port's messages, to its two tabs
    fanout = report["fanout_latency_ms"]
    assert set(fanout) == {"p50", "p99", "max"} and 0 < fanout["p50"] <= fanout["max"]
    lag = report["commit_lag_ms"]
    assert set(lag) == {"p50", "p99", "max"}, report
    # The sampling period is 0 when every session was committed by its first read.
    assert 0 <= lag["p50"] <= lag["p99"] <= lag["max"] and report["commit_sample_ms"] >= 0


async def test_a_timed_run(gateway: RunningGateway) -> None:
    """--duration with --rate offers rate x duration frames; flat out, it sends until the time
    is up."""
    code, paced, err = await loadtest(
        gateway.http_url, "--connections", "2", "--duration", "0.5", "--rate", "100",
        "--resend-share", "0",
    )  # fmt: skip
    assert code == 0, err
    assert paced["frames_offered"] == 50 and paced["created"] == 50, paced
    code, flat, err = await loadtest(
        gateway.http_url, "--connections", "2", "--duration", "0.5", "--in-flight", "2"
    )
    assert code == 0, err
    assert flat["duration_s"] >= 0.5 and flat["created"] > 0 and flat["persisted"], flat
    assert flat["acked"] == flat["messages_offered"] and flat["errors"] == {}


async def test_plot_draws_a_png(gateway: RunningGateway, tmp_path: Path) -> None:
    """--plot writes a PNG of the run next to the report."""
    path = tmp_path / "run.png"
    code, report, err = await loadtest(
        gateway.http_url, "--connections", "2", "--messages", "50", "--plot", str(path)
    )
    assert code == 0 and report["acked"] == 54, err  # 2 x (25 + 2 re-sent)
    assert path.read_bytes().startswith(PNG_MAGIC)


async def test_plot_without_matplotlib_is_one_line(gateway: RunningGateway, tmp_path: Path) -> None:
    """Where matplotlib cannot be imported, --plot says how to install it before any load."""
    fake = tmp_path / "matplotlib"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    code, out, err = await run_command(
        "loadtest", gateway.http_url, "--plot", str(tmp_path / "run.png"),
        env=command_env(PYTHONPATH=str(tmp_path)),
    )  # fmt: skip
    assert (code, out) == (2, ""), err
    assert err == "chat-gateway: error: --plot needs matplotlib: pip install 'chat-gateway[plot]'\n"


async def test_no_persistence_check_reads_no_api(gateway_no_writer: RunningGateway) -> None:
    """Without the persistence check nothing committed is asked for: a gateway that commits
    nothing passes, and the report says persistence was not checked."""
    code, report, err = await loadtest(
        gateway_no_writer.http_url, "--connections", "2", "--messages", "10",
        "--no-persistence-check",
    )  # fmt: skip
    assert code == 0, err
    assert report["acked"] == 10 and not report["persistence_checked"]
    assert report["commit_lag_ms"] == {} and report["not_persisted"] == 0


def test_seq_tracker_counts_holes_and_duplicates_not_edits() -> None:
    """From last_seq 3: 4, 6 (5 skipped), 6 again, 4 edited, 9 (7 and 8 skipped): three gaps,
    one duplicate, and 10 still missing when 10 was acked."""
    track = SeqTracker(last=3)
    for seq, edited in ((4, False), (6, False), (6, False), (4, True), (9, False)):
        track.see(seq, edited)
    assert (track.gaps, track.duplicates, track.last) == (3, 1, 9)
    assert track.short_of(10) == 1 and track.short_of(9) == 0


def test_a_gap_or_a_duplicate_fails_the_run() -> None:
    """A report with a tab's gap, duplicate or missed edit is not ok even when all was
    persisted; one whose persistence was not checked is ok."""
    assert Report(persisted=True).ok()
    assert not Report(persisted=True, subscriber_gaps=1).ok()
    assert not Report(persisted=True, subscriber_duplicates=1).ok()
    assert not Report(persisted=True, subscriber_missed_edits=1).ok()
    assert not Report(persisted=False).ok()
    assert Report(persistence_checked=False).ok()


def test_commit_lag_is_dated_by_the_first_sample_covering_the_seq() -> None:
    """Seqs acked at 1.0 and 1.5 s, committed counts read at 1.2 s (1) and 2.0 s (2): lags
    of 200 and 500 ms; an ack whose seq was already seen committed counts 0."""
    watch = CommitWatch()
    watch.acked("s", 2, 1.5)
    watch.acked("s", 1, 1.0)  # acks of one session from several connections: any order
    watch.sampled("s", 1, 1.2)
    assert watch.behind({"s": 2}) == ["s"] and watch.missing({"s": 2}) == 1
    watch.sampled("s", 3, 2.0)
    watch.acked("s", 3, 2.1)
    assert [round(lag) for lag in watch.lags_ms] == [200, 500, 0]
    assert watch.missing({"s": 3}) == 0 and round(watch.sample_ms()) == 800


def test_the_report_says_how_commits_were_sampled() -> None:
    """The commit lag line gives the sampling period, or says no session needed a second read."""
    once = next(line for line in Report().lines() if line.startswith("commit lag"))
    assert once.endswith("(each session read once: committed by its first read)"), once
    every = next(line for line in Report(commit_sample_ms=120).lines() if "commit lag" in line)
    assert every.endswith("(sampled every 120 ms)"), every
