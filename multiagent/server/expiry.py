"""The periodic sweep that deletes expired agents and jobs (reads already hide them), and
takes back the jobs whose hand-out no agent acknowledged in time."""

from __future__ import annotations

import logging
import threading
import time

from multiagent.server.db import Store

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 60.0  # like mongod's TTL monitor
# Unacknowledged hand-outs are looked at this many times per ack timeout (at least every
# SWEEP_INTERVAL), so one goes back at most a quarter of the bound late.
ACK_LOOKS = 4


class Sweeper:
    """A daemon thread calling `store.sweep()` every `interval` seconds until stopped,
    and `store.take_back_silent(ack_timeout)` every `tick`."""

    def __init__(
        self, store: Store, interval: float = SWEEP_INTERVAL, ack_timeout: float | None = None
    ) -> None:
        self.store = store
        self.interval = interval
        self.ack_timeout = ack_timeout
        self.tick = min(interval, ack_timeout / ACK_LOOKS) if ack_timeout else interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tf-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def sweep_once(self) -> dict[str, int]:
        try:
            counts = self.store.sweep()
        except Exception:  # a locked or broken db must not kill the thread
            log.exception("expiry sweep failed")
            return {}
        removed = {k: v for k, v in counts.items() if v}
        if removed:
            log.info("expiry sweep removed %s", removed)
        return counts

    def take_back_once(self) -> list[str]:
        if not self.ack_timeout:
            return []
        try:
            taken = self.store.take_back_silent(self.ack_timeout)
        except Exception:  # as above
            log.exception("taking back unacknowledged jobs failed")
            return []
        for job_id in taken:
            log.warning("job %s: no agent acknowledged it; waiting again", job_id)
        return taken

    def _run(self) -> None:
        next_sweep = time.monotonic() + self.interval
        while not self._stop.wait(self.tick):
            self.take_back_once()
            if time.monotonic() >= next_sweep:
                self.sweep_once()
                next_sweep = time.monotonic() + self.interval
        self.store.close()
