"""AgentClient over gRPC through the sandbox's kata-proxy (``[agent.kata] transport = "grpc"``).

The same calls as the default stream transport (``agent/stream.py``), as gRPC requests of
``AgentService``: for tools that speak Kata's protocol and to keep the agent's gRPC server
exercised. It costs the CLI grpc's import and the guest the gRPC server's start (the agent starts
it on the first gRPC connection).
"""

from __future__ import annotations

from typing import Any

from kata_runtime.agent.calls import AgentCalls, Message
from kata_runtime.errors import AgentError, AgentUnresponsive


class GrpcAgentClient(AgentCalls):
    def __init__(self, proxy_socket: str, container: str, request_timeout: float = 60.0) -> None:
        import grpc

        from kata_runtime.protocol.generated import agent_pb2 as pb

        self.proxy_socket = proxy_socket
        self.container = container
        self.timeout = request_timeout
        self.pb = pb
        self.channel = grpc.insecure_channel(
            f"unix:{proxy_socket}",
            options=[("grpc.enable_http_proxy", 0), ("grpc.max_receive_message_length", 64 << 20)])
        self.methods = pb.DESCRIPTOR.services_by_name["AgentService"].methods_by_name

    def _invoke(self, name: str, request: Message, timeout: float, wait_for_ready: bool = False) -> Message:
        from google.protobuf import json_format

        m = self.methods[name]
        req_type, resp_type = getattr(self.pb, m.input_type.name), getattr(self.pb, m.output_type.name)
        rpc = self.channel.unary_unary(f"/{m.containing_service.full_name}/{name}",
                                       request_serializer=req_type.SerializeToString,
                                       response_deserializer=resp_type.FromString)
        answer = rpc(json_format.ParseDict(request, req_type()), timeout=timeout, wait_for_ready=wait_for_ready)
        return dict(json_format.MessageToDict(answer, preserving_proto_field_name=True))

    def call(self, name: str, request: Message, step: str, timeout: float | None = None) -> Message:
        import grpc

        limit = timeout or self.timeout
        try:
            return self._invoke(name, request, limit)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise AgentUnresponsive(f"the guest agent did not answer {name} within {limit:g}s",
                                        container=self.container, step=step) from None
            if code == grpc.StatusCode.UNAVAILABLE:
                raise AgentUnresponsive(f"the guest agent is unreachable ({e.details()})", container=self.container,
                                        step=step) from None
            msg = str(e.details()) if hasattr(e, "details") else str(e)
            raise AgentError(msg, container=self.container, step=step) from None

    def check(self, timeout: float) -> None:
        import grpc

        try:
            answer: Any = self._invoke("Check", {}, timeout, wait_for_ready=True)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise AgentError(f"guest agent did not answer within {timeout:g}s",
                                 container=self.container, step="create") from None
            raise AgentError(f"guest agent check failed: {e.details()}", container=self.container,
                             step="create") from None
        if answer.get("status") != "SERVING":
            raise AgentError(f"guest agent is not serving ({answer.get('status')!r})", container=self.container,
                             step="create")

    def close(self) -> None:
        self.channel.close()
