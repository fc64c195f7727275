"""Figure 5: idle agent memory (RSS, USS, PSS) and idle CPU, against bare sleeping
interpreters; agent CPU from exec to its first poll, against a bare interpreter's run."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import psutil

from .common import (
    SLEEPER,
    Reaper,
    Row,
    absolute_target,
    median,
    pct,
    ratio_target,
    read_json,
    sampled,
    wait_for,
)
from .fleet import BenchFleet

MIB = 2**20
SLEEPERS = 20  # baseline processes: p95 over 20 like the agents'


def _memory(pid: int) -> tuple[float, float, float]:
    mem = psutil.Process(pid).memory_full_info()
    return mem.rss / MIB, mem.uss / MIB, getattr(mem, "pss", 0) / MIB


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def start_sleepers(reaper: Reaper, count: int = SLEEPERS, site: bool = False) -> list[int]:
    """The baseline: bare interpreters that only sleep, without site as tf-agent starts
    (with `site`, as `python -c` starts, for a note)."""
    cmd = [a for a in SLEEPER if a != "-S"] if site else SLEEPER
    return [reaper.popen(cmd).pid for _ in range(count)]


def memory_rows(
    agent_pids: dict[str, int], sleepers: list[int], with_site: list[int] | None = None
) -> list[Row]:
    """`with_site`: sleepers started with site, as `python -c` is; their median is noted."""
    samples = [_memory(p) for p in agent_pids.values()]
    bare = [_memory(p) for p in sleepers]
    bare_site = [_memory(p) for p in with_site or []]
    count = len(samples)
    rows = []
    for index, label in enumerate(("RSS", "USS", "PSS")):
        values = [s[index] for s in samples]
        base = [b[index] for b in bare]
        row = sampled(
            f"Idle agent {label}, one agent ({count} agents running)",
            values,
            "MiB",
            base,
            "bare sleeping interpreter, -S",
        )
        if label == "RSS":
            absolute_target(row, 25.0, f"≤ 25 MiB ({row.judged})")
        elif label == "USS":
            ratio_target(row, 1.6)
        if bare_site:
            row.note = (
                f"the baseline runs without site, as tf-agent does; a sleeper with site: "
                f"{median([b[index] for b in bare_site]):.1f} MiB (median of "
                f"{len(bare_site)})"
            )
        rows.append(row)
        rows.append(
            Row(
                f"Idle agent {label}, total over {count} agents",
                sum(values),
                "MiB",
                baseline=median(base) * count,
                baseline_text=f"bare interpreter (median) × {count}",
                note="RSS counts shared pages once per process" if label == "RSS" else "",
                n=count,
                baseline_n=len(base),
            )
        )
    return rows


def idle_cpu_rows(
    agent_pids: dict[str, int], sleepers: list[int], seconds: float, interval: float
) -> list[Row]:
    """Per-agent CPU % (of one core) over `seconds` of idling at polling_interval."""
    pids = {**agent_pids, **{f"_bare{i}": p for i, p in enumerate(sleepers)}}
    before = {n: _cpu(p) for n, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    after = {n: _cpu(p) for n, p in pids.items()}
    percent = {n: 100 * (after[n] - before[n]) / elapsed for n in pids}
    bare = [percent.pop(n) for n in list(percent) if n.startswith("_bare")]
    values = list(percent.values())
    # One agent's CPU time moves in 10 ms ticks: the mean over all agents (total CPU / N)
    # resolves far finer than any single agent's figure, so it is the value judged.
    row = Row(
        f"Idle agent CPU over {seconds:.0f} s at polling_interval {interval:g} "
        f"(% of a core, mean over {len(values)} agents)",
        sum(values) / len(values),
        "%",
        pct(values, 95),
        baseline=sum(bare) / len(bare),
        baseline_text=f"bare sleeping interpreter (mean over {len(bare)})",
        note=f"median {median(values):.3f} %; one agent's resolution is "
        f"{100 * 0.01 / elapsed:.3f} % (10 ms ticks); judged on the mean",
        n=len(values),
        baseline_n=len(bare),
    )
    return [absolute_target(row, 0.05, "≤ 0.05 % (mean)")]


# -- CPU from exec to the first poll --------------------------------------------------


def _task_cpu(pid: int) -> float:
    """CPU seconds of every thread of pid, to the nanosecond (schedstat, not ticks)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


def bare_cpu(*flags: str) -> float:
    """A bare interpreter (the same venv's, `-c pass`) from exec to exit: CPU seconds."""
    pid = os.spawnv(os.P_NOWAIT, sys.executable, [sys.executable, *flags, "-c", "pass"])
    _, _, usage = os.wait4(pid, 0)
    return usage.ru_utime + usage.ru_stime


def _agent_start(fleet: BenchFleet) -> list[str]:
    """The words before `-c` of the fleet's first agent program (`python -S boot.py`)."""
    program = fleet.state / "supervisor" / "conf.d" / f"{fleet.names[0]}.conf"
    for line in program.read_text().splitlines():
        if line.startswith("command="):
            words = line[len("command=") :].split()
            return words[: words.index("-c")]
    raise RuntimeError(f"no command= in {program}")


def agent_cpu(fleet: BenchFleet, root: Path, index: int, reaper: Reaper) -> float:
    """tf-agent started as supervisord starts it (the program's command, a config in the
    JSON form tf-fleet writes), against the fleet's server, under a name of its own: CPU
    seconds at its first poll. (A YAML config would make the agent load `site` and PyYAML,
    which no agent of a fleet does.)"""
    template = fleet.state / "agents" / fleet.names[0] / "testflinger-agent.conf"
    text = template.read_text()
    conf = json.loads(text[text.index("{") :])  # after tf-fleet's comment line
    name = f"cpu{index:03d}"
    home = root / name
    conf.update(
        agent_id=name,
        execution_basedir=str(home / "run"),
        logging_basedir=str(home / "logs"),
        results_basedir=str(home / "results"),
    )
    home.mkdir(parents=True, exist_ok=True)
    path = home / "testflinger-agent.conf"
    path.write_text(json.dumps(conf, indent=2))
    status = home / f"{name}.json"
    cmd = [*_agent_start(fleet), "-c", str(path), "--run-dir", str(home)]
    cmd += ["--restart-dir", str(home)]
    proc = reaper.popen(cmd)
    try:

        def polled() -> bool:
            data = read_json(status)
            return bool(data and data.get("last_poll"))

        wait_for(polled, 30, f"{name}'s first poll", 0.002)
        return _task_cpu(proc.pid)
    finally:
        reaper.end([proc.pid])


def startup_cpu_rows(fleet: BenchFleet, root: Path, reaper: Reaper, reps: int) -> list[Row]:
    agent: list[float] = []
    bare: list[float] = []
    with_site: list[float] = []
    for i in range(reps):
        bare.append(bare_cpu("-S"))
        with_site.append(bare_cpu())
        agent.append(agent_cpu(fleet, root, i, reaper))
    ms_agent = [v * 1000 for v in agent]
    ms_bare = [v * 1000 for v in bare]
    return [
        sampled(
            "Bare interpreter (`python -S -c pass`), exec → exit, CPU",
            ms_bare,
            "ms",
            note="baseline; the same venv's interpreter without site, as tf-agent starts "
            f"(with site and the venv's .pth files: {1000 * median(with_site):.1f} ms)",
        ),
        ratio_target(
            sampled(
                "tf-agent CPU, exec → first poll",
                ms_agent,
                "ms",
                ms_bare,
                "bare interpreter to exit",
                note="every thread's CPU (schedstat) when last_poll is first written",
            ),
            3.0,
        ),
    ]
