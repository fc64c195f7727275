"""Keep HTTP/1.1 connections open after 204/304 answers under waitress.

waitress (3.0) closes the connection after any response without a Content-Length, which
includes 204 No Content, although such a response ends with its header block. "No job" is
a 204 and is what idle agents get on nearly every poll, so without this each poll costs a
new TCP connection: measurably more CPU and latency with many agents (see bench/).
"""

from __future__ import annotations

from typing import Any


def keepalive_channel_class() -> type:
    from waitress.channel import HTTPChannel
    from waitress.task import WSGITask

    class KeepAliveTask(WSGITask):
        _bodyless_keepalive = False

        def build_response_header(self) -> Any:
            connection = self.request.headers.get("CONNECTION", "").lower()
            self._bodyless_keepalive = (
                not self.has_body and self.version == "1.1" and connection != "close"
            )
            try:
                return super().build_response_header()
            finally:
                self._bodyless_keepalive = False

        def set_close_on_finish(self) -> None:
            if self._bodyless_keepalive:
                return
            super().set_close_on_finish()

    class KeepAliveChannel(HTTPChannel):
        task_class = KeepAliveTask

    return KeepAliveChannel
