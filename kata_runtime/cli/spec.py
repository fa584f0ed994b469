"""``kata-runtime spec``: write runc's starter ``config.json`` (``runc spec``, byte for byte; with
``--rootless``, runc's but with the network namespace kept)."""

from __future__ import annotations

import os
from typing import Any

import click

from kata_runtime import OCI_VERSION
from kata_runtime.cli.command import runc_command
from kata_runtime.cli.output import go_json
from kata_runtime.errors import KataError

_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def example_spec() -> dict[str, Any]:
    """runc's specconv.Example(): the default spec, keys in the order runc writes them."""
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": list(_CAPS), "effective": list(_CAPS),
                             "permitted": list(_CAPS), "ambient": list(_CAPS)},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                           {"type": "mount"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


def to_rootless(spec: dict[str, Any], uid: int, gid: int) -> dict[str, Any]:
    """runc's specconv.ToRootless but for the network: a user namespace mapping ``uid``/``gid``
    to root, /sys bind-mounted, no uid=/gid= mount options, no cgroup resources. runc also drops
    the network namespace, so that the container shares the host's network (a rootless runc cannot
    make one); a VM always has a network of its own, and we refuse a spec without one, so it stays."""
    linux = spec["linux"]
    namespaces = [ns for ns in linux["namespaces"] if ns["type"] != "user"]
    namespaces.append({"type": "user"})
    mounts = []
    for m in spec["mounts"]:
        if os.path.normpath(m["destination"]) == "/sys":
            mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                           "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
            continue
        m = dict(m)
        if "options" in m:
            m["options"] = [o for o in m["options"] if not o.startswith(("gid=", "uid="))]
        mounts.append(m)
    spec["mounts"] = mounts
    # Go struct order of specs.Linux: uidMappings, gidMappings, ..., resources, ..., namespaces...
    new_linux: dict[str, Any] = {
        "uidMappings": [{"containerID": 0, "hostID": uid, "size": 1}],
        "gidMappings": [{"containerID": 0, "hostID": gid, "size": 1}],
    }
    for key, value in linux.items():
        if key == "resources":
            continue
        new_linux[key] = namespaces if key == "namespaces" else value
    spec["linux"] = new_linux
    return spec


def spec_text(rootless: bool = False) -> str:
    """The bytes of runc's config.json (tab indented, no trailing newline)."""
    spec = example_spec()
    if rootless:
        spec = to_rootless(spec, os.geteuid(), os.getegid())
    return go_json(spec, indent="\t")


@runc_command("spec", nargs=(0, 0), short_help="create a new specification file")
@click.option("--bundle", "-b", default="", help="path to the root of the bundle directory")
@click.option("--rootless", is_flag=True, help="generate a configuration for a rootless container")
def spec(bundle: str, rootless: bool) -> None:
    """Create a starter specification file named "config.json" for a bundle: args ["sh"],
    terminal on; edit it to run the command you want."""
    directory = bundle or "."
    if bundle and not os.path.isdir(bundle):
        cause = "not a directory" if os.path.exists(bundle) else "no such file or directory"
        raise KataError(f"chdir {bundle}: {cause}")
    path = os.path.join(directory, "config.json")
    if os.path.lexists(path):
        raise KataError("File config.json exists. Remove it first")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(spec_text(rootless))
    except OSError as e:
        raise KataError(f"open {path}: {e.strerror or e}") from None
