"""Container status, its legal transitions, and the runc-compatible state record."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from kata_runtime import OCI_VERSION


class Status(enum.StrEnum):
    """OCI status of a container. The predicates are the only place that says what is legal when."""

    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"

    def can_start(self) -> bool:
        return self is Status.CREATED

    def can_kill(self) -> bool:
        return self in (Status.CREATED, Status.RUNNING, Status.PAUSED)

    def can_delete(self) -> bool:
        """Delete without --force: runc deletes created (killing its init) and stopped containers."""
        return self in (Status.CREATED, Status.STOPPED)

    def can_exec(self) -> bool:
        """runc execs into a created container too: the process joins its namespaces before start."""
        return self in (Status.CREATED, Status.RUNNING)

    def can_pause(self) -> bool:
        """runc 1.1 freezes a created container too (its init, waiting for ``start``)."""
        return self in (Status.RUNNING, Status.CREATED)

    def can_resume(self) -> bool:
        return self is Status.PAUSED


@dataclass
class ContainerState:
    """What ``state`` and ``list`` report, in runc's field names and order."""

    id: str
    pid: int
    status: Status
    bundle: str
    rootfs: str
    created: str  # RFC 3339 with nanoseconds, UTC, as runc prints it
    owner: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    oci_version: str = OCI_VERSION

    def to_runc_json(self) -> dict[str, Any]:
        """The object runc prints for ``state`` (annotations only when there are some)."""
        out: dict[str, Any] = {
            "ociVersion": self.oci_version,
            "id": self.id,
            "pid": self.pid if self.status is not Status.STOPPED else 0,
            "status": str(self.status),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
        }
        if self.annotations:
            out["annotations"] = self.annotations
        return out
