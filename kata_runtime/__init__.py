"""kata-runtime: OCI containers in lightweight QEMU virtual machines (Kata Containers 1.x, in Python).

This module must stay import-free: kata-shim and kata-proxy import the package with ``python -S``
and every module they load is resident memory on every node.
"""

__version__ = "0.1.0"
OCI_VERSION = "1.0.2-dev"
