"""Network namespaces on the host: made, entered and removed with the system calls themselves.

A namespace the runtime makes is pinned by a bind mount of the making thread's
``/proc/thread-self/ns/net`` onto a file under :data:`NETNS_DIR` (where ``ip netns`` looks, so an
operator can ``ip netns exec`` into it). Entering one is ``setns(2)`` on the calling thread only:
a child started from that thread (QEMU, a kata-shim) is born in the namespace, the rest of the
runtime stays where it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def _os_error(what: str) -> OSError:
    e = ctypes.get_errno()
    return OSError(e, f"{what}: {os.strerror(e)}")


def create(path: Path) -> None:
    """Make a new, empty network namespace pinned at ``path`` (which must not exist)."""
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
