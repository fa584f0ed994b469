"""Every OCI spec field a container in the VM must honour (issue 10), one behaviour per test, real VMs.

Each test makes a busybox bundle whose spec sets ONE field, runs it with ``kata-runtime run`` (a clone
of one VM template made for the module, ~2 s, not a cold boot) and asserts what the workload prints:
what a user would see inside the container. runc runs the same bundle beside it and must print the
same, except where the output depends on the kernel (the VM's is not the host's)."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.oci.conftest import Kata, Result, config_with, make_bundle

RUNC = shutil.which("runc") or "/usr/sbin/runc"
Spec = dict[str, Any]

# docker 20.10's default capability set: no CAP_SYS_RESOURCE, which this host's runc lacks itself
DOCKER_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
               "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
               "CAP_KILL", "CAP_AUDIT_WRITE"]
CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
CAP_CHOWN, CAP_NET_RAW = 0, 13
# the kernel's initial namespaces have fixed inode numbers (include/linux/proc_ns.h): the VM's own
INIT_NS = {"ipc": "ipc:[4026531839]", "uts": "uts:[4026531838]", "pid": "pid:[4026531836]"}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A configuration with ``[factory] enable_template`` whose template is made once for the module."""
    where = tmp_path_factory.mktemp("spec-fields")
    shm = Path("/dev/shm") / f"kata-fields-{uuid.uuid4().hex[:8]}"
    shm.mkdir()
    cfg = config_with(where, factory_enable_template=True, factory_template_path=str(shm / "template"))
    maker = Kata(where / "root", where / "factory.log", cfg)
    try:
        maker.ok("factory", "init")
        yield cfg
    finally:
        maker("factory", "destroy")
        shutil.rmtree(shm, ignore_errors=True)


RunBoth = Callable[..., tuple[Result, Result]]


@pytest.fixture
def run(kata: Kata, cid: str, tmp_path: Path, template: Path, request: pytest.FixtureRequest) -> RunBoth:
    """``run(script, change, writable=False)``: a bundle running ``sh -c script`` whose spec ``change``
    edits, run by kata-runtime (from the template) and then by runc; both results."""
    kata.config = template
    counter = iter(range(100))

    def both(script: str, change: Callable[[Spec], None] = lambda s: None,
             writable: bool = False) -> tuple[Result, Result]:
        n = next(counter)
        name = cid if n == 0 else f"{cid}-{n}"
        if n:
            request.node.extra_ids = [*getattr(request.node, "extra_ids", []), name]
        b = make_bundle(tmp_path / f"bundle{n}", ["sh", "-c", script])
        spec = json.loads((b / "config.json").read_text())
        spec["root"]["readonly"] = not writable
        change(spec)
        (b / "config.json").write_text(json.dumps(spec))
        ours = kata("run", "--bundle", str(b), name, timeout=120)
        p = subprocess.run([RUNC, "--root", str(tmp_path / "runc"), "run", "--bundle", str(b), f"r{cid}-{n}"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        theirs = Result(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))
        return ours, theirs

    return both


def same(pair: tuple[Result, Result]) -> list[str]:
    """Both runtimes ran it and printed the same lines: those lines."""
    ours, theirs = pair
    assert ours.rc == 0, f"kata-runtime run failed ({ours.rc}): {ours.err}"
    assert theirs.rc == 0, f"runc run failed ({theirs.rc}): {theirs.err}"
    assert ours.out == theirs.out, (ours.out, theirs.out)
    return ours.out.splitlines()


def process(**fields: Any) -> Callable[[Spec], None]:
    return lambda spec: spec["process"].update(fields)


def linux(**fields: Any) -> Callable[[Spec], None]:
    return lambda spec: spec["linux"].update(fields)


def status(lines: list[str], key: str) -> str:
    """The value of ``key:`` in the lines of /proc/self/status."""
    return next(line.split(":", 1)[1].strip() for line in lines if line.startswith(key + ":"))


# -- process --------------------------------------------------------------------------------------

def test_user_uid_gid_and_additional_gids(run: RunBoth) -> None:
    lines = same(run("id -u; id -g; grep Groups /proc/self/status",
                     process(user={"uid": 1000, "gid": 1001, "additionalGids": [2000, 3000]})))
    assert lines[:2] == ["1000", "1001"]
    assert status(lines, "Groups").split() == ["2000", "3000"]


def test_user_umask(run: RunBoth) -> None:
    assert same(run("umask; touch /tmp/f; stat -c %a /tmp/f", process(user={"uid": 0, "gid": 0, "umask": 0o027}),
                    writable=True)) == ["0027", "640"]


def test_cwd(run: RunBoth) -> None:
    assert same(run("pwd", process(cwd="/etc"))) == ["/etc"]


def test_env(run: RunBoth) -> None:
    env = ["PATH=/bin", "GREETING=hello world", "EMPTY=", "TERM=dumb"]
    assert same(run('echo "[$GREETING]" "[$EMPTY]" "$TERM"; env | sort', process(env=env))) == \
        ["[hello world] [] dumb", "EMPTY=", "GREETING=hello world", "HOME=/", "PATH=/bin", "PWD=/", "SHLVL=1",
         "TERM=dumb"]  # HOME: both runtimes add it when the env has none


def test_rlimit_nofile_soft_and_hard(run: RunBoth) -> None:
    limits = [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}]
    assert same(run("ulimit -Sn; ulimit -Hn", process(rlimits=limits))) == ["100", "200"]


