"""kata-agent main: find the agent channel, serve gRPC behind it, make containers.

Runs as the VM's PID 1 after the initramfs switched to the guest root. Kernel command-line
options: ``agent.log=debug`` (log to the console), ``agent.channel=NAME`` (virtio-serial port name,
default ``agent.channel.0``), ``agent.oci_runtime=PATH`` (the OCI runtime that makes containers:
crun when the image has it, else runc).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from concurrent import futures
from pathlib import Path

GRPC_SOCKET = "/run/kata-agent/grpc.sock"
DEFAULT_PORT_NAME = "agent.channel.0"


def _cmdline() -> dict[str, str]:
    try:
        words = Path("/proc/cmdline").read_text().split()
    except OSError:
        return {}
    return dict(w.partition("=")[::2] for w in words if w.startswith("agent."))


def find_port(name: str, timeout: float = 10.0) -> str:
    """/dev path of the virtio-serial port called ``name``."""
    deadline = time.monotonic() + timeout
    while True:
        for entry in Path("/sys/class/virtio-ports").glob("*"):
            try:
                if (entry / "name").read_text().strip() == name:
                    return f"/dev/{entry.name}"
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
        BOOT_STAMPS["root_ready"] = float(Path("/run/kata-boot-root-ready").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    opts = _cmdline()
    logging.basicConfig(stream=sys.stderr, format="kata-agent: %(levelname)s %(message)s",
                        level=logging.DEBUG if opts.get("agent.log") == "debug" else logging.WARNING)
    log = logging.getLogger("kata-agent")
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    port = find_port(opts.get("agent.channel", DEFAULT_PORT_NAME))
    channel_fd = os.open(port, os.O_RDWR | os.O_CLOEXEC)

    import grpc  # after the port is open: the import is the slowest step of the agent's start

    from kata_runtime.guest.channel import ChannelServer, run_in_thread
    from kata_runtime.guest.containers import Containers
    from kata_runtime.guest.reaper import Reaper
    from kata_runtime.guest.service import AgentService
    from kata_runtime.protocol.generated import agent_pb2_grpc as pb_grpc

    if opts.get("agent.oci_runtime"):  # e.g. agent.oci_runtime=/usr/bin/runc
        import kata_runtime.guest.containers as guest_containers

        guest_containers.RUNC = opts["agent.oci_runtime"]
    os.makedirs(os.path.dirname(GRPC_SOCKET), exist_ok=True)
    reaper = Reaper()
    server_holder: list[ChannelServer] = []
    containers = Containers(reaper, lambda proc: server_holder[0].process_exited(proc))
    channel = ChannelServer(channel_fd, GRPC_SOCKET, containers)
    server_holder.append(channel)
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_AgentServiceServicer_to_server(AgentService(containers, channel), grpc_server)
    grpc_server.add_insecure_port(f"unix:{GRPC_SOCKET}")
    grpc_server.start()
    run_in_thread(channel)
    BOOT_STAMPS["agent_serving"] = uptime()
    log.debug("serving on %s via %s", port, GRPC_SOCKET)
    # The server object must stay referenced (garbage collection would stop it): block here.
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
