"""etc/ansible (the tf_fleet module, its role and the two playbooks) driven by the real
`ansible-playbook` against two "hosts" on this machine: each an inventory entry with
`ansible_connection: local`, its own fleet file, state dir and embedded server port."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures_fleet import FleetEnv, in_short_tmp_dir, kill, processes_naming
from fixtures_server import without_coverage

pytest.importorskip("ansible")

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "etc" / "ansible"
BIN = Path(sys.executable).parent
HOSTS = ("h1", "h2")
AGENTS = ("a1", "a2", "a3")

# Every task result, one JSON line each, in the order Ansible reports them.
CALLBACK = """
import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "jsonlines"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, result, status):
        line = {
            "host": result.host.get_name(),
            "task": result.task.get_name(),
            "status": status,
            "result": result.result,
        }
        with open(os.environ["TF_FLEET_TEST_RESULTS"], "a") as out:
            out.write(json.dumps(line, default=str) + "\\n")

    def v2_runner_on_ok(self, result):
        self._write(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._write(result, "skipped")
"""


class Lab:
    """Two hosts' fleets, an inventory for them, and `ansible-playbook` runs."""

    def __init__(self, root: Path):
        self.root = root
        self.hosts = {h: FleetEnv(root / h) for h in HOSTS}
        for env in self.hosts.values():
            env.root.mkdir()
        self.ansible = root / "ansible"
        (self.ansible / "callbacks").mkdir(parents=True)
        (self.ansible / "callbacks" / "jsonlines.py").write_text(CALLBACK)
        self.polling_interval = 0.5
        self.group_vars: dict[str, Any] = {}
        self.runs = 0

    def inventory(self, **overrides: dict[str, Any]) -> Path:
        hosts = {}
        for host, env in self.hosts.items():
            hosts[host] = {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "tf_fleet_config": str(env.fleet_file),
                "tf_fleet_state_dir": str(env.state_dir),
                "tf_fleet_server": {"embedded": True, "port": env.port},
                "tf_fleet_restart": {"restart_dir": str(env.root / "restart")},
                "tf_fleet_agents": {f"{host}-{a}": {"job_queues": ["shared"]} for a in AGENTS},
                **overrides.get(host, {}),
            }
        connector = "tf-local-connector {} -c {{agent_dir}}/default.yaml testflinger.json"
        group_vars = {
            "tf_fleet_install": False,
            "tf_fleet_become": False,  # the suite runs as the hosts' owner (no sudo here)
            "tf_fleet_venv": str(BIN.parent),
            "tf_fleet_executable": str(BIN / "tf-fleet"),
            "tf_fleet_defaults": {
                "polling_interval": self.polling_interval,
                "startsecs": 1,
                "stopwaitsecs": 20,
                **{f"{p}_command": connector.format(p) for p in ("setup", "test", "cleanup")},
                "device": {"device_ip": "127.0.0.1"},
            },
            **self.group_vars,
        }
        path = self.ansible / f"inventory-{self.runs}.yml"
        path.write_text(yaml.safe_dump({"tf_fleet": {"hosts": hosts, "vars": group_vars}}))
        return path

    def play(
        self, playbook: str | Path, *args: str, inventory: Path | None = None, check: bool = True
    ) -> tuple[int, list[dict[str, Any]], str]:
        """Run a playbook; returns its exit status, every task result and its output."""
        self.runs += 1
        results = self.ansible / f"results-{self.runs}.jsonl"
        temp = self.ansible / "tmp"
        # Without the suite's coverage: ansible's own Python (the playbook, its workers, each
        # module run) is not the package's, and tracing it doubled the test's time. The
        # tf-fleet commands the module runs are measured by the CLI's own tests.
        env = {
            **without_coverage(),
            "LC_ALL": "C.UTF-8",
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_HOME": str(temp / "home"),
            "ANSIBLE_LOCAL_TEMP": str(temp / "local"),
            "ANSIBLE_REMOTE_TEMP": str(temp / "remote"),
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_LIBRARY": str(ANSIBLE_DIR / "library"),
            "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles"),
            "ANSIBLE_COLLECTIONS_PATH": str(ANSIBLE_DIR),
            "ANSIBLE_CALLBACK_PLUGINS": str(self.ansible / "callbacks"),
            "ANSIBLE_CALLBACKS_ENABLED": "jsonlines",
            "TF_FLEET_TEST_RESULTS": str(results),
        }
        inventory = inventory or self.inventory()
        proc = subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.root,
            timeout=120,
        )
        lines = results.read_text().splitlines() if results.exists() else []
        output = proc.stdout + proc.stderr
        if check:
            assert proc.returncode == 0, output
        return proc.returncode, [json.loads(line) for line in lines], output

    def tasks(self, playbook: str, tasks: list[dict[str, Any]]) -> Path:
        """A small playbook of tf_fleet tasks for every host."""
        path = self.ansible / playbook
        play = {"hosts": "tf_fleet", "gather_facts": False, "tasks": tasks}
        path.write_text(yaml.safe_dump([play], sort_keys=False))
        return path

    def pids(self) -> dict[str, int]:
        return {n: pid for env in self.hosts.values() for n, pid in env.pids().items()}

    def ready(self) -> None:
        for env in self.hosts.values():
            env.wait_for(
                lambda env=env: all(
                    r["process"] == "RUNNING" and r["last_poll"] for r in env.status().values()
                ),
                what="every agent to run and poll",
            )

    def written(self) -> dict[str, int]:
        """mtimes of every file tf-fleet or the role writes (not logs, status files, db)."""
        found: dict[str, int] = {}
        for env in self.hosts.values():
            paths = [env.fleet_file, *(env.state_dir / "supervisor").rglob("*.conf")]
            paths += [*(env.state_dir / "agents").glob("*/*.conf")]
            paths += [*(env.state_dir / "agents").glob("*/default.yaml")]
            found.update({str(p): p.stat().st_mtime_ns for p in paths})
        return found

    def cleanup(self) -> None:
        for env in self.hosts.values():
            env.cleanup()
        kill(processes_naming(self.root))


