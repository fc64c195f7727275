"""How tf-agent starts and idles cheaply: the config as tf-fleet writes it (JSON, read
without a YAML parser), the start without `site`, the daily log file, retries before the
server first answers, and leaving through atexit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from fixtures_agent import AgentProc

from multiagent.agent.logfile import DailyLogFile
from multiagent.fleet.model.fleetfile import parse_fleet
from multiagent.fleet.model.render import RenderContext, agent_conf_text

FLEET = """
server: "http://lab:8585"
defaults:
  job_queues: [q1, "q 2"]
  polling_interval: 2.5
  setup_command: "echo 'quoted' \\"too\\""
agents:
  dut-1: {}
  dut-2: {polling_interval: 0.00001}
"""


def _conf_texts() -> dict[str, str]:
    fleet = parse_fleet(FLEET, Path("/srv/fleet.yaml"))
    return {name: agent_conf_text(fleet, agent) for name, agent in fleet.agents.items()}


def test_rendered_config_is_the_same_mapping_for_yaml_and_the_agent(tmp_path):
    """Upstream's agent reads the file with a YAML parser; tf-agent reads the same mapping
    without importing one (a float YAML would read as a string falls back to YAML)."""
    texts = _conf_texts()
    assert texts["dut-1"].splitlines()[1] == "{"  # the JSON form, after the header
    assert not texts["dut-2"].splitlines()[1].startswith("{")  # 1e-05: block YAML
    script = (
        "import json, sys\n"
        "from multiagent.agent.config import load\n"
        "cfg = load(sys.argv[1])\n"
        "print(json.dumps([cfg.values, 'yaml' in sys.modules]))\n"
    )
    for name, text in texts.items():
        path = tmp_path / f"{name}.conf"
        path.write_text(text)
        out = subprocess.run(
            [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
        )
        values, yaml_loaded = json.loads(out.stdout)
        expected = yaml.safe_load(text)
        assert {k: values[k] for k in expected} == expected, name
        assert isinstance(expected["polling_interval"], float), name
        assert yaml_loaded == (name == "dut-2"), name


def test_agent_starts_without_site_and_reads_a_yaml_config_too(tf_server, tmp_path):
    """boot.py runs with -S: a hand-written YAML config brings site (and PyYAML) in."""
    agent = AgentProc(tmp_path, tf_server.url)
    boot = Path(RenderContext(python="", program_dir=tmp_path).agent_script)
    cmd = agent.command()
    cmd[1:3] = ["-S", str(boot)]
    started = time.time()
    # Without coverage's variables boot.py leaves site alone (it loads it for coverage).
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_PROCESS_")}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env=env, cwd="/")
    try:
        agent.proc = proc
        agent.wait_status(lambda s: (s.get("last_poll") or 0) > started, what="first poll")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    # The log's last line was flushed although the process skipped the interpreter's
    # teardown.
    assert agent.log_text.rstrip().endswith("exiting with status 0")


def test_daily_log_file_renames_at_a_new_day_and_keeps_six(tmp_path):
    path = tmp_path / "testflinger-agent.log"
    for day in range(1, 9):  # eight old files
        (tmp_path / f"testflinger-agent.log.2026-01-0{day}").write_text("old\n")
    (tmp_path / "testflinger-agent.log.notes").write_text("not a backup\n")
    log_file = DailyLogFile(str(path))
    log_file.write("before midnight\n", time.time())
    log_file.day = "2026-01-09"  # as if the file was opened yesterday
    log_file.write("after midnight\n", time.time())
    log_file.close()
    assert path.read_text() == "after midnight\n"
    assert (tmp_path / "testflinger-agent.log.2026-01-09").read_text() == "before midnight\n"
    kept = sorted(p.name for p in tmp_path.glob("testflinger-agent.log.2026-*"))
    assert kept == [f"testflinger-agent.log.2026-01-0{d}" for d in range(4, 10)]
    assert (tmp_path / "testflinger-agent.log.notes").exists()


def test_agent_retries_often_until_its_server_first_answers(tmp_path):
    """Before the first answer the agent tries every 0.5 s, not on a doubling back-off:
    at a cold start its server may come up seconds after it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    attempts: list[float] = []

    def refuse() -> None:  # accept and hang up at once: no answer, like a server starting
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            attempts.append(time.monotonic())
            conn.close()

    threading.Thread(target=refuse, daemon=True).start()
    agent = AgentProc(tmp_path, f"http://127.0.0.1:{port}")
    agent.start(wait_polling=False)
    try:
        time.sleep(4.0)
    finally:
        agent.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        agent.proc.wait(20)  # type: ignore[union-attr]
        listener.close()
    # A doubling back-off from 1 s would have tried at 0, 1, 3 s (three times).
    assert len(attempts) >= 6, attempts


def test_agent_log_lines_levels_and_tracebacks(tmp_path, monkeypatch):
    """tf-agent's own log (no `logging` package): upstream's line format, the configured
    level, the traceback of an exception, and a bad format that still logs."""
    from multiagent.agent import log

    monkeypatch.setattr(log._Sinks, "configured", False)
    lines: list[str] = []
    log.configure(log.level_named("warning"), [lambda line, _created: lines.append(line)])
    try:
        logger = log.get("tf-agent.test")
        logger.info("not written at level %s", "WARNING")
        logger.warning("disk %s%% full", 91)
        try:
            raise KeyError("phase")
        except KeyError:
            logger.exception("job %s failed", "j1")
        logger.error("one %s %s", "argument")  # too few arguments: kept, not raised
    finally:
        log._Sinks.configured = False
    assert len(lines) == 3, lines
    assert time.strptime(lines[0][:19], "%Y-%m-%d %H:%M:%S")
    assert lines[0][19] == "," and lines[0][20:23].isdigit()
    assert lines[0][24:] == "WARNING tf-agent.test: disk 91% full\n"
    assert lines[1][24:].startswith("ERROR tf-agent.test: job j1 failed\nTraceback (most recent")
    assert lines[1].rstrip().endswith("KeyError: 'phase'")
    assert "one %s %s" in lines[2] and "'argument'" in lines[2]


def test_daily_log_file_survives_a_full_disk(tmp_path, capfd):
    log_file = DailyLogFile(str(tmp_path / "testflinger-agent.log"))
    log_file.stream.close()
    log_file.stream = open("/dev/full", "w")  # noqa: SIM115 - every write fails: ENOSPC
    for _ in range(3):
        log_file.write("lost\n", time.time())
    err = capfd.readouterr().err
    assert err.count("cannot write") == 1, err  # said once, not once per line
    assert "No space left" in err
