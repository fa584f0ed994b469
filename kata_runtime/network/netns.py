"""Network namespaces on the host: made, entered and removed with the system calls themselves.

A namespace the runtime makes is pinned by a bind mount of the making thread's
``/proc/thread-self/ns/net`` onto a file under :data:`NETNS_DIR` (where ``ip netns`` looks, so an
operator can ``ip netns exec`` into it). Entering one is ``setns(2)`` on the calling thread only:
a child started from that thread (QEMU, a kata-shim) is born in the namespace, the rest of the
runtime stays where it was. :func:`open_device` opens the character device of a network device
of a namespace (a macvtap's ``/dev/tapN``) as that namespace's sysfs names it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from kata_runtime import faults

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
_CLONE_NEWNS = 0x00020000
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def _os_error(what: str) -> OSError:
    e = ctypes.get_errno()
    return OSError(e, f"{what}: {os.strerror(e)}")


def create(path: Path) -> None:
    """Make a new, empty network namespace pinned at ``path`` (which must not exist)."""
    faults.point("netns")
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
    failure: list[OSError] = []

    def unshare_and_pin() -> None:  # in a thread of its own: unshare moves only the calling thread
        if _libc.unshare(CLONE_NEWNET) != 0:
            failure.append(_os_error("unshare(CLONE_NEWNET)"))
            return
        own = f"/proc/self/task/{threading.get_native_id()}/ns/net"
        if _libc.mount(own.encode(), str(path).encode(), None, _MS_BIND, None) != 0:
            failure.append(_os_error(f"bind {own} on {path}"))

    worker = threading.Thread(target=unshare_and_pin, name="netns-create")
    worker.start()
    worker.join()
    if failure:
        path.unlink(missing_ok=True)
        raise failure[0]


def remove(path: Path) -> None:
    """Unpin and delete a namespace made by :func:`create` (gone already is fine); the
    namespace itself ends when its last process and mount are gone."""
    faults.point("netns-remove")
    while _libc.umount2(str(path).encode(), _MNT_DETACH) == 0:
        pass
    e = ctypes.get_errno()
    if e not in (errno.EINVAL, errno.ENOENT):
        raise OSError(e, f"unmount {path}: {os.strerror(e)}")
    path.unlink(missing_ok=True)


def same(a: str, b: str) -> bool:
    """Whether two namespace files name the same namespace."""
    sa, sb = os.stat(a), os.stat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def is_host(path: str) -> bool:
    """Whether ``path`` is the network namespace the runtime itself runs in (the host's: PID 1's
    is not always readable, and the engines run us in theirs)."""
    try:
        return same(path, "/proc/self/ns/net")
    except OSError:
        return False


@contextlib.contextmanager
def entered(path: str | None) -> Iterator[None]:
    """Run the block with the calling thread in namespace ``path`` (None: where it is)."""
    if not path:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                raise _os_error(f"setns {path}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:  # pragma: no cover - cannot fail for our own ns
                raise _os_error("setns back to the runtime's network namespace")
    finally:
        os.close(home)


def open_device(path: str, sysfs_dev: str) -> int:
    """Open (read-write) the character device whose ``dev`` file (``MAJOR:MINOR``) is
    ``/sys/<sysfs_dev>`` (a glob that must match one file) in network namespace ``path``.

    A macvtap's node, ``/dev/tap<ifindex>``, cannot be trusted: ifindexes are per namespace, so
    two sandboxes' macvtaps often have the same one, and devtmpfs keeps the node of the first
    (seen here: a second namespace's tap4 was 246:2, /dev/tap4 stayed 246:1). And sysfs shows
    the network devices of the namespace it was mounted in. So a thread of its own, in a mount
    namespace of its own, mounts the namespace's sysfs, reads the numbers, makes the node on a
    tmpfs and opens it: the mounts and the node go with that thread, nothing is left on the
    host whatever happens to this process."""
    opened: list[int] = []
    failure: list[OSError] = []

    def in_private_mounts() -> None:
        try:
            if _libc.unshare(_CLONE_NEWNS) != 0:
                raise _os_error("unshare(CLONE_NEWNS)")
            if _libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
                raise _os_error("make the thread's mounts private")
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(target, CLONE_NEWNET) != 0:
                    raise _os_error(f"setns {path}")
            finally:
                os.close(target)
            if _libc.mount(b"sysfs", b"/sys", b"sysfs", 0, None) != 0:
                raise _os_error("mount the namespace's sysfs")
            found = glob.glob(f"/sys/{sysfs_dev}")
            if len(found) != 1:
                raise OSError(errno.ENODEV, f"no device /sys/{sysfs_dev} in {path}")
            with open(found[0]) as f:
                major, minor = (int(n) for n in f.read().strip().split(":"))
            if _libc.mount(b"tmpfs", b"/sys", b"tmpfs", 0, b"mode=700") != 0:
                raise _os_error("mount a tmpfs for the device node")
            os.mknod("/sys/dev", stat.S_IFCHR | 0o600, os.makedev(major, minor))
            opened.append(os.open("/sys/dev", os.O_RDWR | os.O_CLOEXEC))
        except OSError as e:
            failure.append(e)
        except ValueError as e:  # a dev file that is not MAJOR:MINOR
            failure.append(OSError(errno.EINVAL, f"/sys/{sysfs_dev} in {path}: {e}"))

    worker = threading.Thread(target=in_private_mounts, name="netns-open-device")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return opened[0]
