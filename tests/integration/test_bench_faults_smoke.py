"""The fault soak runs end to end in its quick mode and prints its figures (the soak
itself, bench/faults.py, is not part of the suite)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_bench import run_bench


@pytest.mark.timeout(240)
def test_fault_soak_quick_prints_its_figures(tmp_path: Path) -> None:
    output = tmp_path / "RESULTS.md"
    output.write_text("# results\n\nkept as it is\n")
    proc = run_bench("faults.py", "--quick", "--seed", "3", "--output", str(output), limit=180)
    text = output.read_text()
    assert text.startswith("# results\n\nkept as it is\n"), text[:200]
    for figure in (
        "| Jobs submitted | 5 |",
        "Jobs stuck in a running phase at the end",
        "Jobs run twice",
        "Duplicate agent processes seen",
        "Orphan processes after `tf-fleet down --safe`",
    ):
        assert figure in text, f"{figure!r} missing\n{proc.stderr[-3000:]}"
    assert text.count("<!-- faults:start -->") == 1
    assert "The run itself failed" not in text, proc.stderr[-3000:]
