"""Measure what tf-fleet exists for, each figure beside a baseline measured in the same run.

    .venv/bin/python bench/run.py [--quick | --smoke] [--agents N] [--output PATH]

Everything runs on loopback in a private temp dir (/tmp/tfb-*): fleets through the real
`tf-fleet` command and their own supervisord, a bare supervisord for the baselines, and a
local server. Every fleet it started is stopped with `tf-fleet down --force`, then every
process it started or saw is ended by pid. Rewrites bench/RESULTS.md (or --output).
Full run under 15 minutes, --quick under 2, --smoke (for the test) well under 1.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lib import footprint, jobs, report, restart, server, startup
from lib.common import Reaper, Row, median
from lib.fleet import BenchFleet

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Profile:
    mode: str
    reps: int  # single-agent restarts per variant
    small: int  # the rolling-restart fleet (50 in the targets)
    big: int  # the big fleet (200 in the targets)
    idle_seconds: float
    status_reps: int
    up_reps: int
    job_reps: int
    server_seconds: float
    server_jobs: int


def profile(args: argparse.Namespace) -> Profile:
    if args.smoke:
        big = args.agents or 5
        return Profile("smoke", 1, min(5, big), big, 2, 2, 2, 2, 2, 50)
    if args.quick:
        big = args.agents or 20
        return Profile("quick", 5, min(10, big), big, 10, 5, 3, 5, 5, 300)
    big = args.agents or 200
    return Profile("full", 20, min(50, big), big, 60, 10, 5, 10, 20, 2000)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, prof: Profile, root: Path):
        self.prof = prof
        self.root = root
        self.reaper = Reaper()
        self.fleets: list[BenchFleet] = []
        self.sections: dict[int, list[Row]] = {}
        self.errors: list[str] = []

    def section(self, number: int, what: str, func: Callable[[], list[Row]]) -> None:
        log(f"figure {number}: {what}")
        try:
            self.sections.setdefault(number, []).extend(func())
        except Exception as exc:  # noqa: BLE001 - one figure failing must not lose the rest
            traceback.print_exc()
            self.errors.append(f"figure {number} ({what}): {type(exc).__name__}: {exc}")

    def rows(self) -> list[Row]:
        return [row for number in sorted(self.sections) for row in self.sections[number]]

    def fleet(self, label: str, count: int, **kwargs: object) -> BenchFleet:
        fleet = BenchFleet(self.root, label, self.reaper)
        fleet.write([f"b{i:03d}" for i in range(1, count + 1)], **kwargs)  # type: ignore[arg-type]
        self.fleets.append(fleet)
        return fleet

    def cold(self, fleet: BenchFleet, target_ratio: float | None) -> list[Row]:
        count = len(fleet.names)
        bare = startup.bare_supervisord(self.root / f"bare{count}", count, self.reaper)
        wall, polled = startup.cold_up(fleet)
        return startup.cold_up_rows(count, wall, polled, bare, target_ratio)

    # -- the run ----------------------------------------------------------------------
    def run(self) -> None:
        prof = self.prof
        small = self.fleet("s", prof.small)
        big_is_small = prof.big <= prof.small
        self.section(
            3, f"cold up of {prof.small}", lambda: self.cold(small, 1.5 if big_is_small else None)
        )
        self.section(3, "no-change up", lambda: [startup.no_change_up(small, prof.up_reps)])
        single: list[float] = []

        def restarts() -> list[Row]:
            samples = restart.single_restarts(small, small.names[0], prof.reps)
            single.extend(samples["cli-signal"])
            return restart.restart_rows(samples, prof.reps)

        self.section(1, f"single-agent restarts x{prof.reps}", restarts)
        self.section(
            2,
            "rolling restarts",
            lambda: restart.rolling_rows(small, median(single) if single else 0.0, (1, 10)),
        )
        big = small
        if not big_is_small:
            small.down()
            big = self.fleet("b", prof.big)
            self.section(3, f"cold up of {prof.big}", lambda: self.cold(big, 1.5))
            self.section(3, "no-change up", lambda: [startup.no_change_up(big, prof.up_reps)])
        self.section(4, "status", lambda: startup.status_rows(big, prof.status_reps))
        self.section(5, "agent footprint", lambda: self.footprint(big))
        big.down()
        self.section(6, "job overhead", self.job_overhead)
        self.section(
            7,
            "server",
            lambda: server.server_rows(
                self.root, self.reaper, prof.big, prof.server_seconds, prof.server_jobs
            ),
        )

    def footprint(self, fleet: BenchFleet) -> list[Row]:
        sleeper = footprint.start_sleeper(self.reaper)
        fleet.wait_ready(timeout=120)
        time.sleep(1.0)
        pids = fleet.agent_pids()
        rows = footprint.memory_rows(pids, sleeper)
        rows += footprint.idle_cpu_rows(pids, sleeper, self.prof.idle_seconds, 10)
        self.reaper.end([sleeper])
        return rows

    def job_overhead(self) -> list[Row]:
        fleet = self.fleet("j", 0, agents={jobs.AGENT: jobs.job_agent()})
        fleet.write([jobs.AGENT], agents={jobs.AGENT: jobs.job_agent()})
        try:
            fleet.up()
            return jobs.job_rows(fleet, self.prof.job_reps)
        finally:
            fleet.down()

    def cleanup(self) -> None:
        for fleet in self.fleets:
            fleet.down()
        self.reaper.end()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer repetitions and agents")
    mode.add_argument(
        "--smoke",
        action="store_true",
        help="minimal repetitions, 2 s idle CPU: checks the bench runs",
    )
    parser.add_argument(
        "--agents",
        type=int,
        default=None,
        help="cap for the big-fleet figures (default 200; quick 20; smoke 5)",
    )
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    return parser.parse_args(argv)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops everything


def compile_bytecode() -> None:
    """Measure the product as installed: `pip install .` leaves .pyc files, while an
    editable install under PYTHONDONTWRITEBYTECODE would compile every module at every
    start of every agent and command, and the figures would time the compiler."""
    import multiagent

    package = Path(multiagent.__file__).parent
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(package)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prof = profile(args)
    signal.signal(signal.SIGTERM, _terminate)
    root = Path(tempfile.mkdtemp(prefix="tfb-", dir="/tmp"))
    log(f"{prof.mode} run in {root}")
    compile_bytecode()
    started = time.monotonic()
    bench = Bench(prof, root)
    try:
        bench.run()
    finally:
        log("stopping everything this run started")
        bench.cleanup()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    given = list(argv if argv is not None else sys.argv[1:])
    if "--output" in given:  # the output path is not part of what was measured
        index = given.index("--output")
        del given[index : index + 2]
    command = "python bench/run.py " + shlex.join(given)
    report.write(
        args.output,
        bench.rows(),
        prof.mode,
        time.monotonic() - started,
        command.strip(),
        bench.errors,
    )
    log(f"wrote {args.output} in {time.monotonic() - started:.0f} s")
    print(args.output.read_text())
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
