"""Fixtures of the unit tests: bundles on disk, the CLI run in-process, a fake library."""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def runc_spec() -> dict[str, Any]:
    """The config.json that ``runc spec`` (1.1.5) writes."""
    return json.loads((DATA / "runc-spec.json").read_text())


@pytest.fixture
def make_bundle(tmp_path: Path, runc_spec: dict[str, Any]) -> Callable[..., Path]:
    """make_bundle(spec=None, rootfs=True, name="bundle") -> a bundle dir with that config.json
    (runc's default when None; raw text when a str) and an empty rootfs."""

    def make(spec: dict[str, Any] | str | None = None, rootfs: bool = True, name: str = "bundle") -> Path:
        bundle = tmp_path / name
        bundle.mkdir()
        content = spec if isinstance(spec, str) else json.dumps(spec if spec is not None
                                                                 else copy.deepcopy(runc_spec))
        (bundle / "config.json").write_text(content)
        if rootfs:
            (bundle / "rootfs").mkdir()
        return bundle

    return make


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli() -> Iterator[Callable[..., CliResult]]:
    """run_cli(*argv) runs ``kata-runtime argv...`` in-process (main.run_cli, the same error
    handling as the console script) under click's CliRunner isolation."""
    from kata_runtime.cli.main import run_cli as real_run_cli

    def run(*argv: str, input: str | None = None) -> CliResult:
        runner = CliRunner()
        with runner.isolation(input=input) as (out, err, _mixed):
            code = real_run_cli(list(argv))
            sys.stdout.flush()
            sys.stderr.flush()
        return CliResult(code, out.getvalue().decode(), err.getvalue().decode())

    yield run


class FakeLibrary:
    """Stands in for kata_runtime.container: records calls, returns or raises what a test says."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.results: dict[str, Any] = {}

    def __call__(self, name: str) -> Callable[..., Any]:
        def fake(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            result = self.results.get(name)
            if isinstance(result, BaseException):
                raise result
            if callable(result):
                return result(*args, **kwargs)
            return result

        return fake

    def last(self, name: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        for call_name, args, kwargs in reversed(self.calls):
            if call_name == name:
                return args, kwargs
        raise AssertionError(f"{name} was not called; calls: {[c[0] for c in self.calls]}")


@pytest.fixture
def fake_lib(monkeypatch: pytest.MonkeyPatch) -> FakeLibrary:
    """Replace the library functions the CLI calls with recording fakes."""
    from kata_runtime import container

    lib = FakeLibrary()
    for name in ("create", "start", "state", "kill", "delete", "run", "exec_process",
                 "container_process", "list_containers"):
        monkeypatch.setattr(container, name, lib(name))
    return lib
