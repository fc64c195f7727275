"""A real fleet with `metrics:`: the targets file `up` writes, each tf-agent's /metrics on
its port, and `status --format prometheus`, all read by prometheus_client's parser."""

from __future__ import annotations

import json
import socket
import stat

import requests
from fixtures_agent import metric_samples
from fixtures_server import free_port


def test_fleet_metrics_live(fleet_env):
    base, pinned = free_port(), free_port()
    fleet = fleet_env.agent_fleet(["a", "b"], queues={"a": ["qa", "qx"], "b": ["qb"]})
    fleet["metrics"] = {"base_port": base, "host": "127.0.0.1"}
    fleet["agents"]["b"].update(metrics_port=pinned, location="rack 3")
    fleet_env.start(fleet)

    path = fleet_env.state_dir / "prometheus" / "targets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    host = socket.gethostname()
    fleet_label = str(fleet_env.state_dir.resolve())  # the file names no fleet
    assert json.loads(path.read_text()) == [
        {
            "targets": [f"127.0.0.1:{base}"],
            "labels": {"agent": "a", "queues": "qa,qx", "host": host, "fleet": fleet_label},
        },
        {
            "targets": [f"127.0.0.1:{pinned}"],
            "labels": {
                "agent": "b",
                "queues": "qb",
                "host": host,
                "fleet": fleet_label,
                "location": "rack 3",
            },
        },
    ]

    job = fleet_env.submit("qb", 0)
    fleet_env.assert_completed(job)
    for name, port in (("a", base), ("b", pinned)):
        got = metric_samples(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
        agent = (("agent_id", name),)
        assert got[("agent_busy", agent)] == 0
        assert got[("job_duration_seconds_count", agent)] == (1 if name == "b" else 0)
        assert got[("jobs_total", agent)] == (1 if name == "b" else 0)
    b_test = (("agent_id", "b"), ("test_phase", "test"))
    got = metric_samples(requests.get(f"http://127.0.0.1:{pinned}/metrics", timeout=5).text)
    assert got[("phase_duration_seconds_count", b_test)] == 1

    proc = fleet_env.run("status", "--format", "prometheus")
    got = metric_samples(proc.stdout)

    def of(**labels: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted({"host": host, "fleet": fleet_label, **labels}.items()))

    assert got[("tf_fleet_supervisord_up", of())] == 1
    assert got[("tf_fleet_server_reachable", of(url=fleet_env.server_url))] == 1
    assert got[("tf_fleet_agents", of())] == 2
    assert got[("tf_fleet_change_rejected", of())] == 0
    for name in ("a", "b"):
        assert got[("tf_fleet_agent_up", of(agent=name))] == 1
        assert got[("tf_fleet_agent_process_state", of(agent=name, state="RUNNING"))] == 1
        assert got[("tf_fleet_agent_busy", of(agent=name))] == 0
        assert got[("tf_fleet_agent_last_poll_age_seconds", of(agent=name))] < 60

    # A second `up` with no change writes nothing, the targets file included.
    again = json.loads(fleet_env.run("up", "--json").stdout)
    assert again["written"] == []