def of(results: list[dict[str, Any]], task: str) -> dict[str, dict[str, Any]]:
    """One task's result per host."""
    return {r["host"]: r for r in results if r["task"] == task}


APPLY = "tf_fleet : Apply the fleet file (tf-fleet up)"
PLAN = "tf_fleet : Plan the agents (tf-fleet plan)"
RESTART = "tf_fleet : Restart every agent safely (tf-fleet restart --safe --all)"


@pytest.fixture
def lab() -> Iterator[Lab]:
    yield from in_short_tmp_dir("tfa-", Lab)


# Seven playbook runs over two hosts, each a real ansible-playbook process (about 60 s alone):
# the suite's 120 s bound per test is too close when the cores are shared.
@pytest.mark.timeout(300)
def test_two_hosts_deploy_change_check_roll_and_down(lab: Lab) -> None:
    # Deploy: every agent of both hosts runs and polls its own host's server.
    started = time.monotonic()
    _, results, _ = lab.play(ANSIBLE_DIR / "deploy.yml")
    lab.ready()
    deploy_seconds = time.monotonic() - started
    assert {h: r["result"]["changed"] for h, r in of(results, APPLY).items()} == {
        "h1": True,
        "h2": True,
    }
    for host, env in lab.hosts.items():
        assert sorted(env.status()) == [f"{host}-{a}" for a in AGENTS]
        fleet = yaml.safe_load(env.fleet_file.read_text())
        assert fleet["state_dir"] == str(env.state_dir)
        assert oct(env.fleet_file.stat().st_mode & 0o777) == "0o600"

    # The same inventory again: nothing written, no agent touched, changed false.
    pids = lab.pids()
    mtimes = lab.written()
    _, results, _ = lab.play(ANSIBLE_DIR / "deploy.yml")
    assert [r["result"]["changed"] for r in of(results, APPLY).values()] == [False, False]
    assert all(r["result"]["written"] == [] for r in of(results, APPLY).values())
    assert lab.pids() == pids and lab.written() == mtimes

    # A changed setting in check mode: reported (the plan restarts every agent), but no
    # file is written, no agent restarted, no throwaway fleet file left.
    lab.polling_interval = 0.6
    _, results, _ = lab.play(ANSIBLE_DIR / "deploy.yml", "--check")
    for host, result in of(results, PLAN).items():
        assert result["result"]["changed"] is True
        actions = {a["name"]: a["action"] for a in result["result"]["plan"]}
        assert actions == {
            **{f"{host}-{a}": "restart" for a in AGENTS},
            "tf-fleet-server": "unchanged",
        }
    assert all(r["status"] == "skipped" for r in of(results, APPLY).values())
    assert lab.pids() == pids and lab.written() == mtimes
    assert not [p for env in lab.hosts.values() for p in env.root.glob(".tf-fleet-plan-*")]

    # Applied, one canary first per host: changed, every agent restarted once (safely:
    # each back and polling), the canary before the others.
    lab.group_vars = {"tf_fleet_canary": 1, "tf_fleet_canary_soak": "1s"}
    _, results, _ = lab.play(ANSIBLE_DIR / "deploy.yml")
    lab.group_vars = {}
    for host, result in of(results, APPLY).items():
        report = result["result"]
        assert report["changed"] is True
        assert report["applied"]["ok"] is True and report["rest"]["ok"] is True
        canaries = [op["name"] for op in report["applied"]["agents"]]
        assert report["canaries"] == canaries and len(canaries) == 1
        rest = [op["name"] for op in report["rest"]["agents"]]
        assert sorted(canaries + rest) == [f"{host}-{a}" for a in AGENTS]
    lab.ready()
    new = lab.pids()
    assert all(new[name] != pid for name, pid in pids.items()), (pids, new)
    for env in lab.hosts.values():
        conf = env.state_dir / "agents" / f"{env.root.name}-a1" / "testflinger-agent.conf"
        assert yaml.safe_load(conf.read_text())["polling_interval"] == 0.6

    # A rolling restart with a job running on each host: the jobs complete, every agent
    # comes back, and the hosts went one after the other.
    jobs = {host: env.submit("shared", 2) for host, env in lab.hosts.items()}
    for host, env in lab.hosts.items():
        env.wait_running(jobs[host])
    pids = lab.pids()
    started = time.monotonic()
    _, results, _ = lab.play(ANSIBLE_DIR / "rolling-restart.yml")
    roll_seconds = time.monotonic() - started
    for host, env in lab.hosts.items():
        env.assert_completed(jobs[host])
    restarts = [r for r in results if r["task"] == RESTART]
    assert [r["host"] for r in restarts] == ["h1", "h2"]
    assert all(r["result"]["changed"] for r in restarts)
    lab.ready()
    new = lab.pids()
    assert all(new[name] != pid for name, pid in pids.items()), (pids, new)
    print(
        f"\n2 hosts x 3 agents: deploy {deploy_seconds:.1f} s,"
        f" rolling restart with a 2 s job per host {roll_seconds:.1f} s"
    )

    # A host that fails stops the roll: h1's fleet file is missing, h2 is never touched.
    pids = lab.pids()
    broken = lab.inventory(h1={"tf_fleet_config": str(lab.root / "h1" / "missing.yaml")})
    rc, results, _ = lab.play(ANSIBLE_DIR / "rolling-restart.yml", inventory=broken, check=False)
    assert rc != 0
    failed = of(results, RESTART)
    assert list(failed) == ["h1"] and failed["h1"]["status"] == "failed"
    message = failed["h1"]["result"]["msg"]
    assert message.startswith("error: ") and "cannot read the fleet file" in message, message
    assert failed["h1"]["result"]["rc"] == 2
    assert lab.pids() == pids

    # drained / resumed / down report a change only when there was one; down leaves no
    # process of either fleet.
    module = {"config": "{{ tf_fleet_config }}", "executable": "{{ tf_fleet_executable }}"}
    first = {"names": ["{{ inventory_hostname }}-a1"]}
    steps: list[tuple[str, dict[str, Any], bool]] = [
        ("drain", {"state": "drained", **first}, True),
        ("drain again", {"state": "drained", **first}, False),
        ("resume", {"state": "resumed"}, True),
        ("resume again", {"state": "resumed"}, False),
        ("down", {"state": "down"}, True),
        ("down again", {"state": "down"}, False),
    ]
    tasks = [{"name": name, "tf_fleet": {**module, **args}} for name, args, _ in steps]
    _, results, _ = lab.play(lab.tasks("drain-resume-down.yml", tasks))
    changed = {n: [r["result"]["changed"] for r in of(results, n).values()] for n, *_ in steps}
    assert changed == {name: [want, want] for name, _, want in steps}
    for env in lab.hosts.values():
        assert env.processes() == [] and env.agent_processes() == []
        assert env.own_processes() == []


