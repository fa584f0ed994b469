"""A minimal ``--name value`` parser for kata-shim and kata-proxy.

argparse pulls in gettext and re (about a megabyte per process); these programs run by the
thousand and take only a few flags from kata-runtime, never from a user.
"""

from __future__ import annotations


def parse(argv: list[str], names: dict[str, str]) -> dict[str, str]:
    """Map ``--name value`` pairs; ``names`` gives each flag's default ("" = required).

    Everything after a ``--`` is not parsed: it is there for ``ps`` to show (kata-shim carries
    the command of its process in the guest there). Raises ValueError naming the first unknown,
    valueless or missing flag.
    """
    out = dict(names)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            break
        if not arg.startswith("--"):
            raise ValueError(f"unexpected argument {arg!r}")
        key, eq, value = arg[2:].partition("=")
        if key not in names:
            raise ValueError(f"unknown flag --{key}")
        if not eq:
            i += 1
            if i >= len(argv):
                raise ValueError(f"flag --{key} needs a value")
            value = argv[i]
        out[key] = value
        i += 1
    missing = [k for k, v in out.items() if v == "" and names[k] == ""]
    if missing:
        raise ValueError(f"missing flag --{missing[0]}")
    return out
