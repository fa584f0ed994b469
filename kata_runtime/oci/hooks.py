"""OCI hooks, run on the host as runc runs them: each with the container's state JSON on its
stdin, its ``env`` (the runtime's environment when it has none, as Go's exec does), and its
``timeout`` in seconds.

When each kind runs (the VM shifts a few of them; README "OCI spec in a VM"):

- ``prestart``, ``createRuntime``: during ``create``, once the VM and the container in it exist and
  the container's kata-shim (the pid in the state) lives in the sandbox's network namespace; state
  status ``creating``. A failure fails ``create``, which then undoes everything.
- ``createContainer``: right after them, on the host (runc runs it in the container's mount
  namespace, which is in the guest here); status ``creating``.
- ``startContainer``: during ``start``, before the process starts, on the host; status ``created``.
- ``poststart``: after the process started; status ``running``. Failures are logged, not fatal.
- ``poststop``: after ``delete`` removed the container; status ``stopped``. Failures are logged.
"""

from __future__ import annotations

import json
import logging
import subprocess
from typing import Any

from kata_runtime.errors import KataError

log = logging.getLogger(__name__)

CREATE_KINDS = ("prestart", "createRuntime", "createContainer")
FATAL_KINDS = frozenset({"prestart", "createRuntime", "createContainer", "startContainer"})


class HookError(KataError):
    """A hook failed (exit status, timeout, or could not be started)."""


def _one_line(data: bytes, limit: int = 300) -> str:
    text = " ".join(data.decode(errors="replace").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_hook(kind: str, index: int, hook: dict[str, Any], state: dict[str, Any], cid: str, step: str) -> None:
    """Run one hook; raise :class:`HookError` (runc's wording) when it fails."""
    path = str(hook.get("path", ""))
    args = [str(a) for a in hook.get("args") or [path]]
    env = None
    if "env" in hook and hook["env"] is not None:
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in hook["env"])
    timeout = hook.get("timeout")
    what = f"error running {kind} hook #{index} ({path})"
    try:
        stdin = json.dumps(state, separators=(",", ":")).encode()  # as Go marshals it
        proc = subprocess.run(args, executable=path, input=stdin, capture_output=True, env=env,
                              timeout=timeout if timeout else None, cwd=state.get("bundle") or "/", close_fds=True)
    except subprocess.TimeoutExpired:
        raise HookError(f"{what}: timeout after {timeout} seconds", container=cid, step=step) from None
    except OSError as e:
        raise HookError(f"{what}: {e.strerror or e}", container=cid, step=step) from None
    if proc.returncode != 0:
        status = (f"exit status {proc.returncode}" if proc.returncode > 0
                  else f"signal: {-proc.returncode}")
        detail = "".join(f", {name}: {_one_line(data)}" for name, data in (("stdout", proc.stdout),
                                                                          ("stderr", proc.stderr)) if data.strip())
        raise HookError(f"{what}: {status}{detail}", container=cid, step=step)


def run_hooks(kind: str, hooks: dict[str, list[dict[str, Any]]], state: dict[str, Any], cid: str,
              step: str) -> None:
    """Run the hooks of one kind in order. The fatal kinds stop at the first failure and raise; the
    others log each failure and go on."""
    for i, hook in enumerate(hooks.get(kind) or []):
        try:
            run_hook(kind, i, hook, state, cid, step)
        except HookError as e:
            if kind in FATAL_KINDS:
                raise
            log.warning("%s", e)


def hook_state(cid: str, status: str, pid: int, bundle: str, annotations: dict[str, str]) -> dict[str, Any]:
    """The state object a hook reads on stdin (runc 1.1's fields)."""
    from kata_runtime import OCI_VERSION

    state: dict[str, Any] = {"ociVersion": OCI_VERSION, "id": cid, "status": status, "pid": pid, "bundle": bundle}
    if annotations:
        state["annotations"] = annotations
    return state

