"""The shared words: one duration parser for the fleet file, the CLI and the server."""

from __future__ import annotations

import pytest

from multiagent.tokenfile import read_token_file
from multiagent.vocabulary import (
    AgentState,
    DrainMode,
    JobState,
    Phase,
    parse_duration,
    read_drain_flag,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("6h", 21600),
        ("30m", 1800),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1w", 604800),
        ("1.5h", 5400),
        (" 45 s", 45),
        ("90", 90),
        (90, 90),
        (0.5, 0.5),
        ("0", 0),
        # upstream's spellings of units (reservation timeouts)
        ("5min", 300),
        ("2 hours", 7200),
        ("1 hour 30 mins", 5400),
        ("10 seconds", 10),
        ("3days", 259200),
    ],
)
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x",
        "h",
        "1x",
        "-1",
        -1,
        "1h30",
        "1..2h",
        "nan",
        "inf",
        "5 mon",
        "1hours2",
        True,
        None,
        [1],
    ],
)
def test_parse_duration_rejects_with_the_value_named(value):
    with pytest.raises(ValueError, match="expected a duration such as 6h"):
        parse_duration(value)


def test_drain_flag_reader(tmp_path):
    flag = tmp_path / "a.drain"
    assert read_drain_flag(str(flag)) is None
    flag.write_text("hold\n")
    assert read_drain_flag(str(flag)) == DrainMode.HOLD
    flag.write_text("anything else")
    assert read_drain_flag(str(flag)) == DrainMode.DRAIN
    flag.unlink()
    flag.mkdir()  # there but unreadable as a file: take no job
    assert read_drain_flag(str(flag)) == DrainMode.DRAIN


def test_a_job_moves_through_every_phase_in_order_and_cleanup_last():
    phases = [state for state in JobState.ORDER if state in Phase.ALL]
    assert phases == list(Phase.ALL) and Phase.ALL[-1] == Phase.CLEANUP
    assert JobState.ORDER.index(JobState.ALLOCATED) == JobState.ORDER.index(Phase.ALLOCATE) + 1
    assert len(set(AgentState.ALL)) == len(AgentState.ALL)


def test_the_token_file_reader_takes_json_or_plain_text(tmp_path):
    agent_style = tmp_path / "agent.token"
    agent_style.write_text('{"refresh_token": " r-1 ", "obtained_at": 1}')
    assert read_token_file(str(agent_style)) == "r-1"
    shared = tmp_path / "shared"
    shared.write_text("s3cret\n")
    assert read_token_file(str(shared)) == "s3cret"
    shared.write_text("\n")
    with pytest.raises(ValueError):
        read_token_file(str(shared))
