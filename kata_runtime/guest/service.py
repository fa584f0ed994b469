"""The agent's gRPC service (``AgentService`` of protocol/proto/agent.proto)."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import platform
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from kata_runtime import __version__
from kata_runtime.guest.channel import ChannelServer
from kata_runtime.guest.containers import AgentFailure, Containers
from kata_runtime.protocol.generated import agent_pb2 as pb
from kata_runtime.protocol.generated import agent_pb2_grpc as pb_grpc

log = logging.getLogger("kata-agent")
T = TypeVar("T")


_libc = ctypes.CDLL(None, use_errno=True)
RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)


def _mount(source: str, target: str, fstype: str, options: list[str]) -> None:
    """mount(2) directly: forking /bin/mount costs a tenth of a second under TCG."""
    os.makedirs(target, exist_ok=True)
    data = ",".join(options).encode() or None
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), 0, data) != 0:
        err = ctypes.get_errno()
        raise AgentFailure(f"mount {source} on {target}: {os.strerror(err)}")


class AgentService(pb_grpc.AgentServiceServicer):
    def __init__(self, containers: Containers, channel: ChannelServer) -> None:
        self.containers = containers
        self.channel = channel
        self.sandbox_id = ""

    @staticmethod
    def _call(context: grpc.ServicerContext, fn: Callable[[], T]) -> T:
        """Run an operation; AgentFailure becomes a gRPC error the runtime shows the user."""
        try:
            return fn()
        except AgentFailure as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except Exception as e:  # a bug: say what, keep serving
            log.exception("internal error")
            context.abort(grpc.StatusCode.INTERNAL, f"agent internal error: {type(e).__name__}: {e}")
        raise AssertionError("unreachable")

    # -- sandbox --------------------------------------------------------------------------------
    def CreateSandbox(self, request: Any, context: Any) -> Any:
        def do() -> Any:
            self.sandbox_id = request.sandbox_id
            if request.hostname:
                socket.sethostname(request.hostname)
            for st in request.storages:
                _mount(st.source, st.mount_point, st.fstype, list(st.options))
            return pb.Empty()
        return self._call(context, do)

    def DestroySandbox(self, request: Any, context: Any) -> Any:
        """The VM is about to be stopped: only make sure that what containers wrote is on the host.
        (Removing each container with runc first would cost a runc run per container for nothing.)"""
        def do() -> Any:
            os.sync()
            return pb.Empty()
        return self._call(context, do)

    def SetGuestDateTime(self, request: Any, context: Any) -> Any:
        def do() -> Any:
            time.clock_settime(time.CLOCK_REALTIME, request.sec + request.usec / 1e6)
            return pb.Empty()
        return self._call(context, do)

    def ReseedRandomDev(self, request: Any, context: Any) -> Any:
        """Credit the host's entropy and reseed the kernel's CRNG now: a write to /dev/urandom alone
        would leave every clone of a template producing the same random bytes for a while."""
        def do() -> Any:
            import fcntl
            import struct

            data = bytes(request.data)
            fd = os.open("/dev/urandom", os.O_WRONLY)
            try:
                fcntl.ioctl(fd, RNDADDENTROPY, struct.pack("ii", len(data) * 8, len(data)) + data)
                fcntl.ioctl(fd, RNDRESEEDCRNG)
            finally:
                os.close(fd)
            return pb.Empty()
        return self._call(context, do)

    def OnlineCPUMem(self, request: Any, context: Any) -> Any:
        def do() -> Any:
            for entry in os.listdir("/sys/devices/system/cpu"):
                online = f"/sys/devices/system/cpu/{entry}/online"
                if entry.startswith("cpu") and entry[3:].isdigit() and os.path.exists(online):
                    with open(online, "w") as f:
                        f.write("1")
            return pb.Empty()
        return self._call(context, do)

    # -- containers -------------------------------------------------------------------------------
    def CreateContainer(self, request: Any, context: Any) -> Any:
        def do() -> Any:
            for st in request.storages:
                _mount(st.source, st.mount_point, st.fstype, list(st.options))
            spec = json.loads(request.oci_spec_json)
            self.containers.create(request.container_id, spec, request.no_pivot, dict(request.sandbox_sysctls))
            return pb.Empty()
        return self._call(context, do)

    def StartContainer(self, request: Any, context: Any) -> Any:
        def do() -> Any:
            self.containers.start(request.container_id)
            return pb.Empty()
        return self._call(context, do)

    def RemoveContainer(self, request: Any, context: Any) -> Any:
        def do() -> Any:
            self.channel.forget(self.containers.remove(request.container_id))
            return pb.Empty()
        return self._call(context, do)

    def ExecProcess(self, request: Any, context: Any) -> Any:
        def do() -> Any:
            self.containers.exec(request.container_id, request.exec_id, json.loads(request.process_json))
            return pb.Empty()
        return self._call(context, do)

    def SignalProcess(self, request: Any, context: Any) -> Any:
        def do() -> Any:
            self.containers.signal(request.container_id, request.exec_id, request.signal, request.all)
            return pb.Empty()
        return self._call(context, do)

    def WaitProcess(self, request: Any, context: Any) -> Any:
        return self._call(context, lambda: pb.WaitProcessResponse(
            status=self.containers.wait(request.container_id, request.exec_id)))

    def ListProcesses(self, request: Any, context: Any) -> Any:
        def do() -> Any:
            if request.format == "table":
                listing = self.containers.ps_table(request.container_id, list(request.args))
            else:
                listing = json.dumps(self.containers.ps(request.container_id)).encode()
            return pb.ListProcessesResponse(process_list=listing)
        return self._call(context, do)

    def UpdateContainer(self, request: Any, context: Any) -> Any:
        def do() -> Any:
            self.containers.update(request.container_id, json.loads(request.resources_json or "{}"))
            return pb.Empty()
        return self._call(context, do)

    def StatsContainer(self, request: Any, context: Any) -> Any:
        return self._call(context, lambda: pb.StatsContainerResponse(
            stats_json=json.dumps(self.containers.stats(request.container_id))))

    def PauseContainer(self, request: Any, context: Any) -> Any:
        def do() -> Any:
            self.containers.pause(request.container_id)
            return pb.Empty()
        return self._call(context, do)

    def ResumeContainer(self, request: Any, context: Any) -> Any:
        def do() -> Any:
            self.containers.resume(request.container_id)
            return pb.Empty()
        return self._call(context, do)

    # -- network --------------------------------------------------------------------------------------
    def UpdateInterface(self, request: Any, context: Any) -> Any:
        def do() -> Any:
            from kata_runtime.guest import network

            iface = request.interface
            network.update_interface(self.containers.reaper, iface.name, iface.hw_addr, int(iface.mtu),
                                     [(a.address, int(a.prefix_length)) for a in iface.ip_addresses])
            return iface
        return self._call(context, do)

    def UpdateRoutes(self, request: Any, context: Any) -> Any:
        def do() -> Any:
            from kata_runtime.guest import network

            network.update_routes(self.containers.reaper, [
                {"dest": r.dest, "gateway": r.gateway, "device": r.device, "source": r.source, "scope": r.scope}
                for r in request.routes.routes])
            return request.routes
        return self._call(context, do)

    # -- health -------------------------------------------------------------------------------------
    def Check(self, request: Any, context: Any) -> Any:
        return pb.HealthCheckResponse(status=pb.HealthCheckResponse.SERVING)

    def Version(self, request: Any, context: Any) -> Any:
        from kata_runtime.guest.agent import BOOT_STAMPS

        return pb.VersionCheckResponse(
            grpc_version=grpc.__version__, agent_version=__version__, kernel_release=platform.release(),
            root_ready_uptime=BOOT_STAMPS.get("root_ready", 0.0),
            agent_started_uptime=BOOT_STAMPS.get("agent_started", 0.0),
            agent_serving_uptime=BOOT_STAMPS.get("agent_serving", 0.0))

