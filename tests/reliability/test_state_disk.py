"""The state directory's filesystem full or read-only: a ``--root`` of the test's own on a tiny
tmpfs, filled to a given number of free bytes or remounted read-only, and the fixed socket root
(/run/vc/sock) read-only in a private mount namespace. ``create`` either succeeds whole or fails
in one line that names the container, leaving no QEMU, kata-proxy, kata-shim, mount, netns,
cgroup or state behind; a disk that fills up or turns read-only under a created container still
lets the engine's ``kill --all ID 9`` and ``delete --force ID`` end it (once it is writable
again, for the record's own removal)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.reliability.helpers import Kata, Result, leftovers, one_clear_line, settled

DISK = 256 * 1024  # the tmpfs under --root: far less than a sandbox's state needs with its logs


@contextlib.contextmanager
def tmpfs_root(kata: Kata, size: int = DISK) -> Iterator[Path]:
    """``kata``'s root on a tmpfs of ``size`` bytes of its own (unmounted after the test)."""
    kata.root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(kata.root)], check=True)
    try:
        yield kata.root
    finally:
        busy = subprocess.run(["umount", str(kata.root)], capture_output=True, text=True)
        if busy.returncode:  # a process of ours still has a file open there
            subprocess.run(["umount", "-l", str(kata.root)], check=False)
            raise AssertionError(f"the state disk is still in use: {busy.stderr.strip()}")


def fill(root: Path, free: int) -> None:
    """Fill the filesystem of ``root`` so that about ``free`` bytes are left."""
    filler = root / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    if free:
        st = os.statvfs(root)
        have = st.f_bavail * st.f_frsize
        os.truncate(filler, max(filler.stat().st_size - (free - have), 0))


def remount(root: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(root)], check=True)


def refused_cleanly(kata: Kata, r: Result, cid: str) -> str:
    line = one_clear_line(r, cid)
    left = settled(lambda: leftovers(kata, cid))
    assert not left, f"{line}\nleft:\n" + "\n".join(left)
    return line


# free bytes on the state disk (tmpfs pages are 4 KiB): none, 2 and 3 pages (the first record
# does not fit), 4 pages (a whole container fits: QEMU's quiet console log stays empty)
FREE = [0, 8 * 1024, 12 * 1024, 16 * 1024]


@pytest.mark.parametrize("free", FREE, ids=[f"free-{f // 1024}k" for f in FREE])
def test_create_on_a_full_state_disk(kata: Kata, cid: str, bundle, template_config: Path, free: int) -> None:
    kata.config = template_config
    b = bundle(["sleep", "1000"])
    with tmpfs_root(kata) as root:
        fill(root, free)
        r = kata("create", "--bundle", str(b), cid)
        if r.rc == 0:  # it fitted: a whole container, and the engine's clean-up works on the full disk
            assert kata.state(cid)["status"] == "created"
            kata.ok("kill", "--all", cid, "9")
            kata.ok("delete", "--force", cid)
            assert not settled(lambda: leftovers(kata, cid))
            print(f"{free} bytes free: create fitted")
            return
        line = refused_cleanly(kata, r, cid)
        assert "No space left on device" in line, line
        print(f"{free} bytes free: {line}")
        assert "does not exist" in kata("state", cid).err


def test_the_state_disk_fills_while_create_boots(kata: Kata, cid: str, bundle, template_config: Path) -> None:
    """The disk fills once QEMU has written its pid file: the record writes after the launch fail,
    and what was started by then (QEMU, kata-proxy, kata-shim, mounts, cgroup) goes."""
    kata.config = template_config
    b = bundle(["sleep", "1000"])
    outcomes = []
    with tmpfs_root(kata) as root, ThreadPoolExecutor(1) as pool:
        for _ in range(2):
            create = pool.submit(kata, "create", "--bundle", str(b), cid)
            pid = root / "vm" / cid / "pid"
            while not create.done() and not pid.exists():
                time.sleep(0.005)
            launched = pid.exists()
            fill(root, 0)
            r = create.result()
            (root / "filler").unlink()
            if r.rc == 0:  # every write was done before the disk filled
                outcomes.append("fitted")
                kata.ok("delete", "--force", cid)
                assert not settled(lambda: leftovers(kata, cid))
                continue
            line = refused_cleanly(kata, r, cid)
            assert "No space left on device" in line, line
            outcomes.append(f"{'after' if launched else 'before'} QEMU's launch: {line}")
    print("\n".join(outcomes))
    assert any(o.startswith("after") for o in outcomes), f"the disk never filled after QEMU's launch: {outcomes}"


