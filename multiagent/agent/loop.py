"""The agent's main loop: register, poll, run jobs, honour restart/drain/stop requests.

Every wait goes through `Triggers.waker`, so SIGUSR1/SIGTERM end it at once;
while idle, inotify wakes it for the restart file and drain flag (see triggers),
else they are looked at every `triggers.POLL_TICK` seconds. Network failures never
escape the loop: they set a capped back-off.
"""

from __future__ import annotations

import os
import time

from multiagent.agent import outcome
from multiagent.agent.client import Client, ServerUnreachable
from multiagent.agent.config import AgentConfig
from multiagent.agent.log import get as get_logger
from multiagent.agent.metrics import Metrics
from multiagent.agent.status import DrainFlag, StatusFile
from multiagent.agent.triggers import Triggers
from multiagent.vocabulary import (
    REMOVED_COMMENT,
    AgentExit,
    AgentState,
    DrainMode,
    JobState,
    Phase,
    PhaseStatus,
    drained_comment,
    is_drained_comment,
    job_record_path,
)

TYPE_CHECKING = False  # no typing import at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any

    from multiagent.agent.record import DeadJob

log = get_logger("tf-agent")

HEARTBEAT_EVERY = 240.0  # POST agent data at least this often (server's updated_at)
BACKOFF_MIN, BACKOFF_MAX = 1.0, 30.0
# Until this process has reached its server once, it retries at least this often: at a
# cold start the embedded server starts alongside hundreds of agents and is ready only
# seconds later, and a doubling back-off would leave agents idle for as long again.
# A refused connection on a lab network costs next to nothing to try.
FIRST_CONTACT_RETRY = 0.5
# For its first seconds a process keeps a refused first contact to itself (no warning in
# its log, no `server_reachable: false`) and tries again sooner: the embedded server is
# seldom listening yet at a cold start, and hundreds of warnings, status writes and
# "reachable again" lines would only take CPU from the agents still starting (bench/).
FIRST_CONTACT_QUIET = 3.0
FIRST_CONTACT_MIN = 0.1
FAREWELL_TIMEOUT = 2.0
ANSWER_TIMEOUT = 10.0  # the post telling the server this agent has its job
# Comments the agent itself writes when going down; a state with one of these is
# not an admin's offline and is cleared at the next start.
OWN_COMMENT_PREFIX = "tf-agent "
OFF_STATES = (AgentState.OFFLINE, AgentState.MAINTENANCE)


def own_comment(comment: str) -> bool:
    """A comment tf-agent or tf-fleet wrote (a drain, a removal from the fleet: not an
    admin's): the agent decides its state afresh at start instead of keeping it."""
    return (
        comment.startswith(OWN_COMMENT_PREFIX)
        or is_drained_comment(comment)
        or comment == REMOVED_COMMENT
    )


