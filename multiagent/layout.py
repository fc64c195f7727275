"""Where everything tf-fleet writes lives, derived from the state dir alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .vocabulary import drain_file_name, status_file_name

MARKER = "managed by tf-fleet"
AGENT_CONF = "testflinger-agent.conf"
DEVICE_CONF = "default.yaml"


@dataclass(frozen=True)
class Layout:
    state_dir: Path

    @property
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

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    def status_file(self, name: str) -> Path:
        return self.run_dir / status_file_name(name)

    def drain_file(self, name: str) -> Path:
        return self.run_dir / drain_file_name(name)

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def log_file(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    @property
    def supervisor_dir(self) -> Path:
        return self.state_dir / "supervisor"

    @property
    def private_program_dir(self) -> Path:
        return self.supervisor_dir / "conf.d"

    @property
    def supervisord_conf(self) -> Path:
        return self.supervisor_dir / "supervisord.conf"

    @property
    def socket(self) -> Path:
        # Kept short: a unix socket path may not exceed 107 bytes.
        return self.state_dir / "supervisor.sock"

    @property
    def pid_file(self) -> Path:
        return self.supervisor_dir / "supervisord.pid"

    @property
    def supervisord_log(self) -> Path:
        return self.supervisor_dir / "supervisord.log"

    @property
    def server_db(self) -> Path:
        return self.state_dir / "server" / "testflinger.db"
