"""The import rules of DESIGN.md, checked on every run so they cannot rot."""

from __future__ import annotations

import os
import shutil
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


PLANTED = {
    "against the flow": ("gateway/spool/queue.py", "import gateway.forward.status\n", "Data flows one way"),
    "skipping a stage": ("gateway/forward/status.py", "import gateway.dicom.dx\n", "never one further upstream"),
    "a driver reaching into the gateway": ("drivers/registry.py", "import gateway.config\n", "Drivers import only"),
    "runtime importing the simulator": ("gateway/app.py", "import hw_sim.room\n", "Nothing at runtime imports"),
    "a circle inside a package": ("gateway/correction/store.py", "import gateway.correction.apply\n", "No circle"),
}


def test_each_rule_catches_a_planted_violation(tmp_path: Path) -> None:
    """The contracts are not vacuous: one planted import breaks exactly the rule it violates."""
    for pkg in ("gateway", "drivers", "hw_sim"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    # the circle's other half (correction.apply -> correction.store)
    apply_py = tmp_path / "gateway/correction/apply.py"
    apply_py.write_text(apply_py.read_text() + "\nimport gateway.correction.store  # noqa\n")
    lint = Path(sys.executable).parent / "lint-imports"
    for what, (path, line, contract) in PLANTED.items():
        target = tmp_path / path
        original = target.read_text()
        target.write_text(original + "\n" + line)
        try:
            out = subprocess.run([str(lint), "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                                 timeout=120, env={**os.environ, "PYTHONPATH": str(tmp_path)})
        finally:
            target.write_text(original)
        assert out.returncode != 0 and "Broken contracts" in out.stdout, f"{what}: not caught\n{out.stdout}"
        assert contract in out.stdout.split("Broken contracts")[1], f"{what}: caught by the wrong rule\n{out.stdout}"