def _caps_without(cap: str) -> Callable[[Spec], None]:
    kept = [c for c in DOCKER_CAPS if c != cap]
    return process(capabilities={s: kept for s in CAP_SETS})


def test_a_capability_dropped_from_all_sets_is_missing(run: RunBoth) -> None:
    lines = same(run("grep ^Cap /proc/self/status", _caps_without("CAP_CHOWN")))
    for key in ("CapEff", "CapBnd", "CapPrm", "CapInh", "CapAmb"):
        mask = int(status(lines, key), 16)
        assert not mask >> CAP_CHOWN & 1, (key, lines)
        assert mask >> CAP_NET_RAW & 1, (key, lines)  # the others are there


def test_chown_fails_without_cap_chown(run: RunBoth) -> None:
    script = "touch /tmp/f; chown 1:1 /tmp/f; echo rc=$?; stat -c %u /tmp/f"
    ours, theirs = run(script, _caps_without("CAP_CHOWN"), writable=True)
    assert same((ours, theirs)) == ["rc=1", "0"]
    assert "chown: /tmp/f: Operation not permitted" in ours.err, ours.err
    with_it = run(script, _caps_without("CAP_MKNOD"), writable=True)  # the control: chown works with it
    assert same(with_it) == ["rc=0", "1"]


def test_ping_fails_without_cap_net_raw(run: RunBoth) -> None:
    ours, theirs = run("ping -c 1 -W 1 127.0.0.1; echo rc=$?", _caps_without("CAP_NET_RAW"))
    assert same((ours, theirs))[-1] == "rc=1"
    assert "ping: permission denied (are you root?)" in ours.err, ours.err
    with_it = run("ping -c 1 -W 1 127.0.0.1 >/dev/null; echo rc=$?", _caps_without("CAP_MKNOD"))  # the control
    assert same(with_it) == ["rc=0"]


@pytest.mark.parametrize("value", [True, False])
def test_no_new_privileges(run: RunBoth, value: bool) -> None:
    lines = same(run("grep NoNewPrivs /proc/self/status", process(noNewPrivileges=value)))
    assert status(lines, "NoNewPrivs") == str(int(value))


def test_oom_score_adj(run: RunBoth) -> None:
    assert same(run("cat /proc/self/oom_score_adj", process(oomScoreAdj=500))) == ["500"]


# -- uts ------------------------------------------------------------------------------------------

def test_hostname_and_domainname(run: RunBoth) -> None:
    def names(spec: Spec) -> None:
        spec.update(hostname="fields-host", domainname="fields.example")

    ours, theirs = run("hostname; cat /proc/sys/kernel/domainname", names)
    assert ours.rc == 0, ours.err
    assert ours.out.splitlines() == ["fields-host", "fields.example"]
    # runc 1.1.5 sets the hostname only (domainname came in runc 1.2): its domain is the kernel's "(none)"
    assert theirs.out.splitlines() == ["fields-host", "(none)"], theirs


# -- mounts ---------------------------------------------------------------------------------------

def _mounts(*mounts: Spec) -> Callable[[Spec], None]:
    return lambda spec: spec["mounts"].extend(mounts)


