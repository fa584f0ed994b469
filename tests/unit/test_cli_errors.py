"""The CLI's one error path and its runc-style argument parsing, with the library faked."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kata_runtime.errors import ContainerNotFound, HypervisorError, InvalidState
from kata_runtime.oci.state import ContainerState, Status

TIME_RE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)"


def _state(cid: str = "c1") -> ContainerState:
    return ContainerState(id=cid, pid=42, status=Status.RUNNING, bundle="/b", rootfs="/b/rootfs",
                          created="2026-11-29T03:09:05.573005217Z")


def test_kata_error_is_one_line_and_a_json_log_line(run_cli, fake_lib, tmp_path: Path) -> None:
    fake_lib.results["state"] = ContainerNotFound("container does not exist", container="c1", step="state")
    log = tmp_path / "log.json"
    log.write_text('{"level":"info","msg":"earlier","time":"x"}\n')
    r = run_cli("--log", str(log), "--log-format", "json", "state", "c1")
    assert r.code == 1
    assert r.stdout == ""
    assert r.stderr == "kata-runtime: state c1: container does not exist\n"
    lines = log.read_text().splitlines()
    assert len(lines) == 2  # appended, not truncated
    assert re.fullmatch(r'\{"level":"error","msg":"state c1: container does not exist","time":"' + TIME_RE
                        + r'"\}', lines[1]), lines[1]


def test_kata_error_text_log_line(run_cli, fake_lib, tmp_path: Path) -> None:
    fake_lib.results["start"] = InvalidState("cannot start a container that has stopped", container="c1")
    log = tmp_path / "log.txt"
    r = run_cli("--log", str(log), "start", "c1")
    assert (r.code, r.stderr) == (1, "kata-runtime: c1: cannot start a container that has stopped\n")
    expected = r'time="' + TIME_RE + r'" level=error msg="c1: cannot start a container that has stopped"\n'
    assert re.fullmatch(expected, log.read_text())


def test_without_log_nothing_but_the_line(run_cli, fake_lib) -> None:
    fake_lib.results["delete"] = HypervisorError("qemu exited: bad", container="c1", step="delete")
    r = run_cli("delete", "c1")
    assert (r.code, r.stdout, r.stderr) == (1, "", "kata-runtime: delete c1: qemu exited: bad\n")


def test_unexpected_exception_is_one_line_without_traceback(run_cli, fake_lib, tmp_path: Path) -> None:
    fake_lib.results["kill"] = ZeroDivisionError("division by zero")
    log = tmp_path / "log"
    r = run_cli("--log", str(log), "--log-format", "json", "kill", "c1", "9")
    assert r.code == 1
    assert r.stderr == "kata-runtime: internal error: ZeroDivisionError: division by zero\n"
    assert "Traceback" not in log.read_text()
    assert [json.loads(x)["level"] for x in log.read_text().splitlines()] == ["error"]


def test_unexpected_exception_traceback_goes_to_the_log_with_debug(run_cli, fake_lib, tmp_path: Path) -> None:
    fake_lib.results["kill"] = ZeroDivisionError("division by zero")
    log = tmp_path / "log"
    r = run_cli("--debug", "--log", str(log), "--log-format", "json", "kill", "c1")
    assert r.stderr == "kata-runtime: internal error: ZeroDivisionError: division by zero\n"
    entries = [json.loads(x) for x in log.read_text().splitlines()]
    assert [e["level"] for e in entries] == ["debug", "debug", "error", "debug"]
    assert "Traceback" in entries[1]["msg"] and "ZeroDivisionError" in entries[1]["msg"]


def test_state_prints_runc_json(run_cli, fake_lib) -> None:
    fake_lib.results["state"] = _state()
    r = run_cli("--root", "/tmp/kr-root", "state", "c1")
    assert r.code == 0
    assert r.stdout.startswith('{\n  "ociVersion": "1.0.2-dev",\n  "id": "c1",\n  "pid": 42,')
    assert r.stdout.endswith('"owner": ""\n}')
    (opts, cid), _ = fake_lib.last("state")
    assert cid == "c1" and opts.root == Path("/tmp/kr-root")


def test_list(run_cli, fake_lib) -> None:
    fake_lib.results["list_containers"] = [_state("a"), _state("b")]
    assert run_cli("list", "-q").stdout == "a\nb\n"
    assert run_cli("list", "--format", "json").stdout.startswith('[{"ociVersion":"1.0.2-dev","id":"a"')
    r = run_cli("list", "-f", "xml")
    assert (r.code, r.stderr) == (1, "kata-runtime: invalid format option\n")
    fake_lib.results["list_containers"] = []
    assert run_cli("list", "-f", "json").stdout == "null\n"


# -- usage errors: one line, exit status 1 (runc's checkArgs messages) ------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    (["state"], '"state" requires exactly 1 argument(s)'),
    (["state", "a", "b"], '"state" requires exactly 1 argument(s)'),
    (["kill"], '"kill" requires a minimum of 1 argument(s)'),
    (["kill", "a", "b", "c"], '"kill" requires a maximum of 2 argument(s)'),
    (["exec"], '"exec" requires a minimum of 1 argument(s)'),
    (["list", "x"], '"list" requires exactly 0 argument(s)'),
    (["state", "--bogus", "x"], "flag provided but not defined: -bogus"),
    (["--bogus", "state", "x"], "flag provided but not defined: -bogus"),
    (["list", "--format"], "flag needs an argument: -format"),
    (["--log-format", "xml", "state", "x"], "invalid log-format: xml"),
])
def test_usage_errors(run_cli, fake_lib, argv: list[str], message: str) -> None:
    r = run_cli(*argv)
    assert (r.code, r.stdout, r.stderr) == (1, "", f"kata-runtime: {message}\n")
    assert fake_lib.calls == []


def test_unknown_command_exits_3(run_cli) -> None:
    r = run_cli("nosuchcmd")
    assert (r.code, r.stderr) == (3, "kata-runtime: No help topic for 'nosuchcmd'\n")


def test_bad_id_is_refused_before_the_library(run_cli, fake_lib) -> None:
    r = run_cli("state", "../etc")
    assert (r.code, r.stderr) == (1, "kata-runtime: invalid container ID format\n")
    assert fake_lib.calls == []


# -- parsing like runc ----------------------------------------------------------------------------

def test_kill_default_signal_and_negative_argument(run_cli, fake_lib) -> None:
    assert run_cli("kill", "c1").code == 0
    assert fake_lib.last("kill") [0][1:] == ("c1", 15)
    assert run_cli("kill", "--all", "c1", "KILL").code == 0
    args, kwargs = fake_lib.last("kill")
    assert args[1:] == ("c1", 9) and kwargs == {"all_processes": True}
    r = run_cli("kill", "c1", "-9")  # runc passes -9 on as the signal, it is not a flag
    assert r.code == 1 and "invalid signal" in r.stderr
    r = run_cli("kill", "c1", "FOO")
    assert r.stderr == 'kata-runtime: unknown signal "FOO"\n'


def test_flags_after_the_id_are_flags(run_cli, fake_lib) -> None:
    assert run_cli("delete", "c1", "-f").code == 0
    assert fake_lib.last("delete")[1] == {"force": True}


def test_delete_force_of_a_missing_container_succeeds(run_cli, fake_lib) -> None:
    fake_lib.results["delete"] = ContainerNotFound("container does not exist", container="x")
    assert run_cli("delete", "--force", "x").code == 0
    assert run_cli("delete", "x").code == 1


def test_create_resolves_paths(run_cli, fake_lib, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = run_cli("create", "--bundle", "b", "--pid-file", "p.pid", "--console-socket", "/s.sock", "--no-pivot",
                "--no-new-keyring", "c1")
    assert r.code == 0, r.stderr
    args, kwargs = fake_lib.last("create")
    assert args[1:] == ("c1", tmp_path / "b")
    assert kwargs == {"pid_file": tmp_path / "p.pid", "console_socket": Path("/s.sock"), "no_pivot": True}
    run_cli("create", "c2")
    args, kwargs = fake_lib.last("create")
    assert args[2] == tmp_path and kwargs["pid_file"] is None and kwargs["console_socket"] is None


def test_run_exits_with_the_workload_status(run_cli, fake_lib) -> None:
    fake_lib.results["run"] = 137
    r = run_cli("run", "-b", "/b", "c1")
    assert r.code == 137
    assert fake_lib.last("run")[1]["detach"] is False
    fake_lib.results["run"] = 0
    assert run_cli("run", "-d", "c1").code == 0
    assert fake_lib.last("run")[1]["detach"] is True


# -- exec ----------------------------------------------------------------------------------------

BASE = {"terminal": True, "user": {"uid": 0, "gid": 0}, "args": ["sh"], "env": ["PATH=/bin"], "cwd": "/",
        "capabilities": {"bounding": ["CAP_KILL"]}}


def test_exec_builds_the_process_like_runc(run_cli, fake_lib) -> None:
    fake_lib.results["container_process"] = lambda opts, cid: json.loads(json.dumps(BASE))
    fake_lib.results["exec_process"] = 7
    r = run_cli("exec", "-e", "A=1", "--env", "B=2", "--cwd", "/tmp", "-u", "1000:100", "-g", "5",
                "c1", "sh", "-c", "exit 7", "--help")
    assert r.code == 7, r.stderr
    args, kwargs = fake_lib.last("exec_process")
    process = args[2]
    assert process["args"] == ["sh", "-c", "exit 7", "--help"]
    assert process["env"] == ["PATH=/bin", "A=1", "B=2"]
    assert process["cwd"] == "/tmp" and process["terminal"] is False
    assert process["user"] == {"uid": 1000, "gid": 100, "additionalGids": [5]}
    assert kwargs == {"detach": False, "pid_file": None, "console_socket": None}


def test_exec_process_file(run_cli, fake_lib, tmp_path: Path) -> None:
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"args": ["true"], "cwd": "/", "terminal": False}))
    fake_lib.results["exec_process"] = 0
    r = run_cli("exec", "--detach", "--pid-file", str(tmp_path / "pid"), "-p", str(p), "c1")
    assert r.code == 0, r.stderr
    args, kwargs = fake_lib.last("exec_process")
    assert args[2] == {"args": ["true"], "cwd": "/", "terminal": False}
    assert kwargs["detach"] is True and kwargs["pid_file"] == tmp_path / "pid"


@pytest.mark.parametrize(("argv", "message"), [
    (["exec", "c1"], "exec c1: process args cannot be empty"),
    (["exec", "-u", "abc", "c1", "id"], "exec c1: parsing abc as int for uid failed: invalid syntax"),
    (["exec", "-u", "1:x", "c1", "id"], "exec c1: parsing x as int for gid failed: invalid syntax"),
    (["exec", "-g", "-1", "c1", "id"], "exec c1: additional-gids must be a positive number -1"),
    (["exec", "--cwd", "rel", "c1", "pwd"], "exec c1: Cwd must be an absolute path"),
    (["exec", "-p", "/nonexistent.json", "c1"], "exec c1: open /nonexistent.json: No such file or directory"),
])
def test_exec_failures_exit_255(run_cli, fake_lib, argv: list[str], message: str) -> None:
    fake_lib.results["container_process"] = lambda opts, cid: json.loads(json.dumps(BASE))
    r = run_cli(*argv)
    assert (r.code, r.stderr) == (255, f"kata-runtime: {message}\n")


def test_exec_library_error_exits_255(run_cli, fake_lib) -> None:
    fake_lib.results["container_process"] = lambda opts, cid: dict(BASE)
    fake_lib.results["exec_process"] = InvalidState("cannot exec in a stopped container", container="c1")
    r = run_cli("exec", "c1", "ls")
    assert (r.code, r.stderr) == (255, "kata-runtime: exec c1: cannot exec in a stopped container\n")


# -- the rest ---------------------------------------------------------------------------------------

def test_version(run_cli) -> None:
    for argv in (["--version"], ["-v"], ["version"]):
        r = run_cli(*argv)
        lines = r.stdout.splitlines()
        assert r.code == 0 and lines[0] == "kata-runtime version 0.1.0"
        assert lines[1].startswith("commit: ") and lines[2] == "spec: 1.0.2-dev"


def test_help_exits_0_and_lists_the_commands(run_cli) -> None:
    r = run_cli("--help")
    assert r.code == 0
    for name in ("create", "start", "state", "kill", "delete", "run", "exec", "list", "spec", "ps", "pause",
                 "resume", "events", "update", "kata-check", "kata-env", "factory"):
        assert f"\n  {name} " in r.stdout
    assert run_cli().code == 0
    assert run_cli("exec", "--help").code == 0


def test_ps_rejects_an_unknown_format(run_cli) -> None:
    r = run_cli("ps", "--format", "xml", "c1")
    assert r.code == 1 and r.stderr == "kata-runtime: invalid format option\n"


def test_update_flags_become_oci_resources() -> None:
    from kata_runtime.cli.update import ram_in_bytes, resources_from_flags

    assert ram_in_bytes("64m") == 64 << 20 and ram_in_bytes("1.5g") == 3 << 29 and ram_in_bytes("4096") == 4096
    assert ram_in_bytes("-1") == -1
    assert resources_from_flags({"memory": "64M", "cpu_quota": "50000", "cpu_period": "100000",
                                 "cpuset_cpus": "0", "pids_limit": 20}) == {
        "memory": {"limit": 64 << 20}, "cpu": {"quota": 50000, "period": 100000, "cpus": "0"},
        "pids": {"limit": 20}}


def test_events_interval_is_a_go_duration() -> None:
    from kata_runtime.cli.events import parse_duration
    from kata_runtime.errors import InvalidArgument

    assert parse_duration("5s") == 5 and parse_duration("500ms") == 0.5 and parse_duration("1m30s") == 90
    with pytest.raises(InvalidArgument):
        parse_duration("5 seconds")
