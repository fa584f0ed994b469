"""The Status predicates: which operation is legal in which state (runc's rules)."""

from __future__ import annotations

import pytest

from kata_runtime.oci.state import ContainerState, Status

LEGAL = {
    "can_start": {Status.CREATED},
    "can_kill": {Status.CREATED, Status.RUNNING, Status.PAUSED},
    "can_delete": {Status.CREATED, Status.STOPPED},
    "can_exec": {Status.RUNNING},
    "can_pause": {Status.RUNNING},
    "can_resume": {Status.PAUSED},
}


@pytest.mark.parametrize("predicate", sorted(LEGAL))
@pytest.mark.parametrize("status", list(Status))
def test_predicates(predicate: str, status: Status) -> None:
    assert getattr(status, predicate)() is (status in LEGAL[predicate])


def test_nothing_is_legal_while_creating() -> None:
    assert not any(getattr(Status.CREATING, p)() for p in LEGAL)


def test_status_strings_are_runcs() -> None:
    assert [str(s) for s in Status] == ["creating", "created", "running", "paused", "stopped"]


def test_stopped_state_reports_pid_0() -> None:
    st = ContainerState(id="c", pid=99, status=Status.STOPPED, bundle="/b", rootfs="/b/r", created="t")
    assert st.to_runc_json()["pid"] == 0
    st.status = Status.RUNNING
    assert st.to_runc_json()["pid"] == 99
    assert "annotations" not in st.to_runc_json()
