"""The bench runs end to end and writes its table (no timing is asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_bench import run_bench


@pytest.mark.timeout(300)
def test_bench_smoke_writes_the_results_table(tmp_path: Path) -> None:
    output = tmp_path / "RESULTS.md"
    proc = run_bench("run.py", "--smoke", "--agents", "3", "--output", str(output), limit=240)
    stderr = proc.stderr
    assert output.exists(), stderr[-3000:]
    text = output.read_text()
    assert "| Figure | Median | p95 | Baseline (same run) | Ratio | Target | Met? |" in text
    for figure in (
        "Hard restart",
        "Idle safe restart",
        "Rolling",
        "Cold `tf-fleet up`",
        "No-change",
        "`tf-fleet status`",
        "Idle agent RSS",
        "Idle agent CPU",
        "Job submit",
        "Server GET /v1/job p99",
    ):
        assert figure in text, f"{figure!r} missing from the table"
    assert "could not be measured" not in text, text
    assert "### Where a cold start of 3 goes" in text
    assert "| **launch → all RUNNING (and polling)** |" in text
    assert proc.returncode == 0, stderr[-3000:]
    assert "cores" in text and "Python" in text
    assert "Measured: a wheel of this tree, installed with its dependencies into a fresh" in text


def test_bench_refuses_to_measure_an_editable_install(tmp_path: Path) -> None:
    """The suite's venv holds `pip install -e`: its interpreters start with the editable
    finder, which no user's install has, so --installed refuses it, saying why."""
    output = tmp_path / "RESULTS.md"
    proc = run_bench("run.py", "--smoke", "--installed", "--output", str(output), limit=60)
    assert proc.returncode == 2
    assert "refusing to measure: tf-fleet is an editable install" in proc.stderr
    assert "Run without --installed" in proc.stderr
    assert not output.exists()
