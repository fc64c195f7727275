"""Measure what tf-fleet exists for, each figure beside a baseline measured in the same run.

    .venv/bin/python bench/run.py [--quick | --smoke] [--agents N] [--output PATH]

It measures what a user runs: it builds a wheel of this tree, installs it into a fresh
venv and runs itself there with `--installed`, which measures the tf-fleet installed in
the running interpreter's venv and refuses an editable install.

Everything runs on loopback in a private temp dir (/tmp/tfb-*): fleets through the real
`tf-fleet` command and their own supervisord, bare supervisords for the baselines, and a
local server. Every fleet it started is stopped with `tf-fleet down` (`--force` if that
fails), then every process it started or saw is ended by pid, then anything whose command
line names the temp dir. Rewrites bench/RESULTS.md (or --output), keeping the section
bench/faults.py writes. Full run (200 and 500 agents) under 20 minutes, --quick under 3,
--smoke (for the test) about 1, the install included.
"""

from __future__ import annotations

import argparse
import os
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

import psutil
from lib import breakdown, footprint, install, jobs, report, restart, server, startup
from lib.bare import BareSupervisor, sleepers
from lib.breakdown import Start
from lib.common import Reaper, Row
from lib.fleet import BenchFleet

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Profile:
    mode: str
    sizes: tuple[int, ...]  # fleet sizes for cold up / down (the 200 and 500)
    runs: int  # cold up + down runs per size (p95 of 3 in the targets)
    reps: int  # single-agent restarts per variant
    rolls: int  # rolling restarts (and bare rolls)
    idle_seconds: float
    status_reps: int
    cpu_reps: int
    job_reps: int
    server_seconds: float
    server_jobs: int


def profile(args: argparse.Namespace) -> Profile:
    sizes = tuple(int(n) for n in args.agents.split(",")) if args.agents else None
    if args.smoke:
        return Profile("smoke", sizes or (5,), 1, 1, 1, 2, 2, 2, 2, 2, 50)
    if args.quick:
        return Profile("quick", sizes or (20,), 3, 5, 2, 10, 5, 5, 5, 5, 300)
    return Profile("full", sizes or (200, 500), 3, 20, 5, 30, 20, 20, 10, 20, 2000)


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
        self.breakdowns: list[str] = []  # where each size's cold start went

    def section(self, number: int, what: str, func: Callable[[], list[Row]]) -> None:
        log(f"figure {number}: {what}")
        try:
            self.sections.setdefault(number, []).extend(func())
        except Exception as exc:  # noqa: BLE001 - one figure failing must not lose the rest
            if TERMINATING:
                raise  # SIGTERM: stop here (cleanup runs in main's finally)
            traceback.print_exc()
            self.errors.append(f"figure {number} ({what}): {type(exc).__name__}: {exc}")

    def rows(self) -> list[Row]:
        return [row for number in sorted(self.sections) for row in self.sections[number]]

    def fleet(self, label: str, count: int, **kwargs: object) -> BenchFleet:
        fleet = BenchFleet(self.root, label, self.reaper)
        fleet.write([f"b{i:03d}" for i in range(1, count + 1)], **kwargs)  # type: ignore[arg-type]
        self.fleets.append(fleet)
        return fleet

    # -- the run ----------------------------------------------------------------------
    def run(self) -> None:
        for size in self.prof.sizes:
            self.section(
                3,
                f"cold up and down of {size}, {self.prof.runs} runs",
                lambda size=size: self.scale(size),  # type: ignore[misc]
            )
        self.section(6, "job overhead", self.job_overhead)
        prof = self.prof
        self.section(
            7,
            f"server, {prof.sizes[-1]} agents polling",
            lambda: server.server_rows(
                self.root, self.reaper, prof.sizes[-1], prof.server_seconds, prof.server_jobs
            ),
        )

    def scale(self, size: int) -> list[Row]:
        """`runs` cold up -> polling and down cycles of `size` agents, alternating with a
        bare supervisord doing the same with as many sleepers; the last run's fleet also
        carries the restart figures (smallest size) and the status and footprint figures
        (largest size)."""
        ups: list[Start] = []
        downs: list[float] = []
        bare_ups: list[Start] = []
        bare_downs: list[float] = []
        for run in range(self.prof.runs):
            bare = BareSupervisor(self.root / f"bare{size}-{run}", sleepers(size), self.reaper)
            log(f"  {size}: bare supervisord, run {run + 1}")
            bare_up, bare_down = startup.bare_cycle(bare)
            bare_ups.append(bare_up)
            bare_downs.append(bare_down)
            log(
                f"  {size}: cold up, run {run + 1} "
                f"(bare {bare_up.last_running:.1f} s up, {bare_down:.1f} s down)"
            )
            fleet = self.fleet(f"f{size}-{run}", size)
            up = startup.cold_up(fleet)
            ups.append(up)
            if run == self.prof.runs - 1:
                self.extras(fleet, size)
            log(f"  {size}: down, run {run + 1} (up {startup.ready(up):.1f} s to all polling)")
            downs.append(startup.down(fleet))
        self.breakdowns.append(breakdown.section(size, ups[-1], bare_ups[-1]))
        return [
            *startup.cold_rows(size, ups, bare_ups),
            *startup.down_rows(size, downs, bare_downs),
        ]

    def extras(self, fleet: BenchFleet, size: int) -> None:
        prof = self.prof
        if size == prof.sizes[0]:
            self.section(
                1,
                f"single-agent restarts x{prof.reps}",
                lambda: restart.restart_rows(
                    restart.single_restarts(
                        fleet, fleet.names[0], prof.reps, self.root / "respawn", self.reaper
                    )
                ),
            )
            self.section(
                2,
                f"rolling restarts of {size} x{prof.rolls}",
                lambda: restart.rolling_rows(
                    fleet, self.root / f"roll{size}", self.reaper, 10, prof.rolls
                ),
            )
        if size == prof.sizes[-1]:
            self.section(
                4,
                f"no-change up and status x{prof.status_reps}",
                lambda: startup.status_rows(fleet, prof.status_reps),
            )
            self.section(5, "agent footprint", lambda: self.footprint(fleet))

    def footprint(self, fleet: BenchFleet) -> list[Row]:
        sleepers_ = footprint.start_sleepers(self.reaper)
        with_site = footprint.start_sleepers(self.reaper, 5, site=True)
        try:
            fleet.wait_ready(timeout=300)
            time.sleep(1.0)
            pids = fleet.agent_pids()
            # Memory after the idle window: by then (30 s, polling every 10 s) each agent
            # has stayed idle a polling interval and given back what start-up left.
            rows = footprint.idle_cpu_rows(pids, sleepers_, self.prof.idle_seconds, 10)
            rows = footprint.memory_rows(pids, sleepers_, with_site) + rows
        finally:
            self.reaper.end(sleepers_ + with_site)
        rows += footprint.startup_cpu_rows(
            fleet, self.root / "cpu", self.reaper, self.prof.cpu_reps
        )
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
        end_by_command_line(self.root)


