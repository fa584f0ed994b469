"""The one error hierarchy of the runtime.

Every failure the user can cause or meet is a :class:`KataError`. The CLI maps them to a
single stderr line and a runc-style JSON log line in exactly one place (``cli/main.py``).
"""

from __future__ import annotations


class KataError(Exception):
    """A failure with a message fit for the user: what, which container, why."""

    exit_code = 1

    def __init__(self, msg: str, *, container: str | None = None, step: str | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.container = container
        self.step = step

    def __str__(self) -> str:
        prefix = " ".join(p for p in (self.step, self.container) if p)
        return f"{prefix}: {self.msg}" if prefix else self.msg


class InvalidArgument(KataError):
    """Bad id, bad flag value, bad signal."""


class BundleError(KataError):
    """The bundle is missing, its config.json is unreadable, not JSON or not a valid runtime spec."""


class ContainerNotFound(KataError):
    """No container with that id in the store."""


class ContainerExists(KataError):
    """create of an id that is already in the store."""


class InvalidState(KataError):
    """The operation is not legal in the container's current status."""


class ConfigError(KataError):
    """configuration.toml is missing, unreadable or names things that do not exist."""


class HypervisorError(KataError):
    """QEMU could not be started, or died, or QMP failed."""


class AgentError(KataError):
    """The guest agent did not answer, or answered with an error."""


class AgentUnresponsive(AgentError):
    """The guest agent did not answer in time, or cannot be reached (a hung or stopped guest)."""


class ProxyError(KataError):
    """kata-proxy could not be started or went away."""


class ShimError(KataError):
    """kata-shim could not be started or could not attach to its process."""


class StateCorrupt(KataError):
    """A state record that cannot be read back (truncated, not JSON, fields of the wrong kind)."""
