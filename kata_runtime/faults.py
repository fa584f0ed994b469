"""The runtime's one test switch: fault injection at the points where it acquires (or gives back)
a resource, and the test hook before a NIC hotplug. Nothing here does anything unless its
environment variable is set.

``KATA_FAULT`` (read once, at import, and removed from the environment so that the helpers we
start, and kata-netmon's calls back into us, do not inherit it):

- ``N``: the Nth call of :func:`point` in this process fails, whatever its site;
- ``SITE:N``: the Nth call of :func:`point` at ``SITE`` fails;
- ``trace:FILE``: nothing fails; every point reached appends its site to ``FILE``, one a line (a
  test learns how many acquisitions a command makes, and which).

A failing point raises the error that a real failure there raises (``OSError`` by default, or the
class its caller names), so what follows is the code path of a real failure.

``KATA_TEST_HOOK_BEFORE_HOTPLUG``: a shell command run, and waited for, after an interface's
device is made and before it is hotplugged, with ``KATA_NETNS`` and ``KATA_TAP`` in its
environment (a test makes QEMU refuse the tap, or kills the runtime at that very point). It is the
one shell command line of the host side: a test writes it, the runtime never builds it.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable

FAULT = "KATA_FAULT"
TEST_HOOK_BEFORE_HOTPLUG = "KATA_TEST_HOOK_BEFORE_HOTPLUG"

_spec = os.environ.pop(FAULT, "")
_counts: dict[str, int] = {}


def _parse(spec: str) -> tuple[str, int, str]:
    """(site or "" for any, N, trace file) of a ``KATA_FAULT`` value; N 0 when nothing fails."""
    if spec.startswith("trace:"):
        return "", 0, spec[len("trace:"):]
    site, _, n = spec.rpartition(":")
    try:
        return site, int(n), ""
    except ValueError:
        return "", 0, ""  # not ours to refuse: a malformed test switch injects nothing


_site, _nth, _trace = _parse(_spec) if _spec else ("", 0, "")


def _os_error(msg: str) -> BaseException:
    return OSError(errno.EIO, msg)


def point(site: str, error: Callable[[str], BaseException] = _os_error) -> None:
    """An acquisition (or release) at ``site``: raises ``error(message)`` when ``KATA_FAULT``
    names this call; does nothing otherwise."""
    if not _spec:
        return
    if _trace:
        with open(_trace, "a") as f:
            f.write(site + "\n")
        return
    key = site if _site else ""
    if _site and _site != site:
        return
    _counts[key] = _counts.get(key, 0) + 1
    if _counts[key] == _nth:
        raise error(f"fault injected at {site} ({FAULT}={_spec})")


def run_hook_before_hotplug(netns_path: str, tap: str) -> None:
    """Run the command of :data:`TEST_HOOK_BEFORE_HOTPLUG`, if the environment has one."""
    command = os.environ.get(TEST_HOOK_BEFORE_HOTPLUG)
    if command:
        subprocess.run(["/bin/sh", "-c", command], env={**os.environ, "KATA_NETNS": netns_path, "KATA_TAP": tap},
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False)
