"""tf-agent's contract with a connector where it must be upstream's, with home-made
commands (tests/agent/test_upstream_connectors.py runs upstream's own connectors)."""

from __future__ import annotations

import sys

import requests
from fixtures_agent import job

PY = sys.executable


def test_allocate_failing_still_goes_allocated_and_waits_for_the_parent(shared_server, make_agent):
    agent = make_agent(
        shared_server.url,
        allocate_command="echo allocating; exit 1",
        cleanup_command="echo cleaned",
    ).start()
    parent = shared_server.submit({"job_queue": f"parent-of-{agent.queue}"})
    child = shared_server.submit(
        job(agent, None, parent_job_id=parent, allocate_data={"allocate": True})
    )
    shared_server.wait_job_state(child, {"allocated"}, timeout=15)
    assert shared_server.result(child)["allocate_status"] == 1
    resp = requests.post(
        f"{shared_server.url}/v1/job/{parent}/action", json={"action": "cancel"}, timeout=5
    )
    resp.raise_for_status()
    agent.wait_status(lambda s: s["job_id"] is None, 15, what="job over")
    res = shared_server.result(child)
    assert res["job_state"] == "complete" and res["cleanup_status"] == 0


def test_serial_fragments_are_numbered_across_the_job(shared_server, make_agent):
    write = f"{PY} -c \"open('{{}}-serial.log', 'w').write('{{}}' * (3 << 19))\""
    agent = make_agent(
        shared_server.url,
        setup_command=write.format("setup", "a"),
        test_command=write.format("test", "b"),
    ).start()
    job_id = shared_server.submit(job(agent, "x"))
    shared_server.wait_job_state(job_id, {"complete"}, timeout=20)

    def serial(start: int) -> dict:
        resp = shared_server.read(
            f"/v1/result/{job_id}/log/serial", params={"start_fragment": start}
        )
        resp.raise_for_status()
        return resp.json()["serial"]

    # 1.5 MiB a phase, in fragments of 1 MiB: setup 0 and 1, test 2 and 3.
    assert serial(0)["setup"]["last_fragment_number"] == 1
    later = serial(2)
    assert later["setup"]["log_data"] == "" and later["test"]["last_fragment_number"] == 3
    assert later["test"]["log_data"] == "b" * (3 << 19)
    assert len(serial(3)["test"]["log_data"]) == (3 << 19) - (1 << 20)


def test_device_info_the_connector_puts_in_the_outcome_file_is_kept(shared_server, make_agent):
    edit = (
        f"{PY} -c \"import json; p = 'testflinger-outcome.json'; d = json.load(open(p)); "
        "d['device_info'] = dict(device_ip='10.9.8.7'); json.dump(d, open(p, 'w'))\""
    )
    agent = make_agent(shared_server.url, setup_command=edit, test_command="echo tested").start()
    job_id = shared_server.submit(job(agent, "x"))
    shared_server.wait_job_state(job_id, {"complete"}, timeout=20)
    res = shared_server.result(job_id)
    assert res["device_info"] == {"device_ip": "10.9.8.7"}
    assert res["setup_status"] == 0 and res["test_status"] == 0
