"""Runs inside a private supervisord, loaded by its `[rpcinterface:tffleet]` section.

Measured with 500 programs (bench/): supervisord's HTTP channel sends at most 4 KB per
pass of its main loop (a "speculative" setting for `tail -f`, its source says), and a
pass visits every process, so getAllProcessInfo's ~400 KB answer took ~100 passes and
0.2-0.3 s, and the client spent another 0.05-0.1 s parsing it as XML. Here the channel
sends up to 64 KB per pass, and `tffleet.getAllProcessInfoJSON` gives the very same
answer as one JSON string. A supervisord without this section (the host's own in system
mode, or one started by an older tf-fleet) answers UNKNOWN_METHOD, and the client asks
getAllProcessInfo instead (see client.Supervisor.processes).

Only the standard library and supervisor are imported here, and only when supervisord
calls: the client imports this module for its names.
"""

from __future__ import annotations

from typing import Any

NAMESPACE = "tffleet"  # the section's name: [rpcinterface:tffleet]
ALL_PROCESS_INFO = f"{NAMESPACE}.getAllProcessInfoJSON"
SEND_BYTES = 1 << 16


def make_interface(supervisord: Any, **config: Any) -> FleetInterface:
    """supervisor.rpcinterface_factory of the section."""
    from supervisor import http

    channel = getattr(http, "deferring_http_channel", None)
    if channel is not None and getattr(channel, "ac_out_buffer_size", SEND_BYTES) < SEND_BYTES:
        channel.ac_out_buffer_size = SEND_BYTES
    return FleetInterface(supervisord)


class FleetInterface:
    def __init__(self, supervisord: Any) -> None:
        from supervisor.rpcinterface import SupervisorNamespaceRPCInterface

        self._main = SupervisorNamespaceRPCInterface(supervisord)

    def getAllProcessInfoJSON(self) -> str:  # noqa: N802 - XML-RPC's camelCase
        """supervisor.getAllProcessInfo(), as one JSON string.

        @return string result  A JSON array of getProcessInfo's structs
        """
        import json

        return json.dumps(self._main.getAllProcessInfo(), separators=(",", ":"))
