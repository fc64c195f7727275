"""The job record: what a successor needs to close a job its agent process died in.

`<execution_basedir>/.tf-agent-job-<agent>.json`, written before the job's first phase and
on every phase change and phase process start, removed once the job's outcome is
delivered (or stored for later). Its fields:

    {"agent": name, "job_id": id, "stage": "running" | "finishing" | "closing",
     "phase": the phase running (or last run; "setup" before the first),
     "agent_pid": pid, "boot_id": the kernel's boot id,
     "groups": [{"phase": p, "pgid": leader pid, "start": leader start time}],
     "updated_at": time.time()}

A record found at start means the previous process died mid-job: `DeadJob` ends what is
left of its phase process groups and every process carrying the job's marker (see
procs.py), then tells the server the job ended with an agent error in the phase it died
in (`PhaseStatus.AGENT_ERROR`, the error in that phase's output, job_state complete),
sends the output the server lacks, the serial log and artifacts, removes the job's files
(testflinger.json and its secrets) and the record. A record is
trusted only if it is a regular file owned by the agent's user (opened O_NOFOLLOW).
"""

from __future__ import annotations

import os
import time

from multiagent import jsonio
from multiagent.agent import outcome, procs
from multiagent.agent.client import Client
from multiagent.agent.log import get as get_logger
from multiagent.vocabulary import JobState, Phase, PhaseStatus

TYPE_CHECKING = False  # no typing import at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any

log = get_logger("tf-agent.record")

# The stages of a job record.
RUNNING, FINISHING, CLOSING = "running", "finishing", "closing"


def valid_job_id(job_id: object) -> bool:
    return isinstance(job_id, str) and job_id not in ("", ".", "..") and "/" not in job_id


class JobRecord:
    """The running job's record, kept up to date by Job."""

    def __init__(self, path: str, agent: str, job_id: str):
        self.path = path
        self.data: dict[str, Any] = {
            "agent": agent,
            "job_id": job_id,
            "stage": RUNNING,
            "phase": Phase.SETUP,
            "agent_pid": os.getpid(),
            "boot_id": procs.boot_id(),
            "groups": [],
        }

    def write(self) -> None:
        """Replace the record atomically; raises OSError (the first write must succeed)."""
        self.data["updated_at"] = time.time()
        write_private(self.path, jsonio.dumps(self.data).encode())

    def update(self, **changes: Any) -> None:
        """Later writes: a failure is logged, never raised (the job goes on)."""
        self.data.update(changes)
        try:
            self.write()
        except OSError as exc:
            log.error("cannot update job record %s: %s", self.path, exc)

    def add_group(self, phase: str, pgid: int) -> None:
        start = procs.start_time(pgid)
        if start is not None:
            self.data["groups"].append({"phase": phase, "pgid": pgid, "start": start})
            self.update()

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def write_private(path: str, payload: bytes) -> None:
    """Write `path` atomically, 0600, never through a symlink."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load(path: str) -> dict[str, Any] | None:
    """The record at `path` if there is a usable one; an unusable one is logged and removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("cannot read job record %s: %s", path, exc)
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not (st.st_mode & 0o170000 == 0o100000 and st.st_uid == os.geteuid()):
            log.error("ignoring job record %s: not a regular file of uid %s", path, os.geteuid())
            return None
        raw = fh.read(1 << 20)
    try:
        data = jsonio.loads(raw)
    except ValueError:
        data = None
    if not (isinstance(data, dict) and valid_job_id(data.get("job_id"))):
        log.error("job record %s is unreadable; removing it: %r", path, raw[:200])
        os.unlink(path)
        return None
    return data


