"""The record of the last rendering: reused only when its key and every file's digest
match, and its key changes with every input of rendering."""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multiagent.fleet.host import rendered
from multiagent.fleet.model.fleetfile import parse_fleet
from multiagent.fleet.model.render import Program, Rendering
from multiagent.fleet.model.templating import template_dir

CONF = Path("/s/supervisor/conf.d")


def _rendering() -> Rendering:
    programs = {
        name: Program(
            name,
            CONF / f"{name}.conf",
            f"[program:{name}]\n",
            {Path(f"/s/agents/{name}/testflinger-agent.conf"): f"agent_id: {name}\n"},
        )
        for name in ("a", "b")
    }
    programs["tf-fleet-server"] = Program("tf-fleet-server", CONF / "srv.conf", "[program:s]\n")
    return Rendering((Path("/s/supervisor/supervisord.conf"), "[supervisord]\n"), programs)


def test_the_files_on_disk_as_recorded_are_the_rendering():
    rendering = _rendering()
    record = rendered.record_of(rendering, "k")
    again = rendered.rendering_from(record, "k", rendering.all_files().get)
    assert again == rendering
    assert list(again.programs) == list(rendering.programs)


def test_any_file_not_as_recorded_or_another_key_renders_again():
    rendering = _rendering()
    record = rendered.record_of(rendering, "k")
    files = rendering.all_files()
    assert rendered.rendering_from(record, "other", files.get) is None
    for path in files:
        edited = {**files, path: files[path] + "# by hand\n"}
        assert rendered.rendering_from(record, "k", edited.get) is None, path
        removed = {p: t for p, t in files.items() if p != path}
        assert rendered.rendering_from(record, "k", removed.get) is None, path


def test_a_record_of_another_shape_renders_again():
    files = _rendering().all_files()
    others: list[Any] = [None, [], {}, {"version": 1, "key": "k"}, {"version": 99, "key": "k"}]
    for record in others:
        assert rendered.rendering_from(record, "k", files.get) is None
    broken = {**rendered.record_of(_rendering(), "k"), "programs": [["a", [["/x"]]]]}
    assert rendered.rendering_from(broken, "k", files.get) is None


@dataclass(frozen=True)
class _Host:  # stands in for a RenderContext: the key takes its repr
    python: str


FLEET = textwrap.dedent("""\
    server: http://127.0.0.1:9
    state_dir: /srv/tf
    agents:
      a: {job_queues: [q]}
    """)


def test_the_key_changes_with_the_fleet_the_host_and_the_code():
    fleet = parse_fleet(FLEET, Path("/srv/fleet.yaml"))
    key = rendered.inputs_key(fleet, _Host("/py"), "code")  # type: ignore[arg-type]
    changed = parse_fleet(FLEET.replace("[q]", "[r]"), Path("/srv/fleet.yaml"))
    assert rendered.inputs_key(changed, _Host("/py"), "code") != key  # type: ignore[arg-type]
    assert rendered.inputs_key(fleet, _Host("/py3"), "code") != key  # type: ignore[arg-type]
    assert rendered.inputs_key(fleet, _Host("/py"), "newer") != key  # type: ignore[arg-type]


def test_the_code_digest_covers_the_templates(tmp_path, monkeypatch):
    copy = tmp_path / "templates"
    shutil.copytree(template_dir(), copy)
    monkeypatch.setattr("multiagent.fleet.model.templating.template_dir", lambda: copy)
    before = rendered.code_digest.__wrapped__()
    (copy / "program.conf.j2").write_text((copy / "program.conf.j2").read_text() + "; newer\n")
    assert rendered.code_digest.__wrapped__() != before


def test_ownership_from_a_text_just_read_is_as_from_the_file(tmp_path):
    from multiagent.fleet.model.layout import MARKER
    from multiagent.fleet.supervisord.ownership import is_ours

    mark = f"; {MARKER} (state dir /s): edit the fleet file"
    for text in (f"{mark}\n[program:a]\n", f"{mark}\r\n", f"x\r{mark}\n", "x\n" + mark, "", mark):
        path = tmp_path / "p.conf"
        path.write_bytes(text.encode())
        assert is_ours("state dir /s", path, text) == is_ours("state dir /s", path), repr(text)
