"""Figure 5: idle agent memory (RSS, USS, PSS) and idle CPU, against a bare interpreter."""

from __future__ import annotations

import time

import psutil

from .common import SLEEPER, Reaper, Row, absolute_target, median, pct

MIB = 2**20


def _memory(pid: int) -> tuple[float, float, float]:
    mem = psutil.Process(pid).memory_full_info()
    return mem.rss / MIB, mem.uss / MIB, getattr(mem, "pss", 0) / MIB


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def start_sleeper(reaper: Reaper) -> int:
    """The baseline: a bare interpreter that only sleeps."""
    return reaper.popen(SLEEPER).pid


def memory_rows(agent_pids: dict[str, int], sleeper: int) -> list[Row]:
    samples = [_memory(p) for p in agent_pids.values()]
    bare = _memory(sleeper)
    count = len(samples)
    rows = []
    for index, (label, limit) in enumerate((("RSS", 25.0), ("USS", 18.0), ("PSS", None))):
        values = [s[index] for s in samples]
        row = Row(
            f"Idle agent {label}, one agent (median over {count})",
            median(values),
            "MiB",
            pct(values, 95),
            baseline=bare[index],
            baseline_text="bare sleeping interpreter",
        )
        if limit is not None:
            absolute_target(row, limit, f"≤ {limit:g} MB")
        rows.append(row)
        rows.append(
            Row(
                f"Idle agent {label}, total over {count} agents",
                sum(values),
                "MiB",
                baseline=bare[index] * count,
                baseline_text=f"bare interpreter × {count}",
                note="RSS counts shared pages once per process" if label == "RSS" else "",
            )
        )
    return rows


def idle_cpu_rows(
    agent_pids: dict[str, int], sleeper: int, seconds: float, interval: float
) -> list[Row]:
    """Per-agent CPU % (of one core) over `seconds` of idling at polling_interval."""
    pids = {**agent_pids, "_bare": sleeper}
    before = {n: _cpu(p) for n, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    after = {n: _cpu(p) for n, p in pids.items()}
    percent = {n: 100 * (after[n] - before[n]) / elapsed for n in pids}
    bare = percent.pop("_bare")
    values = list(percent.values())
    # One agent's CPU time moves in 10 ms ticks: the mean over all agents (total CPU / N)
    # resolves far finer than any single agent's figure, so it is the value.
    row = Row(
        f"Idle agent CPU over {seconds:.0f} s at polling_interval {interval:g} "
        f"(% of a core, mean over {len(values)} agents)",
        sum(values) / len(values),
        "%",
        pct(values, 95),
        baseline=bare,
        baseline_text="bare sleeping interpreter",
        note=f"median {median(values):.3f} %; one agent's resolution is "
        f"{100 * 0.01 / elapsed:.3f} % (10 ms ticks)",
    )
    return [absolute_target(row, 0.05)]
