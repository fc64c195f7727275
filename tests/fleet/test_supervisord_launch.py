"""The private supervisord's parser of included files gives what supervisor's own gives."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from supervisor import options as supervisor_options

from multiagent.fleet.supervisord import launch

STOCK = supervisor_options.UnhosedConfigParser
SCALARS = (str, int, float, bool, type(None), tuple, list, dict)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "supervisord.conf"


def _realize(conf: Path, parser: type[Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What supervisor makes of `conf` with `parser`: the parser's sections, defaults and
    file of each section, and every program's settings."""
    made: list[Any] = []

    class Recorded(parser):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(supervisor_options, "UnhosedConfigParser", Recorded)
    opts = supervisor_options.ServerOptions()
    opts.configfile = str(conf)
    opts.process_config(do_usage=False)
    (read,) = made
    programs = {
        group.name: [
            {k: v for k, v in sorted(vars(p).items()) if isinstance(v, SCALARS)}
            for p in group.process_configs
        ]
        for group in opts.process_group_configs
    }
    return {
        "sections": {name: dict(read.items(name)) for name in read.sections()},
        "order": read.sections(),
        "defaults": dict(read.defaults()),
        "files": dict(read.section_to_file),
        "programs": programs,
        "infos": opts.parse_infos,
        "warnings": opts.parse_warnings,
    }


MAIN = """\
    [supervisord]
    logfile=%(here)s/supervisord.log
    pidfile=%(here)s/supervisord.pid

    [include]
    files = conf.d/*.conf other/*.conf missing/*.conf
"""


def program(name: str, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        [program:{name}]
        command=/bin/sleep 1000 ; a comment
        directory=%(here)s
        stdout_logfile=%(here)s/{name}.log
        environment=A="1",B="%(here)s"
        {extra}
    """)


def _both(tmp_path: Path, files: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple:
    conf = _write(tmp_path, files)
    stock = _realize(conf, STOCK, monkeypatch)
    linear = _realize(conf, launch.linear_parser(STOCK), monkeypatch)
    return stock, linear


def test_many_included_files_read_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    files = {"supervisord.conf": MAIN}
    for i in range(30):
        files[f"conf.d/a{i:02d}.conf"] = program(f"a{i:02d}", "priority=5" if i % 2 else "")
    # another directory: %(here)s is each file's own directory
    files["other/b.conf"] = program("b") + "\n[group:g]\nprograms=a00,a01\n"
    stock, linear = _both(tmp_path, files, monkeypatch)
    assert linear == stock
    assert linear["sections"]["program:b"]["directory"] == str(tmp_path / "other")
    assert linear["sections"]["program:a07"]["directory"] == str(tmp_path / "conf.d")
    assert linear["files"]["program:b"] == str(tmp_path / "other/b.conf")
    assert any("No file matches" in w for w in linear["warnings"])


def test_a_section_in_two_files_merges_as_supervisor_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    files = {
        "supervisord.conf": MAIN,
        "conf.d/1.conf": program("x", "startsecs=3"),
        "conf.d/2.conf": "[program:x]\nstartsecs=7\nstdout_logfile=%(here)s/second.log\n",
        # an option given in the main file's own section by an included one
        "other/z.conf": "[supervisord]\nidentifier=%(here)s\n",
    }
    stock, linear = _both(tmp_path, files, monkeypatch)
    assert linear == stock
    assert linear["sections"]["program:x"]["startsecs"] == "7"
    assert linear["sections"]["program:x"]["command"] == "/bin/sleep 1000"
    assert linear["files"]["program:x"] == str(tmp_path / "conf.d/1.conf")


def test_a_default_section_in_an_included_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    files = {
        "supervisord.conf": MAIN,
        "conf.d/1.conf": program("x"),
        "conf.d/2.conf": "[DEFAULT]\nstderr_logfile=%(here)s/err.log\n" + program("y"),
        "other/3.conf": program("z"),
    }
    stock, linear = _both(tmp_path, files, monkeypatch)
    assert linear == stock
    assert linear["sections"]["program:x"]["stderr_logfile"] == str(tmp_path / "conf.d/err.log")


def test_a_malformed_included_file_is_the_same_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    conf = _write(
        tmp_path,
        {
            "supervisord.conf": MAIN,
            "conf.d/1.conf": program("x"),
            "conf.d/2.conf": "no section header here\n",
        },
    )
    errors = []
    for parser in (STOCK, launch.linear_parser(STOCK)):
        with pytest.raises(ValueError) as caught:
            _realize(conf, parser, monkeypatch)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
    assert "2.conf" in errors[1]


def test_install_leaves_a_parser_it_does_not_know(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(supervisor_options, "UnhosedConfigParser", object)
    assert launch.install() is False
    assert supervisor_options.UnhosedConfigParser is object
    monkeypatch.setattr(supervisor_options, "UnhosedConfigParser", STOCK)
    assert launch.install() is True
    assert issubclass(supervisor_options.UnhosedConfigParser, STOCK)


def test_the_launcher_runs_supervisord(tmp_path: Path):
    """What a user runs: the launcher answers as supervisord does."""
    done = subprocess.run(
        [sys.executable, "-m", "multiagent.fleet.supervisord.launch", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    from importlib.metadata import version

    assert done.stdout.strip() == version("supervisor")
