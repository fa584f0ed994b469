"""The agent's gRPC server: ``AgentService`` of protocol/proto/agent.proto over gRPC, for clients
that speak it (``[agent] transport = "grpc"`` on the host, tools).

Started by the channel on the first stream that opens with an HTTP/2 preface, never before:
``import grpc`` and the server's start cost the guest about 3 s under TCG, and kata-runtime does
not need them (it speaks the stream protocol's CALL requests). Every method converts its request
to the dict of ``guest/service.py``, calls the same operation as the stream protocol does, and
converts the answer back.
"""

from __future__ import annotations

from kata_runtime.guest import glog as log
from kata_runtime.guest.containers import AgentFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kata_runtime.guest.service import AgentService


def serve(service: AgentService, socket_path: str) -> Any:
    """Start a gRPC server for ``service`` on the unix socket ``socket_path``; returns the server,
    which must stay referenced (garbage collection would stop it)."""
    from concurrent import futures

    import grpc
    from google.protobuf import json_format

    from kata_runtime.protocol.generated import agent_pb2 as pb

    def handler(name: str, response_type: Any) -> Any:
        fn = service.method(name)
        assert fn is not None, name

        def call(request: Any, context: Any) -> Any:
            try:
                answer = fn(json_format.MessageToDict(request, preserving_proto_field_name=True))
                return json_format.ParseDict(answer, response_type())
            except AgentFailure as e:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
            except Exception as e:  # a bug: say what, keep serving
                log.exception("gRPC %s: internal error", name)
                context.abort(grpc.StatusCode.INTERNAL, f"agent internal error: {type(e).__name__}: {e}")
            raise AssertionError("unreachable")
        return call

    desc = pb.DESCRIPTOR.services_by_name["AgentService"]
    handlers = {}
    for m in desc.methods:
        if service.method(m.name) is None:
            continue  # stdio over gRPC is not served: kata-shims use the stream protocol
        req_type = getattr(pb, m.input_type.name)
        resp_type = getattr(pb, m.output_type.name)
        handlers[m.name] = grpc.unary_unary_rpc_method_handler(
            handler(m.name, resp_type), request_deserializer=req_type.FromString,
            response_serializer=resp_type.SerializeToString)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(desc.full_name, handlers),))
    server.add_insecure_port(f"unix:{socket_path}")
    server.start()
    return server


def version() -> str:
    """grpcio's version once the server runs, else ""."""
    import sys

    grpc = sys.modules.get("grpc")
    return str(getattr(grpc, "__version__", "")) if grpc is not None else ""