def end_by_command_line(root: Path) -> None:
    """Anything still running whose command line names this run's temp dir."""
    me = os.getpid()
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.info["pid"] != me and any(str(root) in a for a in proc.info["cmdline"] or ()):
                pids.append(proc.info["pid"])
        except (psutil.Error, TypeError):
            continue
    if pids:
        log(f"ending {len(pids)} leftover process(es) by pid: {pids}")
        Reaper().end(pids)


def remarks(prof: Profile) -> list[str]:
    notes = []
    try:
        inotify = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    except (OSError, ValueError):
        inotify = 0
    if inotify and max(prof.sizes) > inotify:
        notes.append(
            f"fs.inotify.max_user_instances is {inotify} on this host: with "
            f"{max(prof.sizes)} agents under one user, the agents past that limit are"
            " woken by dnotify instead, which names no file (the bench leaves the host's"
            " settings alone)."
        )
    return notes


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
        default=None,
        help="fleet sizes, comma-separated (default 200,500; quick 20; smoke 5)",
    )
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument(
        "--installed",
        action="store_true",
        help="measure the tf-fleet installed in this interpreter's venv (not an editable"
        " one) instead of a wheel of this tree in a fresh venv",
    )
    return parser.parse_args(argv)


TERMINATING = False


def _terminate(signum: int, _frame: object) -> None:
    global TERMINATING
    TERMINATING = True  # an error raised while unwinding must not let the run go on
    raise SystemExit(128 + signum)  # unwinds through the finally that stops everything


def in_fresh_venv(argv: list[str]) -> int:
    """Install a wheel of this tree into a fresh venv and run the bench there; SIGTERM is
    passed on, so the run still stops everything it started."""
    root = Path(tempfile.mkdtemp(prefix="tfb-venv-", dir="/tmp"))
    child: subprocess.Popen[bytes] | None = None

    def pass_on(signum: int, _frame: object) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, pass_on)
    try:
        try:
            python = install.wheel_venv(root, log)
        except install.InstallError as exc:
            log(f"cannot install the package to measure it: {exc}")
            return 2
        env = dict(os.environ, TF_BENCH_INSTALL=WHEEL_VENV)
        child = subprocess.Popen([str(python), __file__, *argv, "--installed"], env=env)
        return child.wait()
    finally:
        if child is not None and child.poll() is None:
            child.terminate()
            child.wait()
        end_by_command_line(root)  # every process of the run ran this venv's interpreter
        shutil.rmtree(root, ignore_errors=True)


WHEEL_VENV = "a wheel of this tree, installed with its dependencies into a fresh venv"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    given = list(argv if argv is not None else sys.argv[1:])
    if not args.installed:
        return in_fresh_venv(given)
    why_not = install.installed_as_wheel()
    if why_not:
        log(
            f"refusing to measure: {why_not}. Its interpreters run the editable finder at"
            " every start, which a user's `pip install .` does not: the figures would not"
            " be a user's. Run without --installed (it installs a wheel of this tree into a"
            " fresh venv), or with the python of a venv holding `pip install .`"
        )
        return 2
    prof = profile(args)
    signal.signal(signal.SIGTERM, _terminate)
    root = Path(tempfile.mkdtemp(prefix="tfb-", dir="/tmp"))
    log(f"{prof.mode} run in {root}")
    started = time.monotonic()
    bench = Bench(prof, root)
    try:
        bench.run()
    finally:
        log("stopping everything this run started")
        bench.cleanup()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    given = [a for a in given if a != "--installed"]
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
        remarks(prof),
        os.environ.get("TF_BENCH_INSTALL") or f"the tf-fleet installed in {sys.prefix}",
        bench.breakdowns,
    )
    log(f"wrote {args.output} in {time.monotonic() - started:.0f} s")
    print(args.output.read_text())
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
