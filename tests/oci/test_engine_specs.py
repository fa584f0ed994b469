"""What the engines' specs need, with real VMs: long state roots and 64-character ids, bind mounts
of host directories and files (ro too), OCI hooks on the host, the sandbox's network namespace,
net sysctls; and what is refused before anything is made."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import our_leftovers, sandbox_leftovers
from tests.oci.conftest import Kata

HOOK = """#!/bin/sh
# records its stdin (the state), then where the state's pid lives, then its own namespace
state=$(cat)
pid=$(echo "$state" | sed 's/.*"pid":\\([0-9]*\\).*/\\1/')
{{ echo "$state"; readlink /proc/$pid/ns/net; readlink /proc/self/ns/net; }} >> {out}
"""


def _hook(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(body)
    path.chmod(0o755)
    return str(path)


def _edit(bundle: Path, change: Callable[[dict[str, Any]], None]) -> None:
    spec = json.loads((bundle / "config.json").read_text())
    change(spec)
    (bundle / "config.json").write_text(json.dumps(spec))


def test_docker_like_container(tmp_path: Path, bundle: Callable[..., Path],
                               request: pytest.FixtureRequest) -> None:
    """One VM: dockerd's root length, a 64-hex id, volumes, /etc/hosts as a file, hooks, sysctls."""
    root = tmp_path / "exec-root-as-long-as-dockers" / "var/run/docker/runtime-kata/moby"
    kata = Kata(root, tmp_path / "kata.log")
    cid = secrets.token_hex(32)
    request.node.extra_ids = [cid]
    vol, ro_vol = tmp_path / "vol", tmp_path / "ro-vol"
    vol.mkdir()
    ro_vol.mkdir()
    (vol / "from-host").write_text("written on the host\n")
    (ro_vol / "keep").write_text("keep\n")
    hosts = tmp_path / "hosts"
    hosts.write_text("10.1.2.3 docker-made-this\n")
    os.symlink(vol, tmp_path / "vol-link")  # a symlinked source is followed, as mount(2) does
    hooks_out = tmp_path / "hooks.out"
    script = ("cat /data/from-host; echo written-in-guest > /data/from-guest; grep docker-made /etc/hosts; "
              "echo x > /ro/x 2>/dev/null && echo ro-broken || echo ro-refused; cat /ro/keep; "
              "cat /proc/sys/net/ipv4/ip_unprivileged_port_start; cat /proc/sys/net/ipv4/ping_group_range")
    b = bundle(["sh", "-c", script])

    def docker_like(spec: dict[str, Any]) -> None:
        spec["mounts"] += [
            {"destination": "/data", "type": "bind", "source": str(tmp_path / "vol-link"), "options": ["rbind"]},
            {"destination": "/ro", "type": "bind", "source": str(ro_vol), "options": ["rbind", "ro"]},
            {"destination": "/etc/hosts", "type": "bind", "source": str(hosts), "options": ["rbind", "rprivate"]}]
        spec["linux"]["sysctl"] = {"net.ipv4.ip_unprivileged_port_start": "0",
                                   "net.ipv4.ping_group_range": "0 2147483647"}
        hook = {"path": _hook(tmp_path, "hook.sh", HOOK.format(out=hooks_out))}
        spec["hooks"] = {"prestart": [hook], "poststart": [hook], "poststop": [hook]}

    _edit(b, docker_like)
    r = kata("run", "--bundle", str(b), cid)
    assert r.rc == 0, r.err
    assert r.out.splitlines() == ["written on the host", "10.1.2.3 docker-made-this", "ro-refused", "keep", "0",
                                  "0\t2147483647"]
    assert (vol / "from-guest").read_text() == "written-in-guest\n"
    assert not (ro_vol / "x").exists()
    lines = hooks_out.read_text().splitlines()
    assert len(lines) == 8, lines  # prestart, poststart, poststop: once each (poststop's pid is 0: no ns line)
    states = [json.loads(lines[i]) for i in (0, 3, 6)]
    assert [s["status"] for s in states] == ["creating", "running", "stopped"]
    assert all(s["id"] == cid and s["bundle"] == str(b) for s in states)
    host_ns = os.readlink("/proc/self/ns/net")
    assert lines[2] == host_ns  # hooks run on the host...
    assert lines[1].startswith("net:[") and lines[1] != host_ns  # ...and the state's pid is in the sandbox's
    assert states[0]["pid"] == states[1]["pid"] > 0
    assert not sandbox_leftovers(root, cid) and not our_leftovers(cid)


def test_failing_prestart_hook_fails_create_and_leaves_nothing(kata: Kata, cid: str, tmp_path: Path,
                                                               bundle: Callable[..., Path]) -> None:
    b = bundle(["true"])
    ran = tmp_path / "second-ran"
    _edit(b, lambda s: s.update(hooks={"prestart": [
        {"path": _hook(tmp_path, "bad.sh", "#!/bin/sh\necho no network for you >&2\nexit 1\n")},
        {"path": _hook(tmp_path, "good.sh", f"#!/bin/sh\ntouch {ran}\n")}]}))
    r = kata("create", "--bundle", str(b), cid)
    assert r.rc != 0
    assert r.err.strip().splitlines() == [
        f"kata-runtime: create {cid}: error running prestart hook #0 ({tmp_path}/bad.sh): exit status 1, "
        "stderr: no network for you"]
    assert "prestart hook #0" in kata.log_errors()[-1]["msg"]
    assert not ran.exists()
    assert kata("state", cid).rc != 0  # nothing left: the fixture checks processes, mounts, netns, sockets


@pytest.mark.parametrize("case", ["host-network", "missing-netns", "missing-source", "block-device"])
def test_refused_before_anything_is_made(kata: Kata, cid: str, tmp_path: Path, bundle: Callable[..., Path],
                                         case: str) -> None:
    def no_net(spec: dict[str, Any]) -> None:
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]

    edits: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
        "host-network": (no_net, "linux.namespaces: no network namespace: the container would share the host's "
                                 "network stack (docker --net=host), which a VM cannot do"),
        "missing-netns": (lambda s: no_net(s) or s["linux"]["namespaces"].append(
                              {"type": "network", "path": "/run/netns/nope"}),
                          "linux.namespaces: network namespace /run/netns/nope does not exist"),
        "missing-source": (lambda s: s["mounts"].append({"destination": "/v", "type": "bind",
                                                        "source": str(tmp_path / "nope"), "options": ["rbind"]}),
                           f"bind mount source {tmp_path}/nope does not exist"),
        "block-device": (lambda s: s["mounts"].append({"destination": "/disk", "type": "ext4", "source": "/dev/vda"}),
                         "a ext4 from '/dev/vda' cannot be mounted in the VM"),
    }
    change, message = edits[case]
    b = bundle(["true"])
    _edit(b, change)
    r = kata("create", "--bundle", str(b), cid)
    assert r.rc != 0 and len(r.err.strip().splitlines()) == 1, r.err
    assert r.err.startswith(f"kata-runtime: create {cid}: ") and message in r.err, r.err
    assert not (kata.root / "sbs").exists() or not any((kata.root / "sbs").iterdir())
