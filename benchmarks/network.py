#!/usr/bin/env python3
"""TCP throughput and round-trip latency between the host and a container, kata beside runc;
and the throughput of a volume (a bind mount of a host directory: virtio-9p for kata).

    python benchmarks/network.py [--short] [--repeat N] [--mib M] [--json FILE] [--markdown FILE]

Each runtime's container gets a network namespace of its own with a veth pair (host end
10.249.<k>.1/24, container end eth0 10.249.<k>.2/24; addresses on this host only). The container
runs busybox ``nc`` servers; the host measures, interleaved runtime by runtime, N times:

- host -> container: the host sends M MiB to the container's ``nc -l`` (which discards them) and
  waits for the close that follows EOF;
- container -> host: ``exec`` of ``dd | nc`` in the container sends M MiB to a host listener;
- round trip: the host's ``ping`` to the container (20 echo requests, 0.1 s apart), mean rtt;
- volume: ``exec`` of ``dd`` writing M MiB (then ``sync``) to a bind-mounted host directory, and
  reading it back (``dd`` to /dev/null; the host's page cache may hold it, as it would in use),
  timed inside the container with /proc/uptime (10 ms steps).

With kata the path is veth -> tc mirred -> tap -> QEMU's virtio-net (no vhost-net here: every frame
crosses QEMU's userspace) -> the guest's kernel, and TCG emulates the guest's CPU. Everything it
starts is removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository on sys.path for ``benchmarks``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (  # noqa: E402
    Interrupted,
    default_runc,
    default_runtime,
    loadavg,
    make_bundle,
    progress,
    signals_held,
    stats,
    unwind_on_signals,
)

RUNTIMES = ("kata", "runc")
PORT_IN = 5001
say = progress("net-bench")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Bench:
    """One run: namespaces, bundles, containers; ``cleanup`` removes all of it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="kata-bench-net."))
        self.tag = f"{os.getpid() % 100000}"
        self.ids = {rt: f"netbench{self.tag}-{rt}" for rt in RUNTIMES}
        self.netns = {rt: f"kbnet{self.tag}{rt[0]}" for rt in RUNTIMES}
        self.hostif = {rt: f"kbn{self.tag}{rt[0]}" for rt in RUNTIMES}
        self.subnet = {"kata": 1, "runc": 2}
        self.roots = {rt: self.work / f"root-{rt}" for rt in RUNTIMES}
        self.started: list[str] = []

    def cmd(self, rt: str, *args: str) -> list[str]:
        binary = self.args.runtime if rt == "kata" else self.args.runc
        return [binary, "--root", str(self.roots[rt]), *args]

    def addr(self, rt: str, host: bool) -> str:
        return f"10.249.{self.subnet[rt]}.{1 if host else 2}"

    def setup(self) -> None:
        for rt in RUNTIMES:
            ip("netns", "add", self.netns[rt])
            ip("link", "add", self.hostif[rt], "type", "veth", "peer", "name", "eth0", "netns", self.netns[rt])
            ip("addr", "add", f"{self.addr(rt, True)}/24", "dev", self.hostif[rt])
            ip("link", "set", self.hostif[rt], "up")
            ip("-n", self.netns[rt], "addr", "add", f"{self.addr(rt, False)}/24", "dev", "eth0")
            ip("-n", self.netns[rt], "link", "set", "eth0", "up")
            ip("-n", self.netns[rt], "link", "set", "lo", "up")
            bundle = self.work / f"bundle-{rt}"
            make_bundle(bundle, ["sh", "-c", f"while :; do nc -l -p {PORT_IN} > /dev/null; done"], None, self.args.runc)
            spec = json.loads((bundle / "config.json").read_text())
            for ns in spec["linux"]["namespaces"]:
                if ns["type"] == "network":
                    ns["path"] = f"/run/netns/{self.netns[rt]}"
            vol = self.work / f"vol-{rt}"
            vol.mkdir()
            spec["mounts"].append({"destination": "/vol", "type": "bind", "source": str(vol),
                                   "options": ["rbind", "rw"]})
            (bundle / "config.json").write_text(json.dumps(spec))
            say(f"starting the {rt} container")
            argv = self.cmd(rt, "run", "--detach", "--bundle", str(bundle), self.ids[rt])
            if rt == "kata" and self.args.kata_config:
                argv[1:1] = ["--kata-config", self.args.kata_config]
            self.started.append(rt)
            self._detached(argv, 180)
            self._wait_listening(rt)

    def _detached(self, argv: list[str], timeout: float) -> None:
        """Run a command that leaves a process holding its stdio: errors go to a file, not a pipe
        that would stay open."""
        err = self.work / "stderr"
        with open(err, "wb") as f:
            rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f,
                                timeout=timeout).returncode
        if rc != 0:
            raise RuntimeError(f"{' '.join(argv[:4])}...: exit {rc}: {err.read_text(errors='replace').strip()}")

    def _connect(self, rt: str) -> socket.socket:
        """A connection to the container's ``nc -l``. Its loop starts a new nc after each
        connection ends, which takes a moment in a TCG guest: until then the port refuses."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                return socket.create_connection((self.addr(rt, False), PORT_IN), timeout=2)
            time.sleep(0.2)
        raise RuntimeError(f"{rt}: the container's nc does not answer on {self.addr(rt, False)}:{PORT_IN}")

    def _wait_listening(self, rt: str) -> None:
        self._connect(rt).close()

    def host_to_container(self, rt: str) -> float:
        """MiB/s of M MiB sent to the container's nc (until it closes after our EOF)."""
        size = self.args.mib << 20
        chunk = b"\0" * (256 << 10)
        with self._connect(rt) as s:
            s.settimeout(60)
            t0 = time.monotonic()
            sent = 0
            while sent < size:
                s.sendall(chunk)
                sent += len(chunk)
            s.shutdown(socket.SHUT_WR)
            s.recv(1)  # EOF: nc read everything and exited
            wall = time.monotonic() - t0
        self._wait_listening(rt)
        return self.args.mib / wall

    def container_to_host(self, rt: str) -> float:
        """MiB/s of M MiB that the container's ``dd | nc`` sends to a host listener."""
        with socket.socket() as srv:
            srv.bind((self.addr(rt, True), 0))
            srv.listen(1)
            port = srv.getsockname()[1]
            count = self.args.mib * 16
            argv = self.cmd(rt, "exec", "--detach", self.ids[rt], "sh", "-c",
                            f"dd if=/dev/zero bs=65536 count={count} 2>/dev/null | nc {self.addr(rt, True)} {port}")
            self._detached(argv, 120)
            srv.settimeout(60)
            conn, _ = srv.accept()
            with conn:
                got = 0
                first = conn.recv(1 << 20)
                t0 = time.monotonic()
                got = len(first)
                while True:
                    data = conn.recv(1 << 20)
                    if not data:
                        break
                    got += len(data)
                wall = time.monotonic() - t0
        return (got - len(first)) / (1 << 20) / wall if wall > 0 else 0.0

    def volume(self, rt: str) -> tuple[float, float]:
        """MiB/s written to and read from the bind-mounted host directory by ``dd`` in the container,
        timed inside it (``/proc/uptime`` before and after, 10 ms steps): the exec's own start and
        end, which vary by more than a transfer lasts, stay out of the figure."""
        def timed(cmd: str) -> float:
            script = f"read a _ </proc/uptime; {cmd}; read b _ </proc/uptime; echo $a $b"
            r = subprocess.run(self.cmd(rt, "exec", self.ids[rt], "sh", "-c", script), stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=300)
            words = r.stdout.decode(errors="replace").split()
            if r.returncode != 0 or len(words) < 2:
                raise RuntimeError(f"{rt}: {cmd}: {r.stderr.decode(errors='replace').strip()}")
            return max(float(words[-1]) - float(words[-2]), 0.01)

        write = timed(f"dd if=/dev/zero of=/vol/f bs=1048576 count={self.args.mib} 2>/dev/null && sync")
        size = (self.work / f"vol-{rt}" / "f").stat().st_size
        if size != self.args.mib << 20:
            raise RuntimeError(f"{rt}: the host sees {size} bytes of the {self.args.mib} MiB written")
        read = timed("dd if=/vol/f of=/dev/null bs=1048576 2>/dev/null")
        (self.work / f"vol-{rt}" / "f").unlink()
        return self.args.mib / write, self.args.mib / read

    def rtt_ms(self, rt: str) -> float | None:
        out = subprocess.run([shutil.which("busybox") or "/bin/busybox", "ping", "-c", "20", "-i", "0.1", "-q",
                              self.addr(rt, False)], capture_output=True,
                             text=True, timeout=60).stdout
        m = re.search(r"= [0-9.]+/([0-9.]+)/", out)
        return float(m.group(1)) if m else None

    def cleanup(self) -> None:
        with signals_held():
            for rt in self.started:
                subprocess.run(self.cmd(rt, "delete", "--force", self.ids[rt]), capture_output=True, timeout=60)
            for rt in RUNTIMES:
                subprocess.run(["ip", "link", "del", self.hostif[rt]], capture_output=True)
                subprocess.run(["ip", "netns", "del", self.netns[rt]], capture_output=True)
            shutil.rmtree(self.work, ignore_errors=True)