def _module() -> Any:
    spec = importlib.util.spec_from_file_location("tf_fleet", ANSIBLE_DIR / "library/tf_fleet.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "params, problem",
    [
        ({"state": "up"}, None),
        ({"state": "restarted", "names": ["a"], "max_parallel": 2}, None),
        ({"state": "restarted", "canary": 1}, None),
        ({"state": "up", "names": ["a"]}, "names: state up acts on the whole fleet file"),
        ({"state": "down", "canary": 1}, "canary: only for states up and restarted, not down"),
        (
            {"state": "restarted", "canary": 1, "names": ["a"]},
            "canary: restarts every agent; leave names empty",
        ),
        ({"state": "up", "max_parallel": 2}, "max_parallel: only for state restarted, not up"),
        ({"state": "up", "canary": 1, "canary_soak": "5s", "canary_jobs": 2}, None),
        ({"state": "up", "canary_soak": "5s"}, "canary_soak: goes with canary"),
        (
            {"state": "restarted", "force_rejected": True},
            "force_rejected: only for state up, not restarted",
        ),
        (
            {"state": "up", "canary": 1, "wait": False},
            "wait: false does not go with canary (the gate is waited for)",
        ),
        ({"state": "down", "wait": False}, "wait: only for states up and drained, not down"),
    ],
)
def test_module_refuses_options_that_do_not_fit_the_state(params, problem) -> None:
    full = {"names": [], "canary": None, "max_parallel": None, **params}
    assert _module().problem(full) == problem


