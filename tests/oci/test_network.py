"""The container in its VM is on the namespace's network (tcfilter: veth <-> tap; macvtap: a
macvtap on the veth), with real VMs; and every failure of create, or a kill -9 in its middle,
leaves the namespace as the engine made it.

The test makes its own namespace and veth pairs, in address ranges of its own (10.250-10.253.x,
192.0.2.x), and never sends traffic anywhere but between this host's namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import our_leftovers, sandbox_leftovers
from tests.oci.conftest import Kata, config_with


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def use_netns(b: Path, path: str) -> None:
    """Make the bundle's container join the network namespace at ``path`` (as the CRI and CNI do)."""
    spec = json.loads((b / "config.json").read_text())
    for ns in spec["linux"]["namespaces"]:
        if ns["type"] == "network":
            ns["path"] = path
    (b / "config.json").write_text(json.dumps(spec))


def model_config(tmp_path: Path, model: str, **changes: object) -> Path:
    """The installed configuration with ``[runtime] internetworking_model = model``."""
    path = config_with(tmp_path, **changes)
    text = path.read_text()
    assert 'internetworking_model = "tcfilter"' in text
    path.write_text(text.replace('internetworking_model = "tcfilter"', f'internetworking_model = "{model}"'))
    return path


def namespace_view(name: str) -> dict[str, str]:
    """What the engine made in the namespace and a model may change: eth0's MAC, the addresses
    and the routes."""
    return {"mac": ip("-n", name, "-o", "link", "show", "eth0").split("link/ether ")[1].split()[0],
            "addresses": ip("-n", name, "-o", "addr", "show", "dev", "eth0", "scope", "global"),
            "routes": ip("-n", name, "route", "show") + ip("-n", name, "-6", "route", "show")}


