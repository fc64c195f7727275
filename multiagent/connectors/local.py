"""`local` device connector for demos and tests: no device, nothing leaves this host.

    tf-local-connector PHASE [-c default.yaml] [testflinger.json]

Every phase prints what a real connector would do. provision also writes
device-info.json (device_ip 127.0.0.1) as upstream connectors do; test runs the
job's `test_data.test_cmds` through /bin/sh in the current directory (the rundir).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from multiagent.vocabulary import Phase


def load_yaml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    import yaml

    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    return data if isinstance(data, dict) else {}


def write_device_info(config: dict[str, Any]) -> None:
    info = {
        "device_info": {
            "device_ip": config.get("device_ip", "127.0.0.1"),
            "agent_name": config.get("agent_name") or os.environ.get("agent_id", "local"),
        }
    }
    with open("device-info.json", "w", encoding="utf-8") as fh:
        json.dump(info, fh)


def run_test(job: dict[str, Any]) -> int:
    cmds = (job.get("test_data") or {}).get("test_cmds")
    if not cmds:
        print("local: no test_cmds in test_data; nothing to run")
        return 0
    if isinstance(cmds, list):
        cmds = "\n".join(str(c) for c in cmds)
    print("local: running test_cmds in", os.getcwd(), flush=True)
    return subprocess.call(["/bin/sh", "-c", str(cmds)], cwd=os.getcwd()) % 256


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tf-local-connector", description=__doc__.split("\n")[0])
    parser.add_argument("phase", choices=Phase.ALL)
    parser.add_argument("-c", "--config", help="connector config (default.yaml)")
    parser.add_argument(
        "job", nargs="?", default="testflinger.json", help="job file (default: testflinger.json)"
    )
    # Intermixed: upstream connectors are called as `PHASE -c default.yaml testflinger.json`.
    args = parser.parse_intermixed_args(argv)
    config = load_yaml(args.config)
    try:
        with open(args.job, encoding="utf-8") as fh:
            job = json.load(fh)
    except (OSError, ValueError) as exc:
        if args.phase in Phase.WITH_DATA:  # phases that act on the job's data need the job
            print(f"local: cannot read job file {args.job}: {exc}", file=sys.stderr)
            return 1
        job = {}
    phase = args.phase
    data = job.get(f"{phase}_data") or {}
    if phase == Phase.TEST:
        return run_test(job)
    if phase == Phase.PROVISION:
        print(f"local: would provision with {json.dumps(data, sort_keys=True)}")
        write_device_info(config)
        print("local: device-info.json written (device_ip 127.0.0.1)")
    elif phase == Phase.FIRMWARE_UPDATE:
        print(f"local: would update firmware to {data.get('version', '?')}")
    elif phase == Phase.ALLOCATE:
        write_device_info(config)
        print("local: allocated this host (nothing to do)")
    elif phase == Phase.RESERVE:
        keys = ", ".join(data.get("ssh_keys") or []) or "none"
        print(f"local: would reserve for {data.get('timeout', 3600)} s with ssh keys: {keys}")
    else:
        print(f"local: {phase}: nothing to do")
    return 0


if __name__ == "__main__":
    sys.exit(main())
