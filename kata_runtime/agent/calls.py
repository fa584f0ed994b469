"""The :class:`AgentClient` methods, written once over any transport of ``AgentService`` calls.

A transport implements :meth:`AgentCalls.call`: send the request message of method ``name`` (a dict
in protobuf's JSON mapping with the .proto's field names) and return the response message the same
way, or raise :class:`AgentError` with the guest's words. Answers are the agent's, so they are not
trusted: every field read here is checked for its type and range.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from kata_runtime.errors import AgentError

Message = dict[str, Any]


def _storage(d: dict[str, Any]) -> Message:
    return {"driver": d.get("driver", ""), "source": d["source"], "fstype": d["fstype"],
            "options": list(d.get("options", [])), "mount_point": d["mount_point"]}


class AgentCalls:
    """Talks to the agent of one sandbox. ``container`` names the container in error messages."""

    container: str
    timeout: float

    def call(self, name: str, request: Message, step: str, timeout: float | None = None) -> Message:
        raise NotImplementedError

    # -- answers we do not trust ---------------------------------------------------------------
    def _field(self, answer: Message, key: str, kind: type, step: str) -> Any:
        value = answer.get(key, kind())
        if kind is int and isinstance(value, str) and value.isascii() and value.lstrip("-").isdigit() and \
                len(value) <= 20:  # 64-bit integers travel as strings in protobuf's JSON mapping
            value = int(value)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise AgentError(f"the guest agent answered a malformed {key!r}", container=self.container, step=step)
        return value

    def _json_field(self, answer: Message, key: str, kind: type, step: str, b64: bool = False) -> Any:
        text = self._field(answer, key, str, step)
        try:
            value = json.loads(base64.b64decode(text, validate=True) if b64 else text)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            value = None
        if not isinstance(value, kind):
            raise AgentError(f"the guest agent answered a malformed {key!r}", container=self.container, step=step)
        return value

    # -- the methods -------------------------------------------------------------------------------
    def create_sandbox(self, sandbox_id: str, hostname: str, storages: list[dict[str, Any]]) -> None:
        self.call("CreateSandbox", {"sandbox_id": sandbox_id, "hostname": hostname,
                                    "storages": [_storage(s) for s in storages]}, "create")

    def wait_warm(self, timeout: float) -> None:
        self.call("Check", {"service": "warm"}, "factory init", timeout=timeout)

    def destroy_sandbox(self) -> None:
        self.call("DestroySandbox", {}, "delete", timeout=5)

    def create_container(self, cid: str, spec: dict[str, Any], rootfs_guest_path: str,
                         storages: list[dict[str, Any]], no_pivot: bool = False,
                         sandbox_sysctls: dict[str, str] | None = None) -> None:
        self.call("CreateContainer", {
            "container_id": cid, "exec_id": cid, "oci_spec_json": json.dumps(spec),
            "rootfs_guest_path": rootfs_guest_path, "storages": [_storage(s) for s in storages],
            "no_pivot": no_pivot, "sandbox_sysctls": dict(sandbox_sysctls or {})}, "create")

    def start_container(self, cid: str) -> None:
        self.call("StartContainer", {"container_id": cid}, "start")

    def remove_container(self, cid: str) -> None:
        self.call("RemoveContainer", {"container_id": cid}, "delete", timeout=30)

    def exec_process(self, cid: str, exec_id: str, process: dict[str, Any]) -> None:
        self.call("ExecProcess", {"container_id": cid, "exec_id": exec_id, "process_json": json.dumps(process)},
                  "exec")

    def signal_process(self, cid: str, exec_id: str, signal: int, all_processes: bool = False,
                       timeout: float | None = None) -> None:
        self.call("SignalProcess", {"container_id": cid, "exec_id": exec_id, "signal": signal,
                                    "all": all_processes}, "kill", timeout=timeout)

    def wait_process(self, cid: str, exec_id: str) -> int:
        answer = self.call("WaitProcess", {"container_id": cid, "exec_id": exec_id}, "wait", timeout=24 * 3600)
        status = self._field(answer, "status", int, "wait")
        if not 0 <= status <= 255:
            raise AgentError(f"the guest agent answered exit status {status}", container=self.container,
                             step="wait")
        return int(status)

    def list_processes(self, cid: str) -> list[int]:
        answer = self.call("ListProcesses", {"container_id": cid, "format": "json"}, "ps")
        pids = self._json_field(answer, "process_list", list, "ps", b64=True) if answer.get("process_list") else []
        if not all(isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in pids):
            raise AgentError("the guest agent answered a malformed process list", container=self.container,
                             step="ps")
        return list(pids)

    def process_table(self, cid: str, ps_args: list[str]) -> bytes:
        answer = self.call("ListProcesses", {"container_id": cid, "format": "table", "args": list(ps_args)}, "ps")
        try:
            return base64.b64decode(self._field(answer, "process_list", str, "ps"), validate=True)
        except ValueError:
            raise AgentError("the guest agent answered a malformed process table", container=self.container,
                             step="ps") from None

    def update_container(self, cid: str, resources: dict[str, Any]) -> None:
        self.call("UpdateContainer", {"container_id": cid, "resources_json": json.dumps(resources)}, "update")

    def online_cpu_mem(self, nb_cpus: int, step: str = "update") -> None:
        self.call("OnlineCPUMem", {"wait": True, "nb_cpus": nb_cpus}, step)

    def stats_container(self, cid: str) -> dict[str, Any]:
        answer = self.call("StatsContainer", {"container_id": cid}, "events")
        return dict(self._json_field(answer, "stats_json", dict, "events"))

    def pause_container(self, cid: str) -> None:
        self.call("PauseContainer", {"container_id": cid}, "pause")

    def resume_container(self, cid: str) -> None:
        self.call("ResumeContainer", {"container_id": cid}, "resume")

    def update_interface(self, name: str, mac: str, mtu: int, addresses: list[tuple[str, int, int]]) -> None:
        self.call("UpdateInterface", {"interface": {
            "name": name, "hw_addr": mac, "mtu": mtu,
            "ip_addresses": [{"address": a, "prefix_length": p, "family": f} for a, p, f in addresses]}}, "create")

    def update_routes(self, routes: list[dict[str, Any]]) -> None:
        self.call("UpdateRoutes", {"routes": {"routes": [
            {"dest": r["dest"], "gateway": r["gateway"], "device": r["device"], "source": r["source"],
             "scope": r["scope"]} for r in routes]}}, "create")

    def refresh_clone(self, now: float, entropy: bytes) -> None:
        sec = int(now)
        self.call("SetGuestDateTime", {"sec": sec, "usec": int((now - sec) * 1e6)}, "create")
        self.call("ReseedRandomDev", {"data": base64.b64encode(entropy).decode()}, "create")

    def version(self) -> dict[str, str]:
        r = self.call("Version", {}, "version")

        def stamp(key: str) -> str:
            value = r.get(key, 0.0)
            return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"
        return {"grpc": str(r.get("grpc_version", "")), "agent": str(r.get("agent_version", "")),
                "kernel": str(r.get("kernel_release", "")), "root_ready": stamp("root_ready_uptime"),
                "agent_started": stamp("agent_started_uptime"), "agent_serving": stamp("agent_serving_uptime")}
