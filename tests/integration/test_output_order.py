"""What an operator reads through a pipe (CI, Ansible, `| tee`, a journal): each line
when its event happens, results on stdout and errors on stderr once, a quiet end when
the reader goes away. Real supervisord, the embedded server, tf-agents, held jobs."""

from __future__ import annotations

import os
import subprocess

import psutil


def _busy_and_one_more(fleet_env) -> tuple[dict, int, str]:
    """b1 runs a held job when the fleet file changes its environment and adds b2."""
    fleet = fleet_env.agent_fleet(["b1"], {"b1": ["q-b1"]})
    old_pid = fleet_env.start(fleet)["b1"]
    job = fleet_env.hold_running("q-b1")
    fleet["agents"]["b1"]["environment"] = {"LAB_MARK": "new"}
    fleet["agents"]["b2"] = {"job_queues": ["q-b2"]}
    fleet_env.write(fleet)
    return fleet, old_pid, job


def test_up_says_what_it_wrote_and_started_before_its_wait_ends(fleet_env):
    _, old_pid, job = _busy_and_one_more(fleet_env)
    seen_while_waiting: list[str] = []

    def started_and_waiting(output: str) -> bool:
        # read while `up` still runs: it cannot end before the held job is released
        if "started b2" in output and "b1: " in output:
            seen_while_waiting.append(output)
            return True
        return False

    out = fleet_env.run_releasing("up", jobs=[job], when=started_and_waiting)
    assert seen_while_waiting, out.stdout
    early = seen_while_waiting[0]
    assert "wrote " in early and "started b2" in early
    lines = out.stdout.splitlines()
    assert lines.index("started b2") < next(i for i, t in enumerate(lines) if "b1: back" in t)
    assert lines[-1] == "1 add, 1 replace", out.stdout
    assert not any(line in out.stderr for line in lines), out.stderr  # never both
    fleet_env.assert_completed(job)
    pids = fleet_env.wait_all_running()
    assert pids["b1"] != old_pid and not psutil.pid_exists(old_pid)
    assert len(fleet_env.agent_processes("b1")) == 1


def test_a_restart_cut_short_by_its_reader_ends_quietly(fleet_env):
    """`restart --safe ... | head -1`: the reader leaves after one line; the next line
    finds no reader. tf-fleet exits 141 (as `cat` would by SIGPIPE) with nothing on
    stderr and no traceback file; the restart it asked for still happens."""
    old_pid = fleet_env.start(fleet_env.agent_fleet(["h1"], {"h1": ["q-h1"]}))["h1"]
    job = fleet_env.hold_running("q-h1")
    tmp = fleet_env.root / "tmp"
    tmp.mkdir()
    command = " ".join(fleet_env.command("restart", "--safe", "h1"))
    proc = subprocess.Popen(
        ["bash", "-c", f"{command} 2>{tmp}/stderr | head -n 1; echo ${{PIPESTATUS[0]}}"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=fleet_env.root,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # head's one line: tf-fleet goes on writing
    assert first.startswith("h1: "), first
    fleet_env.release(job)
    status = proc.stdout.read().strip()
    proc.wait(60)
    assert status == "141"
    assert (tmp / "stderr").read_text() == ""
    assert [p.name for p in tmp.iterdir()] == ["stderr"]  # no tf-fleet-error-*.log
    fleet_env.assert_completed(job)
    fleet_env.wait_for(lambda: fleet_env.pids()["h1"] not in (0, old_pid), what="h1 back")


def test_drain_and_resume_name_each_agent_and_what_it_was_before(fleet_env):
    fleet_env.start(fleet_env.agent_fleet(["dr1", "dr2"]))
    first = fleet_env.run("drain", "dr1")
    assert first.stdout.splitlines()[0] == "dr1: drained"
    again = fleet_env.run("drain", "dr1", "dr2")
    assert again.stdout.splitlines()[:2] == ["dr1: already drained", "dr2: drained"]
    fleet_env.wait_for(
        lambda: fleet_env.status_file("dr2").get("state") == "drained", what="dr2 drained"
    )
    resumed = fleet_env.run("resume", "dr1")
    assert resumed.stdout.splitlines() == ["dr1: resumed"]
    twice = fleet_env.run("resume", "dr1")
    assert twice.stdout.splitlines() == ["dr1: was not drained; takes jobs as before"]
    fleet_env.run("resume", "dr2")
    job = fleet_env.submit("shared", 0)
    fleet_env.assert_completed(job)


def test_down_refuses_to_stop_the_server_under_a_submit_wait(fleet_env):
    """A `submit --wait` following a job on the fleet's own server keeps `down` from
    stopping the server under it (it would end in a connection error though its job
    completed); once it has read its job's end, `down` goes on."""
    fleet_env.start(fleet_env.agent_fleet(["w1"], {"w1": ["q-w1"]}))
    gate = fleet_env.root / "release-watch"
    job_file = fleet_env.root / "job.yaml"
    job_file.write_text(
        "job_queue: q-w1\ntest_data:\n"
        f"  test_cmds: 'echo begun; while [ ! -e {gate} ]; do sleep 0.05; done; echo finished'\n"
    )
    watcher = fleet_env.started("submit", str(job_file), "--server", fleet_env.server_url, "--wait")
    try:
        assert watcher.stdout is not None
        job = watcher.stdout.readline().strip()
        for line in watcher.stdout:  # the job's output while it still runs, not at its end
            if line.strip() == "begun":
                break
        assert fleet_env.job_state(job) == "test"
        refused = fleet_env.run("down", "--safe", check=False)
        assert refused.returncode == 1
        assert f"pid {watcher.pid} (tf-fleet submit {job_file} --wait)" in refused.stderr
        assert "refusing to stop the server under it" in refused.stderr
        assert fleet_env.status()["w1"]["process"] == "RUNNING"  # nothing was stopped
    finally:
        gate.touch()
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, out + err
    assert "finished" in out and f"--- job {job}: complete" in out
    fleet_env.assert_completed(job)
    down = fleet_env.run("down")
    assert "supervisord stopped" in down.stdout
    assert fleet_env.processes() == [] and fleet_env.agent_processes() == []


def test_ctl_runs_supervisorctl_on_the_fleets_own_supervisord(fleet_env):
    """Private mode: `supervisorctl status` habits work through `tf-fleet ctl`, with no
    -c of the state dir's supervisord.conf."""
    pids = fleet_env.start(fleet_env.agent_fleet(["c1"]))
    shown = fleet_env.run("ctl", "status")
    rows = {line.split()[0]: line.split()[1] for line in shown.stdout.splitlines()}
    assert rows["c1"] == "RUNNING" and rows["tf-fleet-server"] == "RUNNING"
    assert f"pid {pids['c1']}" in shown.stdout
    tail = fleet_env.run("ctl", "tail", "c1")
    assert tail.stdout.strip(), tail.stderr
    missing = fleet_env.run("ctl", "status", "nope", check=False)
    assert missing.returncode != 0 and "no such process" in missing.stdout.lower()
