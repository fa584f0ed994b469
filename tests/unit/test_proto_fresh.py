"""The committed generated protocol code is what kata_runtime.protocol.regen produces now."""

from __future__ import annotations

import filecmp
from pathlib import Path

from kata_runtime.protocol import regen


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    regen.generate(tmp_path)
    committed = regen.OUT_DIR
    names = sorted(p.name for p in tmp_path.glob("*.py*"))
    assert names == sorted(p.name for p in committed.glob("*.py*")), "generated file set differs"
    _, mismatch, errors = filecmp.cmpfiles(tmp_path, committed, names, shallow=False)
    assert not mismatch and not errors, (
        f"stale generated code: {mismatch + errors}; run 'python -m kata_runtime.protocol.regen'")
