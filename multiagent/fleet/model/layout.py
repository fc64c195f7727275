"""Where everything tf-fleet writes lives, derived from the state dir alone."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from multiagent.vocabulary import drain_file_name, status_file_name

MARKER = "managed by tf-fleet"
AGENT_CONF = "testflinger-agent.conf"
DEVICE_CONF = "default.yaml"


@dataclass(frozen=True)
class Layout:
    """Its directories are joined once each (cached): `status` of 500 agents asks for
    them a few thousand times."""

    state_dir: Path

    @cached_property
    def agents_dir(self) -> Path:
        return self.state_dir / "agents"

    def agent_dir(self, name: str) -> Path:
        return self.agents_dir / name

    def agent_conf(self, name: str) -> Path:
        return self.agent_dir(name) / AGENT_CONF

    def agent_token(self, name: str) -> Path:
        """The agent's own credential, when the embedded server mints one (agent_tokens)."""
        return self.agent_dir(name) / "token.json"

    def device_conf(self, name: str) -> Path:
        return self.agent_dir(name) / DEVICE_CONF

    @cached_property
    def run_dir(self) -> Path:
        """Root-owned, 0755: holds one directory per agent, nothing else."""
        return self.state_dir / "run"

    def agent_run_dir(self, name: str) -> Path:
        """The agent's run state (its status file, the drain flag): owned by the agent's
        user, 0700; tf-agent gets it as --run-dir."""
        return self.run_dir / name

    def status_file(self, name: str) -> Path:
        path = self.agent_run_dir(name) / status_file_name(name)
        legacy = self.legacy_run_file(status_file_name(name))
        if legacy is not None and not os.path.lexists(path):
            return legacy  # an agent started before run dirs were per agent
        return path

    def drain_file(self, name: str) -> Path:
        return self.agent_run_dir(name) / drain_file_name(name)

    def legacy_run_file(self, file_name: str) -> Path | None:
        """`run/<file>` as an agent started by an older tf-fleet wrote it, if it is a
        regular file of root or ours (the old run dir could be shared: trust no other)."""
        path = self.run_dir / file_name
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if stat.S_ISREG(st.st_mode) and st.st_uid in (0, os.geteuid()):
            return path
        return None

    @cached_property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def log_file(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    @cached_property
    def supervisor_dir(self) -> Path:
        return self.state_dir / "supervisor"

    @cached_property
    def private_program_dir(self) -> Path:
        return self.supervisor_dir / "conf.d"

    @cached_property
    def pending_dir(self) -> Path:
        """Program entries waiting for their agent to finish its job: outside every
        directory supervisord reads, so no `supervisorctl update`, reload or reboot applies
        them before tf-fleet swaps the program."""
        return self.supervisor_dir / "pending"

    def pending_program(self, name: str) -> Path:
        return self.pending_dir / f"{name}.conf"

    @cached_property
    def rejected_change(self) -> Path:
        """The change a canary rejected: `up` refuses it until a new change or an override."""
        return self.state_dir / "rejected.json"

    @cached_property
    def supervisord_conf(self) -> Path:
        return self.supervisor_dir / "supervisord.conf"

    @cached_property
    def socket(self) -> Path:
        # Kept short: a unix socket path may not exceed 107 bytes.
        return self.state_dir / "supervisor.sock"

    @cached_property
    def pid_file(self) -> Path:
        return self.supervisor_dir / "supervisord.pid"

    @cached_property
    def supervisord_log(self) -> Path:
        return self.supervisor_dir / "supervisord.log"

    @cached_property
    def prometheus_targets(self) -> Path:
        """Prometheus file-based service discovery: each tf-agent's /metrics (`metrics:`)."""
        return self.state_dir / "prometheus" / "targets.json"

    @cached_property
    def server_db(self) -> Path:
        return self.state_dir / "server" / "testflinger.db"
