"""tf-agent pieces without a server: config, attachments, triggers, status, metrics, CLI."""

from __future__ import annotations

import io
import json
import os
import pwd
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
from fixtures_agent import STATUS_KEYS

from multiagent.agent import attachments, config, outcome
from multiagent.agent import status as status_mod
from multiagent.agent import triggers as triggers_mod
from multiagent.agent.client import Client, ServerUnreachable
from multiagent.agent.metrics import Metrics
from multiagent.agent.status import DrainFlag, NameGuard, NameTaken, StatusFile
from multiagent.agent.triggers import DirWatch, Triggers, Waker
from multiagent.vocabulary import DrainMode, Phase

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from multiagent.agent import loop

MINIMAL = {"agent_id": "a1", "server_address": "127.0.0.1:9", "job_queues": ["q"]}


# -- config -------------------------------------------------------------------------
def test_config_defaults():
    cfg = config.validate("c.yaml", dict(MINIMAL))
    assert cfg.polling_interval == 10
    assert cfg.execution_basedir == "/tmp/testflinger/run"
    assert cfg.results_basedir == "/tmp/testflinger/results"
    assert cfg.logging_basedir == "/tmp/testflinger/logs"
    assert cfg.logging_level == "INFO" and cfg.logging_quiet is False
    assert cfg.server_address == "http://127.0.0.1:9"
    assert cfg.command("test") == "" and cfg.output_bytes == 10 * 1024 * 1024
    assert cfg.string_items()["agent_id"] == "a1"


@pytest.mark.parametrize(
    "data,key",
    [
        ({**MINIMAL, "bogus": 1}, "bogus"),
        ({k: v for k, v in MINIMAL.items() if k != "agent_id"}, "agent_id"),
        ({**MINIMAL, "polling_interval": "10"}, "polling_interval"),
        ({**MINIMAL, "polling_interval": True}, "polling_interval"),
        ({**MINIMAL, "job_queues": "q"}, "job_queues"),
        ({**MINIMAL, "global_timeout": 1.5}, "global_timeout"),
        ({**MINIMAL, "advertised_queues": {"q": 1}}, "advertised_queues"),
    ],
)
def test_config_errors_name_the_key(data, key):
    with pytest.raises(config.ConfigError) as err:
        config.validate("c.yaml", data)
    assert err.value.key == key
    assert str(err.value).startswith(f"c.yaml: key {key!r}")


def test_config_float_polling_interval_allowed():
    assert config.validate("c", {**MINIMAL, "polling_interval": 0.2}).polling_interval == 0.2


def test_config_empty_optional_value_means_the_default():
    cfg = config.validate("c", {**MINIMAL, "polling_interval": None, "location": None})
    assert cfg.polling_interval == 10 and cfg.location == ""
    with pytest.raises(config.ConfigError, match="got nothing"):
        config.validate("c", {**MINIMAL, "agent_id": None})


@pytest.mark.parametrize(
    "key,value,reason",
    [
        ("output_timeout", -1, "expected a positive whole number, got -1"),
        ("global_timeout", 0, "expected a positive whole number, got 0"),
        ("global_timeout", 1.5, "expected a positive whole number, got 1.5"),
        ("output_bytes", True, "expected a positive whole number, got true"),
        ("polling_interval", 0, "expected a positive number of seconds, got 0"),
        ("polling_interval", "10", "expected a positive number of seconds, got the string '10'"),
        ("polling_interval", float("inf"), "expected a positive number of seconds, got inf"),
        ("job_queues", [], "expected a non-empty list of non-empty queue names, got a list"),
        ("job_queues", ["q", ""], "expected a non-empty list of non-empty queue names"),
        ("logging_level", "verbose", "expected one of CRITICAL, "),
        ("logging_quiet", "yes", "expected true or false, got the string 'yes'"),
        ("results_basedir", "", "expected a non-empty path, got the string ''"),
        ("advertised_images", {"q": {"img": 1}}, "expected a mapping of queue names to {image"),
        ("test_command", None, "expected a string, got nothing"),
        ("job_queue", ["q"], "not a key of testflinger-agent.conf"),
    ],
)
def test_check_setting_says_what_is_wrong(key, value, reason):
    said = config.check_setting(key, value)
    assert said is not None and said.startswith(reason)
    if key in config.UPSTREAM_KEYS and value is not None:
        # The agent's own loading applies the same rule, with the same words.
        with pytest.raises(config.ConfigError) as err:
            config.validate("c.yaml", {**MINIMAL, key: value})
        assert err.value.key == key and err.value.reason == config.check_setting(key, value)


@pytest.mark.parametrize(
    "key,value",
    [
        ("polling_interval", 0.2),
        ("polling_interval", 10),
        ("output_timeout", 900),
        ("logging_level", "debug"),
        ("job_queues", ["a", "b"]),
        ("advertised_queues", {"q": "a queue"}),
        ("advertised_images", {"q": {"jammy": "url: http://x"}}),
        ("identifier", ""),
        ("cleanup_command", "echo done"),
    ],
)
def test_check_setting_accepts(key, value):
    assert config.check_setting(key, value) is None


