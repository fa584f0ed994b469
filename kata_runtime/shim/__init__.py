"""kata-shim: the host process that stands for one container process (init or exec)."""
