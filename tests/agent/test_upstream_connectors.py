"""tf-agent driving upstream's real `testflinger-device-connector fake_connector` in every
phase, as a lab's agent does: what a user reads on the server afterwards."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from fixtures_agent import AgentProc, job, read_pid
from fixtures_server import free_port, wait_for

# test_cmds that add the one extra key upstream allows to the connector's outcome file.
OUTCOME_DEVICE_INFO = (
    "python3 -c \"import json; p = 'testflinger-outcome.json'; d = json.load(open(p)); "
    "d['device_info'] = dict(device_ip='10.1.2.3', source='outcome'); "
    "json.dump(d, open(p, 'w'))\""
)


def stage(upstream_bin: Path, conf: Path, name: str) -> str:
    return (
        f"{upstream_bin}/testflinger-device-connector fake_connector {name} "
        f"-c {conf} testflinger.json"
    )


def connector_commands(upstream_bin: Path, base: Path, **overrides: str) -> dict[str, str]:
    """An agent config's `*_command`s, each phase through fake_connector (setup has no
    connector stage upstream: labs run a script; here an echo)."""
    conf = base / "fake-device.yaml"
    conf.write_text(yaml.safe_dump({"device_ip": "127.0.0.1", "agent_name": "fake-dut"}))
    commands = {
        "setup_command": "echo setup done",
        "provision_command": stage(upstream_bin, conf, "provision"),
        "firmware_update_command": stage(upstream_bin, conf, "firmware_update"),
        "test_command": stage(upstream_bin, conf, "runtest"),
        "allocate_command": stage(upstream_bin, conf, "allocate"),
        "reserve_command": stage(upstream_bin, conf, "reserve"),
        "cleanup_command": stage(upstream_bin, conf, "cleanup"),
    }
    return commands | overrides


def cancel(server: Any, job_id: str) -> None:
    resp = requests.post(
        f"{server.url}/v1/job/{job_id}/action", json={"action": "cancel"}, timeout=5
    )
    resp.raise_for_status()


def wait_idle(agent: AgentProc, timeout: float = 30) -> None:
    agent.wait_status(lambda s: s["state"] == "waiting" and s["job_id"] is None, timeout, "idle")


def attach(server: Any, job_id: str, members: list[tarfile.TarInfo], data: dict[str, bytes]):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info in members:
            body = data.get(info.name)
            if body is not None:
                info.size = len(body)
            tar.addfile(info, io.BytesIO(body) if body is not None else None)
    resp = requests.post(
        f"{server.url}/v1/job/{job_id}/attachments",
        files={"file": ("file", buf.getvalue())},
        timeout=5,
    )
    resp.raise_for_status()


def member(name: str, mode: int = 0o644, link: str | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
    return info


def artifact_modes(server: Any, job_id: str) -> dict[str, int]:
    resp = requests.get(f"{server.url}/v1/result/{job_id}/artifact", timeout=5)
    resp.raise_for_status()
    with tarfile.open(fileobj=io.BytesIO(resp.content)) as tar:
        return {m.name: stat.S_IMODE(m.mode) for m in tar.getmembers()}


PLAIN_TEST_CMDS = (
    "echo hello from the test; mkdir -p artifacts/sub; echo art > artifacts/sub/a.txt; "
    f"chmod 600 artifacts/sub/a.txt; {OUTCOME_DEVICE_INFO}"
)


def plain_job(queue: str) -> dict[str, Any]:
    return {
        "job_queue": queue,
        "provision_data": {"url": "http://example.invalid/image"},
        "test_data": {"test_cmds": PLAIN_TEST_CMDS},
    }


def test_plain_job_through_fake_connector(shared_server, make_agent, upstream_bin, tmp_path):
    agent = make_agent(shared_server.url, **connector_commands(upstream_bin, tmp_path)).start()
    job_id = shared_server.submit(plain_job(agent.queue))
    shared_server.wait_job_state(job_id, {"complete"}, timeout=60)
    res = shared_server.result(job_id)
    statuses = {k: v for k, v in res.items() if k.endswith("_status")}
    assert statuses == {
        "setup_status": 0,
        "provision_status": 0,
        "test_status": 0,
        "cleanup_status": 0,
    }
    assert "This is a fake device connector!" in res["provision_output"]
    assert "hello from the test" in res["test_output"]
    # The connector's device_info in the outcome file is what the server keeps.
    assert res["device_info"] == {"device_ip": "10.1.2.3", "source": "outcome"}
    modes = artifact_modes(shared_server, job_id)
    assert modes["artifacts/sub/a.txt"] == 0o600


def test_failing_test_phase(shared_server, make_agent, upstream_bin, tmp_path):
    agent = make_agent(shared_server.url, **connector_commands(upstream_bin, tmp_path)).start()
    job_id = shared_server.submit(job(agent, "echo about to fail; exit 3"))
    shared_server.wait_job_state(job_id, {"complete"}, timeout=60)
    res = shared_server.result(job_id)
    assert res["test_status"] == 3 and "about to fail" in res["test_output"]
    assert res["cleanup_status"] == 0 and res["setup_status"] == 0


KEY_CMDS = "stat -c mode=%a attachments/test/id_key; cat attachments/test/key-link"


def attach_key(server: Any, job_id: str) -> None:
    """A 0600 key and a link to it beside it, as the job's test attachments."""
    attach(
        server,
        job_id,
        [member("test/id_key", 0o600), member("test/key-link", 0o777, link="id_key")],
        {"test/id_key": b"PRIVATE KEY\n"},
    )