def test_upstream_keys_are_the_loaded_keys():
    cfg = config.validate("c", dict(MINIMAL))
    assert set(cfg.values) == set(config.UPSTREAM_KEYS)
    assert {f"{phase}_command" for phase in Phase.ALL} <= set(config.UPSTREAM_KEYS)


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("agent_id: [unclosed\n")
    with pytest.raises(config.ConfigError, match="invalid YAML"):
        config.load(str(bad))
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(str(tmp_path / "missing.conf"))


@pytest.mark.parametrize(
    "body,key", [("bogus_key: 1\n", "bogus_key"), ("polling_interval: soon\n", "polling_interval")]
)
def test_cli_bad_config_exits_2(tmp_path, body, key):
    conf = tmp_path / "agent.conf"
    conf.write_text("agent_id: a1\nserver_address: x\njob_queues: [q]\n" + body)
    proc = subprocess.run(
        [sys.executable, "-m", "multiagent.agent", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(conf) in lines[0] and repr(key) in lines[0]


# -- attachments --------------------------------------------------------------------
def _tar(path: Path, *members: tuple[str, bytes, dict[str, Any]]) -> Path:
    """A .tgz of `members`: (name, data, TarInfo attributes, e.g. a link's type)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data, attrs in members:
            info = tarfile.TarInfo(name)
            info.size = len(data) if not attrs.get("type") else 0
            for k, v in attrs.items():
                setattr(info, k, v)
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    return path


def test_attachments_ok(tmp_path):
    tb = _tar(
        tmp_path / "a.tgz",
        ("test/dir/f.txt", b"hi", {}),
        ("provision/img", b"img", {}),
    )
    dest = tmp_path / "run" / "attachments"
    assert sorted(attachments.unpack(str(tb), str(dest))) == ["provision/img", "test/dir/f.txt"]
    assert (dest / "test" / "dir" / "f.txt").read_bytes() == b"hi"


@pytest.mark.parametrize(
    "name,attrs,reason",
    [
        ("test/../../x", {}, "'..'"),
        ("../x", {}, "'..'"),
        ("/etc/x", {}, "absolute"),
        ("other/x", {}, "must lie under"),
        ("test/link", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "absolute"),
        ("test/up", {"type": tarfile.SYMTYPE, "linkname": "../../x"}, "outside"),
        ("test/hard", {"type": tarfile.LNKTYPE, "linkname": "/etc/passwd"}, "absolute"),
        ("test/dev", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, "devices"),
        ("test/fifo", {"type": tarfile.FIFOTYPE}, "devices"),
    ],
)
def test_attachments_rejected(tmp_path, name, attrs, reason):
    tb = _tar(tmp_path / "a.tgz", ("test/ok", b"fine", {}), (name, b"x", attrs))
    dest = tmp_path / "run" / "attachments"
    with pytest.raises(attachments.AttachmentError, match=reason):
        attachments.unpack(str(tb), str(dest))
    assert not (dest / "test" / "ok").exists()  # nothing extracted before the check
    assert not (tmp_path / "x").exists()


def test_attachments_keep_modes_and_in_tree_links(tmp_path):
    """As tarfile's `data` filter (upstream's): a 0600 key stays 0600, a link inside the
    tree is made, setuid and group/other write go."""
    tb = _tar(
        tmp_path / "a.tgz",
        ("test/key", b"secret", {"mode": 0o600}),
        ("test/run.sh", b"#!/bin/sh", {"mode": 0o4777}),
        ("test/key-link", b"", {"type": tarfile.SYMTYPE, "linkname": "key"}),
        ("provision/key", b"", {"type": tarfile.SYMTYPE, "linkname": "../test/key"}),
        ("test/hard", b"", {"type": tarfile.LNKTYPE, "linkname": "test/key", "mode": 0o600}),
    )
    dest = tmp_path / "run" / "attachments"
    names = attachments.unpack(str(tb), str(dest))
    assert sorted(names) == [
        "provision/key",
        "test/hard",
        "test/key",
        "test/key-link",
        "test/run.sh",
    ]
    assert stat.S_IMODE((dest / "test" / "key").stat().st_mode) == 0o600
    assert stat.S_IMODE((dest / "test" / "run.sh").stat().st_mode) == 0o755
    assert os.readlink(dest / "test" / "key-link") == "key"
    assert (dest / "provision" / "key").read_bytes() == b"secret"
    assert (dest / "test" / "hard").read_bytes() == b"secret"


def test_attachments_link_then_member_through_it_is_refused(tmp_path):
    tb = _tar(
        tmp_path / "a.tgz",
        ("test/d", b"", {"type": tarfile.SYMTYPE, "linkname": "."}),
        ("test/d/../../../escaped", b"x", {}),
    )
    with pytest.raises(attachments.AttachmentError):
        attachments.unpack(str(tb), str(tmp_path / "run" / "attachments"))
    assert not (tmp_path / "escaped").exists()


def test_attachments_symlinked_dir_in_dest_is_refused(tmp_path):
    dest = tmp_path / "run" / "attachments"
    dest.mkdir(parents=True)
    (dest / "test").symlink_to(tmp_path)
    tb = _tar(tmp_path / "a.tgz", ("test/escaped", b"x", {}))
    with pytest.raises(attachments.AttachmentError, match="outside"):
        attachments.unpack(str(tb), str(dest))
    assert not (tmp_path / "escaped").exists()


def test_attachments_not_a_tarball(tmp_path):
    bad = tmp_path / "a.tgz"
    bad.write_bytes(b"")
    with pytest.raises(attachments.AttachmentError):
        attachments.unpack(str(bad), str(tmp_path / "d"))


# -- triggers -----------------------------------------------------------------------
def test_waker_wakes_and_times_out():
    waker = Waker()
    assert waker.wait(0.01) is False
    waker.wake()
    waker.wake()
    assert waker.wait(5) is True
    assert waker.wait(0) is False


def test_restart_file_rules(tmp_path, caplog):
    trig = Triggers("dev-1", str(tmp_path))
    assert trig.find_restart_file() is None
    plain = tmp_path / "TESTFLINGER-DEVICE-RESTART-dev1"  # dashes removed is accepted too
    plain.write_text("")
    assert trig.find_restart_file() == str(plain)
    plain.unlink()
    link = tmp_path / "TESTFLINGER-DEVICE-RESTART-dev-1"
    link.symlink_to(tmp_path / "elsewhere")
    for _ in range(3):
        assert trig.find_restart_file() is None
    assert caplog.text.count("not a regular file") == 1
    assert not trig.check_restart_file() and not trig.restart_pending
    link.unlink()
    (tmp_path / "TESTFLINGER-DEVICE-RESTART-dev-1").write_text("")
    assert trig.check_restart_file() and trig.restart_reason == "restart file"
    trig.consume_restart_file()
    assert not (tmp_path / "TESTFLINGER-DEVICE-RESTART-dev-1").exists()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to chown")
def test_restart_file_foreign_owner_ignored(tmp_path, caplog):
    trig = Triggers("dev-1", str(tmp_path))
    path = tmp_path / "TESTFLINGER-DEVICE-RESTART-dev-1"
    path.write_text("")
    os.chown(path, 65534, 65534)
    assert trig.find_restart_file() is None and trig.find_restart_file() is None
    assert caplog.text.count("owned by uid 65534") == 1


def _watched(tmp_path, monkeypatch, quiet=0.3):
    monkeypatch.delenv("TF_AGENT_NO_INOTIFY", raising=False)
    monkeypatch.setattr(triggers_mod, "QUIET", quiet)
    restart_dir, run_dir = tmp_path / "restart", tmp_path / "run"
    restart_dir.mkdir()
    run_dir.mkdir()
    trig = Triggers("dev-1", str(restart_dir))
    trig.start_watch(str(run_dir / "dev-1.drain"))
    return trig, restart_dir, run_dir


@pytest.mark.usefixtures("inotify_instance")
def test_libc_functions_without_the_ctypes_package(tmp_path):
    """tf-agent's libc calls go through `_ctypes` alone: they work, errno is kept, a
    missing function is an OSError, and the `ctypes` package is never imported."""
    import subprocess
    import sys

    code = f"""
import sys
from multiagent.agent import libc, memory
init = libc.function("inotify_init1", libc.INT, libc.INT)
add = libc.function("inotify_add_watch", libc.INT, libc.INT, libc.CHAR_P, libc.UINT32)
fd = init(0)
assert fd >= 0, libc.errno()
assert add(fd, {str(tmp_path).encode()!r}, 0x100) >= 1
assert add(fd, {str(tmp_path / "missing").encode()!r}, 0x100) == -1
assert libc.errno() == 2, libc.errno()  # ENOENT
try:
    libc.function("tf_agent_no_such_function", libc.INT)
except OSError as exc:
    assert "tf_agent_no_such_function" in str(exc), exc
else:
    raise AssertionError("no OSError")
memory.give_back()
assert "ctypes" not in sys.modules, "the ctypes package was imported"
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


@pytest.mark.usefixtures("inotify_instance")
def test_dir_watch_filters_by_name(tmp_path):
    watch = DirWatch()
    try:
        watch.add(str(tmp_path), triggers_mod.RESTART_MASK, ["wanted"], prefixes=(".wanted.",))
        assert watch.read() == (False, 0)
        (tmp_path / "other").write_text("x")
        (tmp_path / "wantedx").write_text("x")  # a longer name is not the name
        relevant, count = watch.read()
        assert not relevant and count
        (tmp_path / ".wanted.tmp123").write_text("x")
        assert watch.read()[0]
        (tmp_path / "wanted").write_text("")
        assert watch.read()[0]
    finally:
        watch.close()


@pytest.mark.usefixtures("inotify_instance")
def test_idle_wait_wakes_for_restart_file_not_for_others(tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO")
    trig, restart_dir, run_dir = _watched(tmp_path, monkeypatch)
    assert trig.watching == "inotify" and trig.recheck_every == triggers_mod.RECHECK
    assert "inotify on" in caplog.text
    assert trig.wait(0.05) is False
    # Unrelated names in both dirs, and another agent's status write (renamed in):
    # read and compared, never reported.
    (restart_dir / "unrelated").write_text("x")
    (run_dir / "dev-2.drain").write_text("hold")
    (restart_dir / "x.tmp").write_text("{}")
    os.replace(restart_dir / "x.tmp", run_dir / "dev-2.json")
    start = time.monotonic()
    assert trig.wait(0.2) is False
    # Woken once for nothing: events are left queued for QUIET, then read in one go.
    (restart_dir / "TESTFLINGER-DEVICE-RESTART-dev-1").write_text("")
    assert trig.wait(5) is True
    assert time.monotonic() - start < 3  # woken by the event, well before the 5 s look
    assert trig.check_restart_file()


@pytest.mark.usefixtures("inotify_instance")
def test_idle_wait_wakes_for_drain_flag(tmp_path, monkeypatch):
    trig, _, run_dir = _watched(tmp_path, monkeypatch)
    flag = run_dir / "dev-1.drain"
    flag.write_text("drain\n")
    assert trig.wait(5) is True
    flag.write_text("hold\n")  # rewritten in place
    assert trig.wait(5) is True
    flag.unlink()
    assert trig.wait(5) is True
    # tf-fleet's atomic write: a temp file `.dev-1.drain.XXXX.tmp` renamed onto the flag
    tmp = run_dir / ".dev-1.drain.abcd.tmp"
    tmp.write_text("hold\n")
    trig.wait(5)  # its creation counts already (too early, but harmless)
    os.replace(tmp, flag)
    assert trig.wait(5) is True


@pytest.mark.usefixtures("inotify_instance")
def test_signal_wakes_an_inotify_wait(tmp_path, monkeypatch):
    trig, _, _ = _watched(tmp_path, monkeypatch)
    trig.waker.wake()
    start = time.monotonic()
    assert trig.wait(5) is True and time.monotonic() - start < 3


@pytest.fixture
def closes_dnotify() -> Iterator[Callable[[Triggers], None]]:
    """Triggers handed to it get their dnotify watches closed after the test, then SIGIO's
    handler back (with a watch still open, SIGIO's default would end pytest)."""
    import signal

    before = signal.getsignal(signal.SIGIO)
    made: list[Triggers] = []
    yield made.append
    for trig in made:
        if trig.notify is not None:
            trig.notify.close()
    signal.signal(signal.SIGIO, before)


@pytest.fixture
def dnotified(tmp_path, monkeypatch, closes_dnotify):
    """Triggers of agent dev-1 watching by dnotify (as when inotify's instances are all
    taken)."""
    monkeypatch.setenv("TF_AGENT_NO_INOTIFY", "1")
    monkeypatch.delenv("TF_AGENT_NO_DNOTIFY", raising=False)
    monkeypatch.setattr(triggers_mod, "QUIET", 0.3)
    restart_dir, run_dir = tmp_path / "restart", tmp_path / "run"
    restart_dir.mkdir()
    run_dir.mkdir()
    trig = Triggers("dev-1", str(restart_dir))
    closes_dnotify(trig)
    trig.start_watch(str(run_dir / "dev-1.drain"))
    return trig, restart_dir, run_dir


def test_dnotify_wakes_for_restart_file_and_drain_flag(dnotified, caplog):
    trig, restart_dir, run_dir = dnotified
    assert trig.watching == "dnotify" and trig.recheck_every == triggers_mod.RECHECK
    assert trig.wait(0.05) is False
    start = time.monotonic()
    (restart_dir / "TESTFLINGER-DEVICE-RESTART-dev-1").write_text("")
    assert trig.wait(5) is True
    assert time.monotonic() - start < 3  # the signal, not the 5 s look (nor a poll's)
    assert trig.check_restart_file()
    flag = run_dir / "dev-1.drain"
    for change in (
        lambda: flag.write_text("drain\n"),
        lambda: flag.write_text("hold\n"),  # rewritten in place
        flag.unlink,
        # tf-fleet's atomic write: a temp file renamed onto the flag
        lambda: (run_dir / ".dev-1.drain.ab.tmp").write_text("hold\n"),
        lambda: os.replace(run_dir / ".dev-1.drain.ab.tmp", flag),
    ):
        time.sleep(triggers_mod.QUIET)  # a change each, not one busy directory
        change()
        start = time.monotonic()
        assert trig.wait(5) is True and time.monotonic() - start < 3


def test_dnotify_busy_directory_is_looked_at_once_per_quiet(dnotified):
    """Another process writing file after file in /tmp: no look per file."""
    trig, restart_dir, _ = dnotified
    (restart_dir / "first").write_text("")
    assert trig.wait(5) is True  # a change after a calm time: looked at at once
    looks, start = 0, time.monotonic()
    for i in range(200):
        (restart_dir / f"other-{i}").write_text("")
        looks += trig.wait(0)
    spent = time.monotonic() - start
    assert looks <= spent / triggers_mod.QUIET + 1
    (restart_dir / "TESTFLINGER-DEVICE-RESTART-dev-1").write_text("")
    start = time.monotonic()
    assert trig.wait(5) is True  # at the latest when the quiet time ends
    assert time.monotonic() - start < 3


def test_dnotify_change_in_a_quiet_time_ends_a_wait_when_it_ends(dnotified):
    """A change made while a wait runs in a quiet time (after a look for another change)
    is looked at when the quiet time ends, not at the end of the wait."""
    import threading

    trig, restart_dir, _ = dnotified
    (restart_dir / "other").write_text("")
    assert trig.wait(5) is True  # looked at: a quiet time starts
    later = threading.Timer(
        0.05, lambda: (restart_dir / "TESTFLINGER-DEVICE-RESTART-dev-1").write_text("")
    )
    later.start()
    start = time.monotonic()
    try:
        assert trig.wait(5) is True
        assert time.monotonic() - start < triggers_mod.QUIET + 2  # not the 5 s
    finally:
        later.join()


def test_dnotify_change_outside_an_idle_wait_wakes_nothing_and_is_kept(dnotified):
    """While a job runs (no idle wait) a change does not wake the job's loop, which
    selects on the same pipe; the next idle wait looks at once."""
    trig, restart_dir, _ = dnotified
    (restart_dir / "TESTFLINGER-DEVICE-RESTART-dev-1").write_text("")
    assert trig.waker.wait(0.2) is False  # the job's loop would have slept on
    start = time.monotonic()
    assert trig.wait(5) is True and time.monotonic() - start < 2


def test_dnotify_lost_watch_falls_back_to_polling(dnotified, caplog):
    trig, restart_dir, _ = dnotified
    restart_dir.rmdir()
    assert trig.wait(5) is True  # look now, and poll from now on
    assert trig.watching == "poll" and trig.notify is None
    assert "dnotify watch lost" in caplog.text


def test_inotify_instances_taken_means_dnotify(tmp_path, monkeypatch, caplog, closes_dnotify):
    """The real limit's error (EMFILE from inotify_init1) leads to dnotify, said in the log."""
    import errno

    caplog.set_level("INFO")
    monkeypatch.delenv("TF_AGENT_NO_INOTIFY", raising=False)
    monkeypatch.delenv("TF_AGENT_NO_DNOTIFY", raising=False)

    def no_instance() -> None:
        raise OSError(errno.EMFILE, "inotify_init1: Too many open files")

    monkeypatch.setattr(triggers_mod, "DirWatch", no_instance)
    trig = Triggers("dev-1", str(tmp_path))
    closes_dnotify(trig)
    trig.start_watch(str(tmp_path / "dev-1.drain"))
    assert trig.watching == "dnotify" and trig.watch is None
    assert "dnotify on" in caplog.text and "Too many open files" in caplog.text


@pytest.mark.parametrize("why", ["env", "missing restart dir"])
def test_idle_wait_falls_back_to_polling(tmp_path, monkeypatch, caplog, why):
    caplog.set_level("INFO")
    restart_dir = tmp_path / "restart"
    if why == "env":
        monkeypatch.setenv("TF_AGENT_NO_INOTIFY", "1")
        monkeypatch.setenv("TF_AGENT_NO_DNOTIFY", "1")
        restart_dir.mkdir()
    trig = Triggers("dev-1", str(restart_dir))
    trig.start_watch(str(tmp_path / "dev-1.drain"))
    assert trig.watching == "poll" and trig.watch is None
    assert trig.recheck_every == triggers_mod.POLL_TICK
    assert caplog.text.count("idle wake-ups: looking every 0.5 s") == 1
    trig.start_watch(str(tmp_path / "dev-1.drain"))  # logged once only
    assert caplog.text.count("idle wake-ups") == 1
    assert trig.wait(0.05) is False


@pytest.mark.usefixtures("inotify_instance")
def test_lost_watch_falls_back_to_polling(tmp_path, monkeypatch, caplog):
    trig, restart_dir, _ = _watched(tmp_path, monkeypatch)
    restart_dir.rmdir()
    assert trig.wait(5) is True  # IN_IGNORED: look now, and poll from now on
    assert trig.watching == "poll" and trig.watch is None
    assert "inotify watch lost" in caplog.text


def _loop_agent(run_dir: Path, restart_dir: Path) -> loop.Agent:
    """tf-agent's main loop as agent "a1" of the minimal config, files in `run_dir`."""
    from multiagent.agent import loop

    return loop.Agent(
        config.validate("c", dict(MINIMAL)),
        StatusFile(str(run_dir), "a1"),
        DrainFlag(str(run_dir), "a1"),
        Triggers("a1", str(restart_dir)),
        Metrics("a1"),
    )


@pytest.mark.parametrize("watching", ["inotify", "dnotify"])
def test_idle_wait_loop_uses_events_not_ticks(
    tmp_path, monkeypatch, watching, request, closes_dnotify
):
    """_wait_idle looks at the files on a relevant event and every RECHECK, not every POLL_TICK."""
    if watching == "inotify":
        request.getfixturevalue("inotify_instance")

    monkeypatch.delenv("TF_AGENT_NO_DNOTIFY", raising=False)
    if watching == "dnotify":
        monkeypatch.setenv("TF_AGENT_NO_INOTIFY", "1")
    else:
        monkeypatch.delenv("TF_AGENT_NO_INOTIFY", raising=False)
    (tmp_path / "restart").mkdir()
    (tmp_path / "own").mkdir()
    agent = _loop_agent(tmp_path, tmp_path / "restart")
    closes_dnotify(agent.triggers)
    # As tf-agent writes it: the temp file in the agent's own dir, renamed into the run dir.
    agent.status = StatusFile(str(tmp_path), "a1", tmp_dir=str(tmp_path / "own"))
    looks = []
    real = agent.drain.read

    def counted_read() -> str | None:
        looks.append(1)
        return real()

    monkeypatch.setattr(agent.drain, "read", counted_read)
    agent._wait_idle(2.2)
    assert agent.triggers.watching == watching
    # Once at the start (polling would have looked 5 times); under dnotify, which
    # names no file, also once for the status file the wait itself rewrote.
    assert len(looks) == (1 if watching == "inotify" else 2)
    (tmp_path / "a1.drain").write_text("drain")
    start = time.monotonic()
    agent._wait_idle(5)
    assert time.monotonic() - start < 3 and agent.drain.read() == "drain"


# -- status, drain, lock -------------------------------------------------------------
def test_status_file_keys_and_since(tmp_path):
    st = StatusFile(str(tmp_path), "a1")
    st.update(state="waiting")
    data = json.loads((tmp_path / "a1.json").read_text())
    assert set(data) == STATUS_KEYS
    assert abs(data["written_at"] - time.time()) < 5
    since = data["since"]
    st.update(state="waiting", last_poll=123.0)
    assert json.loads((tmp_path / "a1.json").read_text())["since"] == since
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_drain_flag(tmp_path):
    flag = DrainFlag(str(tmp_path), "a1")
    assert flag.read() is None
    (tmp_path / "a1.drain").write_text("")
    assert flag.read() == DrainMode.DRAIN
    (tmp_path / "a1.drain").write_text(" hold\n")
    assert flag.read() == DrainMode.HOLD


def test_name_guard_is_exclusive_and_names_the_holder():
    name = f"guard-{os.getpid()}"
    first = NameGuard(name, "http://127.0.0.1:1")
    first.acquire()
    try:
        with pytest.raises(NameTaken) as err:
            NameGuard(name, "127.0.0.1:1").acquire()  # same server, spelt differently
        assert (err.value.pid, err.value.uid) == (os.getpid(), os.getuid())
        other = NameGuard(name, "http://127.0.0.1:2")
        other.acquire()  # another server: another agent
        other.release()
    finally:
        first.release()
    again = NameGuard(name, "http://127.0.0.1:1")
    again.acquire()  # released: free again
    again.release()


def test_name_guard_is_a_private_file_lock_removed_on_release():
    name = f"guard-file-{os.getpid()}"
    guard = NameGuard(name, "http://127.0.0.1:1")
    guard.acquire()
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    lock_dir = home / ".local" / "state" / "tf-agent"
    try:
        assert guard.sock is None  # no abstract socket: any user could bind that name
        lock = lock_dir / guard.lock_name
        assert lock.read_text() == f"{os.getpid()}\n"
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        assert not stat.S_IMODE(lock_dir.stat().st_mode) & 0o077
        assert lock_dir.stat().st_uid == os.getuid()
    finally:
        guard.release()
    assert not lock.exists()


def test_name_guard_falls_back_to_the_abstract_socket_without_a_home(monkeypatch):
    monkeypatch.setattr(status_mod, "private_lock_dir", lambda: None)
    name = f"guard-homeless-{os.getpid()}"
    first = NameGuard(name, "http://127.0.0.1:1")
    first.acquire()
    try:
        assert first.sock is not None
        with pytest.raises(NameTaken) as err:
            NameGuard(name, "http://127.0.0.1:1").acquire()
        assert (err.value.pid, err.value.uid) == (os.getpid(), os.getuid())
    finally:
        first.release()


def test_name_guard_holder_found_with_a_full_backlog():
    name = f"guard-full-{os.getpid()}"
    guard = NameGuard(name, "http://h:1")
    guard._acquire_socket()
    assert guard.sock is not None
    guard.sock.listen(0)
    try:
        for _ in range(3):  # fill the accept queue: connects now fail with EAGAIN
            try:
                status_mod.holder(guard.address)
            except OSError:
                pass
        assert status_mod._holder_from_proc(guard.address) == (os.getpid(), os.getuid())
        assert status_mod.holder(guard.address) == (os.getpid(), os.getuid())
    finally:
        guard.release()


def test_name_guard_long_names_fit():
    address = status_mod.socket_name("x" * 300, "http://127.0.0.1:8585")
    assert len(address) <= 108 and address.startswith(b"\0tf-agent/")
    assert address != status_mod.socket_name("x" * 299 + "y", "http://127.0.0.1:8585")


class _AnsweringClient:
    """A server that first does not answer, then says the job was taken back (409)."""

    def __init__(self, answers: list[int | None]):
        self.answers = answers
        self.asked: list[str] = []

    def answer_for_job(self, job_id: str, timeout: float | None = None) -> int:
        self.asked.append(job_id)
        answer = self.answers.pop(0)
        if answer is None:
            raise ServerUnreachable("refused")
        return answer


def test_a_job_taken_back_before_the_agent_answered_is_not_run(tmp_path, monkeypatch):
    from multiagent.agent import job as job_mod

    agent = _loop_agent(tmp_path, tmp_path)
    stub = _AnsweringClient([None, 409])
    agent.client = cast(Client, stub)
    monkeypatch.setattr(job_mod, "Job", None)  # a job run would fail loudly
    agent._run_job({"job_id": "j-late", "job_queue": "q"})
    assert stub.asked == ["j-late", "j-late"]  # asked again once the server answered
    assert agent.status.data["job_id"] is None and not agent.busy
    assert agent.status.data["server_reachable"]


# -- outcome store -------------------------------------------------------------------
def test_artifact_tarball_has_single_top_level(tmp_path):
    (tmp_path / "artifacts" / "d").mkdir(parents=True)
    (tmp_path / "artifacts" / "d" / "f").write_text("x")
    assert outcome.build_artifact(str(tmp_path))
    with tarfile.open(tmp_path / outcome.ARTIFACT_FILE) as tar:
        assert {n.split("/")[0] for n in tar.getnames()} == {"artifacts"}
    empty = tmp_path / "empty"
    (empty / "artifacts").mkdir(parents=True)
    assert not outcome.build_artifact(str(empty))


def test_fragments_round_trip(tmp_path):
    frags: list[tuple[str, dict[str, Any]]] = [
        ("output", {"fragment_number": 0, "log_data": "a"}),
        ("serial", {"x": 1}),
    ]
    outcome.save_fragments(str(tmp_path), frags)
    assert outcome.load_fragments(str(tmp_path)) == frags
    outcome.save_fragments(str(tmp_path), [])
    assert not (tmp_path / outcome.FRAGMENTS_FILE).exists()


# -- metrics -------------------------------------------------------------------------
def test_metrics_render():
    m = Metrics("a1")
    m.job_started()
    m.phase_done("test", 1, 2.0)
    m.phase_done("provision", 46, 70.0)
    text = m.render()
    assert 'jobs_total{agent_id="a1"} 1' in text
    assert 'failures_total{agent_id="a1",test_phase="test"} 1' in text
    assert 'recovery_failures_total{agent_id="a1"} 1' in text
    assert 'phase_duration_seconds_bucket{agent_id="a1",test_phase="provision",le="60"} 0' in text
    assert 'agent_busy{agent_id="a1"} 1' in text


# -- local connector -----------------------------------------------------------------
def test_local_connector_phases(tmp_path):
    (tmp_path / "testflinger.json").write_text(
        json.dumps(
            {"provision_data": {"url": "u"}, "test_data": {"test_cmds": "echo in-test; exit 3"}}
        )
    )
    (tmp_path / "default.yaml").write_text("agent_name: dev-9\n")
    cmd = [sys.executable, "-m", "multiagent.connectors.local"]
    prov = subprocess.run(
        [*cmd, "provision", "-c", "default.yaml", "testflinger.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert prov.returncode == 0 and "would provision" in prov.stdout
    info = json.loads((tmp_path / "device-info.json").read_text())
    assert info == {"device_info": {"device_ip": "127.0.0.1", "agent_name": "dev-9"}}
    test = subprocess.run([*cmd, "test"], cwd=tmp_path, capture_output=True, text=True, timeout=10)
    assert test.returncode == 3 and "in-test" in test.stdout


# -- heartbeat -----------------------------------------------------------------------
class _StubClient:
    def __init__(self, server_doc):
        self.server_doc = server_doc
        self.posts: list[dict] = []

    def get_agent_data(self):
        return dict(self.server_doc)

    def post_agent_data(self, data, timeout=None):
        self.posts.append(data)
        return True


def test_heartbeat_keeps_an_admins_offline_it_honours(tmp_path):
    from multiagent.agent import loop

    agent = _loop_agent(tmp_path, tmp_path)
    stub = _StubClient({"state": "offline", "comment": "lab"})
    agent.client = cast(Client, stub)
    agent.last_agent_post = time.monotonic()
    agent._heartbeat_if_due()
    assert stub.posts == []  # not due yet
    agent.last_agent_post = time.monotonic() - 2 * loop.HEARTBEAT_EVERY
    agent._heartbeat_if_due()
    assert stub.posts == [{"state": "offline", "job_id": "", "comment": "lab"}]
    # That post starts the next period: nothing more until it is over.
    agent._heartbeat_if_due()
    assert len(stub.posts) == 1


@pytest.mark.parametrize(
    "server_doc,local,posted",
    [
        # After an outage the server still shows the job that ended meanwhile: not echoed.
        ({"state": "test", "job_id": "j-old"}, {}, {"state": "waiting", "job_id": ""}),
        ({}, {}, {"state": "waiting", "job_id": ""}),
        # Busy: the agent's own phase and job, whatever the server held before.
        (
            {"state": "waiting", "job_id": ""},
            {"state": "provision", "phase": "provision", "job_id": "j1"},
            {"state": "provision", "job_id": "j1"},
        ),
        (
            {"state": "setup", "job_id": "j-old"},
            {"state": "test", "phase": None, "job_id": "j1"},
            {"state": "test", "job_id": "j1"},
        ),
        # An admin's request during a job stays on the server (applied after the job).
        (
            {"state": "maintenance", "comment": "lab"},
            {"state": "test", "phase": "test", "job_id": "j1"},
            {"job_id": "j1", "comment": "lab"},
        ),
        (
            {"state": "restart"},
            {"state": "test", "phase": "test", "job_id": "j1"},
            {"job_id": "j1"},
        ),
    ],
)
def test_heartbeat_posts_what_the_agent_does_never_the_servers_echo(
    tmp_path, server_doc, local, posted
):
    from multiagent.agent import loop

    agent = _loop_agent(tmp_path, tmp_path)
    agent.status.update(**local)
    stub = _StubClient(server_doc)
    agent.client = cast(Client, stub)
    agent.last_agent_post = time.monotonic() - 2 * loop.HEARTBEAT_EVERY
    agent._heartbeat_if_due()
    assert stub.posts == [{"comment": "", **posted}]


# -- start-up on a busy host ----------------------------------------------------------
def test_a_refused_first_contact_is_quiet_for_a_few_seconds(tmp_path, caplog):
    """At a cold start the embedded server starts with the agents: a refused first
    contact is retried soon and said nowhere, until FIRST_CONTACT_QUIET has passed."""
    from multiagent.agent import loop

    agent = _loop_agent(tmp_path, tmp_path)
    agent.status.update(server_reachable=True)
    caplog.set_level("INFO", logger="tf-agent")
    before = time.monotonic()
    agent.net_failed(ServerUnreachable("refused"))
    agent.net_failed(ServerUnreachable("refused"))
    assert agent.retry_at - before < 2 * loop.FIRST_CONTACT_MIN + 0.1  # soon, not in 1 s
    assert agent.status.data["server_reachable"] is True
    assert "unreachable" not in caplog.text
    agent.quiet_until = time.monotonic()  # the quiet seconds are over
    agent.net_failed(ServerUnreachable("refused"))
    assert agent.status.data["server_reachable"] is False
    assert caplog.text.count("server unreachable (refused)") == 1
    agent.net_succeeded()
    assert "server reachable again" in caplog.text
    assert agent.status.data["server_reachable"] is True


def test_a_reached_server_that_fails_is_said_at_once(tmp_path, caplog):
    agent = _loop_agent(tmp_path, tmp_path)
    agent.net_succeeded()
    caplog.set_level("INFO", logger="tf-agent")
    agent.net_failed(ServerUnreachable("refused"))
    assert "server unreachable (refused)" in caplog.text
    assert agent.status.data["server_reachable"] is False


def test_memory_is_given_back_once_the_agent_stayed_idle_a_whole_interval(tmp_path, monkeypatch):
    """Not at the first idle poll (on a cold `up` the others are still starting), at the
    second; a job in between starts the count again."""
    from multiagent.agent import memory

    agent = _loop_agent(tmp_path, tmp_path)
    given: list[int] = []
    answers: list[dict[str, Any] | None] = [None, None, None, {"job_id": "j"}, None, None]
    monkeypatch.setattr(memory, "give_back", lambda: given.append(len(answers)))
    monkeypatch.setattr(agent, "_wait_idle", lambda seconds: None)
    monkeypatch.setattr(agent, "_run_job", lambda job: None)

    class Polls:
        def poll_job(self, queues: list[str]) -> tuple[int, dict[str, Any] | None]:
            job = answers.pop(0)
            return (200 if job else 204), job

    agent.client = cast(Client, Polls())
    agent._poll_job()
    assert given == []  # first idle poll
    agent._poll_job()
    assert given == [4]  # second idle poll in a row
    agent._poll_job()
    assert given == [4]  # once per idle stretch
    agent._poll_job()  # a job
    agent._poll_job()
    agent._poll_job()
    assert given == [4, 0]
