"""Fault soak: jobs on five agents while random faults hit the fleet; no job may be lost,
left running, run twice, and no agent name may run twice.

    .venv/bin/python bench/faults.py [--jobs 100] [--seed 1] [--quick] [--time-limit 900]

A fleet of five tf-agents and the embedded server runs under its own supervisord, on
127.0.0.1, in a private temp dir (/tmp/tfs-*) whose state dir's run/ is a 256 KiB tmpfs.
Every job (2–10 s of `sleep` in its test phase) is queued at once; then, every 2–6 s, one
fault chosen at random (fixed seed; each kind once per round of seven): kill -9 an agent
(supervisord restarts it), kill -9 supervisord then `tf-fleet up`, kill -9 the embedded
server (supervisord's autorestart brings it back), SIGTERM an agent then `up`,
`restart --safe --all` and `up` with a changed config (both in the background), and
run/ filled with dd for 10 s. When every job has ended (or the fault time is over): an
`up`, a bounded grace period for open jobs, the figures from the server's database,
`tf-fleet down --safe`, and a look for anything left running. A thread counts the
processes of each agent name every 10 ms. Every process the soak started, with or
without a supervisord, is ended by pid at the end, even after a failure. Prints the
report and replaces the faults section of bench/RESULTS.md. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import random
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from lib.common import wait_for
from lib.faults_fleet import QUEUE, TAG_VAR, Cmd, SoakFleet
from lib.faults_inject import KINDS, Injector
from lib.faults_proc import AgentSampler, SamplerReport, end_pids, own_processes
from lib.faults_report import FINAL, Findings, Run, analyse, passed, render, write_section

HERE = Path(__file__).resolve().parent


class TimeLimit(BaseException):
    """The hard overall time limit passed: unwind through the clean-up."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def job_body(job_seconds: float, ledger: Path) -> dict:
    marker = "job=$TF_AGENT_JOB_ID agent=$agent_id pid=$$ at=$(date +%s.%N)"
    cmds = (
        f'echo "TFB-START {marker}"; '
        f'echo "$TF_AGENT_JOB_ID $agent_id $$ $(date +%s.%N)" >> {shlex.quote(str(ledger))}; '
        f"sleep {job_seconds:.1f}; echo TFB-END"
    )
    return {"job_queue": QUEUE, "test_data": {"test_cmds": cmds}}