WAIT = "tf_fleet : Wait for the change (tf-fleet up)"
RENDER = "tf_fleet : Render the fleet file"


def _confs(env: FleetEnv) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in env.state_dir.glob("agents/*/*.conf")}


# Six playbook runs over two hosts, as above.
@pytest.mark.timeout(400)
def test_waves_stop_at_a_failed_canary_host_and_a_rejected_change_stays_refused(lab: Lab) -> None:
    # One agent name on two hosts that poll one server: refused before any host is touched.
    shared = {"tf_fleet_server": "http://127.0.0.1:9", "tf_fleet_agents": {"dut-1": {}}}
    twice = lab.inventory(h1=shared, h2=shared)
    rc, results, _ = lab.play(ANSIBLE_DIR / "deploy.yml", inventory=twice, check=False)
    assert rc != 0
    failed = [r for r in results if r["status"] == "failed"]
    assert len(failed) == 1, failed
    assert "dut-1 on h1 and h2 (http://127.0.0.1:9)" in failed[0]["result"]["msg"], failed
    assert not any(env.fleet_file.exists() for env in lab.hosts.values())

    # A fresh host in check mode: nothing installed yet, nothing fails, the file it would
    # get (with `name:` and `metrics:` from the role) shown, nothing written.
    lab.group_vars = {"tf_fleet_executable": str(lab.root / "not-installed" / "tf-fleet")}
    fresh = lab.inventory(
        h1={"tf_fleet_name": "lab-h1", "tf_fleet_metrics": {"base_port": 9400}},
    )
    lab.group_vars = {}
    _, results, _ = lab.play(ANSIBLE_DIR / "deploy.yml", "--check", "--diff", inventory=fresh)
    after = of(results, RENDER)["h1"]["result"]["diff"][0]["after"]
    assert yaml.safe_load(after)["name"] == "lab-h1"
    assert yaml.safe_load(after)["metrics"] == {"base_port": 9400}
    assert not any(env.fleet_file.exists() for env in lab.hosts.values())

    lab.play(ANSIBLE_DIR / "deploy.yml")
    lab.ready()
    pids = lab.pids()
    h2_confs = _confs(lab.hosts["h2"])

    # A bad build through the canary host (the first wave, one host): its canary fails
    # the gate and is rolled back, the play stops, the next wave (h2) is never touched.
    lab.group_vars = {"tf_fleet_canary": 1, "tf_fleet_canary_soak": "1s"}
    bad: dict[str, dict[str, Any]] = {}
    for host in HOSTS:
        agents: dict[str, dict[str, Any]] = {
            f"{host}-{a}": {"job_queues": ["shared"]} for a in AGENTS
        }
        agents[f"{host}-a1"]["agent_command"] = "/bin/false"  # a build that does not start
        bad[host] = {"tf_fleet_agents": agents}
    rc, results, _ = lab.play(
        ANSIBLE_DIR / "deploy.yml", inventory=lab.inventory(**bad), check=False
    )
    assert rc != 0
    applied = of(results, APPLY)
    assert list(applied) == ["h1"] and applied["h1"]["status"] == "failed"
    assert "canary gate failed" in applied["h1"]["result"]["msg"], applied["h1"]["result"]
    assert lab.pids()["h2-a2"] == pids["h2-a2"] and _confs(lab.hosts["h2"]) == h2_confs

    # Without the canary (a plain deploy), the module refuses the rejected change.
    lab.group_vars = {}
    rc, results, _ = lab.play(
        ANSIBLE_DIR / "deploy.yml", inventory=lab.inventory(**bad), check=False
    )
    assert rc != 0
    refused = of(results, APPLY)
    assert list(refused) == ["h1"] and refused["h1"]["result"]["rc"] == 1
    message = refused["h1"]["result"]["msg"]
    assert "the change was rejected at" in message and "--force-rejected" in message, message
    assert lab.pids()["h2-a2"] == pids["h2-a2"] and _confs(lab.hosts["h2"]) == h2_confs

    # A new change with a job running on h1 and a short timeout: `up` only asks, and the
    # wait says it timed out; nothing is interrupted, and the next run finishes the change.
    h1 = lab.hosts["h1"]
    job = h1.hold_running("shared")
    lab.group_vars = {"tf_fleet_timeout": "2s"}
    inventory = lab.inventory()
    text = yaml.safe_load(inventory.read_text())
    text["tf_fleet"]["vars"]["tf_fleet_defaults"]["location"] = "rack 2"
    inventory.write_text(yaml.safe_dump(text))
    rc, results, _ = lab.play(ANSIBLE_DIR / "deploy.yml", inventory=inventory, check=False)
    assert rc != 0
    assert of(results, APPLY)["h1"]["status"] == "ok"
    waited = of(results, WAIT)
    assert list(waited) == ["h1"] and waited["h1"]["status"] == "failed"
    assert waited["h1"]["result"]["msg"].startswith("timed out after 2s"), waited["h1"]["result"]
    h1.release(job)
    lab.group_vars = {}
    _, results, _ = lab.play(ANSIBLE_DIR / "deploy.yml", inventory=inventory)
    h1.assert_completed(job)
    assert list(of(results, APPLY)) == ["h1", "h2"]
    lab.ready()
    for env in lab.hosts.values():
        assert all("rack 2" in conf for conf in _confs(env).values())
