"""Issue cases 7 and 8: a fleet file cannot exhaust the host, and agent names that would
share a program, a restart file or a directory are refused, naming both agents."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

GOOD = "agents:\n  a1:\n    job_queues: [q]\n"

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)
)
MERGE_BOMB = "m0: &m0 {k: 1, j: 2}\n" + "".join(
    f"m{i + 1}: &m{i + 1} {{<<: [*m{i}, *m{i}], q{i}: 1}}\n" for i in range(40)
)

# (id, bytes of the file, a fragment of the one message)
HOSTILE = [
    ("billion-laughs", (LAUGHS + GOOD).encode(), "expands to more than"),
    ("merge-key-bomb", (MERGE_BOMB + GOOD).encode(), "expands to more than"),
    ("recursive-alias", ("a: &a [1, *a]\n" + GOOD).encode(), "refers to the value that contains"),
    ("recursive-merge", ("a: &a {<<: *a}\n" + GOOD).encode(), "refers to the value that contains"),
    ("deep-flow", ("a: " + "[" * 100_000 + "]" * 100_000 + "\n" + GOOD).encode(), "nest"),
    ("deep-block", ("a:\n" + "".join(" " * i + "- \n" for i in range(1, 200)) + GOOD).encode(), ""),
    ("deep-mapping", ("a: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n" + GOOD).encode(), "nest"),
    ("python-tag", ("x: !!python/object/apply:os.system ['true']\n" + GOOD).encode(), "tag"),
    ("python-name", ("x: !!python/name:os.system\n" + GOOD).encode(), "tag"),
    ("unknown-tag", ("x: !vault secret\n" + GOOD).encode(), "tag '!vault' is not allowed"),
    ("set-tag", ("x: !!set {a}\n" + GOOD).encode(), "tag"),
    ("bad-utf8", b"agents:\n  a1:\n    location: caf\xe9\n", "not UTF-8"),
    ("nul-byte", (GOOD + "x: a\0b\n").encode(), "NUL"),
    ("nul-state-dir", ('state_dir: "\\0"\n' + GOOD).encode(), "state_dir"),
    ("nul-restart-dir", ('restart: {restart_dir: "/tmp/\\0"}\n' + GOOD).encode(), "restart_dir"),
    ("huge-int", ("x: " + "9" * 50_000 + "\n" + GOOD).encode(), "cannot read the value"),
    ("complex-key", ("? [a, b]\n: 1\n" + GOOD).encode(), "a key must be a plain value"),
    ("control-char", (GOOD + "x: \x07\n").encode(), "U+0007"),
    ("user-newline", (GOOD + '    user: "root\\nx"\n').encode(), "user"),
    ("too-large", (GOOD + "#" * (3 * 1024 * 1024) + "\n").encode(), "larger than"),
]


def _validate(path: Path) -> tuple[subprocess.CompletedProcess[str], float, int]:
    """`tf-fleet validate` in a child bounded to 1 GB of address space; its wall time and
    peak RSS (KB)."""
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30));"
        " from multiagent.fleet.cli import main; sys.exit(main())"
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code, "-c", str(path), "validate"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    elapsed = time.monotonic() - start
    return proc, elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


@pytest.mark.parametrize("case", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_fleet_file_is_a_validation_error(tmp_path: Path, case):
    _, data, fragment = case
    path = tmp_path / "fleet.yaml"
    path.write_bytes(data)
    proc, elapsed, _ = _validate(path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "log" not in proc.stderr.lower(), proc.stderr
    assert f"error: {path}" in proc.stderr and fragment in proc.stderr, proc.stderr
    assert "nothing was changed" in proc.stderr
    # The interpreter alone takes ~0.3 s to start on a loaded host: the load itself is
    # timed in-process by test_hostile_files_load_fast.
    assert elapsed < 10, elapsed


def test_hostile_files_load_fast_and_small(tmp_path: Path):
    """Each hostile file is refused within 1 s and 100 MB, measured in-process."""
    import tracemalloc

    from multiagent.fleet.model.fleetfile import FleetError, load_fleet

    for name, data, _ in HOSTILE:
        path = tmp_path / f"{name}.yaml"
        path.write_bytes(data)
        tracemalloc.start()
        start = time.monotonic()
        with pytest.raises(FleetError) as info:
            load_fleet(path)
        elapsed = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert elapsed < 1.0, (name, elapsed)
        assert peak < 100 * 1024 * 1024, (name, peak)
        assert all(p.file == str(path) for p in info.value.problems)


def test_billion_laughs_names_its_line(tmp_path: Path):
    from multiagent.fleet.model.fleetfile import FleetError, load_fleet

    path = tmp_path / "fleet.yaml"
    path.write_text(LAUGHS + GOOD)
    with pytest.raises(FleetError) as info:
        load_fleet(path)
    (problem,) = info.value.problems
    assert problem.line is not None and 1 <= problem.line <= 9


def test_merge_keys_still_work(tmp_path: Path):
    from multiagent.fleet.model.fleetfile import load_fleet

    path = tmp_path / "fleet.yaml"
    path.write_text(
        "defaults: &base {job_queues: [lab], location: rack}\n"
        "agents:\n"
        "  a1: {<<: *base, location: here}\n"
        "  a2:\n    <<: *base\n"
    )
    fleet = load_fleet(path)
    assert fleet.agents["a1"].upstream["location"] == "here"
    assert fleet.agents["a2"].upstream["job_queues"] == ["lab"]


COLLIDING = [
    # (names, the later name refused, the earlier one it collides with, fragment)
    (["x-1", "x1"], "x1", "x-1", "TESTFLINGER-DEVICE-RESTART-x1"),
    (["x1", "x-1"], "x-1", "x1", "TESTFLINGER-DEVICE-RESTART-x1"),
    (["a-b-c", "ab-c"], "ab-c", "a-b-c", "TESTFLINGER-DEVICE-RESTART-abc"),
    (["Dut-01", "dut-01"], "dut-01", "Dut-01", "only by case"),
    (["dut-01", "DUT01"], "DUT01", "dut-01", "restart file"),
]


@pytest.mark.parametrize("names,refused,other,fragment", COLLIDING)
def test_colliding_agent_names_are_refused(tmp_path: Path, names, refused, other, fragment):
    path = tmp_path / "fleet.yaml"
    path.write_text("agents:\n" + "".join(f"  {n}:\n    job_queues: [q]\n" for n in names))
    proc, _, _ = _validate(path)
    assert proc.returncode == 2, proc.stderr
    line = next(line for line in proc.stderr.splitlines() if "collides" in line or "case" in line)
    assert f"agent {refused!r}" in line and f"agent {other!r}" in line, line
    assert fragment in line, line


@pytest.mark.parametrize("name", ["TF-Fleet-Server", "tf-fleet-server", "tffleet-server"])
def test_names_of_the_server_program_are_reserved(tmp_path: Path, name):
    from multiagent.fleet.model.fleetfile import FleetError, load_fleet

    path = tmp_path / "fleet.yaml"
    path.write_text(f"agents:\n  {name}:\n    job_queues: [q]\n")
    with pytest.raises(FleetError, match="reserved"):
        load_fleet(path)


@pytest.mark.parametrize(
    "name", ["-x", ".x", "x/y", "x y", "ü1", "x:1", "a" * 65, "x\\y", "..", "x%1", "1\n"]
)
def test_agent_names_outside_the_pattern_are_refused(tmp_path: Path, name):
    from multiagent.fleet.model.fleetfile import FleetError, load_fleet

    path = tmp_path / "fleet.yaml"
    path.write_text(f"agents:\n  {name!r}:\n    job_queues: [q]\n".replace("'", '"'))
    with pytest.raises(FleetError, match="an agent name must be"):
        load_fleet(path)


def test_restart_safe_of_one_name_restarts_only_that_agent(fleet_env):
    """Case 8 on a live fleet: `x-1` is refused beside `x1`, so the fleet that `up` runs
    has one agent per restart file and `restart --safe x1` restarts x1 alone."""
    fleet = fleet_env.agent_fleet(["x1", "x-1"])
    proc = fleet_env.up(fleet, check=False)
    assert proc.returncode == 2 and "collides with agent 'x1'" in proc.stderr, proc.stderr
    assert not fleet_env.processes()  # nothing was started
    fleet["agents"] = {"x1": fleet["agents"]["x1"], "y-1": fleet["agents"]["x-1"]}
    pids = fleet_env.start(fleet)
    fleet_env.run("restart", "--safe", "x1", timeout=60)
    after = {a: fleet_env.status()[a]["pid"] for a in ("x1", "y-1")}
    assert after["x1"] != pids["x1"] and after["y-1"] == pids["y-1"], (pids, after)
