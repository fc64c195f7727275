"""Every endpoint of `/v1/openapi.json` fuzzed in-process (Schemathesis over WSGI, with a
fixed seed and a bounded number of examples): no input gives a 5xx."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, seed, settings  # noqa: E402

from multiagent.server.app import create_app  # noqa: E402
from multiagent.server.limits import Limits  # noqa: E402
from multiagent.server.policy import Policy  # noqa: E402

_DB = Path(tempfile.mkdtemp(prefix="tf-fuzz-")) / "fuzz.db"
# Small limits so generated bodies also cross them; an agent and a job exist, so ids and
# names sometimes hit real rows.
APP = create_app(_DB, Policy(limits=Limits(body_bytes=8192, text_chars=512, name_chars=128)))
_seed_client = APP.test_client()
_seed_client.post("/v1/agents/data/dut-1", json={"queues": ["lab"]})
_seed_client.post("/v1/job", json={"job_queue": "lab"})

_config = schemathesis.config.SchemathesisConfig()
# Valid and invalid bodies, parameters and types alike.
_config.projects.default.generation.update(
    modes=list(schemathesis.GenerationMode), deterministic=True, database="none"
)
schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", APP, config=_config)


# 15 examples per operation, valid and invalid alike: 25 found no more (none gave a 5xx)
# and cost the suite's two cores about 30 s more.
@seed(20260528)
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@schema.parametrize()
def test_no_5xx_from_any_input(case):
    response = case.call()
    assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])
