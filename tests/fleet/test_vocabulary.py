"""The shared words: one duration parser for the fleet file, the CLI and the server."""

from __future__ import annotations

import pytest

from multiagent.vocabulary import DrainMode, parse_duration, read_drain_flag


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
    ],
)
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", ["", "x", "h", "1x", "-1", -1, "1h30", "1..2h", "nan", "inf", True, None, [1]]
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