def render(res: dict[str, Any]) -> str:
    def f(v: float | None, unit: str) -> str:
        return "-" if v is None else f"{v:.1f} {unit}" if unit != "ms" else f"{v:.2f} ms"

    lines = [f"Host: {res['host']}; {res['date']}, {res['repeat']} repetition(s) of {res['mib']} MiB, "
             f"load average {res['load_start']} at start, {res['load_end']} at end.", "",
             "| host ↔ container | kata median | kata min…max | runc median | kata / runc |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for key, label, unit in (("in", "TCP host → container", "MiB/s"), ("out", "TCP container → host", "MiB/s"),
                             ("rtt", "ping round trip (mean of 20)", "ms"),
                             ("vol_w", "volume (bind mount; kata: 9p) write + sync", "MiB/s"),
                             ("vol_r", "volume read", "MiB/s")):
        k, r = res["kata"][key], res["runc"][key]
        ratio = (k["median"] / r["median"]) if k["median"] and r["median"] else None
        lines.append(f"| {label} | {f(k['median'], unit)} | {f(k['min'], unit)} … {f(k['max'], unit)} | "
                     f"{f(r['median'], unit)} | {'-' if ratio is None else f'{ratio:.3f}x'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true", help="1 repetition of 8 MiB (CI)")
    ap.add_argument("--repeat", type=int, default=None, help="repetitions (default 3)")
    ap.add_argument("--mib", type=int, default=None, help="MiB per transfer (default 32)")
    ap.add_argument("--runtime", default=default_runtime())
    ap.add_argument("--kata-config", default="", help="configuration.toml for kata-runtime")
    ap.add_argument("--runc", default=default_runc())
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args(argv)
    args.repeat = args.repeat or (1 if args.short else 3)
    args.mib = args.mib or (8 if args.short else 32)
    bench = Bench(args)
    unwind_on_signals()
    res: dict[str, Any] = {"repeat": args.repeat, "mib": args.mib, "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                         time.gmtime()),
                           "host": f"{platform.node()}, {os.cpu_count()} cores, kernel {platform.release()}",
                           "load_start": loadavg()}
    raw: dict[str, dict[str, list[float | None]]] = {rt: {"in": [], "out": [], "rtt": [], "vol_w": [], "vol_r": []}
                                                      for rt in RUNTIMES}
    try:
        bench.setup()
        for i in range(args.repeat):
            for rt in RUNTIMES:
                say(f"round {i + 1}/{args.repeat}: {rt}")
                raw[rt]["in"].append(bench.host_to_container(rt))
                raw[rt]["out"].append(bench.container_to_host(rt))
                raw[rt]["rtt"].append(bench.rtt_ms(rt))
                w, r = bench.volume(rt)
                raw[rt]["vol_w"].append(w)
                raw[rt]["vol_r"].append(r)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, RuntimeError, OSError) as e:
        detail = e.stderr.decode(errors="replace").strip() if isinstance(e, subprocess.CalledProcessError) and \
            e.stderr else str(e)
        say(f"failed: {detail}")
        bench.cleanup()
        return 1
    except (KeyboardInterrupt, Interrupted):
        bench.cleanup()
        return 130
    bench.cleanup()
    res["load_end"] = loadavg()
    for rt in RUNTIMES:
        res[rt] = {k: stats(v) for k, v in raw[rt].items()}
        res[rt]["raw"] = raw[rt]
    text = render(res)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
