"""Static checks with the configuration in pyproject.toml: ``ruff check`` over the code, the tests, the
scripts and the benchmarks, and ``mypy`` over the core packages (``[tool.mypy] files``).

Both tools come with the ``test`` extra (the README's setup installs it); without them these tests skip.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF_SCOPE = ["napari_medvit", "tests", "scripts", "benchmarks"]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(not _installed("ruff"), reason="ruff is not installed (pip install -e '.[test]')")
def test_ruff_check_is_clean() -> None:
    out = _run(["ruff", "check", "--no-fix", *RUFF_SCOPE], timeout=120)
    if out.returncode != 0:
        pytest.fail(f"ruff check found problems:\n{out.stdout}{out.stderr}", pytrace=False)


@pytest.mark.skipif(not _installed("mypy"), reason="mypy is not installed (pip install -e '.[test]')")
def test_mypy_core_packages_are_clean() -> None:
    out = _run(["mypy"], timeout=300)  # the files and options of [tool.mypy]
    if out.returncode != 0:
        pytest.fail(f"mypy found problems:\n{out.stdout}{out.stderr}", pytrace=False)
