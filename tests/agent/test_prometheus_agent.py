"""tf-agent's /metrics text, read by prometheus_client's own parser."""

from __future__ import annotations

from fixtures_agent import metric_samples
from prometheus_client.parser import text_string_to_metric_families

from multiagent.agent.metrics import JOB_BUCKETS, Metrics


def test_agent_metrics_parse_and_count():
    m = Metrics('dut "1"')
    m.job_started()
    m.phase_done("setup", 0, 5.0)
    m.phase_done("test", 1, 700.0)
    m.job_done()
    m.poll_error("unreachable")
    m.poll_error("unreachable")
    m.poll_error("http_500")
    m.restart_pending = 1
    families = {f.name: f for f in text_string_to_metric_families(m.render())}
    assert families["phase_duration_seconds"].type == "histogram"
    assert families["job_duration_seconds"].type == "histogram"
    assert families["poll_errors"].type == "counter"
    got = metric_samples(m.render())
    agent = ("agent_id", 'dut "1"')
    assert got[("jobs_total", (agent,))] == 1
    assert got[("failures_total", (agent, ("test_phase", "test")))] == 1
    test_le = (agent, ("le", "600"), ("test_phase", "test"))
    assert got[("phase_duration_seconds_bucket", test_le)] == 0
    test_le = (agent, ("le", "1200"), ("test_phase", "test"))
    assert got[("phase_duration_seconds_bucket", test_le)] == 1
    assert got[("job_duration_seconds_count", (agent,))] == 1
    assert got[("job_duration_seconds_bucket", (agent, ("le", str(JOB_BUCKETS[0]))))] == 1
    assert got[("poll_errors_total", (agent, ("reason", "unreachable")))] == 2
    assert got[("poll_errors_total", (agent, ("reason", "http_500")))] == 1
    assert abs(got[("agent_start_time_seconds", (agent,))] - m.started_at) < 0.01
    assert got[("agent_busy", (agent,))] == 0
    assert got[("agent_restart_pending", (agent,))] == 1


def test_agent_metrics_before_any_job():
    """A fresh agent: every family is there, the histograms empty, no job timing open."""
    m = Metrics("a1")
    m.job_done()  # a job that never started leaves no observation
    got = metric_samples(m.render())
    assert got[("job_duration_seconds_count", (("agent_id", "a1"),))] == 0
    assert len(JOB_BUCKETS) + 1 == sum(1 for key in got if key[0] == "job_duration_seconds_bucket")
