"""The type gate: mypy, configured in pyproject.toml ([tool.mypy]), reports no error.

Run it alone with `.venv/bin/pytest -m typing`, or call `.venv/bin/mypy` directly.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.typing
@pytest.mark.timeout(330)
def test_type_gate_mypy_finds_no_errors() -> None:
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         check=False)
    report = out.stdout + out.stderr
    assert out.returncode == 0, f"mypy found type errors:\n{report}"
    checked = re.search(r"Success: no issues found in (\d+) source files", out.stdout)
    assert checked and int(checked.group(1)) > 0, f"mypy checked nothing:\n{report}"
