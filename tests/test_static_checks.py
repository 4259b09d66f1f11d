"""Static checks as tests: ``mypy app`` and ``ruff check app tests bench`` must be clean.

Both tools read their settings from ``pyproject.toml`` (``[tool.mypy]``, ``[tool.ruff]``),
so they run from the repository root with the interpreter running the tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_mypy_is_clean() -> None:
    result = _run("mypy", "app")
    assert result.returncode == 0, f"mypy failed:\n{result.stdout}{result.stderr}"


def test_ruff_is_clean() -> None:
    result = _run("ruff", "check", "app", "tests", "bench")
    assert result.returncode == 0, f"ruff failed:\n{result.stdout}{result.stderr}"
