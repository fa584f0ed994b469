"""kata-netmon: one per sandbox (with ``[netmon] enable_netmon``), in its network namespace.

It listens to rtnetlink's link, address and route notifications there and, a moment after the
last of a burst, runs ``kata-runtime kata-network sync <sandbox>``, which connects interfaces that
appeared (a tap, tc redirects, a hotplugged NIC: ``docker network connect``) and disconnects the
ones that went. It exits with the VM (it watches QEMU's pid) or on SIGTERM. Like kata-proxy it
imports only C modules: it lives as long as the VM.

Started as ``kata-netmon --runtime PATH --root DIR --sandbox ID --watch-pid N [--config F]
[--ready-fd N]``.
"""

from __future__ import annotations

import _socket
import os
import select
import sys

from kata_runtime.protocol import lightargs

# RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
GROUPS = 0x1 | 0x10 | 0x40 | 0x100 | 0x400
NETLINK_ROUTE = 0
SYNC = ("kata-network", "sync")  # the runtime's command kata-netmon runs (daemons.kill_network_syncs finds it)
SETTLE = 0.3  # seconds of quiet after a notification before syncing (a veth comes in several steps)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")
    except OSError:
        return False


def _sync(argv: list[str]) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def main(argv: list[str] | None = None) -> int:
    try:
        args = lightargs.parse(sys.argv[1:] if argv is None else argv,
                               {"runtime": "", "root": "", "sandbox": "", "watch-pid": "", "config": "-",
                                "ready-fd": "-1"})
    except ValueError as e:
        sys.stderr.write(f"kata-netmon: {e}\n")
        return 2
    sync = [args["runtime"], "--root", args["root"]]
    if args["config"] != "-":
        sync += ["--kata-config", args["config"]]
    sync += [*SYNC, args["sandbox"]]
    watch = int(args["watch-pid"])
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, NETLINK_ROUTE)
    sock.bind((0, GROUPS))
    sock.setblocking(False)
    ready = int(args["ready-fd"])
    if ready >= 0:
        os.write(ready, b"1")
        os.close(ready)
    poll = select.poll()
    poll.register(sock.fileno(), select.POLLIN)
    pending = False
    while _alive(watch):
        events = poll.poll(SETTLE * 1000 if pending else 1000)
        if events:
            try:
                while sock.recv(65536):
                    pass
            except BlockingIOError:
                pass
            except OSError:  # ENOBUFS: notifications were lost; a sync catches up with all of them
                pass
            pending = True
            continue
        if pending:
            pending = False
            status = _sync(sync)
            if status != 0:
                sys.stderr.write(f"kata-netmon: {' '.join(sync)} exited {status}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
