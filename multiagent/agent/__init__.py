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

Deliberate differences from upstream's agent: README.rst lists them, in one place.
"""

from __future__ import annotations

# The package's one version (pyproject.toml reads it too): `multiagent` is loaded before
# this module anyway, and reading it needs no importlib.metadata at start-up.
from multiagent import __version__ as __version__