def test_tmpfs_mount_with_size_and_mode(run: RunBoth) -> None:
    tmpfs = {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "size=1m", "mode=1770"]}
    ours, theirs = run("df -k /scratch | tail -1 | awk '{print $2}'; echo x > /scratch/f && cat /scratch/f; "
                       "stat -c %a /scratch", _mounts(tmpfs))
    assert ours.rc == 0, ours.err
    assert ours.out.splitlines() == ["1024", "x", "1770"]
    # runc 1.1 gives the tmpfs the mode of the directory it made for it (0755, sticky bit kept): not the spec's
    assert theirs.out.splitlines() == ["1024", "x", "1755"], theirs


def test_read_only_bind_mount(run: RunBoth, tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "data").write_text("from the host\n")
    bind = {"destination": "/ro", "type": "bind", "source": str(tmp_path / "ro"), "options": ["rbind", "ro"]}
    ours, theirs = run("cat /ro/data; echo x > /ro/new; echo rc=$?", _mounts(bind))
    assert same((ours, theirs)) == ["from the host", "rc=1"]
    assert "Read-only file system" in ours.err, ours.err
    assert sorted(p.name for p in (tmp_path / "ro").iterdir()) == ["data"]


def test_a_later_mount_covers_an_earlier_one(run: RunBoth, tmp_path: Path) -> None:
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "which").write_text(name + "\n")
    binds = [{"destination": "/m", "type": "bind", "source": str(tmp_path / n), "options": ["rbind"]}
             for n in ("first", "second")]
    nested = {"destination": "/m/inner", "type": "tmpfs", "source": "tmpfs", "options": ["size=64k"]}
    assert same(run("cat /m/which; stat -f -c %T /m/inner", _mounts(*binds, nested))) == ["second", "tmpfs"]


# -- masked and read-only paths -------------------------------------------------------------------

def test_masked_file_reads_empty_and_masked_dir_is_empty(run: RunBoth, tmp_path: Path) -> None:
    ours, theirs = run("echo [$(cat /etc/secret)]; ls -A /etc/hidden | wc -l; ls -A /etc/visible | wc -l",
                       _with_files(tmp_path, linux(maskedPaths=["/etc/secret", "/etc/hidden"])))
    assert same((ours, theirs)) == ["[]", "0", "1"]


def test_read_only_path_refuses_writes(run: RunBoth, tmp_path: Path) -> None:
    ours, theirs = run("echo x > /etc/hidden/new; echo rc=$?; echo y > /etc/visible/new && cat /etc/visible/new",
                       _with_files(tmp_path, linux(readonlyPaths=["/etc/hidden"])), writable=True)
    assert same((ours, theirs)) == ["rc=1", "y"]
    assert "Read-only file system" in ours.err, ours.err


def _with_files(tmp_path: Path, change: Callable[[Spec], None]) -> Callable[[Spec], None]:
    """``change``, after putting /etc/secret, /etc/hidden/file and /etc/visible/file in the rootfs of
    the bundle being made (the newest under ``tmp_path``)."""
    def edit(spec: Spec) -> None:
        rootfs = max(tmp_path.glob("bundle*/rootfs"), key=lambda p: p.stat().st_mtime_ns)
        (rootfs / "etc" / "secret").write_text("secret\n")
        for d in ("hidden", "visible"):
            (rootfs / "etc" / d).mkdir(exist_ok=True)
            (rootfs / "etc" / d / "file").write_text(d + "\n")
        change(spec)

    return edit


# -- sysctl ---------------------------------------------------------------------------------------

def test_a_net_sysctl(run: RunBoth) -> None:
    # the container's network stack is the VM's in ours, a new namespace in runc's: the value is what counts
    assert same(run("cat /proc/sys/net/ipv4/ip_unprivileged_port_start",
                    linux(sysctl={"net.ipv4.ip_unprivileged_port_start": "99"}))) == ["99"]


def test_an_ipc_sysctl_in_an_ipc_namespace(run: RunBoth) -> None:
    assert same(run("cat /proc/sys/kernel/msgmax", linux(sysctl={"kernel.msgmax": "4096"}))) == ["4096"]


# -- seccomp --------------------------------------------------------------------------------------

