"""The agent's service: the methods of ``AgentService`` in protocol/proto/agent.proto, transport-free.

Each method takes its request message and returns its response message as a dict in protobuf's
JSON mapping with the .proto's field names (``preserving_proto_field_name``): fields left out have
their default, 64-bit integers may come as strings, ``bytes`` as base64. Two transports call them:
the CALL requests of the stream protocol (``protocol/shimproto.py``, what kata-runtime speaks; no
gRPC or protobuf is loaded for it) and, on the first gRPC connection, the gRPC server of
``guest/grpc_service.py``. An :class:`AgentFailure` is an answer for the user; any other exception
is a bug, reported as an internal error by the transport.
"""

from __future__ import annotations

import binascii
import os
import time

from kata_runtime import __version__
from kata_runtime.guest import glog as log
from kata_runtime.guest import lite
from kata_runtime.guest.containers import AgentFailure

TYPE_CHECKING = False
if TYPE_CHECKING:  # not at run time: importing typing costs the agent's start ~0.1 s under TCG
    from collections.abc import Callable
    from typing import Any

    from kata_runtime.guest.containers import Containers

    Message = dict[str, Any]

EMPTY: Message = {}

RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)


def _mount(source: str, target: str, fstype: str, options: list[str]) -> None:
    """mount(2) directly: forking /bin/mount costs a tenth of a second under TCG."""
    os.makedirs(target, exist_ok=True)
    data = ",".join(options).encode() or None
    if lite.libc().mount(source.encode(), target.encode(), fstype.encode(), 0, data) != 0:
        err = lite.errno_now()
        raise AgentFailure(f"mount {source} on {target}: {os.strerror(err)}")


LATE_MODULES = "/run/kata-modules"  # the init loads 9p, overlay and virtio_net there, in the background


def late_modules(timeout: float = 60.0) -> None:
    """Wait until the init's background load of the late kernel modules is done."""
    if not os.path.isdir(LATE_MODULES):
        return  # an init that loaded every module itself
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(f"{LATE_MODULES}/done") as f:
                verdict = f.read().strip()
            break
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise AgentFailure(f"the guest's kernel modules were not loaded within {timeout:g}s") from None
            time.sleep(0.01)
    if verdict != "ok":
        raise AgentFailure(f"the guest could not load a kernel module ({verdict})")


def _mount_storages(storages: list[Message]) -> None:
    for st in storages:
        _mount(st.get("source", ""), st.get("mount_point", ""), st.get("fstype", ""), list(st.get("options", [])))


def _cid(req: Message) -> str:
    return str(req.get("container_id", ""))


