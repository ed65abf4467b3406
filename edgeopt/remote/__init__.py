"""Host side of devices: transports (how to run a command and move a file) and device sessions
(content-addressed push, running the agent and fetching its JSON).

Import :mod:`edgeopt.remote.ssh` explicitly for SSH (it imports paramiko)."""

from edgeopt.remote.local import LocalTransport
from edgeopt.remote.session import DeviceSession
from edgeopt.remote.transport import ProgressCallback, Result, Transport, quote_argv

__all__ = [
    "DeviceSession",
    "LocalTransport",
    "ProgressCallback",
    "Result",
    "Transport",
    "quote_argv",
]