def test_attachments_keep_a_0600_key_and_an_in_tree_link(
    shared_server, make_agent, upstream_bin, tmp_path
):
    agent = make_agent(shared_server.url, **connector_commands(upstream_bin, tmp_path)).start()
    body = job(agent, None) | {
        "test_data": {"test_cmds": KEY_CMDS, "attachments": [{"agent": "id_key"}]}
    }
    job_id = shared_server.submit(body)
    attach_key(shared_server, job_id)
    shared_server.wait_job_state(job_id, {"complete"}, timeout=60)
    res = shared_server.result(job_id)
    assert res.get("setup_status") == 0, res.get("setup_output")
    assert res["test_status"] == 0
    assert "mode=600" in res["test_output"] and "PRIVATE KEY" in res["test_output"]


def test_cancel_during_cleanup_lets_cleanup_finish(
    shared_server, make_agent, upstream_bin, tmp_path
):
    pidfile = tmp_path / "cleanup.pid"
    commands = connector_commands(upstream_bin, tmp_path)
    # Long enough for two of tf-agent's cancel checks (every 2 s) to see the cancel.
    commands["cleanup_command"] = (
        f"echo $$ > {pidfile}; sleep 5; echo cleanup finished; {commands['cleanup_command']}"
    )
    agent = make_agent(shared_server.url, **commands).start()
    job_id = shared_server.submit(job(agent, "echo testing"))
    read_pid(pidfile, timeout=60)
    cancel(shared_server, job_id)
    wait_idle(agent)
    res = shared_server.result(job_id)
    assert res["job_state"] == "cancelled"
    assert res["cleanup_status"] == 0 and "cleanup finished" in res["cleanup_output"]


@pytest.mark.parametrize(
    "limit,cmds,message",
    [
        ({"output_timeout": 2}, "echo started; sleep 60", "Output timeout reached! (2"),
        ({"global_timeout": 3}, "while true; do echo tick; sleep 0.5; done", "Global timeout"),
    ],
)
def test_timeouts_end_the_test_phase(
    shared_server, make_agent, upstream_bin, tmp_path, limit, cmds, message
):
    agent = make_agent(shared_server.url, **connector_commands(upstream_bin, tmp_path)).start()
    job_id = shared_server.submit(job(agent, cmds) | limit)
    shared_server.wait_job_state(job_id, {"complete"}, timeout=60)
    res = shared_server.result(job_id)
    assert res["test_status"] == 247 and message in res["test_output"]
    assert res["cleanup_status"] == 0


