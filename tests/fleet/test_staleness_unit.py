"""An agent an upgrade in place left behind, as `plan` and `status` see it (pure rows)."""

from __future__ import annotations

from test_render import observed_for, rendered

from multiagent.fleet.commands.status import AgentStatus
from multiagent.fleet.model import plan as planning
from multiagent.fleet.model import staleness

ENTRY = """; managed by tf-fleet (x)
[program:a-1]
command=/v/bin/python3 -S /v/lib/multiagent/agent/boot.py -c /s/agents/a-1/c.conf -x 50%%
autostart=true
"""


def test_the_files_a_program_entry_needs_to_start():
    assert staleness.command_of(ENTRY)[-1] == "50%"
    assert staleness.entry_files(ENTRY) == ["/v/bin/python3", "/v/lib/multiagent/agent/boot.py"]
    assert staleness.entry_files("command=env -u X python3 -c 'pass'\n") == []
    assert staleness.entry_files(None) == [] and staleness.entry_files("command='\n") == []
    missing = ["/v/lib/multiagent/agent/boot.py"]
    assert staleness.entry_stale(missing) == "program entry stale: boot.py missing"
    assert staleness.entry_stale([]) is None


def test_what_is_said_of_code_changed_since_start():
    said = staleness.code_changed("0.1.0", "0.2.0", 0.0)
    assert said == "code changed since start: tf-fleet 0.1.0 -> 0.2.0"
    same = staleness.code_changed("0.2.0", "0.2.0", 0.0)
    assert same.startswith("code changed since start: tf-fleet 0.2.0 (its files changed at ")


def test_plan_restarts_an_agent_on_older_code_and_replaces_one_with_a_lost_entry():
    _, rendering = rendered()
    programs = rendering.programs
    disk = dict(rendering.all_files())
    disk[programs["dut-2"].program_path] = "old program naming a gone boot.py"
    lost = "program entry stale: boot.py missing"
    observed = observed_for(
        rendering,
        disk=disk,
        code_changed={"dut-1": "code changed since start: tf-fleet 0.1.0 -> 0.2.0"},
        entry_stale={"dut-2": lost, "tf-fleet-server": lost},
    )
    actions = {a.name: a for a in planning.make_plan(programs, observed).actions}
    assert actions["dut-1"].kind == planning.RESTART
    assert actions["dut-1"].reasons == ("code changed since start: tf-fleet 0.1.0 -> 0.2.0",)
    assert actions["dut-2"].kind == planning.REPLACE
    assert actions["dut-2"].reasons == ("program entry changed", lost)
    # rendered the same by the installed tf-fleet: a restart would fail, nothing to do but say
    assert actions["tf-fleet-server"].kind == planning.UNCHANGED
    assert actions["tf-fleet-server"].reasons[0].startswith(lost + "; reinstall tf-fleet")


def _row(**fields) -> AgentStatus:
    base = dict(
        name="a-1",
        process="RUNNING",
        pid=10,
        uptime_s=5.0,
        state="waiting",
        job_id=None,
        phase=None,
        restart_pending=None,
        last_poll=None,
    )
    return AgentStatus(**{**base, **fields})


def test_status_fails_for_a_lost_entry_or_a_held_agent_not_for_older_code():
    assert not _row(code_changed="code changed since start: tf-fleet 0.1.0 -> 0.2.0").failed
    assert _row(entry_stale="program entry stale: boot.py missing").failed
    assert _row(process="EXITED", drain_flag="hold").failed
    assert _row(process="EXITED", drain_flag="hold").held_down
    assert not _row(drain_flag="hold").failed  # finishing its job under the hold
