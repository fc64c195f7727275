"""The periodic sweep that deletes expired agents and jobs (reads already hide them)."""

from __future__ import annotations

import logging
import threading

from multiagent.server.db import Store

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 60.0  # like mongod's TTL monitor


class Sweeper:
    """A daemon thread calling `store.sweep()` every `interval` seconds until stopped."""

    def __init__(self, store: Store, interval: float = SWEEP_INTERVAL) -> None:
        self.store = store
        self.interval = interval
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

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sweep_once()
        self.store.close()