class AgentService:
    """The agent's operations; ``boot_stamps`` are the guest uptimes that ``Version`` reports."""

    def __init__(self, containers: Containers, forget: Callable[[list[Any]], None],
                 boot_stamps: dict[str, float], grpc_version: Callable[[], str] = lambda: "") -> None:
        self.containers = containers
        self.forget = forget  # the channel drops the sessions of processes that went with a container
        self.boot_stamps = boot_stamps
        self.grpc_version = grpc_version
        self.sandbox_id = ""
        self.warm = lite.Event()

    def warm_up(self) -> None:
        """Run once, in a thread, after the agent serves: start the OCI runtime once, so that its
        binary and libraries (about 4 MB with crun's) are in the page cache before the first
        container needs them; a cold first start costs about a second under TCG. The host works
        meanwhile (the sandbox's share, its rootfs), and a VM template saved after it starts warm."""
        from kata_runtime.guest import containers

        try:
            lite.libc()  # ctypes, for the first calls' mounts
            late_modules()
            self.containers.reaper.run([containers.RUNC, "--version"], timeout=60)
        except Exception as e:  # noqa: BLE001 - an optimisation: never fatal
            log.warning("warm-up: %s", e)
        finally:
            self.warm.set()

    def method(self, name: str) -> Callable[[Message], Message] | None:
        """The operation called ``name`` in the .proto, or None."""
        fn = getattr(self, name, None) if name[:1].isupper() else None
        return fn if callable(fn) else None

    # -- sandbox --------------------------------------------------------------------------------
    def CreateSandbox(self, req: Message) -> Message:
        self.sandbox_id = str(req.get("sandbox_id", ""))
        if req.get("hostname"):
            import _socket

            _socket.sethostname(str(req["hostname"]))
        late_modules()
        _mount_storages(req.get("storages", []))
        return EMPTY

    def DestroySandbox(self, req: Message) -> Message:
        """The VM is about to be stopped: only make sure that what containers wrote is on the host.
        (Removing each container with the OCI runtime first would cost a run per container for nothing.)"""
        os.sync()
        return EMPTY

    def SetGuestDateTime(self, req: Message) -> Message:
        time.clock_settime(time.CLOCK_REALTIME, int(req.get("sec", 0)) + int(req.get("usec", 0)) / 1e6)
        return EMPTY

    def ReseedRandomDev(self, req: Message) -> Message:
        """Credit the host's entropy and reseed the kernel's CRNG now: a write to /dev/urandom alone
        would leave every clone of a template producing the same random bytes for a while."""
        import fcntl
        import struct

        data = binascii.a2b_base64(req.get("data", ""))
        fd = os.open("/dev/urandom", os.O_WRONLY)
        try:
            fcntl.ioctl(fd, RNDADDENTROPY, struct.pack("ii", len(data) * 8, len(data)) + data)
            fcntl.ioctl(fd, RNDRESEEDCRNG)
        finally:
            os.close(fd)
        return EMPTY

    def OnlineCPUMem(self, req: Message) -> Message:
        """Online what the host hotplugged: every offline memory block, and offline vCPUs until
        ``nb_cpus`` of them came online (the host waited for the guest's ACPI to take them; with
        ``wait`` a vCPU that is not there yet is waited for, up to 10 s)."""
        def online_all(top: str, prefix: str, name: str, off: str, on: str) -> int:
            """Write ``on`` into ``<top>/<prefix>N/<name>`` wherever it reads ``off``; how many did."""
            count = 0
            for entry in os.listdir(top) if os.path.isdir(top) else ():
                if not (entry.startswith(prefix) and entry[len(prefix):].isdigit()):
                    continue
                path = f"{top}/{entry}/{name}"
                try:
                    with open(path) as f:
                        if f.read().strip() != off:
                            continue
                    with open(path, "w") as f:
                        f.write(on)
                except FileNotFoundError:
                    continue  # cpu0 has no "online": it cannot go offline
                except OSError as e:
                    raise AgentFailure(f"cannot bring {top}/{entry} online: {os.strerror(e.errno or 0)}") from None
                count += 1
            return count

        want = int(req.get("nb_cpus", 0))
        deadline = time.monotonic() + (10.0 if req.get("wait") else 0.0)
        onlined = 0
        while True:
            onlined += online_all("/sys/devices/system/cpu", "cpu", "online", "0", "1")
            online_all("/sys/devices/system/memory", "memory", "state", "offline", "online")
            if onlined >= want:
                return EMPTY
            if time.monotonic() > deadline:
                raise AgentFailure(f"only {onlined} of {want} hotplugged vCPUs came online")
            time.sleep(0.01)

    # -- containers -------------------------------------------------------------------------------
    def CreateContainer(self, req: Message) -> Message:
        _mount_storages(req.get("storages", []))
        spec = lite.loads(req.get("oci_spec_json") or "{}")
        self.containers.create(_cid(req), spec, bool(req.get("no_pivot")), dict(req.get("sandbox_sysctls", {})))
        return EMPTY

    def StartContainer(self, req: Message) -> Message:
        self.containers.start(_cid(req))
        return EMPTY

    def RemoveContainer(self, req: Message) -> Message:
        self.forget(self.containers.remove(_cid(req)))
        return EMPTY

    def ExecProcess(self, req: Message) -> Message:
        self.containers.exec(_cid(req), str(req.get("exec_id", "")), lite.loads(req.get("process_json") or "{}"))
        return EMPTY

    def SignalProcess(self, req: Message) -> Message:
        self.containers.signal(_cid(req), str(req.get("exec_id", "")), int(req.get("signal", 0)),
                               bool(req.get("all")))
        return EMPTY

    def WaitProcess(self, req: Message) -> Message:
        return {"status": self.containers.wait(_cid(req), str(req.get("exec_id", "")))}

    def ListProcesses(self, req: Message) -> Message:
        if req.get("format") == "table":
            listing = self.containers.ps_table(_cid(req), [str(a) for a in req.get("args", [])])
        else:
            listing = lite.dumps(self.containers.ps(_cid(req))).encode()
        return {"process_list": binascii.b2a_base64(listing, newline=False).decode()}

    def UpdateContainer(self, req: Message) -> Message:
        self.containers.update(_cid(req), lite.loads(req.get("resources_json") or "{}"))
        return EMPTY

    def StatsContainer(self, req: Message) -> Message:
        return {"stats_json": lite.dumps(self.containers.stats(_cid(req)))}

    def PauseContainer(self, req: Message) -> Message:
        self.containers.pause(_cid(req))
        return EMPTY

    def ResumeContainer(self, req: Message) -> Message:
        self.containers.resume(_cid(req))
        return EMPTY

    # -- network --------------------------------------------------------------------------------------
    def UpdateInterface(self, req: Message) -> Message:
        from kata_runtime.guest import network

        iface = req.get("interface", {})
        late_modules()
        network.update_interface(self.containers.reaper, str(iface.get("name", "")), str(iface.get("hw_addr", "")),
                                 int(iface.get("mtu", 0)),
                                 [(str(a.get("address", "")), int(a.get("prefix_length", 0)))
                                  for a in iface.get("ip_addresses", [])])
        return dict(iface)

    def UpdateRoutes(self, req: Message) -> Message:
        from kata_runtime.guest import network

        routes = req.get("routes", {}).get("routes", [])
        network.update_routes(self.containers.reaper, [
            {"dest": str(r.get("dest", "")), "gateway": str(r.get("gateway", "")), "device": str(r.get("device", "")),
             "source": str(r.get("source", "")), "scope": int(r.get("scope", 0))} for r in routes])
        return {"routes": list(routes)}

    # -- health -------------------------------------------------------------------------------------
    def Check(self, req: Message) -> Message:
        """``service`` "warm": answer once :meth:`warm_up` is done."""
        if req.get("service") == "warm" and not self.warm.wait(60):
            raise AgentFailure("the agent's warm-up did not finish within 60s")
        return {"status": "SERVING"}

    def Version(self, req: Message) -> Message:
        return {"grpc_version": self.grpc_version(), "agent_version": __version__,
                "kernel_release": os.uname().release,
                "root_ready_uptime": self.boot_stamps.get("root_ready", 0.0),
                "agent_started_uptime": self.boot_stamps.get("agent_started", 0.0),
                "agent_serving_uptime": self.boot_stamps.get("agent_serving", 0.0)}
