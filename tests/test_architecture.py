"""The import rules of DESIGN.md, checked on every run so they cannot rot."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_contracts_cover_the_design_rules() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = cfg["tool"]["importlinter"]["contracts"]
    kinds = {(c["type"], tuple(c.get("source_modules", ()))) for c in contracts}
    assert ("forbidden", ("gateway", "drivers")) in kinds  # nothing at runtime imports hw_sim
    assert ("forbidden", ("drivers",)) in kinds  # drivers see only types and errors
    layers = next(c["layers"] for c in contracts if c["type"] == "layers")
    flow = ["gateway.forward", "gateway.spool", "gateway.dicom", "gateway.correction"]
    assert [layer for layer in layers if layer in flow] == flow


def test_runtime_never_loads_the_simulator() -> None:
    code = (
        "import sys, gateway.cli, gateway.app, drivers.registry\n"
        "sim = sorted(m for m in sys.modules if m == 'hw_sim' or m.startswith('hw_sim.'))\n"
        "assert not sim, sim\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
