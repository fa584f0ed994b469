"""kata-agent main: find the agent channel, serve the agent's calls behind it, make containers.

Runs as the VM's PID 1 after the initramfs switched to the guest root. Kernel command-line
options: ``agent.log=debug`` (log to the console), ``agent.channel=NAME`` (virtio-serial port name,
default ``agent.channel.0``), ``agent.oci_runtime=PATH`` (the OCI runtime that makes containers:
crun when the image has it, else runc).

What runs before the first answer is kept small: the host's first call waits for it. No gRPC or
protobuf (the gRPC server starts on the first gRPC connection), and of the standard library only
C modules (``guest/lite.py``).
"""

from __future__ import annotations

import os
import time

GRPC_SOCKET = "/run/kata-agent/grpc.sock"
DEFAULT_PORT_NAME = "agent.channel.0"
PORTS_DIR = "/sys/class/virtio-ports"


def _cmdline() -> dict[str, str]:
    try:
        with open("/proc/cmdline") as f:
            words = f.read().split()
    except OSError:
        return {}
    return dict(w.partition("=")[::2] for w in words if w.startswith("agent."))


def find_port(name: str, timeout: float = 10.0) -> str:
    """/dev path of the virtio-serial port called ``name``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            entries = os.listdir(PORTS_DIR)
        except OSError:
            entries = []
        for entry in entries:
            try:
                with open(f"{PORTS_DIR}/{entry}/name") as f:
                    if f.read().strip() == name:
                        return f"/dev/{entry}"
            except OSError:
                continue
        if time.monotonic() > deadline:
            raise SystemExit(f"kata-agent: no virtio-serial port named {name}")
        time.sleep(0.01)


def uptime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


BOOT_STAMPS: dict[str, float] = {}


def main() -> None:
    BOOT_STAMPS["agent_started"] = uptime()
    try:
        with open("/run/kata-boot-root-ready") as f:
            BOOT_STAMPS["root_ready"] = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    opts = _cmdline()
    from kata_runtime.guest import glog as log

    log.set_debug(opts.get("agent.log") == "debug")
    import _signal

    _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)
    port = find_port(opts.get("agent.channel", DEFAULT_PORT_NAME))
    channel_fd = os.open(port, os.O_RDWR | os.O_CLOEXEC)

    from kata_runtime.guest import containers as guest_containers
    from kata_runtime.guest import grpc_service
    from kata_runtime.guest.channel import ChannelServer
    from kata_runtime.guest.reaper import Reaper
    from kata_runtime.guest.service import AgentService

    if opts.get("agent.oci_runtime"):  # e.g. agent.oci_runtime=/usr/bin/runc
        guest_containers.RUNC = opts["agent.oci_runtime"]
    os.makedirs(os.path.dirname(GRPC_SOCKET), exist_ok=True)
    reaper = Reaper()
    channel_holder: list[ChannelServer] = []
    containers = guest_containers.Containers(reaper, lambda proc: channel_holder[0].process_exited(proc))
    servers: list[object] = []  # the gRPC server must stay referenced (garbage collection would stop it)
    channel = ChannelServer(channel_fd, GRPC_SOCKET, containers,
                            start_grpc=lambda: servers.append(grpc_service.serve(service, GRPC_SOCKET)))
    channel_holder.append(channel)
    service = AgentService(containers, channel.forget, BOOT_STAMPS, grpc_service.version)
    channel.service = service
    from kata_runtime.guest import lite

    lite.start_thread(service.warm_up, "warm-up")
    BOOT_STAMPS["agent_serving"] = uptime()
    log.debug("serving on %s", port)
    channel.serve_forever()


if __name__ == "__main__":
    main()
