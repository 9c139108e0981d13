"""The architecture, checked: the import layers hold (import-linter, contracts in pyproject.toml), and
the producers (API, importers, the CLI, the broker, the sources worker) never load torch.

Producers only store and queue work: loading torch there costs seconds and hundreds of MB per process
for nothing. Each module is imported in a fresh interpreter, since this test session may well have
loaded torch already; a watcher on the import system records the chain of imports that first asked
for torch, so a failure names the line to fix.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

PRODUCERS = (
    "ticketfleet.api.app",
    "ticketfleet.pipeline.importing",
    "ticketfleet.cli.main",
    "ticketfleet.broker",
    "workers.sources",
)
HEAVY = "torch"

PROBE = """
import sys, traceback

class FirstImportOf:
    chain = None

    def find_spec(self, name, path=None, target=None):
        if name == {heavy!r} and FirstImportOf.chain is None:
            frames = [f for f in traceback.extract_stack()[:-1] if not f.filename.startswith("<frozen")]
            FirstImportOf.chain = "".join(traceback.format_list(frames))
        return None

sys.meta_path.insert(0, FirstImportOf())
import {module}
if {heavy!r} in sys.modules or FirstImportOf.chain:
    print(FirstImportOf.chain or "(imported before the watcher)")
    sys.exit(3)
"""


@pytest.mark.parametrize("module", PRODUCERS)
def test_producers_do_not_import_torch(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 1, f"importing {module} failed:\n{proc.stderr}"
    assert proc.returncode == 0, (
        f"importing {module} loads {HEAVY}; the imports that led there:\n{proc.stdout}{proc.stderr}"
    )


def _lint_imports() -> str:
    beside_python = Path(sys.executable).with_name("lint-imports")
    found = str(beside_python) if beside_python.exists() else shutil.which("lint-imports")
    assert found, "lint-imports (import-linter, a dev dependency) is not installed"
    return found


def test_import_contracts_are_kept() -> None:
    proc = subprocess.run(
        [_lint_imports(), "--no-cache", "--no-logo"],
        cwd=REPO_ROOT,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert re.search(r"Contracts: 2 kept, 0 broken\.", output), output
    assert len(re.findall(r"\bKEPT\b", output)) == 2 and "BROKEN" not in output, output
