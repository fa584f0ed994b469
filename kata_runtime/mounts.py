"""Host mounts the runtime makes (bind mounts of container rootfs into the 9p shared directory)."""

from __future__ import annotations

import ctypes
import errno
import os

from kata_runtime import faults

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def bind(source: str, target: str, readonly: bool = False) -> None:
    """Recursive bind mount of ``source`` onto ``target`` (made if missing: a directory, or an
    empty file when ``source`` is not a directory)."""
    faults.point("mount")
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    if _libc.mount(source.encode(), target.encode(), None, MS_BIND | MS_REC, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"bind mount {source} on {target}: {os.strerror(e)}")
    if readonly:
        flags = MS_BIND | MS_REC | MS_REMOUNT | MS_RDONLY
        if _libc.mount(None, target.encode(), None, flags, None) != 0:
            e = ctypes.get_errno()
            unmount(target)
            raise OSError(e, f"remount {target} read-only: {os.strerror(e)}")


def unmount(target: str) -> None:
    """Lazy unmount; a path that is not mounted (or gone) is fine."""
    faults.point("unmount")
    while _libc.umount2(target.encode(), MNT_DETACH) == 0:
        pass  # stacked mounts: peel them all
    e = ctypes.get_errno()
    if e not in (errno.EINVAL, errno.ENOENT):
        raise OSError(e, f"unmount {target}: {os.strerror(e)}")


def mounted_under(prefix: str) -> list[str]:
    """Mount points at or below ``prefix`` (deepest first), from /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix.rstrip("/") + "/"):
                out.append(point)
    return sorted(out, key=len, reverse=True)
