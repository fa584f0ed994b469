"""The guest agent: runs in the VM (as its PID 1), serves gRPC and shim streams over the agent
channel, and makes containers with the guest image's runc."""