class Agent:
    def __init__(
        self,
        cfg: AgentConfig,
        status: StatusFile,
        drain: DrainFlag,
        triggers: Triggers,
        metrics: Metrics,
        token_file: str | None = None,
    ):
        self.cfg = cfg
        self.status = status
        self.drain = drain
        self.triggers = triggers
        self.metrics = metrics
        self.client = Client(cfg.server_address, cfg.agent_id, token_file=token_file)
        self.interval = float(cfg.polling_interval)
        self.registered = False
        self.backoff = 0.0
        self.retry_at = 0.0
        self.reached = False  # whether this process has had an answer from its server
        self.quiet_until = time.monotonic() + FIRST_CONTACT_QUIET
        self.warned = False  # the log says the server is unreachable
        # Idle polls in a row: the memory start-up or the last job left is given back at
        # the second, once the agent stayed idle a whole polling interval. Not at the
        # first: on a cold `up` of hundreds of agents, those ~3 ms of CPU each would
        # come while the others are still starting.
        self.idle_polls = 0
        self.server_state = ""
        self.server_comment = ""
        self.server_job_id = ""  # the job the server shows this agent running
        self.restricted: list[str] = []
        self.deferred_offline: str | None = None  # comment to post after the job
        self.last_agent_post = 0.0
        self.busy = False
        self._drain_seen: str | None = None
        self.record_path = job_record_path(cfg.execution_basedir, cfg.agent_id)
        self.dead_job: DeadJob | None = None  # a job to close before the next poll

    # -- reachability -------------------------------------------------------------
    def net_ok(self) -> bool:
        return time.monotonic() >= self.retry_at

    def net_failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if not self.reached and now < self.quiet_until:
            self.backoff = min(max(FIRST_CONTACT_MIN, self.backoff * 2), FIRST_CONTACT_RETRY)
            self.retry_at = now + self.backoff
            return
        ceiling = BACKOFF_MAX if self.reached else FIRST_CONTACT_RETRY
        self.backoff = min(max(BACKOFF_MIN, self.backoff * 2), ceiling)
        self.retry_at = now + self.backoff
        if not self.warned:
            self.warned = True
            log.warning("server unreachable (%s); retrying with back-off", exc)
        if self.status.data["server_reachable"]:
            self.status.update(server_reachable=False)

    def net_succeeded(self, write: bool = True) -> None:
        """`write=False`: a status write follows at once and carries it."""
        self.reached = True
        if self.warned:
            self.warned = False
            log.info("server reachable again")
        self.backoff = 0.0
        self.retry_at = 0.0
        if not self.status.data["server_reachable"]:
            if write:
                self.status.update(server_reachable=True)
            else:
                self.status.note(server_reachable=True)

    # -- hooks used by Job (job.AgentHooks, with the reachability above) ---------
    def stop_requested(self) -> bool:
        return self.triggers.stop_reason is not None

    def stop_reason(self) -> str | None:
        return self.triggers.stop_reason

    def set_phase(self, phase: str | None, job_id: str | None) -> None:
        self.status.update(state=phase or self.status.data["state"], phase=phase, job_id=job_id)

    def pending_comment(self) -> str:
        return self.deferred_offline or ""

    def recovery_failed(self, job_id: str) -> None:
        comment = f"Set to offline by agent. Recovery failed during job '{job_id}' execution."
        self.deferred_offline = comment
        self._post_agent({"state": AgentState.OFFLINE, "comment": comment})

    def read_server_state_busy(self) -> None:
        """Between phases: remember an offline/maintenance/restart request for after the job."""
        data = self._get_agent_data()
        if data is None:
            return
        state, comment = data.get("state") or "", data.get("comment") or ""
        if state in OFF_STATES and self.deferred_offline is None:
            log.info("server set %s during a job; going offline after it", state)
            self.deferred_offline = comment
        elif state == AgentState.RESTART_REQUESTED:
            self._request_restart("server")

    def busy_tick(self) -> None:
        """Every few seconds inside a running phase."""
        self.status.refresh_if_due()
        self.triggers.flush_events()
        self.triggers.check_restart_file()
        if self.triggers.restart_pending:
            self._show_restart()
        self._heartbeat_if_due()

    def wait_busy(self, seconds: float) -> bool:
        """Sleep inside a job (allocate); True if the agent must stop."""
        deadline = time.monotonic() + seconds
        while not self.stop_requested():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.triggers.waker.wait(min(remaining, 2.0))
            self.busy_tick()
        return True

    # -- helpers ----------------------------------------------------------------
    def _post_agent(self, data: dict[str, Any], timeout: float | None = None) -> bool:
        if not self.net_ok():
            return False
        try:
            ok = self.client.post_agent_data(data, timeout=timeout)
        except ServerUnreachable as exc:
            self.net_failed(exc)
            return False
        self.net_succeeded()
        if "state" in data:
            self.last_agent_post = time.monotonic()
        return ok

    def _get_agent_data(self) -> dict[str, Any] | None:
        if not self.net_ok():
            return None
        try:
            data = self.client.get_agent_data()
        except ServerUnreachable as exc:
            self.net_failed(exc)
            return None
        self.net_succeeded()
        return data

    def _heartbeat_if_due(self) -> None:
        if time.monotonic() - self.last_agent_post < HEARTBEAT_EVERY:
            return
        data = self._get_agent_data()
        if data is None:
            return
        self._post_agent(self._own_state(data))

    def _own_state(self, server: dict[str, Any]) -> dict[str, Any]:
        """What this agent is doing now, as the server should show it: its phase and job
        while busy, else waiting (or the admin's offline/maintenance it honours), with no
        job. Never the server's state or job posted back: after an outage the server may
        hold what the agent was doing before it. An admin's request the agent has not acted
        on yet (offline, maintenance, restart during a job) stays on the server: no state
        is posted over it; its comment stays too."""
        requested = server.get("state") or ""
        job_id = self.status.data["job_id"] or ""
        body: dict[str, Any] = {"job_id": job_id, "comment": server.get("comment") or ""}
        if job_id:
            if requested not in OFF_STATES and requested != AgentState.RESTART_REQUESTED:
                body["state"] = self.status.data["phase"] or self.status.data["state"]
        elif requested in OFF_STATES:
            body["state"] = requested
        else:
            body["state"] = AgentState.WAITING
        return body

    def _request_restart(self, reason: str) -> None:
        self.triggers.request_restart(reason)
        self._show_restart()

    def _show_restart(self) -> None:
        if not self.status.data["restart_pending"]:
            log.info(
                "restart pending (%s)%s",
                self.triggers.restart_reason,
                "; after the running job" if self.busy else "",
            )
            self.metrics.restart_pending = 1
            self.status.update(restart_pending=True, restart_reason=self.triggers.restart_reason)

    def _wait_idle(self, seconds: float) -> None:
        """Sleep, but wake at once on signals, restart file and drain flag changes.

        With inotify the files are looked at when an event names them (and every
        RECHECK s); without, every POLL_TICK s. Unrelated events cost no look at all.
        The status file is rewritten when due (see StatusFile.refresh_if_due).
        """
        triggers = self.triggers
        if triggers.watching is None:
            triggers.start_watch(self.drain.path)  # after the first poll: not on its path
        deadline = time.monotonic() + seconds
        look, next_look = True, 0.0
        while True:
            if self.stop_requested() or triggers.restart_pending:
                return
            now = time.monotonic()
            if look or now >= next_look:
                if triggers.check_restart_file():
                    return
                if self.drain.read() != self._drain_seen:
                    return
                next_look = now + triggers.recheck_every
            remaining = deadline - now
            if remaining <= 0:
                return
            self.status.refresh_if_due()
            wake = min(next_look, self.status.next_refresh())
            look = triggers.wait(max(0.0, min(remaining, wake - now)))

    # -- exits --------------------------------------------------------------------
    def _farewell(self, state: str, comment: str) -> None:
        if self.server_state in OFF_STATES and not self.server_comment.startswith(
            OWN_COMMENT_PREFIX
        ):
            # Keep an admin's offline/maintenance (and its comment) across the restart,
            # and a drain's: the successor looks at the flag again.
            self._post_agent(
                {"state": self.server_state, "comment": self.server_comment},
                timeout=FAREWELL_TIMEOUT,
            )
        else:
            self._post_agent(
                {"state": AgentState.OFFLINE, "comment": OWN_COMMENT_PREFIX + comment},
                timeout=FAREWELL_TIMEOUT,
            )
        self.status.update(state=state, job_id=None, phase=None)

    def _exit_restart(self) -> int:
        reason = self.triggers.restart_reason or "restart"
        log.info("restarting (%s)", reason)
        self.status.update(state=AgentState.RESTARTING, restart_pending=True, restart_reason=reason)
        self.triggers.consume_restart_file()
        self._farewell(AgentState.RESTARTING, f"restarting: {reason}")
        return AgentExit.RESTART

    def _exit_stop(self) -> int:
        log.info("stopping (%s)", self.triggers.stop_reason)
        self._farewell(AgentState.STOPPED, f"stopped ({self.triggers.stop_reason})")
        return AgentExit.STOPPED

    # -- main loop ------------------------------------------------------------------
    def run(self) -> int:
        self.status.update(state=AgentState.STARTING)
        self._find_dead_job()
        while True:
            code = self._step()
            if code is not None:
                return code

    def _step(self) -> int | None:
        if self.stop_requested():
            return self._exit_stop()
        self.triggers.check_restart_file()
        if self.triggers.restart_pending:
            return self._exit_restart()
        if not self.net_ok():
            # Unreachable server: a hold still ends an idle agent (what is undelivered
            # stays on disk for its successor), and a drain flag seen is no news.
            self._drain_seen = self.drain.read()
            if self._drain_seen == DrainMode.HOLD:
                return self._exit_hold()
            self._wait_idle(self.retry_at - time.monotonic())
            return None
        try:
            return self._poll_once()
        except ServerUnreachable as exc:
            self.metrics.poll_error("unreachable")
            self.net_failed(exc)
            return None

    def _register(self) -> None:
        """Tell the server this agent is here: one look at what it holds, one post (the
        state, queues and location together: at a cold start hundreds of agents do this
        at once). What the look saw, with the state posted, serves the first poll."""
        cfg = self.cfg
        data = self.client.get_agent_data()
        state, comment = data.get("state") or "", data.get("comment") or ""
        if state in OFF_STATES and not own_comment(comment):
            # An admin's offline/maintenance survives our restarts (upstream clears it).
            log.info("server has this agent %s (%s); keeping it", state, comment)
        else:
            state, comment = self._idle_state()
        if cfg.advertised_queues:
            self.client.post_queues(cfg.advertised_queues)
        if cfg.advertised_images:
            self.client.post_images(cfg.advertised_images)
        posted: dict[str, Any] = {
            "state": state,
            "job_id": "",  # a job left by a dead process was closed before this
            "comment": comment,
            "location": cfg.location or "",
            "queues": list(cfg.job_queues),
            "provision_type": cfg.provision_type or "",
        }
        if cfg.identifier:
            posted["identifier"] = cfg.identifier
        self.client.post_agent_data(posted)
        self.last_agent_post = time.monotonic()
        self.registered = True
        # Each path of the poll that follows writes the status file: one write fewer
        # (and one file fewer made) per start, hundreds of them at a cold `up`.
        self.net_succeeded(write=False)
        self._take_server_state({**data, "state": state, "comment": comment, "job_id": ""})
        log.info("registered with %s as %s", self.client.server, cfg.agent_id)

    def _read_server_state(self) -> None:
        data = self.client.get_agent_data()
        self.net_succeeded()
        self._take_server_state(data)

    def _take_server_state(self, data: dict[str, Any]) -> None:
        self.server_state = data.get("state") or ""
        self.server_comment = data.get("comment") or ""
        self.server_job_id = str(data.get("job_id") or "")
        restricted = data.get("restricted_to") or {}
        self.restricted = (
            [q for q, owners in restricted.items() if owners]
            if isinstance(restricted, dict)
            else []
        )

    def _find_dead_job(self) -> None:
        """A job record left on disk: its agent process died mid-job (or could not close
        it). End what is left of its processes now; the server is told before any poll."""
        if not os.path.exists(self.record_path):
            return
        from multiagent.agent import record

        data = record.load(self.record_path)
        if data is None:
            return
        dead = record.DeadJob(self.record_path, data, self.cfg.execution_basedir)
        log.warning(
            "job %s was left in its %s phase by pid %s: closing it before polling",
            dead.job_id,
            data.get("phase"),
            data.get("agent_pid"),
        )
        dead.end_processes()
        self.dead_job = dead
        self.status.update(job_id=dead.job_id, phase=None)

    def _close_dead_job(self) -> None:
        """Tell the server how the dead job ended; raises ServerUnreachable to retry."""
        dead = self.dead_job
        assert dead is not None
        try:
            dead.close(self.client)
        except OSError as exc:  # local: logged, retried with back-off, no poll meanwhile
            log.error("cannot close job %s of the dead agent: %s", dead.job_id, exc)
            raise ServerUnreachable(f"closing job {dead.job_id}: {exc}") from exc
        self.net_succeeded()
        self.dead_job = None
        self.status.update(job_id=None, phase=None)

    def _poll_once(self) -> int | None:
        if self.dead_job is not None:
            self._close_dead_job()  # first: no new job while one is left open
        registering = not self.registered
        if registering:
            self._register()  # its look at the server serves this poll
        self._retry_stored()
        if not registering:
            self._read_server_state()
        if self.server_state in OFF_STATES and not is_drained_comment(self.server_comment):
            self.status.update(state=self.server_state, drained=False)
            self._heartbeat_if_due()
            self._wait_idle(self.interval)
            return None
        if self.server_state == AgentState.RESTART_REQUESTED:
            self._request_restart("server")
            return None
        flag = self.drain.look()
        if flag is None or flag[0] == DrainMode.HOLD:
            if self._heartbeat_due() or self._server_wrong():
                self._heartbeat_idle()
        # Checked immediately before the poll: no window to take a job once drained.
        drain = self._drain_seen = self.drain.read()
        if drain == DrainMode.HOLD:
            return self._exit_hold()
        if drain:
            flag = self.drain.look()
            self._stay_drained(flag[1] if flag else "")
            return None
        self._poll_job()
        return None

    def _exit_hold(self) -> int:
        log.info("drain flag says hold: exiting and staying down")
        self.status.update(drained=True)
        self._farewell(AgentState.STOPPED, "held (drain hold)")
        return AgentExit.STOPPED

    def _heartbeat_idle(self) -> None:
        if self.cfg.advertised_queues:
            self.client.post_queues(self.cfg.advertised_queues)
        # A drain's comment goes with the drain (resumed); anyone else's comment stays.
        comment = "" if is_drained_comment(self.server_comment) else self.server_comment
        self._post_agent({"state": AgentState.WAITING, "job_id": "", "comment": comment})
        self.server_state, self.server_job_id = AgentState.WAITING, ""
        self.server_comment = comment

    def _idle_state(self) -> tuple[str, str]:
        """The state and comment of this agent with no job, as the server should show it:
        drained (upstream's offline, with the operator's reason) or waiting."""
        flag = self.drain.look()
        if flag is not None and flag[0] == DrainMode.DRAIN:
            return AgentState.OFFLINE, drained_comment(flag[1])
        return AgentState.WAITING, ""

    def _server_wrong(self) -> bool:
        """The server shows this idle agent busy (a post lost while it was down): it is
        put right at this poll, not at the next heartbeat."""
        return self.server_state != AgentState.WAITING or self.server_job_id != ""

    def _stay_drained(self, reason: str) -> None:
        if self.status.data["state"] != AgentState.DRAINED or not self.status.data["drained"]:
            log.info("drained: taking no new job%s", f" ({reason})" if reason else "")
        comment = drained_comment(reason)
        shown = (self.server_state, self.server_comment, self.server_job_id)
        if shown != (AgentState.OFFLINE, comment, "") or self._heartbeat_due():
            # The lab sees the drain as upstream's admins show theirs: offline, and why.
            body = {"state": AgentState.OFFLINE, "job_id": "", "comment": comment}
            if self._post_agent(body):
                self.server_state, self.server_comment = AgentState.OFFLINE, comment
                self.server_job_id = ""
        self.status.update(state=AgentState.DRAINED, drained=True, job_id=None, phase=None)
        self._wait_idle(self.interval)

    def _poll_job(self) -> None:
        """Ask the server for a job: run it if one comes, else wait a polling interval."""
        code, job = self.client.poll_job(self.restricted or list(self.cfg.job_queues))
        self.net_succeeded()
        if code == 401:
            self.registered = False  # lost the agent_name cookie: register again
        changes: dict[str, Any] = {"drained": False, "job_id": None, "phase": None}
        if code in (200, 204):
            changes["last_poll"] = time.time()
        else:
            self.metrics.poll_error(f"http_{code}")
        if job is None:
            self.status.update(state=AgentState.WAITING, **changes)
            self.idle_polls += 1
            if self.idle_polls == 2:
                from multiagent.agent.memory import give_back  # once per process

                give_back()
            self._wait_idle(self.interval)
            return
        self.status.update(**changes)
        self.idle_polls = 0
        self._run_job(job)

    def _heartbeat_due(self) -> bool:
        return time.monotonic() - self.last_agent_post >= HEARTBEAT_EVERY

    def _run_job(self, job: dict[str, Any]) -> None:
        from multiagent.agent.job import Job  # keeps the idle agent's imports small

        job_id = job.get("job_id")
        if not job_id:
            log.error("job without job_id: %s", job)
            return
        if not self._answer_for(str(job_id)):
            return
        log.info("starting job %s", job_id)
        self.busy = True
        self.status.update(state=Phase.SETUP, job_id=str(job_id), phase=None)
        try:
            Job(job, self.cfg, self.client, self.metrics, self.triggers.waker, self).run()
        except Exception as exc:  # Job could not even start: fail the job in setup
            log.exception("job %s: tf-agent error", job_id)
            self._fail_job(str(job_id), exc)
        finally:
            self.busy = False
        log.info("job %s done", job_id)
        self.status.update(job_id=None, phase=None)
        self._find_dead_job()  # the job could not be closed: close it before the next poll
        if self.stop_requested():
            return
        self.triggers.check_restart_file()
        self.read_server_state_busy()
        if self.deferred_offline is not None:
            self._post_agent({"state": AgentState.OFFLINE, "comment": self.deferred_offline})
            self.deferred_offline = None
        elif not self.triggers.restart_pending:
            state, comment = self._idle_state()
            self._post_agent({"state": state, "comment": comment})

    def _answer_for(self, job_id: str) -> bool:
        """Whether the job is this agent's to run: the server has heard it has the job.
        While the server does not answer, it is asked again (with the back-off); a job it
        took back meanwhile (409: the answer was too late, another agent may run it) and a
        stop before any answer are not run."""
        while not self.stop_requested():
            if self.net_ok():
                try:
                    status = self.client.answer_for_job(job_id, timeout=ANSWER_TIMEOUT)
                except ServerUnreachable as exc:
                    self.net_failed(exc)
                else:
                    self.net_succeeded()
                    if status != 409:
                        return True
                    log.warning("job %s was taken back by the server: not running it", job_id)
                    return False
            self.triggers.waker.wait(max(0.0, self.retry_at - time.monotonic()))
        log.info("job %s not started: stopping before the server heard of it", job_id)
        return False

    def _fail_job(self, job_id: str, exc: Exception) -> None:
        from datetime import datetime, timezone

        fragment = {
            "fragment_number": 0,
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "phase": Phase.SETUP,
            "log_data": f"\nERROR: tf-agent internal error before setup: {exc!r}\n",
        }
        try:
            self.client.post_log(job_id, "output", fragment)
            final = {
                "status": {Phase.SETUP: PhaseStatus.AGENT_ERROR},
                "job_state": JobState.COMPLETE,
            }
            self.client.post_result(job_id, final)
            self.client.post_agent_data({"job_id": ""})
        except ServerUnreachable as err:
            self.net_failed(err)

    def _retry_stored(self) -> None:
        names = outcome.pending(self.cfg.results_basedir)
        if not names:
            return
        try:
            n = outcome.retry_stored(self.client, self.cfg.results_basedir)
        except OSError as exc:
            log.error("cannot re-send stored outcomes: %s", exc)
            return
        if n:
            self.net_succeeded()
