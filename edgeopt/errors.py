"""Typed errors. Each carries one line saying what is wrong and, where known, how to fix it.

The CLI turns an ``EdgeoptError`` into ``error: <message> — <hint>`` on stderr and exits with ``exit_code``.
"""

from __future__ import annotations

from typing import Any


class EdgeoptError(Exception):
    """Base class: a problem the user can fix. ``hint`` says how."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message} — {self.hint}"
        return " ".join(text.split())


class ConfigError(EdgeoptError):
    """A target/profile/lab YAML file is invalid, or a name is unknown."""


class ModelError(EdgeoptError):
    """The input model cannot be read or is not usable."""


class DataError(EdgeoptError):
    """Calibration/eval data cannot be read or does not fit the model."""


class ConversionError(EdgeoptError):
    """A converter pass failed."""


class QuantizationError(ConversionError):
    """The model cannot be quantised as the profile asks (e.g. an op without an int8 kernel)."""


class OutputError(EdgeoptError):
    """Artifacts cannot be written (permissions, read-only file system, disk full)."""


class RemoteError(EdgeoptError):
    """A device cannot be reached or a remote command failed (infrastructure error)."""

    exit_code = 3


class HostKeyError(RemoteError):
    """The device's SSH host key is unknown or has changed."""


class RemoteTimeout(RemoteError):
    """A command on the device ran longer than its timeout and was killed (the link itself is fine)."""


class LockTimeout(RemoteError):
    """The device stayed locked by another job for longer than we may wait."""


class AgentError(EdgeoptError):
    """The benchmark agent failed on the device (missing runtime, hash mismatch, crash)."""

    exit_code = 3


class AgentFailed(AgentError):
    """The agent command ran and reported failure. ``payload`` is its ``error`` object (if it printed one),
    ``status`` its exit code (negative: killed by a signal), ``stderr`` the tail of its stderr."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        payload: dict[str, Any] | None = None,
        status: int | None = None,
        stderr: str = "",
    ) -> None:
        super().__init__(message, hint)
        self.payload = payload or {}
        self.status = status
        self.stderr = stderr


class ArtifactMissing(EdgeoptError):
    """The artifacts to benchmark are not built (or not completely)."""


class BudgetError(EdgeoptError):
    """The firmware does not fit the target's flash or RAM."""


class QualityError(EdgeoptError):
    """An artifact was built but its outputs are broken against the float model (kept, marked, for inspection)."""

    exit_code = 1


class StoreError(EdgeoptError):
    """The results store cannot be opened or read."""


class EmulationError(EdgeoptError):
    """An emulated device (``edgeopt emulate``) cannot be built, started or stopped: not root, debootstrap/qemu
    missing, the port taken, a build step that failed."""

    exit_code = 3


class TflmSourceError(ConfigError):
    """``EDGEOPT_TFLM_SRC`` (or the shared bundle) is not a usable TensorFlow Lite Micro source tree."""


class FirmwareBuildError(ConversionError):
    """Building TFLM for the target, or compiling and linking the firmware against it, failed."""


class FirmwareBootError(ConversionError):
    """The firmware booted in the emulator did not run as expected (crash, timeout, wrong output)."""


class LockLost(RemoteError):
    """The device lock we held was taken over or removed (or its heartbeat could not be confirmed in time)."""


class DeviceOutputError(AgentFailed):
    """A device's output the host refuses: more than the size cap, non-finite numbers (NaN/Infinity) in the
    agent's JSON, or a document that does not match the schema the host reads (``edgeopt.bench.schema``)."""


class Interrupted(EdgeoptError):
    """The user interrupted the run (Ctrl-C): device commands were killed, the run is stored as interrupted."""

    exit_code = 130


class StoreUnavailable(StoreError):
    """The results store's server (PostgreSQL) cannot be reached, or went away mid-run (infrastructure error)."""

    exit_code = 3
