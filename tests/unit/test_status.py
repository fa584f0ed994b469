"""The Status predicates: which operation is legal in which state (runc's rules)."""

from __future__ import annotations

import pytest

from kata_runtime.oci.state import ContainerState, Status

LEGAL = {
    "can_start": {Status.CREATED},
    "can_kill": {Status.CREATED, Status.RUNNING, Status.PAUSED},
    "can_delete": {Status.CREATED, Status.STOPPED},
    "can_exec": {Status.CREATED, Status.RUNNING},
    "can_pause": {Status.RUNNING, Status.CREATED},
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


def test_created_time_is_gos_rfc3339nano() -> None:
    from kata_runtime.container import rfc3339_nano

    assert rfc3339_nano(1_764_385_200_123_456_789) == "2025-11-29T03:00:00.123456789Z"
    assert rfc3339_nano(1_764_385_200_120_000_000) == "2025-11-29T03:00:00.12Z"
    assert rfc3339_nano(1_764_385_200_000_000_000) == "2025-11-29T03:00:00Z"
