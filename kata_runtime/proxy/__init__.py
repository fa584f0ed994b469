"""kata-proxy: one per sandbox; multiplexes client connections over the VM's agent channel."""
