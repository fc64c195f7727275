#!/usr/bin/python
"""Ansible module: drive one host's Testflinger agents through `tf-fleet`."""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: tf_fleet
short_description: Run a host's Testflinger agents with tf-fleet
description:
  - Calls C(tf-fleet) with C(--json) and reports C(changed) from what it did.
  - C(up) with no change in the fleet file is C(changed=false).
  - In check mode nothing is run that changes the host; C(up) asks C(tf-fleet plan --json),
    the other states read C(tf-fleet status --json).
  - A failure carries tf-fleet's own message (its stderr) and exit status.
options:
  state:
    description:
      - C(up) renders and applies the fleet file (changed agents restart once idle).
      - C(restarted) is C(restart --safe) (rolling with C(--all) when I(names) is empty).
      - C(drained) takes no new job (and, with I(wait), returns once idle); C(resumed) undoes it.
      - C(down) stops every agent and the private supervisord, after running jobs
        (C(down --safe)); with I(force), at once.
    choices: [up, restarted, drained, resumed, down]
    default: up
    type: str
  config:
    description: The fleet file (C(tf-fleet -c)).
    required: true
    type: path
  state_dir:
    description: Overrides the fleet file's C(state_dir) (C(tf-fleet --state-dir)).
    type: path
  names:
    description:
      - Agents for C(restarted), C(drained) and C(resumed); empty means every agent.
      - C(up) and C(down) always act on the whole fleet file.
    type: list
    elements: str
    default: []
  max_parallel:
    description:
      - C(restarted) only, how many agents restart at once (C(--max-parallel)); C(0) asks
        every selected agent at once, each restarting when its own job ends.
    type: int
  timeout:
    description: How long to wait for running jobs, e.g. C(30m) (C(--timeout)).
    type: str
  canary:
    description:
      - C(up) and C(restarted) (every agent): apply to this many agents first, then to
        the rest once they pass tf-fleet's health gate (C(--canary N)).
    type: int
  canary_jobs:
    description: With I(canary), each canary finishes K jobs, all passing (C(--canary-jobs)).
    type: int
  canary_job:
    description: With I(canary), a smoke job file each canary must pass (C(--canary-job)).
    type: path
  canary_soak:
    description: With I(canary), how long each canary is watched, e.g. C(30s) (C(--canary-soak)).
    type: str
  canary_timeout:
    description: With I(canary), how long canaries have to pass, e.g. C(15m) (C(--canary-timeout)).
    type: str
  force_rejected:
    description: C(up) only, roll out a change a canary rejected (C(--force-rejected)).
    type: bool
    default: false
  wait:
    description:
      - C(drained), return once the agents are idle (C(drain --wait)).
      - C(up), wait for changed agents to be idle and back; false asks them and returns
        (C(up --no-wait)): a later C(up) with I(wait) finishes (and waits for) the change.
    type: bool
    default: true
  force:
    description: C(down) only, stop agents even mid-job (C(down --force)).
    type: bool
    default: false
  executable:
    description: The C(tf-fleet) command (a path, or a name on PATH).
    type: str
    default: tf-fleet
"""

EXAMPLES = r"""
- name: Apply the fleet file
  tf_fleet:
    config: /etc/tf-fleet/fleet.yaml
    executable: /opt/tf-fleet/bin/tf-fleet

- name: Restart every agent once idle, two at a time
  tf_fleet:
    config: /etc/tf-fleet/fleet.yaml
    state: restarted
    max_parallel: 2
    timeout: 6h
"""

RETURN = r"""
plan:
  description: Per agent, what C(up) did or (check mode) would do, from C(plan --json).
  returned: state up
  type: list
written:
  description: Files C(up) wrote.
  returned: state up, not in check mode
  type: list
started:
  description: Programs C(up) started, with their process state.
  returned: state up, not in check mode
  type: dict
