"""`kata-runtime run`: the workload runs in the guest; its output and exit status reach the user."""

from __future__ import annotations

import platform
import subprocess

from tests.oci.conftest import Kata, config_with


def test_run_prints_the_guest_kernel_release(kata: Kata, bundle, cid: str) -> None:
    # a bare rootfs (no /proc, /dev... mount points) with runc's read-only root, as `make demo` makes
    b = bundle(["sh", "-c", "uname -r; touch /newfile 2>/dev/null && echo writable; true"], mountpoints=False)
    r = kata("run", "--bundle", str(b), cid)
    assert r.rc == 0, r.err
    guest = r.out.strip()
    assert "writable" not in guest  # root.readonly is applied
    assert guest and guest != platform.release(), f"guest kernel {guest!r} vs host {platform.release()!r}"
    assert guest.endswith("-amd64")
    # the foreground run deleted the container
    assert kata("state", cid).rc != 0


def test_run_exit_status_and_separate_streams_byte_for_byte(kata: Kata, bundle, cid: str) -> None:
    script = ("yes 0123456789abcdef | head -c 1048576; "
              "yes err-line | head -c 300000 >&2; "
              "exit 3")
    b = bundle(["sh", "-c", script])
    r = kata("run", "--bundle", str(b), cid)
    want_out = subprocess.run(["sh", "-c", "yes 0123456789abcdef | head -c 1048576"], capture_output=True).stdout
    want_err = subprocess.run(["sh", "-c", "yes err-line | head -c 300000"], capture_output=True).stdout
    assert r.rc == 3, r.err[-500:]
    assert len(r.raw_out) == 1048576 and r.raw_out == want_out
    assert r.raw_err == want_err


def test_run_passes_stdin(kata: Kata, bundle, cid: str) -> None:
    b = bundle(["sh", "-c", "read line; echo got:$line; cat; exit 5"])
    r = kata("run", "--bundle", str(b), cid, input=b"hello\nrest of it\n")
    assert r.out == "got:hello\nrest of it\n"
    assert r.rc == 5, r.err


def test_run_with_runc_in_the_guest(kata: Kata, bundle, cid: str, tmp_path) -> None:
    """crun makes containers by default; runc, also in the image, is the configurable fallback."""
    cfg = config_with(tmp_path, kernel_params="agent.oci_runtime=/usr/bin/runc")
    b = bundle(["sh", "-c", "echo via runc; exit 9"])
    r = kata("run", "--bundle", str(b), cid, config=cfg)
    assert (r.rc, r.out) == (9, "via runc\n"), r.err