class Soak:
    def __init__(self, args: argparse.Namespace, root: Path):
        self.args = args
        self.rng = random.Random(args.seed)
        self.root = root
        self.fleet = SoakFleet(root)
        self.started = time.monotonic()
        self.injector = Injector(self.fleet, self.rng, self.started, log)
        self.sampler = AgentSampler(self.fleet.agents_prefix, str(root), 0.01)
        self.sampler_report: SamplerReport | None = None
        self.submitted: list[str] = []
        self.up_cmds: list[Cmd] = []
        self.findings: Findings | None = None
        self.orphans: dict[int, str] = {}
        self.down: Cmd | None = None
        self.error: str | None = None
        self.snapshot: tuple[dict, dict, str] | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # -- the run -------------------------------------------------------------------
    def run(self) -> None:
        fleet = self.fleet
        fleet.write()
        self.injector.mount_error = fleet.mount_run_dir()
        self.sampler.start()
        self.up("first up", required=True)
        try:
            wait_for(fleet.ready, 90, "every agent running and polling", 0.1)
        except TimeoutError as exc:
            states = {n: i["statename"] for n, i in fleet.programs().items()}
            raise TimeoutError(f"{exc}: {states}") from exc
        lo, hi = self.args.job_seconds
        for _ in range(self.args.jobs):
            body = job_body(round(self.rng.uniform(lo, hi), 1), fleet.ledger)
            self.submitted.append(fleet.submit(body))
        log(f"{len(self.submitted)} jobs queued; faults begin")
        self.fault_loop()
        self.injector.join(240.0)
        self.injector.stop()
        log("faults over: up, then a grace period for open jobs")
        self.up("up after the faults")
        self.grace()
        self.take_snapshot()
        self.end()

    def fault_loop(self) -> None:
        args = self.args
        end_at = self.started + args.time_limit - args.grace - args.reserve
        count = 0
        kinds = self.kinds()
        while count < args.max_faults and time.monotonic() < end_at:
            gap = self.rng.uniform(*args.gap)
            kind = next(kinds)  # drawn now: the sequence depends on the seed only
            if self.sleep_unless_done(gap) and count >= args.min_faults:
                break
            self.injector.inject(kind)
            count += 1
        if count >= args.max_faults:
            log(f"{count} faults injected (the bound); waiting for the jobs")

    def kinds(self) -> Iterator[str]:
        """Every kind once per round of seven, each round in a random order."""
        while True:
            yield from self.rng.sample(KINDS, len(KINDS))

    def sleep_unless_done(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        return self.open_jobs() == []

    def open_jobs(self) -> list[str] | None:
        try:
            jobs = self.fleet.jobs()
        except Exception:  # noqa: BLE001 - the database may be busy: not done yet
            return None
        return [j for j in self.submitted if (jobs.get(j) or {}).get("state") not in FINAL]

    def up(self, what: str, required: bool = False) -> None:
        cmd = self.fleet.cli("up")
        self.up_cmds.append(cmd)
        log(f"{what}: {cmd.short()}")
        if required and cmd.rc != 0:
            raise RuntimeError(f"{what} failed: {cmd.tail}")

    def grace(self) -> None:
        open_at_stop = self.open_jobs() or []
        deadline = time.monotonic() + self.args.grace
        while time.monotonic() < deadline:
            left = self.open_jobs()
            if left == []:
                break
            time.sleep(1.0)
        left = self.open_jobs() or []
        self.closed_in_grace = [j for j in open_at_stop if j not in left]
        log(f"grace over: {len(open_at_stop)} open at the last fault, {len(left)} still open")

    def take_snapshot(self) -> None:
        fleet = self.fleet
        ledger = fleet.ledger.read_text() if fleet.ledger.exists() else ""
        self.snapshot = (fleet.jobs(), fleet.output_logs(), ledger)

    def end(self) -> None:
        """`down --safe`, then whatever of ours still runs is an orphan."""
        self.down = self.fleet.cli("down", "--safe", "--timeout", "2m", timeout=180)
        log(f"the end: {self.down.short()}")
        time.sleep(1.0)
        self.orphans = own_processes(str(self.root), f"{TAG_VAR}={self.root}")
        if self.orphans:
            log(f"orphans after down: {self.orphans}")
            end_pids(list(self.orphans))

    # -- clean-up, even after a failure ---------------------------------------------
    def cleanup(self) -> None:
        self.injector.stop()
        if self.snapshot is None and (self.fleet.state / "server" / "testflinger.db").exists():
            try:
                self.take_snapshot()
            except Exception:  # noqa: BLE001 - report what we have
                traceback.print_exc()
        if self.fleet.supervisord_pid():
            self.fleet.cli("down", "--force", timeout=90)
        left = own_processes(str(self.root), f"{TAG_VAR}={self.root}")
        if left:
            log(f"ending {len(left)} process(es) of the soak by pid: {sorted(left)}")
            end_pids(list(left))
        self.sampler_report = self.sampler.stop()
        self.fleet.unmount()

    def result(self, command: str, wall: float) -> Run:
        jobs, logs, ledger = self.snapshot or ({}, {}, "")
        findings = analyse(self.submitted, jobs, logs, ledger, self.injector.faults)
        findings.closed_in_grace = getattr(self, "closed_in_grace", [])
        return Run(
            command=command,
            seed=self.args.seed,
            wall=wall,
            findings=findings,
            faults=self.injector.faults,
            sampler=self.sampler_report or SamplerReport(),
            orphans=self.orphans,
            down=self.down,
            up_cmds=self.up_cmds,
            mount_error=self.injector.mount_error,
            error=self.error,
            time_limit=self.args.time_limit,
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=None, help="jobs to run (default 100)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 jobs of 2-4 s, 2 faults")
    parser.add_argument("--max-faults", type=int, default=None, help="bound (default 500)")
    parser.add_argument(
        "--time-limit", type=float, default=None, help="hard overall limit, s (default 900)"
    )
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    quick = args.quick
    args.jobs = args.jobs if args.jobs is not None else (5 if quick else 100)
    args.max_faults = args.max_faults if args.max_faults is not None else (2 if quick else 500)
    args.time_limit = args.time_limit or (120.0 if quick else 900.0)
    args.job_seconds = (2.0, 4.0) if quick else (2.0, 10.0)
    args.gap = (0.5, 1.5) if quick else (2.0, 6.0)
    args.grace = 30.0 if quick else 120.0
    args.min_faults = min(args.max_faults, 2 if quick else 0)  # even once every job ended
    args.reserve = 45.0 if quick else 150.0  # the last fault, `down` and clean-up
    if args.jobs < 1 or args.max_faults < 0:
        parser.error("--jobs must be at least 1 and --max-faults at least 0")
    return args


def _raise(signum: int, _frame: object) -> None:
    if signum == signal.SIGALRM:
        raise TimeLimit()
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    given = list(argv if argv is not None else sys.argv[1:])
    command = ".venv/bin/python bench/faults.py " + shlex.join(given)
    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGALRM, _raise)
    signal.alarm(int(args.time_limit))
    root = Path(tempfile.mkdtemp(prefix="tfs-", dir="/tmp"))
    log(f"fault soak in {root}: {args.jobs} jobs, seed {args.seed}")
    soak = Soak(args, root)
    try:
        soak.run()
    except (Exception, TimeLimit) as exc:  # the report still says what was seen
        traceback.print_exc()
        soak.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        signal.alarm(0)
        log("ending every process of the soak")
        soak.cleanup()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    run = soak.result(command.strip(), soak.elapsed())
    section = render(run)
    print(section)
    if not args.no_write:
        write_section(args.output, section)
        log(f"faults section written to {args.output}")
    return 0 if passed(run) else 1


if __name__ == "__main__":
    sys.exit(main())
