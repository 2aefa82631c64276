"""Habits: ruff and mypy are configured in pyproject.toml and CI runs them before the tests."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_linters_before_the_readmes_test_command():
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert "make lint" in lines and "make test" in lines and lines.index("make lint") < lines.index("make test")
    makefile = (REPO / "Makefile").read_text()
    assert "$(BIN)/ruff check src tests benchmarks" in makefile and "$(BIN)/mypy" in makefile
    assert "make test" in (REPO / "README.md").read_text()


def test_pyproject_configures_ruff_and_mypy_and_the_test_extra_installs_them():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert {"E", "F", "I"} <= set(project["tool"]["ruff"]["lint"]["select"])
    assert project["tool"]["mypy"]["files"] == ["src/aevb"]
    extra = " ".join(project["project"]["optional-dependencies"]["test"])
    assert "ruff" in extra and "mypy" in extra


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    r = subprocess.run([ruff, "check", "src", "tests", "benchmarks"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]
