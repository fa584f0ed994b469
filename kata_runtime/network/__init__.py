"""The sandbox's network on the host: its network namespace (and, with the networking work, the
tap devices and tc filters that connect it to the VM)."""
