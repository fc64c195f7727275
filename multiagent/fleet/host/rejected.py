"""The change a canary rejected (`<state>/rejected.json`, 0600).

A failed canary is rolled back, but the fleet file still holds the change. Without a
record, the next plain `up` (a systemd unit, a reboot, an Ansible run without a canary)
would roll it to every agent. So the rejection is kept, with the digest of the rendering
it rejected; `up` refuses that same rendering until the fleet file changes (a new change)
or `--force-rejected` is given.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from multiagent import jsonio
from multiagent.fleet.host.files import PRIVATE, read_text, write_atomic
from multiagent.fleet.model.layout import Layout


@dataclass(frozen=True)
class Rejection:
    digest: str  # of the rejected rendering (rendered.rendering_digest)
    when: float  # seconds since the epoch
    agents: tuple[str, ...]  # the canaries that failed it
    why: str  # what failed the gate, in words

    @property
    def when_text(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.when))

    def line(self) -> str:
        return (
            f"the change was rejected at {self.when_text} by its canary"
            f" {', '.join(self.agents)}: {self.why}"
        )

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["agents"] = list(self.agents)
        return data


ADVICE = (
    "`tf-fleet up` refuses it: change the fleet file (a new change),"
    " or run `tf-fleet up --force-rejected` to roll it out anyway"
)


def record(layout: Layout, rejection: Rejection) -> None:
    write_atomic(layout.rejected_change, jsonio.dumps(rejection.to_json()) + "\n", PRIVATE)


def read(layout: Layout) -> Rejection | None:
    """The rejection on record; None when there is none (an unreadable record is none:
    it cannot say which change it was)."""
    text = read_text(layout.rejected_change)
    if text is None:
        return None
    try:
        data = jsonio.loads(text)
        return Rejection(
            str(data["digest"]),
            float(data["when"]),
            tuple(str(a) for a in data["agents"]),
            str(data["why"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


def clear(layout: Layout) -> None:
    layout.rejected_change.unlink(missing_ok=True)