applied:
  description: The safe operations C(up) ran for changed agents (with I(canary), the canaries').
  returned: state up, not in check mode
  type: dict
canaries:
  description: With I(canary), the agents changed first; C(rest) holds the others' operations.
  returned: state up with canary, not in check mode
  type: list
agents:
  description: C(restart --json) or C(drain --wait --json) per agent, or the names acted on.
  returned: states restarted, drained, resumed, down
  type: list
rc:
  description: tf-fleet's exit status.
  returned: always
  type: int
"""

ACTING = {"restarted", "drained", "resumed"}
CANARY_OPTIONS = ("canary_jobs", "canary_job", "canary_soak", "canary_timeout")
RUNNING = ("STARTING", "RUNNING", "BACKOFF", "STOPPING")


class Fleet:
    """One host's tf-fleet, called as a command and read through its JSON."""

    def __init__(self, module: AnsibleModule):
        self.module = module
        self.params = module.params
        base = [self.params["executable"], "-c", self.params["config"]]
        if self.params["state_dir"]:
            base += ["--state-dir", self.params["state_dir"]]
        self.base = base

    def run(self, *args: str) -> tuple[int, str, str]:
        return self.module.run_command([*self.base, *args])

    def fail(self, rc: int, stdout: str, stderr: str, **extra: Any) -> None:
        message = stderr.strip() or _failures(stdout) or f"tf-fleet exited {rc}"
        if _timed_out(stdout) and "timed out" not in message:
            waited = f" after {self.params['timeout']}" if self.params["timeout"] else ""
            message = (
                f"timed out{waited} waiting for running jobs (none was interrupted): {message}"
            )
        self.module.fail_json(msg=message, rc=rc, stdout=stdout, stderr=stderr, **extra)

    def report(self, *args: str, accept: tuple[int, ...] = (0,)) -> tuple[int, dict[str, Any]]:
        """Run a command that prints JSON; fail on any other exit status or no JSON."""
        rc, out, err = self.run(*args)
        data = _parse(out)
        if rc not in accept or data is None:
            self.fail(rc, out, err, **(data or {}))
        return rc, data or {}

    def timeout(self) -> list[str]:
        return ["--timeout", self.params["timeout"]] if self.params["timeout"] else []

    def canary(self) -> list[str]:
        count = self.params["canary"]
        if count is None:
            return []
        args = ["--canary", str(count)]
        for key in CANARY_OPTIONS:
            if self.params[key] is not None:
                args += [f"--{key.replace('_', '-')}", str(self.params[key])]
        return args

    def installed(self) -> bool:
        """Whether the tf-fleet command exists here (a fresh host's check mode: not yet)."""
        executable = self.params["executable"]
        if os.sep in executable:
            return os.access(executable, os.X_OK)
        return shutil.which(executable) is not None

    def selection(self) -> list[str]:
        return list(self.params["names"]) or ["--all"]

    def agents(self) -> list[dict[str, Any]]:
        """`status --json` rows of the selected agents (exit 1 is a state, not a failure)."""
        _, data = self.report("status", "--json", *self.params["names"], accept=(0, 1))
        return list(data.get("agents", []))


def _parse(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _operations(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every safe operation of a report: `restart --json`'s, or `up --json`'s (with
    --canary, the canaries' in `applied` and the others' in `rest`)."""
    parts = [data, data.get("applied") or {}, data.get("rest") or {}]
    return [op for part in parts for op in part.get("agents", []) if "operation" in op]


def _timed_out(stdout: str) -> bool:
    data = _parse(stdout) or {}
    parts = [data, data.get("applied") or {}, data.get("rest") or {}]
    return any(part.get("timed_out") for part in parts)


def _failures(stdout: str) -> str:
    """One line from a JSON report's failed operations, when stderr said nothing."""
    data = _parse(stdout) or {}
    failed = [
        f"{op['name']}: {op.get('error') or op.get('text')}"
        for op in _operations(data)
        if op.get("error") or op.get("stage") != "done"
    ]
    return data.get("canary_failure") or "; ".join(failed)


def up(fleet: Fleet, check: bool) -> dict[str, Any]:
    if check:
        if not fleet.installed():
            note = f"{fleet.params['executable']} is not installed yet: every agent would be added"
            return {"changed": True, "plan": [], "msg": note}
        _, data = fleet.report("plan", "--json")
        plan = data["actions"]
        extra = {"rejected": data["rejected"]} if data.get("rejected") else {}
        return {"changed": any(a["action"] != "unchanged" for a in plan), "plan": plan, **extra}
    args = ["up", "--json", *fleet.timeout(), *fleet.canary()]
    if not fleet.params["wait"]:
        args.append("--no-wait")
    if fleet.params["force_rejected"]:
        args.append("--force-rejected")
    rc, data = fleet.report(*args)
    changed = bool(
        data.get("started_supervisord")
        or data.get("written")
        or data.get("started")
        or _operations(data)
        or any(a["action"] != "unchanged" for a in data.get("plan", []))
    )
    return {"changed": changed, "rc": rc, **data}


def restarted(fleet: Fleet, check: bool) -> dict[str, Any]:
    if check:
        return {"changed": bool(fleet.agents()), "agents": []}
    args = ["restart", "--safe", *fleet.selection(), "--json", *fleet.timeout()]
    if fleet.params["max_parallel"] is not None:
        args += ["--max-parallel", str(fleet.params["max_parallel"])]
    rc, data = fleet.report(*args, *fleet.canary())
    changed = any(op.get("new_pid") for op in _operations(data))
    return {**data, "changed": changed, "rc": rc}


def drained(fleet: Fleet, check: bool) -> dict[str, Any]:
    todo = [row["name"] for row in fleet.agents() if not row.get("drain_flag")]
    if check:
        return {"changed": bool(todo), "agents": todo}
    if fleet.params["wait"]:
        rc, data = fleet.report("drain", *fleet.selection(), "--wait", "--json", *fleet.timeout())
        return {"changed": bool(todo), "rc": rc, "agents": data.get("agents", [])}
    rc, out, err = fleet.run("drain", *fleet.selection())
    if rc != 0:
        fleet.fail(rc, out, err)
    return {"changed": bool(todo), "rc": rc, "agents": todo}


def resumed(fleet: Fleet, check: bool) -> dict[str, Any]:
    rows = fleet.agents()
    todo = [r["name"] for r in rows if r.get("drain_flag") or r.get("process") not in RUNNING]
    if check:
        return {"changed": bool(todo), "agents": todo}
    rc, out, err = fleet.run("resume", *fleet.selection())
    if rc != 0:
        fleet.fail(rc, out, err)
    started = re.findall(r"^(\S+): resumed and started$", out, re.MULTILINE)
    return {"changed": bool(todo or started), "rc": rc, "agents": todo}


def down(fleet: Fleet, check: bool) -> dict[str, Any]:
    rc, out, err = fleet.run("status", "--json")
    data = _parse(out)
    if data is None:
        fleet.fail(rc, out, err)
    rows = [*data.get("agents", []), data.get("server") or {}]
    alive = [row["name"] if "name" in row else row["program"] for row in rows if row.get("pid")]
    if check:
        return {"changed": bool(alive), "agents": alive}
    rc, out, err = fleet.run("down", "--force" if fleet.params["force"] else "--safe")
    if rc != 0:
        fleet.fail(rc, out, err)
    stopped = re.search(r"^stopped (\d+) program", out, re.MULTILINE)
    changed = bool(alive) or bool(stopped and int(stopped.group(1)))
    return {"changed": changed, "rc": rc, "agents": alive}


STATES = {
    "up": up,
    "restarted": restarted,
    "drained": drained,
    "resumed": resumed,
    "down": down,
}


def problem(params: dict[str, Any]) -> str | None:
    """An option that does not fit the state, in words."""
    state = params["state"]
    if params["names"] and state not in ACTING:
        return f"names: state {state} acts on the whole fleet file"
    if params["canary"] is not None and state not in ("up", "restarted"):
        return f"canary: only for states up and restarted, not {state}"
    if params["canary"] is not None and params["names"]:
        return "canary: restarts every agent; leave names empty"
    if params["max_parallel"] is not None and state != "restarted":
        return f"max_parallel: only for state restarted, not {state}"
    for key in CANARY_OPTIONS:
        if params.get(key) is not None and params["canary"] is None:
            return f"{key}: goes with canary"
    if params.get("force_rejected") and state != "up":
        return f"force_rejected: only for state up, not {state}"
    if not params.get("wait", True) and params["canary"] is not None:
        return "wait: false does not go with canary (the gate is waited for)"
    if not params.get("wait", True) and state not in ("up", "drained"):
        return f"wait: only for states up and drained, not {state}"
    return None


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "default": "up", "choices": sorted(STATES)},
            "config": {"type": "path", "required": True},
            "state_dir": {"type": "path"},
            "names": {"type": "list", "elements": "str", "default": []},
            "max_parallel": {"type": "int"},
            "timeout": {"type": "str"},
            "canary": {"type": "int"},
            "canary_jobs": {"type": "int"},
            "canary_job": {"type": "path"},
            "canary_soak": {"type": "str"},
            "canary_timeout": {"type": "str"},
            "force_rejected": {"type": "bool", "default": False},
            "wait": {"type": "bool", "default": True},
            "force": {"type": "bool", "default": False},
            "executable": {"type": "str", "default": "tf-fleet"},
        },
        supports_check_mode=True,
    )
    wrong = problem(module.params)
    if wrong:
        module.fail_json(msg=wrong)
    result = STATES[module.params["state"]](Fleet(module), module.check_mode)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
