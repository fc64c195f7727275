"""Per-phase overhead of tf-agent and of upstream's testflinger-agent with upstream's
`testflinger-device-connector fake_connector`, the same jobs on one server in one run.

    .venv/bin/python bench/connector_overhead.py [--jobs 10] [--upstream DIR]

Installs upstream's common, device-connectors and agent from DIR (default: the
`shared/upstream-testflinger` folder beside the clone) into a temporary venv, starts
`python -m multiagent.server` on a free loopback port, one tf-agent and one upstream
agent (each its own queue, polling every second, running side by side), and gives each
the same N jobs (setup, provision, test, cleanup; all through fake_connector but setup,
an echo as in labs). Every phase's command is wrapped to log when it starts and ends;
a phase's overhead is the gap between one phase's command ending and the next one's
starting (the agent's own work: posts, banner, checks). Prints the median, p90 and max
gap per agent and the median job time from the first command's start to the last's end.
Everything it starts is stopped at the end (by pid).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Any

import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "device-connectors", "agent")
PHASES = ("setup", "provision", "test", "cleanup")


def install_upstream(upstream: Path, home: Path) -> Path:
    venv.create(home, with_pip=True)
    env = dict(os.environ, SETUPTOOLS_SCM_PRETEND_VERSION="1.0.0")
    cmd = [str(home / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(
        [*cmd, *(str(upstream / p) for p in PACKAGES)],
        check=True,
        env=env,
        capture_output=True,
        timeout=900,
    )
    return home / "bin"


def wait_for(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def start_server(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "multiagent.server", "--host", "127.0.0.1", "--port", str(port)]
    with open(base / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [*cmd, "--db", str(base / "server.db"), "--any-provision-data"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def up() -> bool:
        try:
            return requests.get(f"{url}/v1", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_for(up, 30, "the server")
    return proc, url


def timed(command: str, log: Path, phase: str) -> str:
    """`command`, logging `phase start end` (ns) to `log` around it, keeping its exit code."""
    return f's=$(date +%s%N); {command}; r=$?; echo "{phase} $s $(date +%s%N)" >> {log}; exit $r'


def agent_conf(name: str, url: str, base: Path, bin_dir: Path) -> dict[str, Any]:
    device = base / "fake-device.yaml"
    device.write_text(yaml.safe_dump({"device_ip": "127.0.0.1", "agent_name": name}))
    connector = f"{bin_dir}/testflinger-device-connector fake_connector"
    log = base / "phases.log"
    commands = {
        "setup": "echo setup done",
        "provision": f"{connector} provision -c {device} testflinger.json",
        "test": f"{connector} runtest -c {device} testflinger.json",
        "cleanup": f"{connector} cleanup -c {device} testflinger.json",
    }
    return {
        "agent_id": name,
        "server_address": url,
        "polling_interval": 1,
        "job_queues": [f"q-{name}"],
        "execution_basedir": str(base / "exec"),
        "results_basedir": str(base / "results"),
        "logging_basedir": str(base / "logs"),
        "logging_quiet": True,
        **{f"{phase}_command": timed(cmd, log, phase) for phase, cmd in commands.items()},
    }


def gaps(log: Path) -> tuple[list[float], list[float]]:
    """(gaps between consecutive phases in s, job times in s) from the phases log."""
    rows = [line.split() for line in log.read_text().splitlines() if line.strip()]
    between: list[float] = []
    jobs: list[float] = []
    for i in range(0, len(rows) - len(PHASES) + 1, len(PHASES)):
        job = rows[i : i + len(PHASES)]
        assert [r[0] for r in job] == list(PHASES), job
        for before, after in zip(job, job[1:], strict=False):
            between.append((int(after[1]) - int(before[2])) / 1e9)
        jobs.append((int(job[-1][2]) - int(job[0][1])) / 1e9)
    return between, jobs


def start_agents(
    base: Path, url: str, bin_dir: Path, procs: list[subprocess.Popen[bytes]]
) -> dict[str, tuple[Path, dict[str, Any]]]:
    """One tf-agent and one upstream agent, each with its home under `base`."""
    agents = {}
    for kind in ("tf-agent", "upstream"):
        home = base / kind
        home.mkdir()
        conf = agent_conf(f"bench-{kind}", url, home, bin_dir)
        conf_path = home / "agent.conf"
        conf_path.write_text(yaml.safe_dump(conf))
        if kind == "tf-agent":
            cmd = [sys.executable, "-m", "multiagent.agent", "-c", str(conf_path)]
            cmd += ["--run-dir", str(home / "run"), "--restart-dir", str(home / "restart")]
        else:
            cmd = [str(bin_dir / "testflinger-agent"), "-c", str(conf_path)]
        with open(home / "agent.stderr", "wb") as err:
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err))
        agents[kind] = (home, conf)
    return agents


def run_jobs(url: str, queues: list[str], jobs: int) -> None:
    """`jobs` jobs to each queue, interleaved; returns once every one is complete."""
    job_ids = []
    for _ in range(jobs):
        for queue in queues:
            body: dict[str, Any] = {
                "job_queue": queue,
                "provision_data": {"url": "http://example.invalid/image"},
                "test_data": {"test_cmds": "echo bench"},
            }
            resp = requests.post(f"{url}/v1/job", json=body, timeout=10)
            resp.raise_for_status()
            job_ids.append(resp.json()["job_id"])

    def all_done() -> bool:
        return all(
            requests.get(f"{url}/v1/result/{job_id}", timeout=10).json().get("job_state")
            == "complete"
            for job_id in job_ids
        )

    wait_for(all_done, 60 + 30 * jobs, "every job to complete")


def report(kind: str, log: Path) -> None:
    between, jobs = gaps(log)
    between.sort()
    p90 = between[int(0.9 * (len(between) - 1))]
    median_ms = statistics.median(between) * 1000
    print(
        f"{kind:9} per-phase overhead median {median_ms:7.0f} ms"
        f"  p90 {p90 * 1000:7.0f} ms  max {between[-1] * 1000:7.0f} ms"
        f"  (n={len(between)}); job median {statistics.median(jobs):6.2f} s"
    )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument(
        "--upstream", type=Path, default=REPO.parent / "shared" / "upstream-testflinger"
    )
    args = parser.parse_args()
    if not (args.upstream / "agent" / "pyproject.toml").is_file():
        print(f"upstream Testflinger not found at {args.upstream}", file=sys.stderr)
        return 2
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="tf-connector-bench-") as tmp:
        base = Path(tmp)
        started = time.monotonic()
        bin_dir = install_upstream(args.upstream, base / "venv")
        print(f"upstream installed in {time.monotonic() - started:.0f} s")
        try:
            server, url = start_server(base)
            procs.append(server)
            agents = start_agents(base, url, bin_dir, procs)
            run_jobs(url, [conf["job_queues"][0] for _, conf in agents.values()], args.jobs)
            print(f"{args.jobs} jobs per agent, phases {', '.join(PHASES)}; gap = overhead")
            for kind, (home, _) in agents.items():
                report(kind, home / "phases.log")
        finally:
            stop(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
