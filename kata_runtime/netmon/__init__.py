"""kata-netmon: watches a sandbox's network namespace and asks kata-runtime to follow it."""
