"""A CRI (``runtime.v1``) client for containerd 1.6 that carries no copy of the API.

The CRI service definitions are read at run time from the installed containerd binary: Go's
protobuf registry embeds every ``.proto`` file as a gzip-compressed serialized
``FileDescriptorProto``. We scan the binary for gzip members, keep those that parse as file
descriptors, pick the ``runtime.v1`` file that defines ``RuntimeService`` and build a private
descriptor pool from it and its imports. Imports are matched by path suffix (containerd stores
gogo.proto as ``gogo.proto`` while CRI's api.proto imports
``github.com/gogo/protobuf/gogoproto/gogo.proto``; gogo only adds options). Calls are generic unary
gRPC calls on ``/runtime.v1.RuntimeService/<Method>`` and ``/runtime.v1.ImageService/<Method>``.

Requests are given as dicts in the proto field names (``json_format.ParseDict``), so that a test
reads like what kubelet sends; answers are the protobuf messages themselves (attribute access;
``CRI.to_dict`` for a dict).

Streaming (Exec/Attach): the CRI answers with a URL on containerd's streaming server; ``stream``
speaks the Kubernetes ``v4.channel.k8s.io`` websocket sub-protocol over it (one byte of channel
number before each message: 0 stdin, 1 stdout, 2 stderr, 3 error/status, 4 resize). SPDY is not
implemented.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import socket
import struct
import time
import urllib.parse
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message

CONTAINERD = "/usr/bin/containerd"
PACKAGE = "runtime.v1"


# ------------------------------------------------------------------------------------ descriptors

def embedded_file_descriptors(binary: str = CONTAINERD) -> list[descriptor_pb2.FileDescriptorProto]:
    """Every gzip-compressed serialized FileDescriptorProto found in ``binary``."""
    data = open(binary, "rb").read()
    found = []
    for m in re.finditer(re.escape(b"\x1f\x8b\x08"), data):
        d = zlib.decompressobj(wbits=31)
        try:
            raw = d.decompress(data[m.start():m.start() + 4_000_000])
        except zlib.error:
            continue
        if not d.eof:
            continue
        fd = descriptor_pb2.FileDescriptorProto()
        try:
            fd.ParseFromString(raw)
        except DecodeError:
            continue
        if fd.name.endswith(".proto"):
            found.append(fd)
    return found


def _suffix_score(want: str, have: str) -> int:
    """How many trailing path components ``want`` and ``have`` share."""
    a, b = want.split("/")[::-1], have.split("/")[::-1]
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@dataclass
class Api:
    pool: descriptor_pool.DescriptorPool
    file: str
    package: str
    services: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)  # svc -> method -> (in, out)
    classes: dict[str, type[Message]] = field(default_factory=dict)

    def message(self, name: str) -> type[Message]:
        full = name if "." in name else f"{self.package}.{name}"
        if full not in self.classes:
            self.classes[full] = message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full))
        return self.classes[full]

    def enum_value(self, enum: str, name: str) -> int:
        return int(self.pool.FindEnumTypeByName(f"{self.package}.{enum}").values_by_name[name].number)

    def enum_name(self, enum: str, number: int) -> str:
        return str(self.pool.FindEnumTypeByName(f"{self.package}.{enum}").values_by_number[number].name)


@functools.cache
def load_api(binary: str = CONTAINERD, package: str = PACKAGE, service: str = "RuntimeService") -> Api:
    """The CRI API of ``package`` as containerd ``binary`` was built with it."""
    files = embedded_file_descriptors(binary)
    if not files:
        raise RuntimeError(f"no embedded FileDescriptorProto in {binary}")
    target = [f for f in files if f.package == package and any(s.name == service for s in f.service)]
    if len(target) != 1:
        raise RuntimeError(f"{binary}: {len(target)} files of package {package} define {service} "
                           f"(of {len(files)} embedded descriptors)")
    pool = descriptor_pool.DescriptorPool()
    added: dict[str, str] = {}  # import path as written -> name in the pool

    def resolve(dep: str, importer: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
        exact = [f for f in files if f.name == dep]
        if exact:
            return exact[0]
        base = [f for f in files if f.name.rsplit("/", 1)[-1] == dep.rsplit("/", 1)[-1]]
        if not base:
            raise RuntimeError(f"{importer.name} imports {dep}: not embedded in {binary}")
        pkg_dir = dep.rsplit("/", 2)[-2] if dep.count("/") else ""
        return max(base, key=lambda f: (_suffix_score(dep, f.name), f.package.rsplit(".", 1)[-1] == pkg_dir,
                                        -len(f.name)))

    def add(fd: descriptor_pb2.FileDescriptorProto, stack: tuple[str, ...] = ()) -> str:
        if fd.name in added.values():
            return fd.name
        if fd.name in stack:
            raise RuntimeError(f"import cycle: {' -> '.join(stack + (fd.name,))}")
        fd2 = descriptor_pb2.FileDescriptorProto()
        fd2.CopyFrom(fd)
        del fd2.dependency[:]
        for dep in fd.dependency:
            fd2.dependency.append(add(resolve(dep, fd), stack + (fd.name,)))
        pool.Add(fd2)
        added[fd.name] = fd.name
        return fd.name

    main = target[0]
    add(main)
    api = Api(pool, main.name, package)
    for s in main.service:
        api.services[s.name] = {m.name: (m.input_type.lstrip("."), m.output_type.lstrip(".")) for m in s.method}
    return api


# ------------------------------------------------------------------------------------------ client

class CRIError(Exception):
    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{method}: {code.name}: {details}")
        self.method, self.code, self.details = method, code, details


@dataclass
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")


class CRI:
    """What kubelet would call, on containerd's socket ``address``."""

    def __init__(self, address: str, binary: str = CONTAINERD, timeout: float = 120) -> None:
        self.address = address
        self.api = load_api(binary)
        self.timeout = timeout
        self.channel = grpc.insecure_channel(f"unix://{address}", options=[
            ("grpc.max_receive_message_length", 64 << 20),
            # containerd restarts in tests: come back quickly
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000)])
        self._calls: dict[str, Any] = {}

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CRI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # generic ------------------------------------------------------------------------------------

    def service_of(self, method: str) -> str:
        for svc, methods in self.api.services.items():
            if method in methods:
                return svc
        raise AttributeError(f"no CRI method {method}")

    def call(self, method: str, request: dict[str, Any] | Message | None = None,
             timeout: float | None = None) -> Any:
        """``/runtime.v1.<Service>/<method>`` with ``request`` (a dict in proto field names)."""
        svc = self.service_of(method)
        in_name, out_name = self.api.services[svc][method]
        in_cls, out_cls = self.api.message(in_name), self.api.message(out_name)
        if isinstance(request, Message):
            req = request
        else:
            req = json_format.ParseDict(request or {}, in_cls())
        path = f"/{self.api.package}.{svc}/{method}"
        stub = self._calls.get(path)
        if stub is None:
            stub = self._calls[path] = self.channel.unary_unary(
                path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=out_cls.FromString)
        try:
            return stub(req, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise CRIError(method, e.code(), e.details() or "") from None

    @staticmethod
    def to_dict(msg: Message) -> dict[str, Any]:
        return dict(json_format.MessageToDict(msg, preserving_proto_field_name=True))

    def enum(self, enum: str, name: str) -> int:
        return self.api.enum_value(enum, name)

    def enum_name(self, enum: str, number: int) -> str:
        return self.api.enum_name(enum, number)

    # RuntimeService -----------------------------------------------------------------------------

    def version(self) -> Any:
        return self.call("Version", {"version": "v1"})

    def status(self, verbose: bool = False) -> Any:
        return self.call("Status", {"verbose": verbose})

    def run_pod_sandbox(self, config: dict[str, Any], handler: str = "", timeout: float | None = None) -> str:
        return str(self.call("RunPodSandbox", {"config": config, "runtime_handler": handler}, timeout).pod_sandbox_id)

    def stop_pod_sandbox(self, pod_id: str, timeout: float | None = None) -> None:
        self.call("StopPodSandbox", {"pod_sandbox_id": pod_id}, timeout)

    def remove_pod_sandbox(self, pod_id: str, timeout: float | None = None) -> None:
        self.call("RemovePodSandbox", {"pod_sandbox_id": pod_id}, timeout)

    def pod_sandbox_status(self, pod_id: str, verbose: bool = False) -> Any:
        return self.call("PodSandboxStatus", {"pod_sandbox_id": pod_id, "verbose": verbose})

    def list_pod_sandbox(self, filter: dict[str, Any] | None = None) -> list[Any]:
        return list(self.call("ListPodSandbox", {"filter": filter} if filter else {}).items)

    def create_container(self, pod_id: str, config: dict[str, Any], sandbox_config: dict[str, Any],
                         timeout: float | None = None) -> str:
        return str(self.call("CreateContainer", {"pod_sandbox_id": pod_id, "config": config,
                                                 "sandbox_config": sandbox_config}, timeout).container_id)

    def start_container(self, cid: str, timeout: float | None = None) -> None:
        self.call("StartContainer", {"container_id": cid}, timeout)

    def stop_container(self, cid: str, timeout: int = 0, rpc_timeout: float | None = None) -> None:
        """StopContainer: TERM (or the image's StopSignal), KILL after ``timeout`` seconds."""
        self.call("StopContainer", {"container_id": cid, "timeout": timeout}, rpc_timeout or timeout + self.timeout)

    def remove_container(self, cid: str, timeout: float | None = None) -> None:
        self.call("RemoveContainer", {"container_id": cid}, timeout)

    def list_containers(self, filter: dict[str, Any] | None = None) -> list[Any]:
        return list(self.call("ListContainers", {"filter": filter} if filter else {}).containers)

    def container_status(self, cid: str, verbose: bool = False) -> Any:
        return self.call("ContainerStatus", {"container_id": cid, "verbose": verbose})

    def container_state(self, cid: str) -> str:
        """CONTAINER_CREATED / _RUNNING / _EXITED / _UNKNOWN."""
        return self.enum_name("ContainerState", self.container_status(cid).status.state)

    def pod_state(self, pod_id: str) -> str:
        """SANDBOX_READY / SANDBOX_NOTREADY."""
        return self.enum_name("PodSandboxState", self.pod_sandbox_status(pod_id).status.state)

    def update_container_resources(self, cid: str, linux: dict[str, Any]) -> Any:
        return self.call("UpdateContainerResources", {"container_id": cid, "linux": linux})

    def reopen_container_log(self, cid: str) -> Any:
        return self.call("ReopenContainerLog", {"container_id": cid})

    def exec_sync(self, cid: str, cmd: list[str], timeout: int = 0) -> ExecResult:
        """ExecSync; ``timeout`` (seconds, 0 = none) is the CRI's: past it the answer is an error."""
        r = self.call("ExecSync", {"container_id": cid, "cmd": cmd, "timeout": timeout},
                      (timeout or self.timeout) + 30)
        return ExecResult(int(r.exit_code), bytes(r.stdout), bytes(r.stderr))

    def exec(self, cid: str, cmd: list[str], stdin: bool = False, stdout: bool = True, stderr: bool = True,
             tty: bool = False) -> str:
        """Exec: the streaming URL (see ``stream``)."""
        return str(self.call("Exec", {"container_id": cid, "cmd": cmd, "tty": tty, "stdin": stdin,
                                      "stdout": stdout, "stderr": stderr and not tty}).url)

    def attach(self, cid: str, stdin: bool = False, stdout: bool = True, stderr: bool = True,
               tty: bool = False) -> str:
        return str(self.call("Attach", {"container_id": cid, "tty": tty, "stdin": stdin,
                                        "stdout": stdout, "stderr": stderr and not tty}).url)

    def container_stats(self, cid: str) -> Any:
        return self.call("ContainerStats", {"container_id": cid}).stats

    def list_container_stats(self, filter: dict[str, Any] | None = None) -> list[Any]:
        return list(self.call("ListContainerStats", {"filter": filter} if filter else {}).stats)

    # ImageService -------------------------------------------------------------------------------

    def list_images(self) -> list[Any]:
        return list(self.call("ListImages", {}).images)

    def image_status(self, image: str) -> Any:
        """The image (``.id`` empty when containerd does not have it)."""
        return self.call("ImageStatus", {"image": {"image": image}}).image

    def image_fs_info(self) -> Any:
        return self.call("ImageFsInfo", {})


# ---------------------------------------------------------------------------------------- streaming

@dataclass
class StreamResult:
    stdout: bytes = b""
    stderr: bytes = b""
    status: dict[str, Any] | None = None  # v4 error channel: a metav1.Status, {"status": "Success"} or failure

    @property
    def exit_code(self) -> int | None:
        """0 on Success; the ExitCode cause of a NonZeroExitCode failure; None if unknown."""
        if self.status is None:
            return None
        if self.status.get("status") == "Success":
            return 0
        for c in (self.status.get("details") or {}).get("causes") or []:
            if c.get("reason") == "ExitCode":
                return int(c.get("message", -1))
        return None


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _recv_exact(sock: socket.socket, n: int, buf: bytearray) -> bytes:
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("stream closed")
        buf += chunk
    out = bytes(buf[:n])
    del buf[:n]
    return out


def stream(url: str, stdin: bytes | Iterable[bytes] | None = None, timeout: float = 60,
           until: bytes | None = None, protocol: str = "v4.channel.k8s.io") -> StreamResult:
    """Run an Exec/Attach session at ``url`` over websocket: send ``stdin`` (v4 has no way to close
    stdin: the command must end on its own or read a known amount), collect stdout/stderr until the
    server closes the session, or until stdout contains ``until`` (for Attach, which lasts as long
    as the container)."""
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http":
        raise ValueError(f"only http streaming URLs: {url}")
    sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
    deadline = time.monotonic() + timeout
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        path = u.path + (f"?{u.query}" if u.query else "")
        sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                      f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n").encode())
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError(f"no websocket handshake answer from {url}: {bytes(buf)!r}")
            buf += chunk
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        buf = bytearray(rest)
        status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 101 " not in status_line + " ":
            raise RuntimeError(f"websocket upgrade refused: {status_line}: {head.decode(errors='replace')}")
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        if accept not in head:
            raise RuntimeError("bad Sec-WebSocket-Accept")
        if stdin is not None:
            chunks = [stdin] if isinstance(stdin, bytes) else list(stdin)
            for c in chunks:
                sock.sendall(_ws_frame(0x2, b"\x00" + c))
        res = StreamResult()
        message = bytearray()
        while True:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            b0, b1 = _recv_exact(sock, 2, buf)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", _recv_exact(sock, 2, buf))[0]
            elif n == 127:
                n = struct.unpack("!Q", _recv_exact(sock, 8, buf))[0]
            payload = _recv_exact(sock, n, buf)
            opcode = b0 & 0x0F
            if opcode == 0x8:  # close
                break
            if opcode == 0x9:  # ping
                sock.sendall(_ws_frame(0xA, payload))
                continue
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if not b0 & 0x80:
                    continue
                data, message = bytes(message), bytearray()
                if protocol.startswith("base64."):
                    data = data[:1] + base64.b64decode(data[1:]) if data else data
                if not data:
                    continue
                ch, body = data[0], data[1:]
                if ch == 1:
                    res.stdout += body
                    if until is not None and until in res.stdout:
                        break
                elif ch == 2:
                    res.stderr += body
                elif ch == 3 and body:
                    try:
                        res.status = json.loads(body)
                    except ValueError:
                        res.status = {"status": "Failure", "message": body.decode(errors="replace")}
        try:
            sock.sendall(_ws_frame(0x8, b"\x03\xe8"))
        except OSError:
            pass
        return res
    finally:
        sock.close()
