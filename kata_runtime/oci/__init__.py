"""The OCI side of the runtime: bundles, runtime-spec validation and runc-compatible state."""
