"""Issue cases 2 and 3: files on the host are owned and private.

Case 2: the run dir is never 1777; an agent with `user:` keeps its run state in a 0700
dir of its own user inside the root-owned 0755 run dir, and a symlink planted at a
lock, status or drain path is never followed. Case 3: every file holding an
`environment:` or `device:` value or a job's secrets is 0600, nothing is group- or
world-writable."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from fixtures_fleet import wait_until

from multiagent.fleet.model.layout import Layout


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _writable_by_others(root: Path) -> list[str]:
    bad = []
    for path in [root, *root.rglob("*")]:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
            continue
        if st.st_mode & 0o022:
            bad.append(f"{path} {stat.S_IMODE(st.st_mode):04o}")
    return bad


def test_user_agent_run_state_is_its_own_and_planted_symlinks_are_not_followed(
    fleet_env, throwaway_user, tmp_path
):
    precious = tmp_path / "precious"
    precious.write_text("root's file\n")
    precious.chmod(0o644)
    run = Layout(fleet_env.state_dir).run_dir
    run.mkdir(parents=True)
    os.chmod(run, 0o1777)  # as an older tf-fleet left it
    # What another local user planted while the run dir was shared (case 2).
    for planted in ("r-02.lock", "r-02.json", "r-02.drain", "u-01.lock", "u-01.drain"):
        (run / planted).symlink_to(precious)
    fleet = fleet_env.agent_fleet(["r-02", "u-01"])
    fleet["agents"]["u-01"]["user"] = throwaway_user
    fleet_env.up(fleet, "--no-wait")
    layout = Layout(fleet_env.state_dir)
    wait_until(lambda: layout.status_file("r-02").exists(), 30, "r-02's status file")

    assert precious.read_text() == "root's file\n" and _mode(precious) == 0o644
    st = os.lstat(run)
    assert (st.st_uid, _mode(run)) == (0, 0o755)
    user = os.lstat(layout.agent_run_dir("u-01"))
    uid = int(subprocess.run(["id", "-u", throwaway_user], capture_output=True).stdout)
    assert (user.st_uid, stat.S_IMODE(user.st_mode)) == (uid, 0o700)
    root = os.lstat(layout.agent_run_dir("r-02"))
    assert (root.st_uid, stat.S_IMODE(root.st_mode)) == (0, 0o700)
    assert layout.status_file("r-02").parent == layout.agent_run_dir("r-02")

    # The agent's user plants a symlink at its drain flag: `drain` replaces it.
    drain = layout.drain_file("u-01")
    drain.symlink_to(precious)
    os.lchown(drain, uid, -1)
    fleet_env.run("drain", "u-01")
    assert precious.read_text() == "root's file\n"
    assert not drain.is_symlink() and drain.read_text().strip() == "drain"
    assert _mode(drain) == 0o644
    # A root agent obeys no drain flag another user wrote: there is none it could write.
    assert _writable_by_others(fleet_env.state_dir) == []


def test_secrets_on_disk_are_private(fleet_env):
    fleet = fleet_env.agent_fleet(["s-01"])
    fleet["defaults"]["environment"] = {"API_TOKEN": "hunter2"}
    fleet["defaults"]["device"]["password"] = "device-secret"
    pids = fleet_env.start(fleet)
    layout = Layout(fleet_env.state_dir)
    program = layout.private_program_dir / "s-01.conf"
    assert "hunter2" in program.read_text() and _mode(program) == 0o600
    assert "device-secret" in layout.device_conf("s-01").read_text()
    assert _mode(layout.device_conf("s-01")) == 0o600
    assert _mode(layout.agent_conf("s-01")) == 0o600
    assert _mode(layout.agent_dir("s-01")) == 0o700
    assert _mode(layout.logs_dir) == 0o700

    # A running job's testflinger.json (its secrets) is 0600 in a 0700 job dir.
    job = fleet_env.submit_held("shared")
    job_dir = layout.agent_dir("s-01") / "run" / job
    wait_until(lambda: (job_dir / "testflinger.json").exists(), 30, "the job's testflinger.json")
    assert _mode(job_dir) == 0o700
    assert _mode(job_dir / "testflinger.json") == 0o600
    assert _writable_by_others(fleet_env.state_dir) == []
    fleet_env.release(job)
    fleet_env.assert_completed(job)
    assert fleet_env.status()["s-01"]["pid"] == pids["s-01"]


def test_a_second_up_tightens_files_an_older_tf_fleet_left_open(fleet_env):
    fleet = fleet_env.agent_fleet(["o-01"])
    fleet["defaults"]["environment"] = {"API_TOKEN": "hunter2"}
    fleet_env.start(fleet)
    layout = Layout(fleet_env.state_dir)
    program = layout.private_program_dir / "o-01.conf"
    for path in (program, layout.device_conf("o-01"), layout.agent_conf("o-01")):
        path.chmod(0o644)
    before = program.stat().st_mtime_ns
    fleet_env.run("up")
    assert _mode(program) == 0o600 and _mode(layout.device_conf("o-01")) == 0o600
    assert program.stat().st_mtime_ns == before  # same text: not rewritten, no restart
