"""A small agent that behaves like upstream testflinger-agent where tf-fleet can tell:
SIGUSR1 is only acted on at the next poll (exit 1), no status file, no drain flag, a job
runs as a child process, `waiting` is posted at every start (undoing `offline`), and after
a job the server's state is read before `waiting` is posted. Used to test tf-fleet's
handling of upstream agents."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

import requests
import yaml

restart_pending = False


def on_usr1(_signum, _frame) -> None:
    global restart_pending
    restart_pending = True


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-c", "--config", required=True)
    conf = yaml.safe_load(open(parser.parse_args().config))
    signal.signal(signal.SIGUSR1, on_usr1)
    server = conf["server_address"]
    name = conf["agent_id"]
    session = requests.Session()
    announced = False
    while True:
        if restart_pending:
            print("restart requested at poll: exiting 1", flush=True)
            return 1
        # Like upstream's agent, a server that is not up yet (or slow) is retried at the
        # next poll rather than ending the process.
        try:
            if not announced:
                session.post(
                    f"{server}/v1/agents/data/{name}",
                    json={"state": "waiting", "comment": ""},
                    timeout=10,
                ).raise_for_status()
                announced = True
            if poll_once(session, server, name, conf):
                continue
        except (requests.RequestException, ValueError) as exc:
            print(f"server not reachable: {exc}", flush=True)
        time.sleep(conf.get("polling_interval", 1))


def poll_once(session, server: str, name: str, conf: dict) -> bool:
    """Whether a job was run."""
    state = session.get(f"{server}/v1/agents/data/{name}", timeout=10).json().get("state")
    if state in ("offline", "maintenance"):
        return False
    resp = session.get(f"{server}/v1/job", params={"queue": conf["job_queues"]}, timeout=10)
    if resp.status_code == 200 and resp.content:
        run_job(session, server, name, resp.json(), conf)
        return True
    return False


def run_job(session, server: str, name: str, job: dict, conf: dict) -> None:
    job_id = job["job_id"]
    session.post(
        f"{server}/v1/agents/data/{name}", json={"job_id": job_id, "state": "test"}, timeout=10
    )
    session.post(f"{server}/v1/result/{job_id}", json={"job_state": "test"}, timeout=10)
    cmds = job.get("test_data", {}).get("test_cmds", "true")
    code = subprocess.call(["/bin/sh", "-c", cmds])
    session.post(
        f"{server}/v1/result/{job_id}",
        json={"status": {"test": code}, "job_state": "complete"},
        timeout=10,
    )
    # As upstream's agent does after each job: it asks its server whether it was set
    # offline meanwhile, and announces `waiting` only if not (it would take no job).
    session.post(f"{server}/v1/agents/data/{name}", json={"job_id": ""}, timeout=10)
    state = session.get(f"{server}/v1/agents/data/{name}", timeout=10).json().get("state")
    if state not in ("offline", "maintenance"):
        session.post(
            f"{server}/v1/agents/data/{name}", json={"state": "waiting", "comment": ""}, timeout=10
        )


if __name__ == "__main__":
    sys.exit(main())
