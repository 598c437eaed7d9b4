"""The pure curriculum never imports torch/transformers (docs/design.md §2), checked two ways."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    r = subprocess.run([exe, "--config", str(REPO / "pyproject.toml")], capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "BROKEN" not in r.stdout


def test_importing_the_curriculum_loads_no_torch():
    code = ("import sys, spectrumkd.curriculum as c; "
            "print(sorted(m for m in ('torch', 'transformers', 'accelerate', 'peft', 'datasets') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
