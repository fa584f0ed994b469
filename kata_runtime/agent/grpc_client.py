"""AgentClient over gRPC, through the sandbox's kata-proxy socket (one mux stream per channel).

grpc is imported, and the channel made, on the first gRPC call: ``start_container``, the one call
of a ``kata-runtime start`` (which engines make once per container), goes over the small stream
protocol that kata-shims speak instead (a START request on a stream of its own), and costs the CLI
neither the import (0.25 s) nor its memory.
"""

from __future__ import annotations

import json
from typing import Any

from kata_runtime.errors import AgentError
from kata_runtime.protocol.generated import agent_pb2 as pb


def _storage(d: dict[str, Any]) -> Any:
    return pb.Storage(driver=d.get("driver", ""), source=d["source"], fstype=d["fstype"],
                      options=d.get("options", []), mount_point=d["mount_point"])


class GrpcAgentClient:
    """Talks to the agent of one sandbox. ``container`` names the container in error messages."""

    def __init__(self, proxy_socket: str, container: str, request_timeout: float = 60.0) -> None:
        self.proxy_socket = proxy_socket
        self.container = container
        self.timeout = request_timeout
        self.channel: Any = None
        self._stub: Any = None

    @property
    def stub(self) -> Any:
        if self._stub is None:
            import grpc

            from kata_runtime.protocol.generated import agent_pb2_grpc as pb_grpc

            self.channel = grpc.insecure_channel(
                f"unix:{self.proxy_socket}",
                options=[("grpc.enable_http_proxy", 0), ("grpc.max_receive_message_length", 64 << 20)])
            self._stub = pb_grpc.AgentServiceStub(self.channel)
        return self._stub

    def _rpc(self, name: str, request: Any, step: str, timeout: float | None = None) -> Any:
        import grpc

        try:
            return getattr(self.stub, name)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                msg = f"the guest agent did not answer {name} within {timeout or self.timeout:g}s"
            elif code == grpc.StatusCode.UNAVAILABLE:
                msg = f"the guest agent is unreachable ({e.details()})"
            else:
                msg = str(e.details()) if hasattr(e, "details") else str(e)
            raise AgentError(msg, container=self.container, step=step) from None

    def check(self, timeout: float) -> None:
        import grpc

        try:
            self.stub.Check(pb.CheckRequest(), timeout=timeout, wait_for_ready=True)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise AgentError(f"guest agent did not answer within {timeout:g}s",
                                 container=self.container, step="create") from None
            raise AgentError(f"guest agent check failed: {e.details()}", container=self.container,
                             step="create") from None

    def create_sandbox(self, sandbox_id: str, hostname: str, storages: list[dict[str, Any]]) -> None:
        self._rpc("CreateSandbox", pb.CreateSandboxRequest(
            sandbox_id=sandbox_id, hostname=hostname, storages=[_storage(s) for s in storages]), "create")

    def destroy_sandbox(self) -> None:
        self._rpc("DestroySandbox", pb.DestroySandboxRequest(), "delete", timeout=5)

    def create_container(self, cid: str, spec: dict[str, Any], rootfs_guest_path: str,
                         storages: list[dict[str, Any]], no_pivot: bool = False,
                         sandbox_sysctls: dict[str, str] | None = None) -> None:
        self._rpc("CreateContainer", pb.CreateContainerRequest(
            container_id=cid, exec_id=cid, oci_spec_json=json.dumps(spec), rootfs_guest_path=rootfs_guest_path,
            storages=[_storage(s) for s in storages], no_pivot=no_pivot, sandbox_sysctls=sandbox_sysctls or {}),
            "create")

    def start_container(self, cid: str) -> None:
        from kata_runtime.agent.stream import start_container

        start_container(self.proxy_socket, cid, self.timeout)

    def remove_container(self, cid: str) -> None:
        self._rpc("RemoveContainer", pb.RemoveContainerRequest(container_id=cid), "delete", timeout=30)

    def exec_process(self, cid: str, exec_id: str, process: dict[str, Any]) -> None:
        self._rpc("ExecProcess", pb.ExecProcessRequest(
            container_id=cid, exec_id=exec_id, process_json=json.dumps(process)), "exec")

    def signal_process(self, cid: str, exec_id: str, signal: int, all_processes: bool = False) -> None:
        self._rpc("SignalProcess", pb.SignalProcessRequest(
            container_id=cid, exec_id=exec_id, signal=signal, all=all_processes), "kill")

    def wait_process(self, cid: str, exec_id: str) -> int:
        resp = self._rpc("WaitProcess", pb.WaitProcessRequest(container_id=cid, exec_id=exec_id), "wait",
                         timeout=24 * 3600)
        return int(resp.status)

    def list_processes(self, cid: str) -> list[int]:
        resp = self._rpc("ListProcesses", pb.ListProcessesRequest(container_id=cid, format="json"), "ps")
        return list(json.loads(resp.process_list or b"[]"))

    def process_table(self, cid: str, ps_args: list[str]) -> bytes:
        resp = self._rpc("ListProcesses", pb.ListProcessesRequest(container_id=cid, format="table", args=ps_args),
                         "ps")
        return bytes(resp.process_list)

    def update_container(self, cid: str, resources: dict[str, Any]) -> None:
        self._rpc("UpdateContainer", pb.UpdateContainerRequest(container_id=cid, resources_json=json.dumps(resources)),
                  "update")

    def stats_container(self, cid: str) -> dict[str, Any]:
        resp = self._rpc("StatsContainer", pb.StatsContainerRequest(container_id=cid), "events")
        return dict(json.loads(resp.stats_json))

    def pause_container(self, cid: str) -> None:
        self._rpc("PauseContainer", pb.PauseContainerRequest(container_id=cid), "pause")

    def resume_container(self, cid: str) -> None:
        self._rpc("ResumeContainer", pb.ResumeContainerRequest(container_id=cid), "resume")

    def update_interface(self, name: str, mac: str, mtu: int, addresses: list[tuple[str, int, int]]) -> None:
        self._rpc("UpdateInterface", pb.UpdateInterfaceRequest(interface=pb.Interface(
            name=name, hw_addr=mac, mtu=mtu,
            ip_addresses=[pb.IPAddress(address=a, prefix_length=p, family=f) for a, p, f in addresses])), "create")

    def update_routes(self, routes: list[dict[str, Any]]) -> None:
        self._rpc("UpdateRoutes", pb.UpdateRoutesRequest(routes=pb.Routes(routes=[
            pb.Route(dest=r["dest"], gateway=r["gateway"], device=r["device"], source=r["source"], scope=r["scope"])
            for r in routes])), "create")

    def refresh_clone(self, now: float, entropy: bytes) -> None:
        sec = int(now)
        self._rpc("SetGuestDateTime", pb.SetGuestDateTimeRequest(sec=sec, usec=int((now - sec) * 1e6)), "create")
        self._rpc("ReseedRandomDev", pb.ReseedRandomDevRequest(data=entropy), "create")

    def version(self) -> dict[str, str]:
        r = self._rpc("Version", pb.CheckRequest(), "version")
        return {"grpc": r.grpc_version, "agent": r.agent_version, "kernel": r.kernel_release,
                "root_ready": f"{r.root_ready_uptime:.3f}", "agent_started": f"{r.agent_started_uptime:.3f}",
                "agent_serving": f"{r.agent_serving_uptime:.3f}"}

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
