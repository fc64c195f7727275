"""etc/grafana/tf-fleet.json: every query names only metrics that tf-agent's /metrics or
`tf-fleet status --format prometheus` really print (as prometheus_client reads them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from multiagent.agent.metrics import Metrics
from multiagent.fleet.commands.prometheus import status_text
from multiagent.fleet.commands.status import AgentStatus, ServerStatus

DASHBOARD = Path(__file__).resolve().parents[2] / "etc" / "grafana" / "tf-fleet.json"
PROMQL_WORDS = {
    "by",
    "without",
    "and",
    "or",
    "unless",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
}


def printed_metrics() -> set[str]:
    """Every sample name both sources print, each family with at least one sample."""
    agent = Metrics("a1")
    agent.job_started()
    agent.phase_done("test", 1, 3.0)
    agent.job_done()
    agent.poll_error("unreachable")
    row = AgentStatus("a1", "RUNNING", 7, 10.0, "test", "j", "test", False, 1.0, False)
    server = ServerStatus("http://127.0.0.1:8585", True, "ok", "tf-fleet-server", "RUNNING")
    texts = [agent.render(), status_text(True, [row], server, 2.0, "lab", "h1")]
    return {
        sample.name
        for text in texts
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions,
    keywords, label names (in {...}, by/without (...)), ranges or Grafana variables."""
    text = re.sub(r"\$\w+", "", expr)
    text = re.sub(r'"[^"]*"', "", text)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group() in PROMQL_WORDS:
            continue  # a function or an aggregation
        names.add(match.group())
    return names


def test_every_dashboard_query_names_a_printed_metric():
    dashboard = json.loads(DASHBOARD.read_text())
    printed = printed_metrics()
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 10
    used = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= printed, f"{expr!r} reads {sorted(names - printed)}, printed by neither"
        used |= names
    # the dashboard shows both sources
    assert any(n.startswith("tf_fleet_") for n in used)
    assert {"job_duration_seconds_bucket", "poll_errors_total"} <= used


def test_the_name_finder_sees_through_promql():
    expr = 'histogram_quantile(0.9, sum by (le, x) (rate(a_bucket{y="b c"}[$__rate_interval])))'
    assert metric_names(expr) == {"a_bucket"}
    assert metric_names("sum(m1) / on (agent) group_left m2 > bool 0") == {"m1", "m2"}


def test_the_dashboard_picks_hosts_and_fleets_and_every_query_follows():
    """One dashboard for a lab: the host and fleet variables read the labels both sources
    carry (status gauges and the agents' targets), and every query filters by both."""
    from multiagent.fleet.commands.prometheus import targets
    from multiagent.fleet.model.fleetfile import parse_fleet

    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"host", "fleet"} <= set(variables)
    assert variables["fleet"]["multi"] and variables["host"]["includeAll"]
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for name in metric_names(target["expr"]):
                selector = re.search(re.escape(name) + r"\{([^}]*)\}", target["expr"])
                assert selector, f"{name} in {target['expr']!r} is not filtered"
                assert 'host=~"$host"' in selector.group(1), target["expr"]
                assert 'fleet=~"$fleet"' in selector.group(1), target["expr"]
    row = AgentStatus("a1", "RUNNING", 7, 10.0, "test", "j", "test", False, 1.0, False)
    server = ServerStatus("http://127.0.0.1:8585", True, "ok", "tf-fleet-server", "RUNNING")
    for family in text_string_to_metric_families(status_text(True, [row], server, 2.0, "f", "h")):
        for sample in family.samples:
            assert {"host", "fleet"} <= set(sample.labels), sample
    fleet = parse_fleet(
        "metrics: {base_port: 9400}\nagents: {a1: {job_queues: [q]}}\n", Path("/lab/fleet.yaml")
    )
    assert {"host", "fleet"} <= set(targets(fleet, "h")[0]["labels"])