class DeadJob:
    """Close the job a dead predecessor left behind (see the module's docstring)."""

    def __init__(self, path: str, data: dict[str, Any], execution_basedir: str):
        self.path = path
        self.data = data
        self.job_id: str = data["job_id"]
        self.rundir = os.path.join(execution_basedir, self.job_id)
        self.killed: list[procs.Proc] = []

    def end_processes(self, grace: float = procs.GRACE) -> None:
        """Stop what is left of the job's phase process groups (local: no server needed)."""
        if self.data.get("boot_id") != procs.boot_id():
            return  # recorded before a reboot: none of it survived
        starts = []
        for group in self.data.get("groups") or []:
            try:
                pgid, start = int(group["pgid"]), int(group["start"])
            except (KeyError, TypeError, ValueError):
                continue
            if pgid <= 1:
                continue
            starts.append(start)
            is_ours = procs.dead_job_member(pgid, start, self.job_id)
            self.killed += procs.end_group(pgid, is_ours, grace)
        # What left its group (setsid) carries the job's marker; with no group recorded
        # (died between a phase's start and its record), every process of ours is looked at.
        self.killed += procs.end_job_processes(self.job_id, min(starts, default=0), grace=grace)
        if self.killed:
            log.warning(
                "job %s: ended %s left by the dead agent",
                self.job_id,
                procs.describe(self.killed),
            )

    def close(self, client: Client) -> None:
        """Tell the server, deliver, remove the files; raises ServerUnreachable to retry."""
        if self.data.get("stage") == FINISHING and not os.path.isdir(self.rundir):
            # Died after the outcome went (or was stored in results_basedir, which the
            # stored-outcome retry delivers): nothing is left to say.
            os.unlink(self.path)
            return
        if self.data.get("stage") != CLOSING:
            self._prepare(client)
            self.data["stage"] = CLOSING
            write_private(self.path, jsonio.dumps(self.data).encode())
        outcome.transmit(client, self.rundir, self.job_id)
        client.post_agent_data({"job_id": ""})
        os.unlink(self.path)
        log.warning("job %s of the dead agent closed on the server", self.job_id)

    def _prepare(self, client: Client) -> None:
        """The closing outcome and output, written into the rundir for outcome.transmit."""
        os.makedirs(self.rundir, exist_ok=True)
        status = self._status()
        server_state = client.get_result(self.job_id).get("job_state")
        final: dict[str, Any] = {"status": status}
        try:
            outcome.build_artifact(self.rundir)
            pack_error = ""
        except OSError as exc:
            log.error("job %s: cannot pack artifacts: %s", self.job_id, exc)
            pack_error = f"\nERROR: tf-agent cannot pack the job's artifacts: {exc}\n"
        if self.data.get("stage") != FINISHING:  # finishing: the phases were all over
            phase = self._died_in(status)
            status[phase] = PhaseStatus.AGENT_ERROR
            outcome.save_fragments(self.rundir, self._fragments(client, phase, pack_error))
        elif pack_error:
            phase = [p for p in Phase.ALL if p in status][-1] if status else Phase.SETUP
            status[phase] = status.get(phase) or PhaseStatus.AGENT_ERROR
            outcome.save_fragments(self.rundir, self._fragments(client, phase, pack_error, False))
        if server_state not in JobState.FINAL:
            final["job_state"] = JobState.COMPLETE
        outcome.write_outcome(self.rundir, final)

    def _status(self) -> dict[str, int]:
        try:
            with open(os.path.join(self.rundir, outcome.OUTCOME_FILE), encoding="utf-8") as fh:
                status = jsonio.load(fh).get("status")
        except (OSError, ValueError, AttributeError):
            return {}
        if not isinstance(status, dict):
            return {}
        return {k: v for k, v in status.items() if k in Phase.ALL and isinstance(v, int)}

    def _died_in(self, status: dict[str, int]) -> str:
        """The recorded phase; if it had ended already, the first later one without status."""
        phase = self.data.get("phase")
        phase = phase if phase in Phase.ALL else Phase.SETUP
        if phase not in status:
            return phase
        later = [p for p in Phase.ALL[Phase.ALL.index(phase) + 1 :] if p not in status]
        return later[0] if later else phase

    def _fragments(
        self, client: Client, died_in: str, extra: str = "", died: bool = True
    ) -> list[tuple[str, dict]]:
        """Output the server lacks (each phase log's tail), the errors (the agent's death
        in `died_in` if `died`, and `extra`), the serial log."""
        from datetime import datetime, timezone

        held = client.get_log(self.job_id, "output")
        numbers = [int(e.get("last_fragment_number", -1)) for e in held.values()]
        number = max(numbers, default=-1) + 1
        out: list[tuple[str, dict]] = []

        def add(log_type: str, phase: str, text: str) -> None:
            nonlocal number
            fragment = {
                "fragment_number": number if log_type == "output" else 0,
                "timestamp": datetime.now(timezone.utc).isoformat(),
                "phase": phase,
                "log_data": text,
            }
            out.append((log_type, fragment))
            number += log_type == "output"

        for phase in Phase.ALL:
            local = _read_text(os.path.join(self.rundir, f"{phase}.log"))
            sent = str((held.get(phase) or {}).get("log_data") or "")
            if len(local) > len(sent) and local.startswith(sent):
                add("output", phase, local[len(sent) :])
        killed = f"; ended {procs.describe(self.killed)}" if self.killed else ""
        if died:
            add(
                "output",
                died_in,
                f"\nERROR: tf-agent (pid {self.data.get('agent_pid')}) died during the "
                f"{died_in} phase{killed}. "
                f"The job ends here with status {PhaseStatus.AGENT_ERROR}.\n",
            )
        if extra:
            add("output", died_in, extra)
        serial = _read_text(os.path.join(self.rundir, f"{died_in}-serial.log"))
        if serial:
            add("serial", died_in, serial)
        return out


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""
