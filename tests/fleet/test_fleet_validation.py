"""Malformed fleet files: each gives a message naming file, line, agent and field."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import fields
from pathlib import Path

import pytest

from multiagent.agent import config as agent_config
from multiagent.fleet.model import fleetschema
from multiagent.fleet.model.fleetfile import Agent, FleetError, parse_fleet

GOOD_AGENT = "    job_queues: [q]\n"

CASES = [
    # (id, fleet text, expected fragments of one message)
    (
        "bad-canary-soak",
        "restart:\n  canary_soak: soon\nagents:\n  a1:\n" + GOOD_AGENT,
        ["fleet.yaml:2:", "restart.canary_soak:", "expected a duration"],
    ),
    (
        "bad-duplicate-names",
        "duplicate_names: ignore\nagents:\n  a1:\n" + GOOD_AGENT,
        ["fleet.yaml:1:", "duplicate_names:", "warn", "refuse"],
    ),
    (
        "bad-fleet-name",
        "name: [lab]\nagents:\n  a1:\n" + GOOD_AGENT,
        ["fleet.yaml:1:", "name:", "letters, digits"],
    ),
    (
        "unknown-top-key",
        "agent:\n  a1:\n" + GOOD_AGENT,
        ["fleet.yaml:1:", "agent: unknown key; did you mean 'agents'?"],
    ),
    (
        "unknown-agent-key",
        "agents:\n  a1:\n    job_queue: [q]\n",
        [
            "fleet.yaml:3:",
            "agent 'a1'",
            "agents.a1.job_queue: unknown key; did you mean 'job_queues'?",
        ],
    ),
    (
        "unknown-default-key",
        "defaults:\n  polling_intreval: 5\nagents:\n  a1:\n" + GOOD_AGENT,
        [
            "fleet.yaml:2:",
            "defaults.polling_intreval: unknown key; did you mean 'polling_interval'?",
        ],
    ),
    (
        "duplicate-agent",
        "agents:\n  a1:\n" + GOOD_AGENT + "  a1:\n" + GOOD_AGENT,
        ["fleet.yaml:4:", "agent 'a1'", "is written twice (lines 2 and 4)"],
    ),
    (
        "bad-name-slash",
        "agents:\n  lab/a1:\n" + GOOD_AGENT,
        ["fleet.yaml:2:", "agents.lab/a1:", "an agent name must be"],
    ),
    ("bad-name-space", "agents:\n  'a 1':\n" + GOOD_AGENT, ["agents.a 1:", "agent name"]),
    ("bad-name-colon", "agents:\n  'a:1':\n" + GOOD_AGENT, ["agents.a:1:", "agent name"]),
    ("bad-name-leading-dot", "agents:\n  .hidden:\n" + GOOD_AGENT, ["agents..hidden:"]),
    ("name-too-long", "agents:\n  " + "a" * 65 + ":\n" + GOOD_AGENT, ["an agent name must be"]),
    ("reserved-name", "agents:\n  tf-fleet-server:\n" + GOOD_AGENT, ["reserved"]),
    (
        "no-queues",
        "agents:\n  a1:\n    location: lab\n",
        ["fleet.yaml:2:", "agent 'a1'", "agents.a1.job_queues: required"],
    ),
    (
        "empty-queues",
        "agents:\n  a1:\n    job_queues: []\n",
        ["fleet.yaml:3:", "job_queues: expected a non-empty list of non-empty queue names"],
    ),
    (
        "queues-not-list",
        "agents:\n  a1:\n    job_queues: q\n",
        ["job_queues: expected a non-empty list of non-empty queue names, got the string 'q'"],
    ),
    (
        "server-no-scheme",
        "server: testflinger.example.com\nagents:\n  a1:\n" + GOOD_AGENT,
        ["fleet.yaml:1:", "server: expected `embedded` or an http(s):// URL"],
    ),
    ("server-ftp", "server: ftp://x\nagents:\n  a1:\n" + GOOD_AGENT, ["server: expected"]),
    (
        "embedded-bad-port",
        "server: {embedded: true, port: 70000}\nagents:\n  a1:\n" + GOOD_AGENT,
        ["server.port: expected a port number"],
    ),
    (
        "wrong-type-int",
        "agents:\n  a1:\n" + GOOD_AGENT + "    global_timeout: soon\n",
        [
            "fleet.yaml:4:",
            "agents.a1.global_timeout: expected a positive whole number, got the string 'soon'",
        ],
    ),
    (
        "wrong-type-bool",
        "agents:\n  a1:\n" + GOOD_AGENT + "    logging_quiet: 'yes'\n",
        ["logging_quiet: expected true or false"],
    ),
    (
        "derived-key",
        "agents:\n  a1:\n" + GOOD_AGENT + "    agent_id: other\n",
        ["agents.a1.agent_id: is derived by tf-fleet"],
    ),
    (
        "derived-server-address",
        "defaults:\n  server_address: http://x\nagents:\n  a1:\n" + GOOD_AGENT,
        ["defaults.server_address: is derived"],
    ),
    (
        "bad-env-name",
        "agents:\n  a1:\n" + GOOD_AGENT + "    environment: {'1X': y}\n",
        ["environment: '1X' is not a valid environment variable name"],
    ),
    (
        "env-newline",
        "agents:\n  a1:\n" + GOOD_AGENT + '    environment: {X: "a\\nb"}\n',
        ["environment: X: control characters"],
    ),
    (
        "env-edge-quote",
        "agents:\n  a1:\n" + GOOD_AGENT + "    environment: {X: '\"a'}\n",
        ["environment: X: a value cannot start or end with a quote"],
    ),
    (
        "bad-mode",
        "supervisor: {mode: shared}\nagents:\n  a1:\n" + GOOD_AGENT,
        ["supervisor.mode: expected `private` or `system`"],
    ),
    (
        "bad-restart-method",
        "restart: {method: kill}\nagents:\n  a1:\n" + GOOD_AGENT,
        ["restart.method: expected `signal` or `file`"],
    ),
    (
        "bad-timeout",
        "restart: {timeout: forever}\nagents:\n  a1:\n" + GOOD_AGENT,
        ["restart.timeout: expected a duration"],
    ),
    (
        "relative-restart-dir",
        "restart: {restart_dir: tmp}\nagents:\n  a1:\n" + GOOD_AGENT,
        ["restart.restart_dir: expected an absolute path"],
    ),
    ("no-agents", "server: embedded\n", ["agents: the fleet has no agents"]),
    ("agents-list", "agents:\n  - a1\n", ["agents: expected a mapping of agent name"]),
    ("not-a-mapping", "- a\n- b\n", ["the fleet file must be a mapping"]),
    ("yaml-syntax", "agents:\n  a1: [q\n", ["fleet.yaml:", "YAML syntax error"]),
    (
        "stopwaitsecs-zero",
        "agents:\n  a1:\n" + GOOD_AGENT + "    stopwaitsecs: 0\n",
        ["stopwaitsecs: must be greater than 0"],
    ),
    (
        "images-shape",
        "agents:\n  a1:\n" + GOOD_AGENT + "    advertised_images: {q: [x]}\n",
        ["advertised_images: expected a mapping of queue names to {image name: string}"],
    ),
]


@pytest.mark.parametrize("text,fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_fleet_is_rejected_with_a_precise_message(text, fragments):
    with pytest.raises(FleetError) as caught:
        parse_fleet(text, Path("/lab/fleet.yaml"), "fleet.yaml")
    messages = [str(p) for p in caught.value.problems]
    assert any(all(f in m for f in fragments) for m in messages), messages


def test_every_problem_is_reported_at_once():
    text = textwrap.dedent("""\
        server: nope
        agents:
          a1:
            job_queue: [q]
          a2:
            job_queues: [q]
            global_timeout: x
        """)
    with pytest.raises(FleetError) as caught:
        parse_fleet(text, Path("/lab/fleet.yaml"), "fleet.yaml")
    fields = {p.field for p in caught.value.problems}
    assert {
        "server",
        "agents.a1.job_queue",
        "agents.a1.job_queues",
        "agents.a2.global_timeout",
    } <= fields


def test_defaults_overlay_and_placeholders():
    text = textwrap.dedent("""\
        server: https://tf.example.com/
        defaults:
          job_queues: [shared]
          location: "rack 3, {agent}"
          environment: {A: "1", B: "2"}
          test_command: "connector test -c {agent_dir}/default.yaml"
        agents:
          dut-1:
            environment: {B: "3"}
          dut-2:
            job_queues: [own]
            execution_basedir: /srv/run/{agent}
        """)
    fleet = parse_fleet(text, Path("/lab/fleet.yaml"))
    one, two = fleet.agents["dut-1"], fleet.agents["dut-2"]
    assert fleet.server.url == "https://tf.example.com"
    assert one.upstream["job_queues"] == ["shared"]
    assert one.upstream["location"] == "rack 3, dut-1"
    assert one.environment == {"A": "1", "B": "3"}
    assert one.upstream["test_command"] == (
        "connector test -c /lab/.tf-fleet/agents/dut-1/default.yaml"
    )
    # each agent has its own results dir unless set: shared ones re-send others' results
    assert one.upstream["results_basedir"] == "/lab/.tf-fleet/agents/dut-1/results"
    assert two.upstream["job_queues"] == ["own"]
    assert two.upstream["execution_basedir"] == "/srv/run/dut-2"


def test_a_bad_default_is_one_problem_not_one_per_agent():
    text = "defaults:\n  job_queues: 3\nagents:\n  a1: {}\n  a2: {}\n"
    with pytest.raises(FleetError) as caught:
        parse_fleet(text, Path("/lab/fleet.yaml"), "fleet.yaml")
    assert [str(p) for p in caught.value.problems] == [
        "fleet.yaml:2: defaults.job_queues: expected a non-empty list of non-empty queue names,"
        " got 3"
    ]


def test_defaults_must_be_a_mapping():
    # `defaults: []` was once taken for no defaults at all, unlike `defaults: [q]`.
    text = "defaults: []\nagents:\n  a1:\n" + GOOD_AGENT
    with pytest.raises(FleetError) as caught:
        parse_fleet(text, Path("/lab/fleet.yaml"), "fleet.yaml")
    assert [str(p) for p in caught.value.problems] == [
        "fleet.yaml:1: defaults: expected a mapping of agent settings, got a list"
    ]


def test_yaml_merge_keys_are_not_duplicates():
    text = "x: &base\n  job_queues: [q]\nagents:\n  a1:\n    <<: *base\n    job_queues: [r]\n"
    with pytest.raises(FleetError) as caught:  # `x` is unknown, but no duplicate is claimed
        parse_fleet(text, Path("/lab/fleet.yaml"))
    assert [p.field for p in caught.value.problems] == ["x"]


def test_validate_command_exits_2_and_writes_nothing(tmp_path):
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text("agents:\n  a1:\n    job_queue: [q]\n  a2:\n    job_queues: 3\n")
    for command in ("validate", "up", "plan"):
        proc = subprocess.run(
            [sys.executable, "-m", "multiagent", "-c", str(fleet_file), command],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert proc.returncode == 2, proc.stderr
        assert f"{fleet_file}:3: agent 'a1', agents.a1.job_queue: unknown key" in proc.stderr
        assert "agent 'a2', agents.a2.job_queues: expected a non-empty list" in proc.stderr
        assert "3 problems; nothing was changed." in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet.yaml"]


def test_missing_fleet_file_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "multiagent", "-c", "nope.yaml", "validate"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "nope.yaml: (file): cannot read the fleet file" in proc.stderr
    assert "`tf-fleet -c FILE` or $TF_FLEET_CONFIG" in proc.stderr


def _tf_fleet(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "multiagent", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )


def test_an_unknown_agent_reads_the_same_in_every_command(tmp_path):
    names = "".join(f"  dut-0{i}:\n    job_queues: [q]\n" for i in range(1, 6))
    (tmp_path / "fleet.yaml").write_text(f"state_dir: state\nagents:\n{names}")
    said = "unknown agent 'dut-99' (fleet file fleet.yaml; agents: dut-01 ... dut-05 (5))"
    for command in ("status", "logs", "restart", "drain", "resume"):
        proc = _tf_fleet(tmp_path, command, "dut-99")
        assert proc.returncode == 2, (command, proc.stderr)
        assert said in proc.stderr, (command, proc.stderr)
        assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet.yaml"]


@pytest.mark.parametrize(
    "args",
    [
        ("restart", "--safe", "--force", "a1"),
        ("restart", "--no-wait", "a1"),
        ("restart", "--max-parallel", "3", "a1"),
        ("down", "--safe", "--force"),
        ("logs", "-n", "-3", "a1"),
    ],
    ids=" ".join,
)
def test_contradictory_or_impossible_flags_are_a_usage_error(tmp_path, args):
    (tmp_path / "fleet.yaml").write_text("state_dir: state\nagents:\n  a1:\n    job_queues: [q]\n")
    proc = _tf_fleet(tmp_path, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("Usage:") and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet.yaml"]


@pytest.mark.parametrize("command", ["up", "down", "restart", "drain", "resume", "rollback"])
def test_every_changing_command_can_refuse_to_wait_for_the_lock(tmp_path, command):
    proc = _tf_fleet(tmp_path, command, "--help")
    assert "--no-lock-wait" in proc.stdout


def test_the_example_fleet_is_valid():
    example = Path(__file__).parents[2] / "etc" / "fleet.example.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "multiagent", "-c", str(example), "validate"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "3 agent(s), valid." in proc.stdout


def test_validate_refuses_what_plan_refuses_and_names_what_only_the_host_tells(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        'server: {embedded: true, host: "a\\nb"}\n'
        "agents:\n  a1: {job_queues: [q]}\n"
    )
    for command in ("validate", "plan"):
        proc = subprocess.run(
            [sys.executable, "-m", "multiagent", "-c", str(fleet), command],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert "(render): a supervisord value cannot span lines" in proc.stderr
    assert not (tmp_path / "state").exists()  # validate writes nothing
    fleet.write_text(fleet.read_text().replace("a\\nb", "127.0.0.1"))
    proc = subprocess.run(
        [sys.executable, "-m", "multiagent", "-c", str(fleet), "validate"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "`tf-fleet plan` also checks, on this host:" in proc.stdout
    assert "`tf-fleet up` also checks: that `user:` users exist" in proc.stdout


def test_the_schema_follows_tf_agents_keys_and_builds_every_agent_field():
    upstream = set(agent_config.UPSTREAM_KEYS) - set(fleetschema.DERIVED_KEYS)
    fleet_keys = {key.name for key in fleetschema.FLEET_KEYS}
    assert set(fleetschema.AGENT_SETTINGS.keys) == upstream | fleet_keys
    assert fleet_keys | {"name", "upstream"} == {f.name for f in fields(Agent)}


def test_a_refused_key_is_never_suggested():
    text = "agents:\n  a1:\n" + GOOD_AGENT + "    server_adress: x\n"
    with pytest.raises(FleetError) as caught:
        parse_fleet(text, Path("/lab/fleet.yaml"), "fleet.yaml")
    (problem,) = caught.value.problems
    assert problem.message.startswith("unknown key") and "server_address" not in problem.message


def test_restart_file_for_an_upstream_agent_is_refused(tmp_path):
    """Upstream's agent looks for no restart file: a safe restart by file would never
    happen, so the fleet file is refused, naming the agent, and nothing is written."""
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(
        "restart: {method: file}\n"
        "agents:\n"
        "  mine:\n    job_queues: [q]\n"
        "  theirs:\n    job_queues: [q]\n    agent_command: /opt/tf/bin/testflinger-agent\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "multiagent", "-c", str(fleet_file), "up"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert (
        f"{fleet_file}:1: agent 'theirs', restart.method: `file` cannot restart agent 'theirs': "
        "its agent_command (/opt/tf/bin/testflinger-agent) is upstream's agent, which honours "
        "only SIGUSR1" in proc.stderr
    )
    assert "'mine'" not in proc.stderr and "1 problem; nothing was changed." in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet.yaml"]
