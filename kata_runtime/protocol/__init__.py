"""Wire protocols shared by the host programs and the guest agent.

- ``mux``: the framing kata-proxy and the agent speak over the VM's single agent channel.
- ``shimproto``: what a kata-shim and the agent say on one stream (stdio, signals, resize, exit).
- ``proto/agent.proto`` and ``generated/``: the agent's gRPC service (``python -m
  kata_runtime.protocol.regen`` regenerates ``generated/``).

Nothing here may import grpc at module level: kata-shim and kata-proxy load these modules.
"""