def test_create_on_a_read_only_state_disk(kata: Kata, cid: str, bundle, template_config: Path) -> None:
    kata.config = template_config
    b = bundle(["sleep", "1000"])
    with tmpfs_root(kata) as root:
        (root / "sbs").mkdir(mode=0o700)  # a root that was in use before it turned read-only
        remount(root, "ro")
        line = refused_cleanly(kata, kata("create", "--bundle", str(b), cid), cid)
        assert "Read-only file system" in line, line
        assert kata("list").rc == 0


def test_a_state_disk_that_fills_or_turns_read_only_under_a_container(kata: Kata, cid: str, bundle,
                                                                      template_config: Path) -> None:
    """After create, the disk fills: ``start`` fails in one line, the container stays ``created``
    and ``kill --all 9`` + ``delete --force`` end it. Again with the disk read-only: ``delete
    --force`` ends the VM and says in one line that the record could not go; once the disk is
    writable, the next ``delete --force`` removes the rest."""
    kata.config = template_config
    b = bundle(["sleep", "1000"])
    with tmpfs_root(kata) as root:
        kata.ok("create", "--bundle", str(b), cid)
        fill(root, 0)
        r = kata("start", cid)
        if r.rc != 0:
            line = one_clear_line(r, cid)
            assert "No space left on device" in line, line
            assert kata.state(cid)["status"] in ("created", "running")
        kata.ok("kill", "--all", cid, "9")
        kata.ok("delete", "--force", cid)
        assert not settled(lambda: leftovers(kata, cid))

        (root / "filler").unlink()
        kata.ok("create", "--bundle", str(b), cid)
        # QEMU and kata-proxy keep their logs open for writing: the disk cannot be remounted
        # read-only under them, but the records' directory can be covered by a read-only bind
        sbs = str(root / "sbs")
        subprocess.run(["mount", "--bind", sbs, sbs], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", sbs], check=True)
            r = kata("start", cid)
            if r.rc != 0:
                assert "Read-only file system" in one_clear_line(r, cid)
            kata.ok("kill", "--all", cid, "9")
            r = kata("delete", "--force", cid)
            if r.rc != 0:
                one_clear_line(r, cid)
            assert not settled(lambda: [x for x in leftovers(kata, cid) if x.startswith("process:")]), \
                "delete --force on a read-only state disk left the VM running"
        finally:
            subprocess.run(["umount", sbs], check=True)
        kata.ok("delete", "--force", cid)
        assert not settled(lambda: leftovers(kata, cid))


def test_create_with_a_read_only_socket_root(kata: Kata, cid: str, bundle, template_config: Path,
                                             tmp_path: Path) -> None:
    """/run/vc/sock (fixed, short: the unix socket paths) read-only, in a private mount namespace
    (the rest of the host keeps using it): one line, and the namespace's mounts are gone too."""
    kata.config = template_config
    b = bundle(["sleep", "1000"])
    script = (f'mount --bind -o ro /run/vc/sock /run/vc/sock && mount -o remount,bind,ro /run/vc/sock && '
              f'{" ".join(kata.argv("create", "--bundle", str(b), cid))} 2>{tmp_path}/create.err; '
              f'echo $? >{tmp_path}/create.rc; grep -c "/run/kata-containers.*{cid}" /proc/self/mountinfo '
              f'>{tmp_path}/mounts; true')
    os.makedirs("/run/vc/sock", mode=0o700, exist_ok=True)
    subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], check=True, timeout=300,
                   stdin=subprocess.DEVNULL)
    rc = int((tmp_path / "create.rc").read_text())
    err = (tmp_path / "create.err").read_text()
    line = refused_cleanly(kata, Result(rc, "", err), cid)
    assert "Read-only file system" in line, line
    assert (tmp_path / "mounts").read_text().strip() == "0", "mounts were left in the namespace"