def test_seccomp_errno_blocks_mkdir_and_allows_the_rest(run: RunBoth) -> None:
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
    ours, theirs = run("mkdir /tmp/d; echo rc=$?; echo x > /tmp/f && cat /tmp/f", linux(seccomp=profile),
                       writable=True)
    assert same((ours, theirs)) == ["rc=1", "x"]
    assert "mkdir: can't create directory '/tmp/d': Permission denied" in ours.err, ours.err


# -- devices --------------------------------------------------------------------------------------

def _device(path: str, minor: int, allow: bool = False) -> Callable[[Spec], None]:
    """A char device 1:``minor`` at ``path`` (mode 0620); with ``allow``, a rule allowing it after
    runc's spec's first rule, which denies all devices."""
    def edit(spec: Spec) -> None:
        spec["linux"]["devices"] = [{"path": path, "type": "c", "major": 1, "minor": minor, "fileMode": 0o620,
                                     "uid": 0, "gid": 0}]
        if allow:
            spec["linux"]["resources"]["devices"].append({"allow": True, "type": "c", "major": 1, "minor": minor,
                                                          "access": "rwm"})
    return edit


def test_a_device_of_the_spec_exists_with_its_numbers_and_mode(run: RunBoth) -> None:
    assert same(run("stat -c '%F %t:%T %a' /dev/mynull; echo x > /dev/mynull && echo written",
                    _device("/dev/mynull", 3))) == ["character special file 1:3 620", "written"]


def test_a_device_rule_denying_it_makes_it_unusable(run: RunBoth) -> None:
    # c 1:3 is on the list of devices runc (and the guest's crun) always allow after the spec's rules, so no
    # rule can deny /dev/null: /dev/kmsg (c 1:11) is not on it, and runc's spec denies all devices first
    script = "ls /dev/mykmsg; echo kata-runtime test_spec_fields > /dev/mykmsg; echo rc=$?"
    ours, theirs = run(script, _device("/dev/mykmsg", 11))
    assert same((ours, theirs)) == ["/dev/mykmsg", "rc=1"]
    assert "Operation not permitted" in ours.err, ours.err
    allowed = run(script, _device("/dev/mykmsg", 11, allow=True))  # the control: allowed, it works
    assert same(allowed) == ["/dev/mykmsg", "rc=0"]


# -- namespaces and root --------------------------------------------------------------------------

def test_pid_namespace_makes_the_workload_pid_1(run: RunBoth) -> None:
    # ls replaces the shell: pid 1 is then the only process the container sees
    assert same(run("echo $$; exec ls -d /proc/[0-9]*")) == ["1", "/proc/1"]


def test_ipc_uts_and_pid_namespaces_are_not_the_vms(run: RunBoth) -> None:
    ours, theirs = run("for n in ipc uts pid; do readlink /proc/self/ns/$n; done")
    assert ours.rc == 0, ours.err
    assert not set(ours.out.split()) & set(INIT_NS.values()), ours.out
    assert theirs.rc == 0 and not set(theirs.out.split()) & set(INIT_NS.values()), theirs.out


def test_without_ipc_and_uts_entries_the_container_has_the_vms(run: RunBoth) -> None:
    """The control of the test above: the inode numbers seen are the initial namespaces'."""
    def shared(spec: Spec) -> None:
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] not in ("ipc", "uts")]
        del spec["hostname"]  # a hostname needs a uts namespace of the container's own

    ours, _ = run("for n in ipc uts; do readlink /proc/self/ns/$n; done", shared)
    assert ours.rc == 0, ours.err
    assert ours.out.split() == [INIT_NS["ipc"], INIT_NS["uts"]]


def test_mount_namespace_hides_the_vms_mounts(run: RunBoth) -> None:
    # the VM mounts the shared directory at /run/kata-containers; the container's root is its rootfs
    ours, theirs = run("awk '{print $5}' /proc/self/mountinfo | grep -c kata-containers; "
                       "awk '$5 == \"/\"' /proc/self/mountinfo | wc -l")
    assert ours.out.split() == ["0", "1"], (ours.out, ours.err)
    assert theirs.out.split() == ["0", "1"], (theirs.out, theirs.err)


@pytest.mark.parametrize("readonly", [True, False])
def test_root_readonly(run: RunBoth, readonly: bool) -> None:
    ours, theirs = run("touch /written; echo rc=$?", writable=not readonly)
    assert same((ours, theirs)) == [f"rc={int(readonly)}"]
    assert ("Read-only file system" in ours.err) == readonly, ours.err
