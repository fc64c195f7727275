"""`metrics:` in the fleet file, the targets file and `status --format prometheus`, without
processes: the pure parts, read back by prometheus_client's own parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from multiagent.fleet.commands.prometheus import (
    AGENT_GAUGES,
    FLEET_GAUGES,
    PREFIX,
    status_text,
    targets_text,
)
from multiagent.fleet.commands.status import AgentStatus, ServerStatus
from multiagent.fleet.model.fleetfile import FleetError, parse_fleet
from multiagent.fleet.model.render import RenderContext, render

FLEET = Path("/lab/fleet.yaml")
AGENTS = (
    "agents:\n  b:\n    job_queues: [q1, q2]\n    location: rack 3\n  a:\n    job_queues: [q]\n"
)


def parse(text: str):
    return parse_fleet(text, FLEET, "fleet.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(FleetError) as caught:
        parse(text)
    return [str(p) for p in caught.value.problems]


# -- the fleet file ---------------------------------------------------------------
def test_ports_follow_sorted_names_and_a_pinned_port_moves_no_other():
    fleet = parse("metrics: {base_port: 9400}\n" + AGENTS + "  c:\n    job_queues: [q]\n")
    assert fleet.metrics is not None
    assert fleet.metrics.ports == {"a": 9400, "b": 9401, "c": 9402}
    pinned = parse(
        "metrics: {base_port: 9400}\n" + AGENTS + "  c:\n    job_queues: [q]\n"
        "  aa:\n    job_queues: [q]\n    metrics_port: 9500\n"
    )
    assert pinned.metrics is not None
    # aa sorts second: its slot (9401) stays unused, b and c keep theirs only after it.
    assert pinned.metrics.ports == {"a": 9400, "aa": 9500, "b": 9402, "c": 9403}


def test_upstream_agents_get_no_port_and_no_metrics_means_none():
    text = AGENTS + "  up:\n    job_queues: [q]\n    agent_command: testflinger-agent\n"
    assert parse(text).metrics is None
    fleet = parse("metrics:\n  base_port: 9400\n  host: 0.0.0.0\n" + text)
    assert fleet.metrics is not None
    assert fleet.metrics.ports == {"a": 9400, "b": 9401}
    assert fleet.metrics.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics: 9400\n", "fleet.yaml:1: metrics: expected a mapping"),
        ("metrics: {}\n", "metrics.base_port: required"),
        ("metrics:\n  base_port: 70000\n", "fleet.yaml:2: metrics.base_port: expected a port"),
        ("metrics:\n  base_port: true\n", "metrics.base_port: expected a port number"),
        (
            "metrics:\n  base_port: 9400\n  hots: x\n",
            "fleet.yaml:3: metrics.hots: unknown key; did you mean 'host'?",
        ),
        (
            "metrics:\n  base_port: 9400\n  host: 'a b'\n",
            "fleet.yaml:3: metrics.host: expected a host name or IP address, got 'a b'",
        ),
        (
            "metrics:\n  base_port: 65535\n",
            "fleet.yaml:2: metrics.base_port: 2 tf-agents from port 65535 run past 65535"
            " (to 65536); choose a base_port of at most 65534",
        ),
        (
            "server: {embedded: true, port: 9401}\nmetrics: {base_port: 9400}\n",
            "fleet.yaml:2: agent 'b', metrics.base_port: port 9401 is already taken by the"
            " embedded server (`server.port`): choose another base_port",
        ),
    ],
)
def test_bad_metrics_section(text, expected):
    found = problems(text + AGENTS)
    assert any(expected in p for p in found), found


def test_bad_agent_metrics_port():
    pinned_clash = "metrics: {base_port: 9400}\n" + AGENTS + "  c:\n    job_queues: [q]\n"
    pinned_clash += "    metrics_port: 9401\n"
    assert problems(pinned_clash) == [
        "fleet.yaml:10: agent 'c', agents.c.metrics_port: port 9401 is already taken by"
        " agent 'b': pin another port"
    ]
    without = AGENTS + "    metrics_port: 9500\n"
    assert problems(without) == [
        "fleet.yaml:7: agent 'a', agents.a.metrics_port: needs `metrics:` at the top level"
        " (e.g. `metrics: {base_port: 9400}`)"
    ]
    upstream = "metrics: {base_port: 9400}\n" + AGENTS
    upstream += "    agent_command: testflinger-agent\n    metrics_port: 9500\n"
    assert problems(upstream) == [
        "fleet.yaml:9: agent 'a', agents.a.metrics_port: only tf-agent is given a metrics"
        " port (its agent_command runs another agent)"
    ]
    in_defaults = "metrics: {base_port: 9400}\ndefaults:\n  metrics_port: 9500\n" + AGENTS
    assert problems(in_defaults) == [
        "fleet.yaml:3: defaults.metrics_port: a metrics port belongs to one agent: set it"
        " under that agent (the others get `metrics.base_port` plus their index)"
    ]
    assert "expected a port number 1-65535, got 0" in problems(AGENTS + "    metrics_port: 0\n")[0]


def test_the_agent_command_gets_its_port():
    ctx = RenderContext(python="/usr/bin/python3", program_dir=Path("/s/conf.d"))
    plain = render(parse(AGENTS), ctx).programs["a"].program_text
    assert " -p " not in plain
    local = render(parse("metrics: {base_port: 9400}\n" + AGENTS), ctx)
    assert "--restart-dir /tmp -p 9400\n" in local.programs["a"].program_text
    assert "-p 9401\n" in local.programs["b"].program_text
    wide = render(parse("metrics: {base_port: 9400, host: '::'}\n" + AGENTS), ctx)
    assert "-p 9401 --metrics-host ::\n" in wide.programs["b"].program_text


def test_targets_file():
    fleet_file = parse("metrics: {base_port: 9400}\n" + AGENTS)
    fleet = {"fleet": "/lab/.tf-fleet"}  # its state dir: the file names no fleet
    assert json.loads(targets_text(fleet_file, "lab-7")) == [
        {
            "targets": ["127.0.0.1:9400"],
            "labels": {"agent": "a", "queues": "q", "host": "lab-7", **fleet},
        },
        {
            "targets": ["127.0.0.1:9401"],
            "labels": {
                "agent": "b",
                "queues": "q1,q2",
                "host": "lab-7",
                **fleet,
                "location": "rack 3",
            },
        },
    ]
    v6 = parse("metrics: {base_port: 9400, host: '::1'}\n" + AGENTS)
    assert json.loads(targets_text(v6, "h"))[0]["targets"] == ["[::1]:9400"]
    wildcard = parse("metrics: {base_port: 9400, host: 0.0.0.0}\n" + AGENTS)
    assert json.loads(targets_text(wildcard, "lab-7.example"))[0]["targets"] == [
        "lab-7.example:9400"
    ]
    assert targets_text(parse(AGENTS), "h") == "[]\n"


# -- status as gauges -------------------------------------------------------------
def row(name: str, **fields: Any) -> AgentStatus:
    base: dict[str, Any] = dict(
        process="RUNNING",
        pid=10,
        uptime_s=125.0,
        state="waiting",
        job_id=None,
        phase=None,
        restart_pending=False,
        last_poll=990.0,
        drained=False,
    )
    base.update(fields)
    return AgentStatus(name=name, **base)


def families(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        assert family.documentation, family.name
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[key] = sample.value
    return found


def test_status_gauges_parse_and_carry_each_agents_values():
    rows = [
        row("idle"),
        row(
            "busy",
            state="test",
            job_id="j1",
            phase="test",
            restart_pending=True,
            last_poll=940.5,
        ),
        row("drained", state="drained", drained=True, drain_flag="drain"),
        row("dead", process="FATAL", pid=None, uptime_s=None, state=None, last_poll=None),
        row("gone", process=None, pid=None, uptime_s=None, state=None, last_poll=None),
        row("odd", state=None, last_poll=None, unknown='status file "x" is stale'),
        row('we"ird\\name', uptime_s=3.0),
    ]
    server = ServerStatus("http://127.0.0.1:8585", True, "HTTP 200", "tf-fleet-server", "RUNNING")
    text = status_text(True, rows, server, now=1000.0, fleet="lab-a", host="h1")
    got = families(text)
    no_rejection = {PREFIX + "change_rejected_timestamp_seconds"}  # no samples without one
    assert set(got) == {PREFIX + n for n in (*FLEET_GAUGES, *AGENT_GAUGES)} - no_rejection

    def one(metric: str, agent: str, **labels: str) -> float:
        key = {"host": "h1", "fleet": "lab-a", "agent": agent, **labels}
        return got[PREFIX + metric][tuple(sorted(key.items()))]

    own = (("fleet", "lab-a"), ("host", "h1"))
    url = (*own, ("url", "http://127.0.0.1:8585"))
    assert got["tf_fleet_supervisord_up"] == {own: 1}
    assert got["tf_fleet_server_reachable"] == {url: 1}
    assert got["tf_fleet_server_up"] == {url: 1}
    assert got["tf_fleet_agents"] == {own: 7}
    assert got["tf_fleet_change_rejected"] == {own: 0}

    assert [one("agent_up", n) for n in ("idle", "busy", "dead", "gone")] == [1, 1, 0, 0]
    assert one("agent_process_state", "dead", state="FATAL") == 1
    assert one("agent_process_state", "dead", state="RUNNING") == 0
    assert one("agent_process_state", "gone", state="NOT_LOADED") == 1
    assert sum(v for k, v in got["tf_fleet_agent_process_state"].items() if ("agent", "idle") in k)
    assert [one("agent_busy", n) for n in ("idle", "busy", "odd")] == [0, 1, 1]
    assert one("agent_status_unknown", "odd") == 1
    assert one("agent_phase", "busy", phase="test") == 1
    assert one("agent_phase", "busy", phase="setup") == 0
    assert one("agent_phase", "idle", phase="test") == 0
    assert one("agent_restart_pending", "busy") == 1
    assert one("agent_drained", "drained") == 1
    assert one("agent_draining", "drained") == 1
    assert one("agent_draining", "idle") == 0
    assert [one("agent_failed", n) for n in ("idle", "dead")] == [0, 1]
    assert one("agent_last_poll_age_seconds", "idle") == 10
    assert one("agent_last_poll_age_seconds", "busy") == 59.5
    assert one("agent_uptime_seconds", "idle") == 125
    assert one("agent_uptime_seconds", 'we"ird\\name') == 3
    # unknown values are left out rather than made up
    assert ("agent", "dead") not in {k[0] for k in got["tf_fleet_agent_last_poll_age_seconds"]}
    assert ("agent", "gone") not in {k[0] for k in got["tf_fleet_agent_uptime_seconds"]}


def test_status_gauges_with_supervisord_down_and_a_remote_server():
    server = ServerStatus("https://tf.example.com", False, "connection refused")
    got = families(status_text(False, [row("a", process=None)], server, 1000.0, "/srv/f", "h"))
    own = (("fleet", "/srv/f"), ("host", "h"))
    assert got["tf_fleet_supervisord_up"] == {own: 0}
    assert got["tf_fleet_server_reachable"] == {(*own, ("url", "https://tf.example.com")): 0}
    assert "tf_fleet_server_up" not in got  # no samples: only an embedded server has a program
    empty = families(status_text(True, [], server, 0.0, "/srv/f", "h"))
    assert empty["tf_fleet_agents"] == {own: 0}


def test_two_fleets_on_one_host_coexist_in_the_textfile_collector():
    """node_exporter's textfile collector merges every *.prom file and rejects the lot when
    two hold the same series, or one family with different help texts: each fleet's
    series carry its own `fleet` label, and a rejected change shows in its fleet only."""
    from multiagent.fleet.host.rejected import Rejection

    server = ServerStatus("http://127.0.0.1:8585", True, "HTTP 200", "tf-fleet-server", "RUNNING")
    rejection = Rejection("d" * 64, 1700000000.0, ("x1",), "x1: exited")
    texts = [
        status_text(True, [row("x1"), row("x2")], server, 1000.0, "/srv/a", "h", rejection),
        status_text(True, [row("x1")], server, 1000.0, "/srv/b", "h"),
    ]
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    helps: dict[str, str] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            assert helps.setdefault(family.name, family.documentation) == family.documentation
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                assert key not in seen, f"{key} printed by both fleets"
                assert sample.labels["fleet"] in ("/srv/a", "/srv/b"), key
                seen.add(key)
    a, b = families(texts[0]), families(texts[1])
    in_a, in_b = (("fleet", "/srv/a"), ("host", "h")), (("fleet", "/srv/b"), ("host", "h"))
    assert a["tf_fleet_change_rejected"] == {in_a: 1}
    assert a["tf_fleet_change_rejected_timestamp_seconds"] == {in_a: 1.7e9}
    assert b["tf_fleet_change_rejected"] == {in_b: 0}


def test_the_fleet_label_is_the_name_or_the_state_dir():
    from multiagent.fleet.commands.prometheus import fleet_label

    assert fleet_label(parse(AGENTS)) == "/lab/.tf-fleet"
    assert fleet_label(parse("name: lab-a\n" + AGENTS)) == "lab-a"
    assert any("name" in p for p in problems("name: 'two words'\n" + AGENTS))
