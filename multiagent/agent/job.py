"""Run one job: phases in their own process groups, output streaming, stop conditions.

The phase loop selects on the command's output pipe and on the agent's wake-up
pipe with a timeout set by the next thing due (log flush, cancel check,
timeouts), so a phase that does nothing costs nothing and a signal is seen at once.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import select
import signal
import subprocess
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from multiagent.agent import outcome
from multiagent.agent.attachments import AttachmentError, unpack
from multiagent.agent.client import ServerUnreachable
from multiagent.agent.config import PHASES

if TYPE_CHECKING:
    from multiagent.agent.loop import Agent

log = logging.getLogger("tf-agent.job")

FLUSH_EVERY = 2.0  # seconds between output fragments while a phase runs
CANCEL_EVERY = 2.0  # seconds between GET /v1/result checks inside a phase
PHASE_HTTP_TIMEOUT = 5.0
DEFAULT_GLOBAL_TIMEOUT = 14400
DEFAULT_OUTPUT_TIMEOUT = 900
EXIT_KILLED = 247  # -SIGKILL % 256, as upstream reports a killed phase
EXIT_AGENT_ERROR = 100
EXIT_RECOVERY_FAILED = 46
DATA_PHASES = ("provision", "firmware_update", "test", "allocate", "reserve")
DONE_STATES = ("complete", "completed", "cancelled")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


class PhaseStopped(Exception):
    pass


class Job:
    def __init__(self, agent: Agent, job: dict[str, Any]):
        self.agent = agent
        self.cfg = agent.cfg
        self.client = agent.client
        self.job = job
        self.job_id = str(job["job_id"])
        self.rundir = os.path.join(self.cfg.execution_basedir, self.job_id)
        self.status: dict[str, int] = {}
        self.fragment_number = 0
        self.unsent: list[tuple[str, dict]] = []
        self.cancelled = False
        self.interrupted = False  # SIGTERM
        self.device_info_sent: bytes | None = None
        self.end_reason = "normal_exit"
        secrets = (job.get("test_data") or {}).get("secrets") or {}
        self.secrets = (
            {str(k): str(v) for k, v in secrets.items()} if isinstance(secrets, dict) else {}
        )
        self.global_timeout = min(
            job.get("global_timeout") or DEFAULT_GLOBAL_TIMEOUT,
            self.cfg.global_timeout or DEFAULT_GLOBAL_TIMEOUT,
        )
        self.output_timeout = min(
            job.get("output_timeout") or DEFAULT_OUTPUT_TIMEOUT,
            self.cfg.output_timeout or DEFAULT_OUTPUT_TIMEOUT,
        )

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
        if result is not None and result.get("job_state") == "cancelled":
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
        self.unsent.append(
            (
                log_type,
                {
                    "fragment_number": self.fragment_number if log_type == "output" else 0,
                    "timestamp": _now_iso(),
                    "phase": phase,
                    "log_data": text,
                },
            )
        )
        if log_type == "output":
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
        os.makedirs(self.rundir, exist_ok=True)
        with open(os.path.join(self.rundir, "testflinger.json"), "w", encoding="utf-8") as fh:
            json.dump(self.job, fh)
        outcome.write_outcome(self.rundir, {})
        open(os.path.join(self.rundir, "device-connector-error.json"), "w").close()
        self._call(self.client.post_agent_data, {"job_id": self.job_id}, timeout=PHASE_HTTP_TIMEOUT)
        self.agent.metrics.job_started()
        try:
            if self._prepare_attachments():
                self._run_main_phases()
        except Exception as exc:  # an agent bug must not leave the job running
            log.exception("job %s: agent error", self.job_id)
            self._queue_fragment("output", "setup", f"\nERROR: tf-agent internal error: {exc}\n")
        finally:
            if not self.interrupted:
                self._run_phase("cleanup")
            self._finish()

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
            for phase in DATA_PHASES:
                data = self.job.get(f"{phase}_data")
                if isinstance(data, dict) and "attachments" in data:
                    del data["attachments"]
                    if not data:
                        del self.job[f"{phase}_data"]
            return True
        log.error("job %s: %s", self.job_id, reason)
        # Attributed to setup: it is the first thing the job does.
        self.status["setup"] = EXIT_AGENT_ERROR
        text = f"\nERROR: {reason}\nThe job is aborted before setup.\n"
        self._append_log("setup", text)
        self._queue_fragment("output", "setup", text)
        self._send_fragments()
        self._call(self.client.post_result, self.job_id, {"status": dict(self.status)})
        self.end_reason = "setup_fail"
        return False

    def _run_main_phases(self) -> None:
        for phase in PHASES:
            if self.agent.stop_requested():
                self.interrupted = True
                return
            if self._is_cancelled():
                log.info("job %s cancelled before %s", self.job_id, phase)
                return
            self.agent.read_server_state_busy()
            self._call(
                self.client.post_result,
                self.job_id,
                {"job_state": phase},
                timeout=PHASE_HTTP_TIMEOUT,
            )
            self._post_state(phase, self.agent.pending_comment())
            code = self._run_phase(phase)
            if self.interrupted:
                return
            if phase == "provision":
                detail = "provision_success" if code == 0 else "provision_fail"
                if code == EXIT_RECOVERY_FAILED:
                    detail = "recovery_fail"
                self._call(self.client.post_provision_log, self.job_id, code or 0, detail)
            if code is None:
                continue
            if code == EXIT_RECOVERY_FAILED:
                self.agent.recovery_failed(self.job_id)
                self.end_reason = "recovery_fail"
                if phase != "test":
                    return
            elif code != 0 and phase != "test":
                self.end_reason = f"{phase}_fail"
                return
            if self.cancelled:
                return

    def _skipped(self, phase: str) -> bool:
        if not self.cfg.command(phase):
            return True
        if phase in DATA_PHASES:
            data = self.job.get(f"{phase}_data")
            if not data or (isinstance(data, dict) and data.get("skip") is True):
                return True
        return False

    def _env(self, phase: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.cfg.string_items())
        if phase == "test":
            env.update(self.secrets)
        return env

    def _append_log(self, phase: str, text: str) -> None:
        with open(os.path.join(self.rundir, f"{phase}.log"), "a", encoding="utf-8") as fh:
            fh.write(text)

    def _run_phase(self, phase: str) -> int | None:
        """Run one phase; None if skipped, else its exit code (recorded and posted)."""
        if self._skipped(phase):
            return None
        self.agent.set_phase(phase, self.job_id)
        started = time.monotonic()
        try:
            code = self._execute(phase)
        except Exception as exc:
            log.exception("job %s phase %s: agent error", self.job_id, phase)
            text = f"\nERROR: tf-agent error while running {phase}: {exc}\n"
            self._queue_fragment("output", phase, text)
            code = EXIT_AGENT_ERROR
        self._send_fragments()
        self._send_serial(phase)
        self.status[phase] = code
        outcome.write_outcome(self.rundir, {"status": dict(self.status)})
        self._call(
            self.client.post_result,
            self.job_id,
            {"status": dict(self.status)},
            timeout=PHASE_HTTP_TIMEOUT,
        )
        self._send_device_info()
        self.agent.metrics.phase_done(phase, code, time.monotonic() - started)
        if phase == "allocate" and code == 0 and not self.interrupted:
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
            info = json.loads(raw).get("device_info")
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
        command = self.cfg.command(phase)
        banner = "*" * 40 + f"\n* Starting testflinger {phase} phase on {self.cfg.agent_id}\n"
        banner += "*" * 40 + "\n"
        self._append_log(phase, banner)
        self._queue_fragment("output", phase, banner)
        proc = subprocess.Popen(
            command,
            shell=True,
            cwd=self.rundir,
            env=self._env(phase),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        waker = self.agent.triggers.waker
        logfile = open(os.path.join(self.rundir, f"{phase}.log"), "a", encoding="utf-8")
        pending: list[str] = []
        start = time.monotonic()
        last_output = start
        next_flush = start + FLUSH_EVERY
        check_cancel = phase != "provision"  # upstream never interrupts provision
        next_cancel = start + CANCEL_EVERY
        global_deadline = None if phase == "reserve" else start + self.global_timeout
        output_timeout = self.output_timeout if phase == "test" else None
        eof = False
        reason = None

        def take(data: bytes, final: bool = False) -> None:
            text = self._mask(decoder.decode(data, final))
            if text:
                logfile.write(text)
                pending.append(text)

        def flush() -> None:
            if pending:
                logfile.flush()
                self._queue_fragment("output", phase, "".join(pending))
                pending.clear()
            self._send_fragments()

        try:
            while True:
                if proc.poll() is not None and eof:
                    break
                now = time.monotonic()
                if self.agent.stop_requested():
                    reason = f"ERROR: tf-agent stopped ({self.agent.triggers.stop_reason})"
                    self.interrupted = True
                elif global_deadline is not None and now >= global_deadline:
                    reason = f"ERROR: Global timeout reached! ({self.global_timeout}s)"
                elif output_timeout is not None and now - last_output >= output_timeout:
                    reason = f"ERROR: Output timeout reached! ({output_timeout}s)"
                elif check_cancel and now >= next_cancel:
                    next_cancel = now + CANCEL_EVERY
                    if self._is_cancelled():
                        reason = "\nJob cancellation was requested, exiting."
                if reason:
                    break
                if now >= next_flush:
                    next_flush = now + FLUSH_EVERY
                    flush()
                    self.agent.busy_tick()
                if proc.poll() is not None:
                    # The shell is gone but a background child still holds the
                    # pipe: take what is there and stop, as upstream does.
                    ready, _, _ = select.select([fd], [], [], 0)
                    if ready:
                        self._read_available(fd, take)
                    break
                due = [next_flush]
                if check_cancel:
                    due.append(next_cancel)
                if global_deadline is not None:
                    due.append(global_deadline)
                if output_timeout is not None:
                    due.append(last_output + output_timeout)
                timeout = min(min(due) - time.monotonic(), 1.0)
                fds = [waker.rfd] if eof else [fd, waker.rfd]
                ready, _, _ = select.select(fds, [], [], max(timeout, 0.0))
                if waker.rfd in ready:
                    waker.drain()
                    self.agent.busy_tick()  # a signal: show restart_pending at once
                if fd in ready:
                    got, eof = self._read_available(fd, take)
                    if got:
                        last_output = time.monotonic()
            if reason:
                log.warning("job %s phase %s: %s", self.job_id, phase, reason.strip())
                self._kill(proc)
                ready, _, _ = select.select([fd], [], [], 0)
                if ready:
                    self._read_available(fd, take)
                take(b"", final=True)
                pending.append(f"\n{reason}\n")
                logfile.write(f"\n{reason}\n")
                code = EXIT_KILLED
            else:
                take(b"", final=True)
                code = proc.wait() % 256
            flush()
            return code
        finally:
            logfile.close()
            proc.stdout.close()
            if proc.poll() is None:
                self._kill(proc)

    @staticmethod
    def _read_available(fd: int, take: Any) -> tuple[bool, bool]:
        got = False
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                return got, False
            if not data:
                return got, True
            got = True
            take(data)

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        # The whole process group: connectors' children and grandchildren too.
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

    def _allocate_wait(self) -> None:
        """Upstream allocate: device_info, job_state allocated, wait for the job(s) to end."""
        while not self._send_device_info_required():
            if self.agent.wait_busy(5.0):
                return
        self._call(self.client.post_result, self.job_id, {"job_state": "allocated"})
        watch = [self.job_id]
        parent = self.job.get("parent_job_id")
        if parent:
            watch.append(str(parent))
        interval = min(float(self.cfg.polling_interval), 10.0)
        while True:
            for job_id in watch:
                result = self._call(self.client.get_result, job_id)
                if result and result.get("job_state") in DONE_STATES:
                    if job_id == self.job_id and result.get("job_state") == "cancelled":
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
        """Artifacts + final result, or keep everything for later if the server is away."""
        self.agent.set_phase(None, self.job_id)
        failed = [p for p, c in self.status.items() if c != 0]
        self.agent.metrics.job_done(failed)
        final: dict[str, Any] = {"status": dict(self.status)}
        # A cancelled or interrupted job stays "cancelled" on the server rather than
        # being overwritten with "complete" (upstream would post complete).
        final["job_state"] = "cancelled" if (self.cancelled or self.interrupted) else "complete"
        try:
            outcome.build_artifact(self.rundir)
        except OSError as exc:
            log.error("job %s: cannot pack artifacts: %s", self.job_id, exc)
        outcome.write_outcome(self.rundir, final)
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
        self._call(self.client.post_agent_data, {"job_id": ""}, timeout=PHASE_HTTP_TIMEOUT)