def test_multi_child_is_allocated_and_ends_with_its_parent(
    shared_server, make_agent, upstream_bin, tmp_path
):
    """upstream's connectors exit 1 from allocate: the child is allocated all the same."""
    agent = make_agent(shared_server.url, **connector_commands(upstream_bin, tmp_path)).start()
    parent = shared_server.submit({"job_queue": f"parent-of-{agent.queue}"})
    child = shared_server.submit(
        job(agent, None, parent_job_id=parent, allocate_data={"allocate": True})
    )
    shared_server.wait_job_state(child, {"allocated"}, timeout=60)
    res = shared_server.result(child)
    assert res["device_info"] == {"device_ip": "127.0.0.1", "agent_name": "fake-dut"}
    assert res["allocate_status"] == 1
    cancel(shared_server, parent)
    wait_idle(agent)
    res = shared_server.result(child)
    assert res["job_state"] == "complete" and res["cleanup_status"] == 0
    assert "reserve_status" not in res


def test_serial_log_over_1mib_reads_back_from_start_fragment(
    shared_server, make_agent, upstream_bin, tmp_path
):
    agent = make_agent(shared_server.url, **connector_commands(upstream_bin, tmp_path)).start()
    # 1.5 MiB in test-serial.log: two fragments of at most 1 MiB.
    cmds = "python3 -c \"open('test-serial.log', 'w').write('s' * (3 << 19))\""
    job_id = shared_server.submit(job(agent, cmds))
    shared_server.wait_job_state(job_id, {"complete"}, timeout=60)

    def serial(start: int) -> dict[str, Any]:
        resp = shared_server.read(
            f"/v1/result/{job_id}/log/serial", params={"start_fragment": start, "phase": "test"}
        )
        resp.raise_for_status()
        return resp.json()["serial"]

    whole = serial(0)["test"]
    assert whole["last_fragment_number"] == 1 and len(whole["log_data"]) == 3 << 19
    rest = serial(1)["test"]
    assert rest["last_fragment_number"] == 1 and len(rest["log_data"]) == (3 << 19) - (1 << 20)
    assert not os.path.exists(tmp_path / "never")


# -- side by side with upstream's agent ---------------------------------------------
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[,.]\d+)?(?:[+-]\d\d:?\d\d)?")
BANNER_BORDER = re.compile(r"^\*+$", re.MULTILINE)  # sized to the agent's name


class UpstreamAgent:
    """Upstream's `testflinger-agent` with the same commands, on its own queue."""

    def __init__(self, upstream_bin: Path, base: Path, server_url: str, commands: dict[str, str]):
        self.name = f"upstream-{os.getpid()}-{base.name}"[:60]
        self.queue = f"q-{self.name}"
        conf = {
            "agent_id": self.name,
            "server_address": server_url,
            "polling_interval": 1,
            "job_queues": [self.queue],
            "execution_basedir": str(base / "exec"),
            "results_basedir": str(base / "results"),
            "logging_basedir": str(base / "logs"),
            "logging_quiet": True,
            **commands,
        }
        self.conf_path = base / "upstream-agent.yaml"
        self.conf_path.write_text(yaml.safe_dump(conf))
        self.stderr = base / "upstream-agent.stderr"
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [str(upstream_bin / "testflinger-agent"), "-c", str(self.conf_path)],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def _seen_by_user(server: Any, job_id: str, agent_name: str) -> dict[str, Any]:
    """What a user compares: statuses, outputs (agent name and timestamps masked),
    job_state, device_info, the artifact's file names and modes."""
    res = server.result(job_id)
    seen: dict[str, Any] = {
        k: v for k, v in res.items() if k.endswith("_status") or k in ("job_state", "device_info")
    }
    for key, text in res.items():
        if key.endswith("_output"):
            text = BANNER_BORDER.sub("****", text.replace(agent_name, "<agent>"))
            seen[key] = TIMESTAMP.sub("<time>", text)
    resp = requests.get(f"{server.url}/v1/result/{job_id}/artifact", timeout=5)
    seen["artifact"] = artifact_modes(server, job_id) if resp.status_code == 200 else None
    return seen


