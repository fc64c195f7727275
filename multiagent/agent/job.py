"""Run one job: phases in their own process groups, output streaming, stop conditions.

The phase loop selects on the command's output pipe and on the agent's wake-up
pipe with a timeout set by the next thing due (log flush, cancel check,
timeouts), so a phase that does nothing costs nothing and a signal is seen at once.
"""

from __future__ import annotations

import codecs
import os
import select
import signal
import subprocess
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from multiagent import jsonio
from multiagent.agent import outcome, procs
from multiagent.agent.attachments import AttachmentError, unpack
from multiagent.agent.client import ServerUnreachable
from multiagent.agent.log import get as get_logger
from multiagent.agent.record import FINISHING, JobRecord
from multiagent.vocabulary import (
    STOPWAITSECS_ENV,
    JobState,
    Phase,
    PhaseStatus,
    job_record_path,
)

if TYPE_CHECKING:
    from multiagent.agent.client import Client
    from multiagent.agent.config import AgentConfig
    from multiagent.agent.metrics import Metrics
    from multiagent.agent.triggers import Waker

log = get_logger("tf-agent.job")

FLUSH_EVERY = 2.0  # seconds between output fragments while a phase runs
CANCEL_EVERY = 2.0  # seconds between GET /v1/result checks inside a phase
PHASE_HTTP_TIMEOUT = 5.0
DEFAULT_GLOBAL_TIMEOUT = 14400
DEFAULT_OUTPUT_TIMEOUT = 900
# Seconds kept, out of supervisord's stopwaitsecs, for posting the outcome after cleanup.
DELIVERY_RESERVE = 5.0


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _limit(job_value: Any, cfg_value: Any, default: int) -> float:
    """min(job's value, config's value), each falling back to `default` if unset or bad."""

    def seconds(value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return default
        return number if number > 0 else default

    return min(seconds(job_value), seconds(cfg_value))


class AgentHooks(Protocol):
    """What a job asks of the agent that runs it. Named here, beside Job, so that this
    module need not import loop.py, which imports it; an Agent is one."""

    def net_ok(self) -> bool: ...  # the server's back-off is over: a call may be tried
    def net_failed(self, exc: Exception) -> None: ...
    def net_succeeded(self) -> None: ...
    def stop_reason(self) -> str | None: ...  # why the agent must stop (SIGTERM), if it must
    def set_phase(self, phase: str | None, job_id: str | None) -> None: ...
    def pending_comment(self) -> str: ...
    def recovery_failed(self, job_id: str) -> None: ...
    def read_server_state_busy(self) -> None: ...
    def busy_tick(self) -> None: ...
    def wait_busy(self, seconds: float) -> bool: ...


class Job:
    def __init__(
        self,
        job: dict[str, Any],
        cfg: AgentConfig,
        client: Client,
        metrics: Metrics,
        waker: Waker,
        agent: AgentHooks,
    ):
        self.agent = agent
        self.cfg = cfg
        self.client = client
        self.metrics = metrics
        self.waker = waker  # a signal ends a phase's wait at once
        self.job = job
        self.job_id = str(job["job_id"])
        self.rundir = os.path.join(self.cfg.execution_basedir, self.job_id)
        self.status: dict[str, int] = {}
        self.fragment_number = 0
        self.serial_fragment_number = 0  # serial fragments: their own count across the job
        self.unsent: list[tuple[str, dict]] = []
        self.cancelled = False
        self.interrupted = False  # SIGTERM
        self.device_info_sent: bytes | None = None
        test_data = job.get("test_data")
        secrets = (test_data.get("secrets") if isinstance(test_data, dict) else None) or {}
        self.secrets = (
            {str(k): str(v) for k, v in secrets.items()} if isinstance(secrets, dict) else {}
        )
        self.global_timeout = _limit(
            job.get("global_timeout"), self.cfg.global_timeout, DEFAULT_GLOBAL_TIMEOUT
        )
        self.output_timeout = _limit(
            job.get("output_timeout"), self.cfg.output_timeout, DEFAULT_OUTPUT_TIMEOUT
        )
        path = job_record_path(self.cfg.execution_basedir, self.cfg.agent_id)
        self.record = JobRecord(path, self.cfg.agent_id, self.job_id)
        self.phase: str | None = None  # the phase running (or last run)
        self.stopped_at: float | None = None  # monotonic time the agent was told to stop

    def stop_deadline(self) -> float | None:
        """When a phase must end after a SIGTERM: supervisord's stopwaitsecs after the
        signal (tf-fleet passes it in STOPWAITSECS_ENV), less the time to post the outcome;
        None if the agent was not told how long it has."""
        if self.stopped_at is None:
            return None
        try:
            budget = float(os.environ.get(STOPWAITSECS_ENV, ""))
        except ValueError:
            return None
        return self.stopped_at + max(budget - DELIVERY_RESERVE, 0.0)

    # -- network helpers: never raise, remember reachability --------------------
    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.agent.net_ok():
            return None
        try:
            result = fn(*args, **kwargs)
        except ServerUnreachable as exc:
            self.agent.net_failed(exc)
            return None
        self.agent.net_succeeded()
        return result

    def _post_state(self, state: str, comment: str = "") -> None:
        self._call(
            self.client.post_agent_data,
            {"state": state, "comment": comment},
            timeout=PHASE_HTTP_TIMEOUT,
        )

    def _is_cancelled(self) -> bool:
        result = self._call(self.client.get_result, self.job_id)
        if result is not None and result.get("job_state") == JobState.CANCELLED:
            self.cancelled = True
        return self.cancelled

    # -- output -----------------------------------------------------------------
    def _mask(self, text: str) -> str:
        import hashlib

        for value in self.secrets.values():
            if value:
                digest = hashlib.sha256(value.encode()).hexdigest()[:6]
                text = text.replace(value, f"**{digest}**")
        return text

    def _queue_fragment(self, log_type: str, phase: str, text: str) -> None:
        if not text:
            return
        serial = log_type == "serial"
        number = self.serial_fragment_number if serial else self.fragment_number
        fragment = {
            "fragment_number": number,
            "timestamp": _now_iso(),
            "phase": phase,
            "log_data": text,
        }
        self.unsent.append((log_type, fragment))
        if serial:
            self.serial_fragment_number += 1
        else:
            self.fragment_number += 1

    def _send_fragments(self) -> None:
        while self.unsent and self.agent.net_ok():
            log_type, fragment = self.unsent[0]
            try:
                self.client.post_log(self.job_id, log_type, fragment)
            except ServerUnreachable as exc:
                self.agent.net_failed(exc)
                return
            self.agent.net_succeeded()
            self.unsent.pop(0)

    # -- the job ----------------------------------------------------------------
    def run(self) -> None:
        """The whole job; any exception inside is the failure of the phase it happened in."""
        self.metrics.job_started()
        try:
            self._start()
            if self._prepare_attachments():
                self._run_main_phases()
        except Exception as exc:  # an agent bug must not leave the job running
            self._internal_error(exc)
        try:
            # Also after a SIGTERM, as upstream: within what supervisord gives (see
            # _cleanup_deadline), the device is left as the connector wants it.
            self._run_phase(Phase.CLEANUP)
        except Exception as exc:
            self._internal_error(exc)
        self._finish()

    def _start(self) -> None:
        """The job record first (a successor must find the job), then the rundir."""
        self.record.write()
        os.makedirs(self.rundir, mode=0o700, exist_ok=True)
        os.chmod(self.rundir, 0o700)  # the job's secrets: nobody else may list or read it
        path = os.path.join(self.rundir, "testflinger.json")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(path, flags, 0o600), "w", encoding="utf-8") as fh:
            jsonio.dump(self.job, fh)  # holds the job's secrets: 0600
        outcome.write_outcome(self.rundir, {})
        open(os.path.join(self.rundir, "device-connector-error.json"), "w").close()
        self._call(self.client.post_agent_data, {"job_id": self.job_id}, timeout=PHASE_HTTP_TIMEOUT)

    def _internal_error(self, exc: Exception) -> None:
        """tf-agent failed: the phase it was in (setup before any) fails with the error."""
        phase = self.phase or Phase.SETUP
        log.exception("job %s: tf-agent error in the %s phase", self.job_id, phase)
        text = (
            f"\nERROR: tf-agent internal error in the {phase} phase: {type(exc).__name__}: {exc}\n"
        )
        self.status[phase] = PhaseStatus.AGENT_ERROR
        try:
            self._append_log(phase, text)
        except OSError:
            pass
        self._queue_fragment("output", phase, text)
        self._send_fragments()
        self._call(self.client.post_result, self.job_id, {"status": dict(self.status)})

    def _prepare_attachments(self) -> bool:
        if self.job.get("attachments_status") != "complete":
            return True
        tarball = os.path.join(self.rundir, "attachments.tar.gz")
        reason = None
        try:
            code = self.client.download_attachments(self.job_id, tarball)
            if code != 200:
                reason = f"attachments download failed: HTTP {code}"
            else:
                unpack(tarball, os.path.join(self.rundir, "attachments"))
        except ServerUnreachable as exc:
            self.agent.net_failed(exc)
            reason = f"attachments download failed: {exc}"
        except AttachmentError as exc:
            reason = f"attachments rejected: {exc}"
        finally:
            if os.path.exists(tarball):
                os.unlink(tarball)
        if reason is None:
            for phase in Phase.WITH_DATA:
                data = self.job.get(f"{phase}_data")
                if isinstance(data, dict) and "attachments" in data:
                    del data["attachments"]
                    if not data:
                        del self.job[f"{phase}_data"]
            return True
        log.error("job %s: %s", self.job_id, reason)
        # Attributed to setup: it is the first thing the job does.
        self.status[Phase.SETUP] = PhaseStatus.AGENT_ERROR
        text = f"\nERROR: {reason}\nThe job is aborted before setup.\n"
        self._append_log(Phase.SETUP, text)
        self._queue_fragment("output", Phase.SETUP, text)
        self._send_fragments()
        self._call(self.client.post_result, self.job_id, {"status": dict(self.status)})
        return False

    def _run_main_phases(self) -> None:
        for phase in Phase.BEFORE_CLEANUP:
            if not self._may_start(phase):
                return
            self._announce_phase(phase)
            code = self._run_phase(phase)
            if self.interrupted:
                return
            if code is None:
                continue  # skipped
            if phase == Phase.PROVISION:
                self._post_provision_log(code)
            if not self._goes_on_after(phase, code):
                return

    def _may_start(self, phase: str) -> bool:
        """False when the agent must stop (SIGTERM) or the job was cancelled."""
        if self.agent.stop_reason() is not None:
            self.interrupted = True
            self.stopped_at = self.stopped_at or time.monotonic()
            return False
        if self._is_cancelled():
            log.info("job %s cancelled before %s", self.job_id, phase)
            return False
        return True

    def _announce_phase(self, phase: str) -> None:
        """Between phases: read the server's wishes, post the job's and the agent's state."""
        self.agent.read_server_state_busy()
        self._call(
            self.client.post_result,
            self.job_id,
            {"job_state": phase},
            timeout=PHASE_HTTP_TIMEOUT,
        )
        self._post_state(phase, self.agent.pending_comment())

    def _post_provision_log(self, code: int) -> None:
        if code == PhaseStatus.RECOVERY_FAILED:
            detail = "recovery_fail"
        else:
            detail = "provision_success" if code == 0 else "provision_fail"
        self._call(self.client.post_provision_log, self.job_id, code, detail)

    def _goes_on_after(self, phase: str, code: int) -> bool:
        """False when the job ends after `phase`: a failure (test's excepted) or a cancel.

        A failed recovery (exit 46) also sets the agent offline once the job is over.
        """
        if code == PhaseStatus.RECOVERY_FAILED:
            self.agent.recovery_failed(self.job_id)
            if phase != Phase.TEST:
                return False
        elif code != 0 and phase != Phase.TEST:
            return False
        return not self.cancelled

    def _skipped(self, phase: str) -> bool:
        if not self.cfg.command(phase):
            return True
        if phase in Phase.WITH_DATA:
            data = self.job.get(f"{phase}_data")
            if not data or (isinstance(data, dict) and data.get("skip") is True):
                return True
        return False

    def _env(self, phase: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.cfg.string_items())
        env[procs.JOB_MARKER] = self.job_id  # proves a leftover ours after a restart
        if phase == Phase.TEST:
            env.update(self.secrets)
        return env

    def _append_log(self, phase: str, text: str) -> None:
        with open(os.path.join(self.rundir, f"{phase}.log"), "a", encoding="utf-8") as fh:
            fh.write(text)

    def _run_phase(self, phase: str) -> int | None:
        """Run one phase; None if skipped, else its exit code (recorded and posted)."""
        if self._skipped(phase):
            return None
        self.phase = phase
        self.record.update(phase=phase)
        self.agent.set_phase(phase, self.job_id)
        started = time.monotonic()
        try:
            code = self._execute(phase)
        except Exception as exc:
            log.exception("job %s phase %s: agent error", self.job_id, phase)
            text = f"\nERROR: tf-agent error while running {phase}: {exc}\n"
            self._queue_fragment("output", phase, text)
            code = PhaseStatus.AGENT_ERROR
        self._send_fragments()
        self._send_serial(phase)
        self.status[phase] = code
        # The connector may have added keys (device_info) to the file: they stay and go.
        current = outcome.update_outcome(self.rundir, {"status": dict(self.status)})
        # device-info.json first: a device_info the connector put in the outcome file is
        # the later post and stays, as under upstream's agent.
        self._send_device_info()
        self._call(
            self.client.post_result,
            self.job_id,
            outcome.phase_result(current),
            timeout=PHASE_HTTP_TIMEOUT,
        )
        self.metrics.phase_done(phase, code, time.monotonic() - started)
        if phase == Phase.ALLOCATE and not self.interrupted:
            # As upstream: allocated (and waiting for the parent) whatever allocate
            # returned; upstream's connectors exit 1 from a successful allocate.
            self._allocate_wait()
        return code

    def _send_device_info(self) -> None:
        path = os.path.join(self.rundir, "device-info.json")
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError:
            return
        if raw == self.device_info_sent:
            return
        try:
            info = jsonio.loads(raw).get("device_info")
        except (ValueError, AttributeError):
            return
        if isinstance(info, dict) and self._call(
            self.client.post_result, self.job_id, {"device_info": info}
        ):
            self.device_info_sent = raw

    def _send_serial(self, phase: str) -> None:
        path = os.path.join(self.rundir, f"{phase}-serial.log")
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    self._queue_fragment("serial", phase, chunk.decode("utf-8", "ignore"))
        except OSError:
            return
        self._send_fragments()

    def _execute(self, phase: str) -> int:
        """Run the phase's command in its own process group; its exit code (or 247)."""
        line = f"Starting testflinger {phase} phase on {self.cfg.agent_id}"
        border = "*" * (len(line) + 4)  # as upstream: sized to the text, "* text *"
        banner = f"{border}\n* {line} *\n{border}\n"
        self._append_log(phase, banner)
        self._queue_fragment("output", phase, banner)
        proc = subprocess.Popen(
            self.cfg.command(phase),
            shell=True,
            cwd=self.rundir,
            env=self._env(phase),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.record.add_group(phase, proc.pid)
        return PhaseRun(self, phase, proc).run()

    def _allocate_wait(self) -> None:
        """Upstream allocate: device_info, job_state allocated, wait for the job(s) to end."""
        while not self._send_device_info_required():
            if self.agent.wait_busy(5.0):
                return
        self._call(self.client.post_result, self.job_id, {"job_state": JobState.ALLOCATED})
        watch = [self.job_id]
        parent = self.job.get("parent_job_id")
        if parent:
            watch.append(str(parent))
        interval = min(float(self.cfg.polling_interval), 10.0)
        while True:
            for job_id in watch:
                result = self._call(self.client.get_result, job_id)
                if result and result.get("job_state") in JobState.FINAL:
                    if job_id == self.job_id and result.get("job_state") == JobState.CANCELLED:
                        self.cancelled = True
                    return
            if self.agent.wait_busy(interval):
                return

    def _send_device_info_required(self) -> bool:
        path = os.path.join(self.rundir, "device-info.json")
        if not os.path.exists(path):
            return True  # nothing to send: do not wait forever for a file that never comes
        self.device_info_sent = None
        self._send_device_info()
        return self.device_info_sent is not None

    def _finish(self) -> None:
        """Deliver the outcome (or keep it for later); then the job record goes.

        Nothing here may raise: if even the outcome cannot be written, the final result
        is posted directly, and failing that the record stays for the loop to close.
        """
        self.agent.set_phase(None, self.job_id)
        self.metrics.job_done()
        self.record.update(stage=FINISHING)
        # A cancelled or interrupted job stays "cancelled" on the server rather than
        # being overwritten with "complete" (upstream would post complete).
        stopped = self.cancelled or self.interrupted
        final: dict[str, Any] = {
            "status": dict(self.status),
            "job_state": JobState.CANCELLED if stopped else JobState.COMPLETE,
        }
        try:
            self._deliver(final)
        except Exception:
            log.exception(
                "job %s: cannot deliver the outcome; posting the result only", self.job_id
            )
            self._send_fragments()
            if not self._call(self.client.post_result, self.job_id, final):
                return  # the record stays: the loop closes the job before the next poll
            import shutil

            shutil.rmtree(self.rundir, ignore_errors=True)  # testflinger.json: secrets
        self._call(self.client.post_agent_data, {"job_id": ""}, timeout=PHASE_HTTP_TIMEOUT)
        self.record.remove()

    def _deliver(self, final: dict[str, Any]) -> None:
        """Artifacts + final result, or keep everything for later if the server is away."""
        self._pack_artifacts(final)
        outcome.update_outcome(self.rundir, final)
        outcome.save_fragments(self.rundir, self.unsent)
        self.unsent = []
        timeout = 3.0 if self.interrupted else None
        try:
            if not self.agent.net_ok():
                raise ServerUnreachable("server marked unreachable")
            outcome.transmit(self.client, self.rundir, self.job_id, timeout=timeout)
            self.agent.net_succeeded()
        except (ServerUnreachable, OSError) as exc:
            if isinstance(exc, ServerUnreachable):
                self.agent.net_failed(exc)
            outcome.store(self.rundir, self.cfg.results_basedir, self.job_id)

    def _pack_artifacts(self, final: dict[str, Any]) -> None:
        """Artifacts that cannot be packed fail the job: the phase that ran last (which
        made them, or ran after) gets the agent's error status, and the error its output."""
        try:
            outcome.build_artifact(self.rundir)
        except OSError as exc:
            phase = self.phase or Phase.SETUP
            log.error("job %s: cannot pack artifacts: %s", self.job_id, exc)
            text = f"\nERROR: tf-agent cannot pack the job's artifacts: {exc}\n"
            if not final["status"].get(phase):
                final["status"][phase] = PhaseStatus.AGENT_ERROR
            try:
                self._append_log(phase, text)
            except OSError:
                pass
            self._queue_fragment("output", phase, text)


class PhaseRun:
    """One phase's command while it runs: output streaming and stop conditions.

    The loop selects on the command's output pipe and on the agent's wake-up pipe with a
    timeout set by the next thing due (log flush, cancel check, timeouts).
    """

    def __init__(self, job: Job, phase: str, proc: subprocess.Popen[bytes]):
        self.job = job
        self.agent = job.agent
        self.phase = phase
        self.proc = proc
        self.leader_start = procs.start_time(proc.pid)
        assert proc.stdout is not None
        self.stdout = proc.stdout
        self.fd = proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending: list[str] = []
        self.eof = False
        start = time.monotonic()
        self.last_output = start
        self.next_flush = start + FLUSH_EVERY
        # Upstream never interrupts provision; cleanup runs to its end after a cancel.
        self.check_cancel = phase not in (Phase.PROVISION, Phase.CLEANUP)
        self.next_cancel = start + CANCEL_EVERY
        self.global_deadline = None if phase == Phase.RESERVE else start + job.global_timeout
        self.output_timeout = job.output_timeout if phase == Phase.TEST else None

    def run(self) -> int:
        try:
            with open(
                os.path.join(self.job.rundir, f"{self.phase}.log"), "a", encoding="utf-8"
            ) as self.logfile:
                reason = self._follow()
                code = self._stopped(reason) if reason else self._exited()
                self._end_leftovers()
                self._flush()
                return code
        finally:
            self.stdout.close()
            if self.proc.poll() is None:
                kill_group(self.proc)

    def _follow(self) -> str | None:
        """Stream output until the command ends; the reason if a stop condition came first."""
        while True:
            if self.proc.poll() is not None and self.eof:
                return None
            now = time.monotonic()
            reason = self._stop_reason(now)
            if reason:
                return reason
            if now >= self.next_flush:
                self.next_flush = now + FLUSH_EVERY
                self._flush()
                self.agent.busy_tick()
            if self.proc.poll() is not None:
                # The shell is gone but a background child still holds the pipe:
                # take what is there and stop, as upstream does.
                self._read_if_ready()
                return None
            self._wait()

    def _stop_reason(self, now: float) -> str | None:
        """Why the phase must be killed now, if it must: stop, timeouts, cancel."""
        stop = self.agent.stop_reason()
        if stop is not None:
            self.job.interrupted = True
            if self.job.stopped_at is None:
                self.job.stopped_at = now
            if self.phase != Phase.CLEANUP:
                return f"ERROR: tf-agent stopped ({stop})"
            deadline = self.job.stop_deadline()
            if deadline is not None and now >= deadline:
                return f"ERROR: tf-agent stopped ({stop}); no time left for cleanup"
        if self.global_deadline is not None and now >= self.global_deadline:
            return f"ERROR: Global timeout reached! ({self.job.global_timeout}s)"
        if self.output_timeout is not None and now - self.last_output >= self.output_timeout:
            return f"ERROR: Output timeout reached! ({self.output_timeout}s)"
        if self.check_cancel and now >= self.next_cancel:
            self.next_cancel = now + CANCEL_EVERY
            if self.job._is_cancelled():
                return "\nJob cancellation was requested, exiting."
        return None

    def _next_due(self) -> float:
        due = [self.next_flush]
        deadline = self.job.stop_deadline()
        if deadline is not None:
            due.append(deadline)
        if self.check_cancel:
            due.append(self.next_cancel)
        if self.global_deadline is not None:
            due.append(self.global_deadline)
        if self.output_timeout is not None:
            due.append(self.last_output + self.output_timeout)
        return min(due)

    def _wait(self) -> None:
        """Sleep until output, a signal or the next thing due (at most 1 s)."""
        waker = self.job.waker
        timeout = min(self._next_due() - time.monotonic(), 1.0)
        fds = [waker.rfd] if self.eof else [self.fd, waker.rfd]
        ready, _, _ = select.select(fds, [], [], max(timeout, 0.0))
        if waker.rfd in ready:
            waker.drain()
            self.agent.busy_tick()  # a signal: show restart_pending at once
        if self.fd in ready and self._read_available():
            self.last_output = time.monotonic()

    def _read_if_ready(self) -> None:
        ready, _, _ = select.select([self.fd], [], [], 0)
        if ready:
            self._read_available()

    def _read_available(self) -> bool:
        """Read what the pipe holds (sets `eof` at its end); True if anything came."""
        got = False
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return got
            if not data:
                self.eof = True
                return got
            got = True
            self._take(data)

    def _take(self, data: bytes, final: bool = False) -> None:
        text = self.job._mask(self.decoder.decode(data, final))
        if text:
            self.logfile.write(text)
            self.pending.append(text)

    def _flush(self) -> None:
        if self.pending:
            self.logfile.flush()
            self.job._queue_fragment("output", self.phase, "".join(self.pending))
            self.pending.clear()
        self.job._send_fragments()

    def _stopped(self, reason: str) -> int:
        log.warning("job %s phase %s: %s", self.job.job_id, self.phase, reason.strip())
        kill_group(self.proc)
        self._read_if_ready()
        self._take(b"", final=True)
        self.pending.append(f"\n{reason}\n")
        self.logfile.write(f"\n{reason}\n")
        return PhaseStatus.KILLED

    def _exited(self) -> int:
        self._take(b"", final=True)
        return self.proc.wait() % 256

    def _end_leftovers(self) -> None:
        """What remains of the phase's process group once its command is over goes too,
        and so does every process started since that carries the job's marker (a child
        that left the group with setsid): SIGTERM, then SIGKILL after procs.GRACE s; the
        phase's output names them."""
        if self.leader_start is None:
            return
        start = self.leader_start
        killed = procs.end_job_processes(
            self.job.job_id, start, self.proc.pid, lambda proc: proc.start >= start
        )
        if killed:
            text = f"\ntf-agent: killed {procs.describe(killed, 'leftover')}\n"
            log.warning("job %s phase %s:%s", self.job.job_id, self.phase, text.rstrip())
            self._read_if_ready()
            self.pending.append(text)
            self.logfile.write(text)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole process group: connectors' children and grandchildren too."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        proc.kill()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        log.error("pid %s did not die after SIGKILL", proc.pid)
