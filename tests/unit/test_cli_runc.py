"""The rest of runc's command line, without a VM: ps options for the guest's busybox, the engine's
paths checked before anything starts, --preserve-fds, run --keep, --debug, --log, -h on every
command, --version. Where runc can answer on the host alone, it is asked too."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import click
import pytest

from kata_runtime.cli.ps import BUSYBOX_COLUMNS, guest_ps
from kata_runtime.errors import InvalidArgument
from kata_runtime.hostpaths import check_console_socket, check_pid_file, write_pid_file

RUNC = shutil.which("runc")
BUSYBOX = shutil.which("busybox")

# -- ps -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("procps", "busybox"), [
    ([], ["-o", "user,pid,ppid,tty,args"]),  # runc's default is -ef
    (["-ef"], ["-o", "user,pid,ppid,tty,args"]),
    (["-e", "-x"], ["-o", "pid,tty,stat,args"]),
    (["--", "-e", "-x"], ["-o", "pid,tty,stat,args"]),
    (["aux"], ["-o", "user,pid,vsz,rss,tty,stat,args"]),
    (["-e"], ["-o", "pid,tty,comm"]),
    (["-A", "-l"], ["-o", "stat,user,pid,ppid,nice,vsz,tty,comm"]),
    (["-ej"], ["-o", "pid,pgid,sid,tty,comm"]),
    (["-eF"], ["-o", "user,pid,ppid,vsz,rss,tty,args"]),
    (["-o", "pid,cmd"], ["-o", "pid,args"]),
    (["-eo", "pid,tname,ni"], ["-o", "pid,tty,nice"]),
    (["-opid", "-o", "args=CMD"], ["-o", "pid,args=CMD"]),
    (["--format", "pid user"], ["-o", "pid,user"]),
    (["--format=pid,s"], ["-o", "pid,stat"]),
    (["-O", "vsz"], ["-o", "pid,vsz,stat,tty,args"]),
    (["-eT"], ["-T", "-o", "pid,tty,comm"]),
])
def test_procps_options_become_busybox_columns(procps: list[str], busybox: list[str]) -> None:
    assert guest_ps(procps, "c1").argv == busybox


@pytest.mark.parametrize(("procps", "words"), [
    (["-p", "1"], "selecting processes by pid"),
    (["-u", "root"], "selecting processes by user"),
    (["-o", "pid,%cpu"], "'%cpu' is not known"),
    (["-o", "pid,time"], "'time' is not known"),
    (["-o", "args"], "couldn't find PID field"),
    (["-o", "pid=X"], "couldn't find PID field"),
    (["-o", "pid=", "-o", "args="], "couldn't find PID field"),  # busybox prints no header then
    (["--sort", "pid"], "--sort is not supported"),
    (["-N"], "-N (in -N) is not supported"),
    (["-o"], "needs a list of columns"),
])
def test_procps_options_busybox_cannot_follow_are_refused(procps: list[str], words: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        guest_ps(procps, "c1")
    assert str(e.value).startswith("ps c1: ") and words in str(e.value)


@pytest.mark.skipif(BUSYBOX is None, reason="no busybox on the host")
@pytest.mark.parametrize("procps", [[], ["-e", "-x"], ["aux"], ["-l"], ["-j"], ["-F"], ["-o", "pid,args"],
                                    ["-o", "args,pid"], ["-o", "pid=PID", "-o", "user=U"],
                                    ["-o", "pid,args="],
                                    ["-o", "pid,user,group,comm,ppid,pgid,nice,rgroup,ruser,tty,vsz,sid,stat,rss"]])
def test_the_empty_table_header_is_busyboxs(procps: list[str]) -> None:
    # the guest's busybox is the same Debian busybox-static: its header is what an empty table shows
    guest = guest_ps(procps, "c1")
    out = subprocess.run([str(BUSYBOX), "ps", *guest.argv], capture_output=True, text=True, check=True).stdout
    first = out.splitlines(keepends=True)[0]
    assert guest.header() == first


def test_busybox_knows_every_column_we_send() -> None:
    if BUSYBOX is None:
        pytest.skip("no busybox on the host")
    r = subprocess.run([BUSYBOX, "ps", "-o", "nosuch"], capture_output=True, text=True)
    supported = r.stderr.rsplit("supported arguments:", 1)[-1].strip().split(",")
    assert set(BUSYBOX_COLUMNS) <= set(supported)


def test_ps_of_a_stopped_container_is_an_empty_table_or_null(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from kata_runtime import container

    calls: list[tuple[str, list[str]]] = []

    def fake_ps(opts, cid, fmt, args):  # type: ignore[no-untyped-def]
        calls.append((fmt, args))
        return None  # stopped

    monkeypatch.setattr(container, "ps", fake_ps)
    r = run_cli("ps", "c1")
    assert (r.code, r.stdout, r.stderr) == (0, "USER     PID   PPID  TT     COMMAND\n", "")
    assert run_cli("ps", "c1", "-e", "-x").stdout == "PID   TT     STAT COMMAND\n"
    assert run_cli("ps", "-f", "json", "c1").stdout == "null\n"  # runc: json of no pids
    assert calls == [("table", ["-o", "user,pid,ppid,tty,args"]), ("table", ["-o", "pid,tty,stat,args"]),
                     ("json", [])]
    r = run_cli("ps", "c1", "-p", "1")
    assert r.code == 1 and r.stderr.startswith("kata-runtime: ps c1: ps option -p: selecting processes")


# -- the engine's paths ---------------------------------------------------------------------------------


def _unix_socket(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(1)
    return s


def test_pid_file_checks(tmp_path: Path) -> None:
    check_pid_file(tmp_path / "p", "c1", "create")  # a new file
    (tmp_path / "file").write_text("")
    check_pid_file(tmp_path / "file", "c1", "create")  # replaced
    os.mkfifo(tmp_path / "fifo")
    check_pid_file(tmp_path / "fifo", "c1", "create")  # replaced, as by runc's rename
    os.symlink(tmp_path, tmp_path / "link-to-dir")
    check_pid_file(tmp_path / "link-to-dir", "c1", "create")  # the link is replaced, as by runc
    cases = [(tmp_path / "nodir" / "p", f"directory {tmp_path / 'nodir'}: no such file or directory"),
             (tmp_path / "file" / "p", f"{tmp_path / 'file'} is not a directory"),
             (tmp_path, "is a directory")]
    for path, why in cases:
        with pytest.raises(InvalidArgument) as e:
            check_pid_file(path, "c1", "create")
        assert str(e.value) == f"create c1: --pid-file {path}: {why}"


def test_pid_file_is_written_as_runc_writes_it(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p")
    write_pid_file(tmp_path / "p", 42, "c1", "create")
    assert (tmp_path / "p").read_text() == "42" and sorted(os.listdir(tmp_path)) == ["p"]
    with pytest.raises(InvalidArgument, match="exec c1: --pid-file"):
        write_pid_file(tmp_path / "nodir" / "p", 42, "c1", "exec")


def test_console_socket_checks(tmp_path: Path) -> None:
    with _unix_socket(tmp_path / "s"):
        check_console_socket(tmp_path / "s", "c1", "create")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "file").write_text("")
    cases = [(tmp_path / "nosuch", "connect: no such file or directory"),
             (tmp_path / "nodir" / "s", "connect: no such file or directory"),
             (tmp_path, "connect: connection refused (a directory, not a unix socket)"),
             (tmp_path / "fifo", "connect: connection refused (a FIFO, not a unix socket)"),
             (tmp_path / "file", "connect: connection refused (a regular file, not a unix socket)")]
    for path, why in cases:
        with pytest.raises(InvalidArgument) as e:
            check_console_socket(path, "c1", "exec")
        assert str(e.value) == f"exec c1: --console-socket {path}: {why}"


# -- --preserve-fds, run --keep ---------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["create", "--preserve-fds", "1", "c1"], 1, "create c1: --preserve-fds 1: file descriptors cannot be passed "
     "into the VM (only stdin, stdout and stderr reach the process)"),
    (["run", "--preserve-fds=2", "c1"], 1, "run c1: --preserve-fds 2: file descriptors cannot be passed into the "
     "VM (only stdin, stdout and stderr reach the process)"),
    (["exec", "--preserve-fds", "3", "c1", "true"], 255, "exec c1: --preserve-fds 3: file descriptors cannot be "
     "passed into the VM (only stdin, stdout and stderr reach the process)"),
    (["exec", "--preserve-fds", "-1", "c1", "true"], 255, 'exec c1: invalid value "-1" for flag -preserve-fds'),
])
def test_preserve_fds_is_refused_not_dropped(run_cli, fake_lib, argv: list[str], code: int, message: str) -> None:
    fake_lib.results["container_process"] = lambda opts, cid: {"args": ["sh"], "cwd": "/"}
    r = run_cli(*argv)
    assert (r.code, r.stderr) == (code, f"kata-runtime: {message}\n")
    assert [c[0] for c in fake_lib.calls if c[0] != "container_process"] == []


def test_preserve_fds_0_is_fine(run_cli, fake_lib) -> None:
    assert run_cli("create", "--preserve-fds", "0", "c1").code == 0


def test_run_keep_is_passed_on(run_cli, fake_lib) -> None:
    fake_lib.results["run"] = 3
    assert run_cli("run", "--keep", "c1").code == 3
    assert fake_lib.last("run")[1]["keep"] is True
    assert run_cli("run", "c1").code == 3
    assert fake_lib.last("run")[1]["keep"] is False


# -- --debug and --log ----------------------------------------------------------------------------------

LINE_TEXT = re.compile(r'time="[^"]+" level=(debug|error) msg=.*')


def test_debug_lines_go_to_stderr_without_log(run_cli, fake_lib) -> None:
    fake_lib.results["list_containers"] = []
    r = run_cli("--debug", "list", "-q")
    lines = r.stderr.splitlines()
    assert r.code == 0 and r.stdout == "" and lines, r.stderr
    assert all(LINE_TEXT.fullmatch(x) for x in lines), lines
    assert "level=debug" in lines[0] and "--debug list -q" in lines[0]
    assert lines[-1].endswith('msg="exit status 0" source=kata_runtime.cli')
    assert run_cli("list", "-q").stderr == ""  # without --debug: nothing


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_debug_lines_go_to_the_log_in_its_format(run_cli, fake_lib, tmp_path: Path, fmt: str) -> None:
    fake_lib.results["state"] = InvalidArgument("container does not exist", container="c1", step="state")
    log = tmp_path / "log"
    r = run_cli("--debug", "--log", str(log), "--log-format", fmt, "state", "c1")
    assert (r.code, r.stderr) == (1, "kata-runtime: state c1: container does not exist\n")  # only the error
    lines = log.read_text().splitlines()
    if fmt == "json":
        entries = [json.loads(x) for x in lines]
        assert [e["level"] for e in entries] == ["debug", "error", "debug"]
        assert "state c1" in entries[0]["msg"] and entries[2]["msg"] == "exit status 1"
        assert all(set(e) >= {"level", "msg", "time"} for e in entries)
    else:
        assert [LINE_TEXT.fullmatch(x).group(1) for x in lines] == ["debug", "error", "debug"]  # type: ignore[union-attr]


def _runc_verdict(*args: str) -> int:
    assert RUNC is not None
    return subprocess.run([RUNC, *args], capture_output=True, timeout=20).returncode


@pytest.mark.skipif(RUNC is None, reason="runc is not installed")
def test_log_paths_have_runcs_verdict(run_cli, fake_lib, tmp_path: Path) -> None:
    fake_lib.results["list_containers"] = []
    root = str(tmp_path / "root")
    (tmp_path / "file").write_text("")
    for path, why in ((tmp_path / "nodir" / "log", "no such file or directory"),
                      (tmp_path, "is a directory"), (tmp_path / "file" / "log", "not a directory")):
        r = run_cli("--log", str(path), "list")
        assert (r.code, r.stderr) == (1, f"kata-runtime: open {path}: {why}\n")
        assert _runc_verdict("--root", root, "--log", str(path), "list") == 1
    assert run_cli("--log", str(tmp_path / "new.log"), "list").code == 0
    assert _runc_verdict("--root", root, "--log", str(tmp_path / "new.log"), "list") == 0


def test_log_fifo_with_a_reader_works_and_without_one_is_refused(run_cli, fake_lib, tmp_path: Path) -> None:
    fake_lib.results["state"] = InvalidArgument("container does not exist", container="c1", step="state")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = run_cli("--log", str(fifo), "--log-format", "json", "state", "c1")  # runc would block forever
    assert (r.code, r.stderr) == (1, f"kata-runtime: open {fifo}: a fifo that no process reads\n")
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        r = run_cli("--log", str(fifo), "--log-format", "json", "state", "c1")
        got = os.read(reader, 65536)  # what was written is in the pipe
    finally:
        os.close(reader)
    assert r.code == 1 and json.loads(got)["msg"] == "state c1: container does not exist"


# -- help and version -----------------------------------------------------------------------------------


def _commands() -> list[list[str]]:
    from kata_runtime.cli.main import COMMANDS, cli

    ctx = click.Context(cli)
    out: list[list[str]] = []
    for name in [*COMMANDS, "help"]:
        cmd = cli.get_command(ctx, name)
        assert cmd is not None
        out.append([name])
        if isinstance(cmd, click.Group):
            out += [[name, sub] for sub in cmd.list_commands(ctx)]
    return out


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_on_every_command(run_cli, fake_lib, flag: str) -> None:
    commands = _commands()
    assert len(commands) > 20
    for argv in commands:
        r = run_cli(*argv, flag)
        assert (r.code, r.stderr) == (0, ""), argv
        assert r.stdout.startswith(f"Usage: kata-runtime {' '.join(argv)} "), (argv, r.stdout[:80])
    assert fake_lib.calls == []


@pytest.mark.skipif(RUNC is None, reason="runc is not installed")
def test_version_has_runcs_shape(run_cli) -> None:
    assert RUNC is not None
    runc = subprocess.run([RUNC, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()
    ours = run_cli("--version").stdout.splitlines()
    assert re.fullmatch(r"runc version \S+", runc[0]) and re.fullmatch(r"kata-runtime version \S+", ours[0])
    assert [x.split(":")[0] for x in ours[1:3]] == [x.split(":")[0] for x in runc[1:3]] == ["commit", "spec"]
    assert ours[2] == "spec: 1.0.2-dev" and runc[2].startswith("spec: 1.")
    assert ours[3].startswith("python: ")  # where runc names its go
    assert run_cli("version").stdout.splitlines() == ours
