"""A fixed corpus of mutated fleet files (seeded, 400 mutations): each is loaded and
rendered in-process, gives a Fleet or a FleetError (exit 0 or 2) and never another
exception, within 1 s and 100 MB; a handful also go through `tf-fleet validate`."""

from __future__ import annotations

import random
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from multiagent.fleet.model.fleetfile import FleetError, load_fleet
from multiagent.fleet.model.render import RenderContext, render

SEED = 20240610
COUNT = 400

SEEDS = [
    """\
server: {embedded: true, port: 8585}
state_dir: state
supervisor: {mode: private}
restart: {method: signal, restart_dir: /tmp, timeout: 6h}
defaults: &base
  job_queues: [lab]
  polling_interval: 10
  provision_command: my-connector provision -c {agent_dir}/default.yaml testflinger.json
  environment: {TOKEN: abc, LEVEL: 3}
agents:
  dut-01:
    location: rack 3
    device: {device_ip: 10.0.0.5, secret: "s3cr3t"}
  dut-02:
    <<: *base
    job_queues: [lab, lab-arm]
    agent_command: testflinger-agent
    user: nobody
    stopwaitsecs: 40
""",
    """\
server: https://tf.example.com
agents:
  a1: {job_queues: [q], global_timeout: 3600, output_timeout: 60}
  a2: {job_queues: [q], advertised_queues: {q: "a queue"}, logging_level: INFO}
""",
]

FRAGMENTS = [
    "&a",
    "*a",
    "<<: *a",
    "!!python/object:os.system",
    "!tag",
    "!!binary",
    "!!set",
    "? ",
    "[",
    "]",
    "{",
    "}",
    ":",
    "- ",
    "\t",
    "\0",
    "\x07",
    "\ufeff",
    "\u202e",
    "'",
    '"',
    "%",
    "%(here)s",
    "\\",
    "\n",
    "  ",
    "#",
    "|",
    ">",
    "---",
    "...",
    "~",
    "null",
    "true",
    "0x10",
    "1e999",
    ".nan",
    "-1",
    "9" * 30,
    "2024-01-01",
    "&b [*b]",
    "{<<: *b}",
    "x-1",
    "X1",
    "tf-fleet-server",
    "../..",
    "/dev/zero",
    "user: root\nx",
    'state_dir: "\\0"',
    "server: {embedded: false}",
    "restart: {timeout: 0}",
    "agents: []",
    "agents: 1",
    "job_queues: 5",
    "environment: {A-B: 1}",
    "device: [1]",
    "*undefined",
]


def _mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 4)):
        where = rng.randint(0, len(text))
        how = rng.random()
        if how < 0.45:
            text = text[:where] + rng.choice(FRAGMENTS) + text[where:]
        elif how < 0.65:
            text = text[:where] + text[where + rng.randint(1, 20) :]
        elif how < 0.8:
            lines = text.splitlines(keepends=True)
            i = rng.randrange(len(lines)) if lines else 0
            text = "".join(lines[:i] + lines[i : i + 1] * rng.randint(2, 5) + lines[i + 1 :])
        elif how < 0.9:
            text = text[:where] + chr(rng.randint(0, 0x2FF)) + text[where + 1 :]
        else:
            # Re-anchor a section and alias it many times: a cheap alias bomb.
            text = (
                "z: &z ["
                + ",".join(["x"] * 9)
                + "]\n"
                + "".join(
                    f"z{i}: &z{i} [" + ",".join([f"*z{'' if i == 0 else i - 1}"] * 9) + "]\n"
                    for i in range(rng.randint(1, 9))
                )
                + text
            )
    return text


def _corpus() -> list[bytes]:
    rng = random.Random(SEED)
    corpus = []
    for _ in range(COUNT):
        data = _mutate(rng, rng.choice(SEEDS)).encode("utf-8", "surrogatepass")
        if rng.random() < 0.05:  # a byte that is not UTF-8
            where = rng.randint(0, len(data))
            data = data[:where] + bytes([rng.choice([0x80, 0xC3, 0xFF, 0xFE])]) + data[where:]
        corpus.append(data)
    return corpus


CORPUS = _corpus()


def _load_and_render(path: Path) -> int:
    """The exit status tf-fleet would give: 0 (a Fleet that renders) or 2 (FleetError)."""
    try:
        fleet = load_fleet(path)
    except FleetError:
        return 2
    render(fleet, RenderContext(python=sys.executable, program_dir=path.parent / "conf.d"))
    return 0


def test_mutated_fleet_files_give_a_fleet_or_a_validation_error(tmp_path: Path):
    assert len(CORPUS) >= 200
    outcomes = {0: 0, 2: 0}
    slowest = (0.0, -1)
    for index, data in enumerate(CORPUS):
        path = tmp_path / f"fleet-{index}.yaml"
        path.write_bytes(data)
        tracemalloc.start()
        start = time.monotonic()
        try:
            status = _load_and_render(path)
        except Exception as exc:  # the one thing that must not happen
            pytest.fail(f"mutation {index} raised {type(exc).__name__}: {exc}\n{data!r}")
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        elapsed = time.monotonic() - start
        outcomes[status] += 1
        slowest = max(slowest, (elapsed, index))
        assert peak < 100 * 1024 * 1024, f"mutation {index} peaked at {peak} bytes\n{data!r}"
    # The corpus exercises both sides, not only the error path.
    assert outcomes[0] >= 10 and outcomes[2] >= 100, outcomes


@pytest.mark.parametrize("index", [3, 57, 111, 199, 256, 333])
def test_mutated_fleet_files_through_the_command_line(tmp_path: Path, index: int):
    path = tmp_path / "fleet.yaml"
    path.write_bytes(CORPUS[index])
    proc = subprocess.run(
        [sys.executable, "-m", "multiagent", "-c", str(path), "validate"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode in (0, 2), proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr.lower()
    assert proc.returncode == _load_and_render(path)
