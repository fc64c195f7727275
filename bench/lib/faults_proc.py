"""Processes of the fault soak, read straight from /proc: the 10 ms duplicate sampler and
the search for what the soak left running (by its temp dir on the command line, or the
soak's tag in the environment every agent and phase process inherits)."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field

AGENT_CONF = "testflinger-agent.conf"


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def cmdline(pid: int) -> list[str]:
    raw = _read(f"/proc/{pid}/cmdline")
    return [w.decode(errors="replace") for w in raw.split(b"\0") if w]


def stat_fields(pid: int) -> tuple[str, int] | None:
    """(state letter, ppid) from /proc/PID/stat."""
    raw = _read(f"/proc/{pid}/stat")
    end = raw.rfind(b")")
    if end < 0:
        return None
    rest = raw[end + 2 :].split()
    if len(rest) < 2:
        return None
    return rest[0].decode(), int(rest[1])


def pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def agent_name(words: list[str], agents_prefix: str) -> str | None:
    """The agent name of a `... -c <state>/agents/NAME/testflinger-agent.conf` command."""
    for i, word in enumerate(words[1:], start=1):
        if (
            words[i - 1] == "-c"
            and word.startswith(agents_prefix)
            and word.endswith("/" + AGENT_CONF)
        ):
            return word[len(agents_prefix) :].split("/")[0]
    return None


@dataclass
class SamplerReport:
    samples: int = 0
    seconds: float = 0.0
    max_gap: float = 0.0
    most: dict[str, int] = field(default_factory=dict)
    duplicates: list[dict] = field(default_factory=list)  # first ones, with evidence
    duplicate_samples: int = 0
    seen: dict[str, set[int]] = field(default_factory=dict)


class AgentSampler:
    """Every `period` s, counts the processes running each agent name on the host (any
    parent, any flags). A child the agent forked that has not exec'd yet shares its
    parent's command line: a process whose parent runs the same agent name is not counted.
    Zombies are not counted. Command lines of processes outside the soak are read once."""

    def __init__(self, agents_prefix: str, root: str, period: float = 0.01):
        self.prefix = agents_prefix
        self.root = root
        self.period = period
        self.report = SamplerReport()
        self._cache: dict[int, tuple[str | None, bool]] = {}  # pid -> (agent, recheck)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agent-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> SamplerReport:
        self._stop.set()
        self._thread.join(10)
        return self.report

    def _classify(self, pid: int) -> str | None:
        cached = self._cache.get(pid)
        if cached is not None and not cached[1]:
            return cached[0]
        words = cmdline(pid)
        name = agent_name(words, self.prefix)
        # Ours (or not yet exec'd from ours): look again next time, it may still exec.
        recheck = name is not None or any(self.root in w for w in words) or not words
        self._cache[pid] = (name, recheck)
        return name

    def sample(self) -> None:
        current = pids()
        alive = set(current)
        for pid in [p for p in self._cache if p not in alive]:
            del self._cache[pid]
        found: dict[int, tuple[str, int]] = {}
        for pid in current:
            name = self._classify(pid)
            if name is None:
                continue
            fields = stat_fields(pid)
            if fields is None or fields[0] in ("Z", "X"):
                continue
            found[pid] = (name, fields[1])
        self._count(found)

    def _count(self, found: dict[int, tuple[str, int]]) -> None:
        per: dict[str, list[int]] = {}
        for pid, (name, ppid) in found.items():
            if ppid in found and found[ppid][0] == name:
                continue  # forked by that agent, not exec'd yet
            per.setdefault(name, []).append(pid)
        rep = self.report
        for name, members in per.items():
            rep.seen.setdefault(name, set()).update(members)
            rep.most[name] = max(rep.most.get(name, 0), len(members))
            if len(members) > 1:
                rep.duplicate_samples += 1
                if len(rep.duplicates) < 20:
                    rep.duplicates.append(
                        {
                            "at": time.time(),
                            "name": name,
                            "pids": {p: " ".join(cmdline(p)) for p in members},
                            "ppids": {p: found[p][1] for p in members},
                        }
                    )

    def _run(self) -> None:
        start = last = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - one bad look must not end the sampling
                pass
            now = time.monotonic()
            self.report.samples += 1
            self.report.max_gap = max(self.report.max_gap, now - last)
            last = now
            self._stop.wait(self.period)
        self.report.seconds = time.monotonic() - start


def own_processes(root: str, tag: str) -> dict[int, str]:
    """{pid: command line} of every live process with `root` on its command line or `tag`
    (NAME=VALUE) in its environment, except this process and its threads."""
    me = os.getpid()
    needle = b"\0" + tag.encode() + b"\0"
    found = {}
    for pid in pids():
        if pid == me:
            continue
        fields = stat_fields(pid)
        if fields is None or fields[0] in ("Z", "X"):
            continue
        words = cmdline(pid)
        if any(root in w for w in words) or needle in b"\0" + _read(f"/proc/{pid}/environ"):
            found[pid] = " ".join(words) or f"[pid {pid}]"
    return found


def end_pids(targets: list[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace`, each pid (never by name)."""
    for pid in targets:
        _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in targets):
        time.sleep(0.05)
    for pid in targets:
        if _alive(pid):
            _kill(pid, signal.SIGKILL)
    for pid in targets:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")