def test_same_jobs_give_the_same_results_under_upstreams_agent(
    shared_server, make_agent, upstream_bin, tmp_path
):
    commands = connector_commands(upstream_bin, tmp_path)
    ours = make_agent(shared_server.url, **commands).start()
    theirs = UpstreamAgent(upstream_bin, tmp_path, shared_server.url, commands)
    try:
        # One job with all a user compares (upstream's agent takes some 4 s a phase):
        # provision, attachments, artifacts, the outcome's device_info, a failing test.
        body = plain_job("QUEUE")
        body["test_data"] = {
            "test_cmds": f"{PLAIN_TEST_CMDS}; {KEY_CMDS}; exit 3",
            "attachments": [{"agent": "id_key"}],
        }
        mine = shared_server.submit(body | {"job_queue": ours.queue})
        upstream = shared_server.submit(body | {"job_queue": theirs.queue})
        for job_id in (mine, upstream):
            attach_key(shared_server, job_id)
        shared_server.wait_job_state(mine, {"complete"}, timeout=60)
        shared_server.wait_job_state(upstream, {"complete"}, timeout=120)
        seen = _seen_by_user(shared_server, mine, ours.name)
        assert seen["test_status"] == 3 and "mode=600" in seen["test_output"]
        assert seen == _seen_by_user(shared_server, upstream, theirs.name)
    finally:
        theirs.stop()


# -- noprovision over ssh ------------------------------------------------------------
SSHD = Path("/usr/sbin/sshd")


@pytest.fixture
def loopback_sshd(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """An sshd on a loopback port with a throwaway host key, letting in one throwaway key
    (its port and private key); stopped after the test. It runs in a mount namespace of
    its own, where /run is a fresh tmpfs for its privilege separation directory."""
    if not SSHD.is_file() or shutil.which("ssh") is None or shutil.which("unshare") is None:
        pytest.skip(f"no {SSHD}, ssh or unshare on this host (.ci/run installs openssh-server)")
    folder = tmp_path / "sshd"
    folder.mkdir()
    for name in ("host_key", "id_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)],
            check=True,
            timeout=30,
        )
    (folder / "authorized_keys").write_text((folder / "id_key.pub").read_text())
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nPidFile none\nLogLevel ERROR\n"
    )
    script = (
        "mount -t tmpfs tmpfs /run && mkdir /run/sshd && "
        f"exec {SSHD} -D -e -f {folder / 'sshd_config'}"
    )
    with open(folder / "sshd.log", "wb") as log:
        sshd = subprocess.Popen(["unshare", "-m", "sh", "-c", script], stderr=log)
    try:

        def listening() -> bool:
            if sshd.poll() is not None:
                pytest.skip(f"sshd could not start here: {(folder / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_for(listening, 10, what="sshd listening")
        yield port, folder / "id_key"
    finally:
        sshd.terminate()
        sshd.wait(10)


def test_noprovision_over_ssh_with_a_0600_key_attachment(
    shared_server, make_agent, upstream_bin, tmp_path, loopback_sshd
):
    """A lab's job: noprovision's test phase ssh-es to the device with a key attached to
    the job. ssh refuses a private key others may read: this works only as 0600."""
    port, key = loopback_sshd
    conf = tmp_path / "noprovision.yaml"
    conf.write_text(yaml.safe_dump({"device_ip": "127.0.0.1", "agent_name": "ssh-dut"}))
    connector = f"{upstream_bin}/testflinger-device-connector noprovision"
    agent = make_agent(
        shared_server.url,
        test_command=f"{connector} runtest -c {conf} testflinger.json",
        cleanup_command=f"{connector} cleanup -c {conf} testflinger.json",
    ).start()
    ssh = (
        f"ssh -i attachments/test/id_key -p {port} -o BatchMode=yes -o IdentitiesOnly=yes "
        "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "
        "root@127.0.0.1 echo logged in on the device"
    )
    body = job(agent, None) | {"test_data": {"test_cmds": ssh, "attachments": [{"agent": "k"}]}}
    job_id = shared_server.submit(body)
    attach(shared_server, job_id, [member("test/id_key", 0o600)], {"test/id_key": key.read_bytes()})
    shared_server.wait_job_state(job_id, {"complete"}, timeout=60)
    res = shared_server.result(job_id)
    assert res["test_status"] == 0, res.get("test_output")
    assert "logged in on the device" in res["test_output"]
    assert res["cleanup_status"] == 0