def assert_nothing_of_ours(kata: Kata, cid: str, name: str, before: dict[str, str] | None = None) -> None:
    """No tap, macvtap, tc filter or ingress qdisc of ours in namespace ``name``, its interface
    as it was ``before``, and no QEMU, proxy, shim, socket, mount or state of ``cid``."""
    assert "_kata" not in ip("-n", name, "-o", "link", "show")
    qdiscs = subprocess.run(["tc", "-n", name, "qdisc", "show"], capture_output=True, text=True, check=True).stdout
    assert "ingress" not in qdiscs
    assert not subprocess.run(["tc", "-n", name, "filter", "show", "dev", "eth0", "ingress"], capture_output=True,
                              text=True).stdout.strip()
    if before is not None:
        assert namespace_view(name) == before
    left = our_leftovers(cid) + sandbox_leftovers(kata.root, cid)
    assert not left, left


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace with veth ``eth0`` (10.251.N.2/24, MTU 1400, default route via the host
    end 10.251.N.1) and a spare veth pair ``kspare-<n>``/``eth1`` (10.252.N.x) left on the host for a
    prestart hook to move in, as docker's does."""
    name = "ktest-" + uuid.uuid4().hex[:8]
    n = int(name[-2:], 16) % 200 + 20
    host, spare = f"kh{name[-6:]}", f"ks{name[-6:]}"
    ip("netns", "add", name)
    try:
        ip("link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", name)
        ip("addr", "add", f"10.251.{n}.1/24", "dev", host)
        ip("link", "set", host, "up")
        ip("-n", name, "addr", "add", f"10.251.{n}.2/24", "dev", "eth0")
        ip("-n", name, "link", "set", "eth0", "mtu", "1400", "up")
        ip("-n", name, "route", "add", "default", "via", f"10.251.{n}.1")
        ip("link", "add", spare, "type", "veth", "peer", "name", f"{spare}p")
        ip("addr", "add", f"10.252.{n}.1/24", "dev", spare)
        ip("link", "set", spare, "up")
        yield name
    finally:
        subprocess.run(["ip", "link", "del", host], capture_output=True)
        subprocess.run(["ip", "link", "del", spare], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"hello from the host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def _poll(ok: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return True
        time.sleep(0.5)
    return False


def test_guest_is_the_veths_twin_and_talks_both_ways(kata: Kata, cid: str, tmp_path: Path, netns: str,
                                                     bundle: Callable[..., Path]) -> None:
    """Also: kata-netmon follows interfaces added to and removed from the running sandbox's namespace."""
    kata.config = config_with(tmp_path, netmon_enable_netmon=True)
    n = int(netns[-2:], 16) % 200 + 20
    spare = f"ks{netns[-6:]}"
    server = ThreadingHTTPServer((f"10.251.{n}.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    hook = tmp_path / "move-veth.sh"  # what docker's libnetwork-setkey does, through the state's pid
    hook.write_text(f"""#!/bin/sh
pid=$(sed 's/.*"pid":\\([0-9]*\\).*/\\1/')
ip link set {spare}p netns "$pid"
nsenter --net=/proc/$pid/ns/net sh -c 'ip link set {spare}p name eth1 && \
ip addr add 10.252.{n}.2/24 dev eth1 && ip link set eth1 up && ip route add 10.253.{n}.0/24 via 10.252.{n}.1'
""")
    hook.chmod(0o755)
    script = (f"cat /sys/class/net/eth0/address /sys/class/net/eth0/mtu; ip -o -4 addr show | sort; ip route; "
              f"wget -q -O - http://10.251.{n}.1:{port}/; echo served > /www/index.html; "
              f"httpd -p 8080 -h /www; echo ready; sleep 60")
    b = bundle(["sh", "-c", script])
    use_netns(b, f"/run/netns/{netns}")
    spec = json.loads((b / "config.json").read_text())
    spec["hooks"] = {"prestart": [{"path": str(hook)}]}
    spec["mounts"].append({"destination": "/www", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]})
    (b / "config.json").write_text(json.dumps(spec))
    mac = ip("-n", netns, "-o", "link", "show", "eth0").split("link/ether ")[1].split()[0]
    out = tmp_path / "out"
    with open(out, "wb") as f:
        run = subprocess.Popen(kata.argv("run", "--bundle", str(b), cid), stdin=subprocess.DEVNULL, stdout=f,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while b"ready" not in out.read_bytes():
            assert run.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        # the host reaches a server in the container (host end of eth0's veth -> VM)
        with urllib.request.urlopen(f"http://10.251.{n}.2:8080/", timeout=10) as r:
            assert r.read() == b"served\n"
        lines = out.read_text().splitlines()
        assert lines[:2] == [mac, "1400"]  # the guest's eth0 has the veth's MAC and MTU
        assert sorted(line.split()[1:4] for line in lines[2:5]) == [
            ["eth0", "inet", f"10.251.{n}.2/24"], ["eth1", "inet", f"10.252.{n}.2/24"], ["lo", "inet", "127.0.0.1/8"]]
        routes = "\n".join(lines[5:])
        assert f"default via 10.251.{n}.1 dev eth0" in routes
        assert f"10.253.{n}.0/24 via 10.252.{n}.1 dev eth1" in routes  # moved in by the prestart hook
        assert "hello from the host" in lines  # and the container reaches a server on the host
        taps = ip("-n", netns, "-o", "link", "show")
        assert "tap0_kata" in taps and "tap1_kata" in taps
        listed = json.loads(kata.ok("kata-network", "list-ifaces", cid).out)
        assert sorted((e["name"], e["tap"]) for e in listed) == [("eth0", "tap0_kata"), ("eth1", "tap1_kata")]

        # hotplug, as `docker network connect` does: kata-netmon sees the new interface and the guest gets it
        ip("-n", netns, "link", "add", "eth2", "type", "veth", "peer", "name", "eth2p")
        ip("-n", netns, "addr", "add", f"10.253.{n}.2/24", "dev", "eth2")
        ip("-n", netns, "link", "set", "eth2", "up")
        mac2 = ip("-n", netns, "-o", "link", "show", "eth2").split("link/ether ")[1].split()[0]
        seen = _poll(lambda: kata("exec", cid, "cat", "/sys/class/net/eth2/address").out.strip() == mac2)
        assert seen, (tmp_path / "root").joinpath("vm", cid, "netmon.log").read_text(errors="replace")
        assert f"10.253.{n}.2/24" in kata.ok("exec", cid, "ip", "-o", "-4", "addr", "show", "dev", "eth2").out
        ip("-n", netns, "link", "del", "eth2")  # and removal takes it away
        assert _poll(lambda: kata("exec", cid, "ls", "/sys/class/net").out.split() == ["eth0", "eth1", "lo"])
        assert "tap2_kata" not in ip("-n", netns, "-o", "link", "show")
    finally:
        kata("kill", cid, "KILL")
        run.wait(timeout=60)
        server.shutdown()
    assert "_kata" not in ip("-n", netns, "-o", "link", "show")
    assert "ingress" not in subprocess.run(["tc", "-n", netns, "qdisc", "show"], capture_output=True,
                                           text=True).stdout
    assert os.path.exists(f"/run/netns/{netns}")  # the engine's namespace is the engine's to remove


def _cni(command: str, netns_path: str, container: str, conf: dict[str, Any]) -> dict[str, Any]:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_NETNS": netns_path, "CNI_IFNAME": "eth0",
           "CNI_PATH": "/usr/lib/cni", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    p = subprocess.run([f"/usr/lib/cni/{conf['type']}"], input=json.dumps(conf).encode(), env=env,
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout) if p.stdout.strip() else {}


def test_cni_bridge_network(kata: Kata, cid: str, tmp_path: Path, bundle: Callable[..., Path]) -> None:
    """As containerd's CRI does: CNI bridge + host-local on a namespace, then the runtime in it."""
    tag = uuid.uuid4().hex[:6]
    n = int(tag[:2], 16) % 200 + 20
    conf = {"cniVersion": "0.4.0", "name": f"kt{tag}", "type": "bridge", "bridge": f"kcni{tag}", "isGateway": True,
            "ipMasq": False, "ipam": {"type": "host-local", "subnet": f"10.254.{n}.0/24",
                                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(tmp_path / "ipam")}}
    names = [f"kcni-{tag}-a", f"kcni-{tag}-b"]
    for name in names:
        ip("netns", "add", name)
    server = None
    try:
        ours = _cni("ADD", f"/run/netns/{names[0]}", f"{cid}-a", conf)["ips"][0]["address"]
        other = _cni("ADD", f"/run/netns/{names[1]}", f"{cid}-b", conf)["ips"][0]["address"].split("/")[0]
        gateway = f"10.254.{n}.1"
        (tmp_path / "www").mkdir()
        (tmp_path / "www" / "index.html").write_text("the other pod\n")
        subprocess.run(["ip", "netns", "exec", names[1], "ip", "link", "set", "lo", "up"], check=True)
        neighbour = subprocess.Popen(["ip", "netns", "exec", names[1], "busybox", "httpd", "-f", "-p", f"{other}:80",
                                      "-h", str(tmp_path / "www")])
        server = ThreadingHTTPServer((gateway, 0), _Hello)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        script = (f"ip -o -4 addr show dev eth0; ip route; wget -q -O - http://{gateway}:{server.server_address[1]}/;"
                  f" wget -q -O - http://{other}/")
        b = bundle(["sh", "-c", script])
        use_netns(b, f"/run/netns/{names[0]}")
        r = kata("run", "--bundle", str(b), cid)
        neighbour.kill()
        neighbour.wait()
        assert r.rc == 0, r.err
        lines = [line.strip() for line in r.out.splitlines()]
        assert lines[0].split()[1:4] == ["eth0", "inet", ours]  # the CNI-assigned address
        assert f"default via {gateway} dev eth0" in lines
        assert lines[-2:] == ["hello from the host", "the other pod"]  # the gateway, and a neighbour
    finally:
        if server is not None:
            server.shutdown()
        for i, name in enumerate(names):
            with contextlib.suppress(AssertionError):
                _cni("DEL", f"/run/netns/{name}", f"{cid}-{'ab'[i]}", conf)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", f"kcni{tag}"], capture_output=True)


def test_failed_network_setup_leaves_no_tap_or_filter(kata: Kata, cid: str, bundle: Callable[..., Path]) -> None:
    """More interfaces than the VM has hotplug slots: the fifth cannot be plugged; create fails with
    one line, and the four taps and their tc filters made before are gone."""
    name = "ktest-" + uuid.uuid4().hex[:8]
    ip("netns", "add", name)
    try:
        for i in range(3):  # six interfaces for four slots
            ip("-n", name, "link", "add", f"va{i}", "type", "veth", "peer", "name", f"vb{i}")
        b = bundle(["true"])
        use_netns(b, f"/run/netns/{name}")
        r = kata("create", "--bundle", str(b), cid)
        assert r.rc != 0 and len(r.err.strip().splitlines()) == 1, r.err
        assert "no free hotplug slot" in r.err
        assert "_kata" not in ip("-n", name, "-o", "link", "show")
        assert "ingress" not in subprocess.run(["tc", "-n", name, "qdisc", "show"], capture_output=True,
                                               text=True).stdout
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


# -- failures of create, and the macvtap model ----------------------------------------------------

def _create_in(kata: Kata, cid: str, b: Path) -> Any:
    r = kata("create", "--bundle", str(b), cid)
    assert r.rc != 0 and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err
    assert cid in r.err
    return r


_HOLD_TAP = """
import fcntl, os, struct, sys, time
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", os.environ["KATA_TAP"].encode(), 0x0002 | 0x1000))  # TUNSETIFF
child = os.fork()
if child:
    with open(sys.argv[1], "w") as f:
        f.write(str(child))
    os._exit(0)
os.setsid()
time.sleep(600)
"""


def test_qemu_refusing_the_tap_leaves_the_namespace_as_it_was(kata: Kata, cid: str, tmp_path: Path, netns: str,
                                                              bundle: Callable[..., Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """tcfilter: the tap is made busy (another process attaches to it) between its making and the
    hotplug, so QEMU cannot open it: create fails with QEMU's words, the tap, its filters and the
    VM are gone and the engine's eth0 is untouched."""
    from kata_runtime.faults import TEST_HOOK_BEFORE_HOTPLUG

    script, holder = tmp_path / "hold_tap.py", tmp_path / "holder.pid"
    script.write_text(_HOLD_TAP)
    monkeypatch.setenv(TEST_HOOK_BEFORE_HOTPLUG, f'nsenter --net="$KATA_NETNS" python3 {script} {holder}')
    before = namespace_view(netns)
    b = bundle(["true"])
    use_netns(b, f"/run/netns/{netns}")
    try:
        r = _create_in(kata, cid, b)
        assert holder.exists()  # the hook ran: the tap was held when QEMU tried it
        assert "tap0_kata" in r.err and "busy" in r.err.lower(), r.err
    finally:
        if holder.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(holder.read_text()), signal.SIGKILL)
    assert_nothing_of_ours(kata, cid, netns, before)


def test_guest_refusing_a_route_gives_the_veth_back(kata: Kata, cid: str, tmp_path: Path, netns: str,
                                                   bundle: Callable[..., Path]) -> None:
    """macvtap: the host takes a route ``onlink`` through a gateway outside eth0's subnet; the guest
    (the agent has no route flags, as Kata 1.x's) refuses it. create fails with the guest's words,
    and eth0 gets back its MAC, addresses and routes (the macvtap had taken them)."""
    kata.config = model_config(tmp_path, "macvtap")
    n = int(netns[-2:], 16) % 200 + 20
    ip("-n", netns, "route", "add", f"10.250.{n}.0/24", "via", "192.0.2.1", "dev", "eth0", "onlink")
    before = namespace_view(netns)
    b = bundle(["true"])
    use_netns(b, f"/run/netns/{netns}")
    r = _create_in(kata, cid, b)
    assert f"10.250.{n}.0/24 via 192.0.2.1" in r.err and "unreachable" in r.err.lower(), r.err
    assert "192.0.2.1" in kata.log_errors()[-1]["msg"]  # what containerd shows the user
    assert_nothing_of_ours(kata, cid, netns, before)


@pytest.mark.parametrize("model", ["tcfilter", "macvtap"])
def test_kill_9_of_the_runtime_after_the_taps_then_delete_force_cleans(model: str, kata: Kata, cid: str,
                                                                       tmp_path: Path, netns: str,
                                                                       bundle: Callable[..., Path],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime is SIGKILLed once the interface's device is made (the test hook holds it right
    before the hotplug): the engine's ``kill ID 9``, ``kill --all ID 9`` and ``delete --force ID``
    remove the device, the filters, QEMU, proxy, shim and state, and give eth0 back."""
    from kata_runtime.faults import TEST_HOOK_BEFORE_HOTPLUG

    kata.config = model_config(tmp_path, model)
    paused = tmp_path / "hook.pid"
    monkeypatch.setenv(TEST_HOOK_BEFORE_HOTPLUG,
                       f"echo $$ > {paused}.tmp && mv {paused}.tmp {paused} && exec sleep 300")
    before = namespace_view(netns)
    b = bundle(["sleep", "1000"])
    use_netns(b, f"/run/netns/{netns}")
    with open(tmp_path / "create.out", "wb") as out:
        creator = subprocess.Popen(kata.argv("create", "--bundle", str(b), cid), stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=out)
    try:
        deadline = time.monotonic() + 120
        while not paused.exists():
            assert creator.poll() is None and time.monotonic() < deadline, (tmp_path / "create.out").read_text()
            time.sleep(0.05)
        made = ip("-n", netns, "-d", "link", "show", "tap0_kata")
        assert ("macvtap mode bridge" if model == "macvtap" else "tun type tap") in made, made
        if model == "macvtap":
            assert namespace_view(netns)["mac"] != before["mac"]  # the veth lent its MAC to the macvtap
        creator.kill()
        creator.wait()
    finally:
        if creator.poll() is None:
            creator.kill()
            creator.wait()
        if paused.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(paused.read_text()), signal.SIGKILL)
    r = kata("kill", cid, "9")  # what the engines send first; the container is stopped: nothing will finish it
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) <= 1, r.err
    kata.ok("kill", "--all", cid, "9")
    kata.ok("delete", "--force", cid)
    assert kata("state", cid).rc != 0
    assert_nothing_of_ours(kata, cid, netns, before)


def test_macvtap_guest_is_the_veths_twin_and_talks_both_ways(kata: Kata, cid: str, tmp_path: Path, netns: str,
                                                             bundle: Callable[..., Path]) -> None:
    """macvtap: a macvtap (bridge mode) on eth0 with eth0's MAC, its /dev/tapN handed to QEMU; the
    guest's eth0 has the MAC, MTU, address and routes; host and container reach each other; and
    delete gives eth0 back as it was."""
    kata.config = model_config(tmp_path, "macvtap")
    n = int(netns[-2:], 16) % 200 + 20
    server = ThreadingHTTPServer((f"10.251.{n}.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    before = namespace_view(netns)
    script = (f"cat /sys/class/net/eth0/address /sys/class/net/eth0/mtu; ip -o -4 addr show dev eth0; ip route; "
              f"wget -q -O - http://10.251.{n}.1:{port}/; echo served > /www/index.html; "
              f"httpd -p 8080 -h /www; echo ready; sleep 60")
    b = bundle(["sh", "-c", script])
    use_netns(b, f"/run/netns/{netns}")
    spec = json.loads((b / "config.json").read_text())
    spec["mounts"].append({"destination": "/www", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]})
    (b / "config.json").write_text(json.dumps(spec))
    out = tmp_path / "out"
    with open(out, "wb") as f:
        run = subprocess.Popen(kata.argv("run", "--bundle", str(b), cid), stdin=subprocess.DEVNULL, stdout=f,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while b"ready" not in out.read_bytes():
            assert run.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://10.251.{n}.2:8080/", timeout=10) as r:  # host -> container
            assert r.read() == b"served\n"
        lines = out.read_text().splitlines()
        assert lines[:2] == [before["mac"], "1400"]  # the guest's eth0 has the veth's MAC and MTU
        assert lines[2].split()[1:4] == ["eth0", "inet", f"10.251.{n}.2/24"]
        assert f"default via 10.251.{n}.1 dev eth0" in "\n".join(lines[3:])
        assert "hello from the host" in lines  # container -> host
        made = ip("-n", netns, "-d", "link", "show", "tap0_kata")
        assert "tap0_kata@eth0" in made and "macvtap mode bridge" in made and f"link/ether {before['mac']}" in made
        now = namespace_view(netns)
        assert now["mac"] != before["mac"] and not now["addresses"].strip()  # lent to the macvtap and the guest
        assert "ingress" not in subprocess.run(["tc", "-n", netns, "qdisc", "show"], capture_output=True,
                                               text=True).stdout  # no tc in this model
    finally:
        kata("kill", cid, "KILL")
        run.wait(timeout=60)
        server.shutdown()
    assert_nothing_of_ours(kata, cid, netns, before)


def test_macvtap_refused_where_the_host_has_none(kata: Kata, cid: str, tmp_path: Path,
                                                 bundle: Callable[..., Path]) -> None:
    """A host without the macvtap driver (here: /proc/devices and /lib/modules hidden in a mount
    namespace of the runtime's own): create refuses in one line before anything is made."""
    kata.config = model_config(tmp_path, "macvtap")
    fake = tmp_path / "devices"
    fake.write_text("".join(line for line in Path("/proc/devices").read_text().splitlines(True)
                            if "macvtap" not in line))
    hide = ('mount --bind "$0" /proc/devices && { [ ! -d /lib/modules ] || mount -t tmpfs none /lib/modules; } && '
            'exec "$@"')
    b = bundle(["true"])
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", hide, str(fake),
                        *kata.argv("create", "--bundle", str(b), cid)], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert p.returncode != 0 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert cid in p.stderr and "no macvtap driver" in p.stderr
    assert not our_leftovers(cid) + sandbox_leftovers(kata.root, cid)
