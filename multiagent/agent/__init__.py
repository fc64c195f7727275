"""tf-agent: a Testflinger device agent that restarts safely and reports what it does.

Modules, one job each: config (the upstream YAML; tf-fleet's JSON form without a YAML
parser), client (the REST calls), tokenfile (the one reader of a token file, tf-fleet's
too), wire (HTTP/1.1 on one socket, URL helpers),
job (phases, process groups, stop conditions), attachments (safe unpack),
outcome (deliver exactly once / keep for later), status (status file, drain
flag, one-process-per-name guard), record (the job record; closing a dead agent's job),
procs (process groups from /proc), triggers (signals, restart file, wake-up pipe,
inotify), loop (main loop), metrics (Prometheus text), logfile (the daily log file),
memory (freed heap back to the kernel when idle), main (CLI), boot (the start without
site that tf-fleet uses).

Exit status: 0 stopped (SIGTERM, drain `hold`), 1 safe restart (SIGUSR1,
restart file, server state `restart`), 2 bad config, 3 another process holds
the agent's name, 70 internal error.

Deliberate differences from upstream, for a host that restarts agents often:
* `polling_interval` also accepts a float (tests poll every 0.2 s).
* Output fragments every 2 s and cancel checks every 2 s (upstream: 10 s).
  Stop conditions SIGKILL the whole process group, not just the shell.
* A cancelled job keeps job_state `cancelled` (upstream overwrites it with
  `complete`); cleanup after a cancel is not killed by the cancel checker.
* SIGTERM mid-job kills the phase (247), then runs cleanup as upstream does, ended
  (247) if it would outlast supervisord's stopwaitsecs (TF_AGENT_STOPWAITSECS, set by
  tf-fleet) less 5 s for the outcome; the job ends `cancelled`, the agent exits 0.
* Log fragments the server could not take are kept and delivered with the outcome.
* An admin's `offline`/`maintenance` (any comment not written by tf-agent itself,
  including the recovery-failure one) survives a restart; upstream's start-up
  post of `waiting` would clear it. A restart asked while offline happens at once
  (the agent is idle) and leaves that state as it is.
* A job killed with its agent (kill -9, OOM) is closed by the next start: status 100 in
  the phase it died in, job_state complete. Any tf-agent error fails its phase (100).
* Processes a phase leaves behind are ended (SIGTERM, SIGKILL 5 s later).
* Job events (webhooks) are not sent; the ssh os-release probe is not done.
"""

from __future__ import annotations

# The package's one version (pyproject.toml reads it too): `multiagent` is loaded before
# this module anyway, and reading it needs no importlib.metadata at start-up.
from multiagent import __version__ as __version__
