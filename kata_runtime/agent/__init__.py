"""The host's view of the guest agent: the :class:`AgentClient` protocol the sandbox code uses."""

from __future__ import annotations

from typing import Any, Protocol


class AgentClient(Protocol):
    """What the sandbox and container code may ask of the guest agent."""

    def check(self, timeout: float) -> None:
        """Return once the agent answers; raise AgentError after ``timeout`` seconds."""

    def wait_warm(self, timeout: float) -> None:
        """Return once the agent has warmed the guest's page cache for its first container (the
        VM template waits for it before it is saved, so that every clone starts warm)."""

    def create_sandbox(self, sandbox_id: str, hostname: str, storages: list[dict[str, Any]]) -> None: ...

    def destroy_sandbox(self) -> None: ...

    def create_container(self, cid: str, spec: dict[str, Any], rootfs_guest_path: str,
                         storages: list[dict[str, Any]], no_pivot: bool = False,
                         sandbox_sysctls: dict[str, str] | None = None) -> None:
        """Create a container from a spec made for the guest (``oci.guest_spec``), as is."""

    def start_container(self, cid: str) -> None: ...

    def remove_container(self, cid: str) -> None: ...

    def exec_process(self, cid: str, exec_id: str, process: dict[str, Any]) -> None: ...

    def signal_process(self, cid: str, exec_id: str, signal: int, all_processes: bool = False,
                       timeout: float | None = None) -> None:
        """``timeout``: how long to wait for the agent (None: the configured request timeout)."""

    def wait_process(self, cid: str, exec_id: str) -> int: ...

    def list_processes(self, cid: str) -> list[int]: ...

    def process_table(self, cid: str, ps_args: list[str]) -> bytes:
        """The guest's ps output (header and the container's rows); ``ps_args`` are busybox ps's."""

    def update_container(self, cid: str, resources: dict[str, Any]) -> None:
        """Apply an OCI ``linux.resources`` object."""

    def stats_container(self, cid: str) -> dict[str, Any]:
        """runc's stats object (cpu, memory, pids...) of the container."""

    def online_cpu_mem(self, nb_cpus: int, step: str = "update") -> None:
        """Bring hotplugged vCPUs and memory online in the guest; returns once ``nb_cpus`` new vCPUs
        are online (memory: every block that is offline)."""

    def pause_container(self, cid: str) -> None: ...

    def resume_container(self, cid: str) -> None: ...

    def update_interface(self, name: str, mac: str, mtu: int, addresses: list[tuple[str, int, int]]) -> None:
        """Make the guest's NIC with ``mac`` the twin of host interface ``name`` (addresses are
        ``(address, prefix, family)``)."""

    def update_routes(self, routes: list[dict[str, Any]]) -> None:
        """Add routes (``dest`` "" = default, ``gateway``, ``device``, ``source``, ``scope``)."""

    def refresh_clone(self, now: float, entropy: bytes) -> None:
        """A VM cloned from a template: set the guest's clock to ``now`` and mix in ``entropy``."""

    def version(self) -> dict[str, str]:
        """Versions, and the guest's boot stamps (uptime seconds) for the phase report."""

    def close(self) -> None: ...


def connect(transport: str, proxy_socket: str, container: str, request_timeout: float = 60.0) -> AgentClient:
    """The agent behind a kata-proxy socket, over ``transport`` ("stream" or "grpc", from
    ``[agent.kata] transport``); ``container`` names the container in errors."""
    if transport == "grpc":
        from kata_runtime.agent.grpc_client import GrpcAgentClient

        return GrpcAgentClient(proxy_socket, container, request_timeout)
    from kata_runtime.agent.stream import StreamAgentClient

    return StreamAgentClient(proxy_socket, container, request_timeout)
