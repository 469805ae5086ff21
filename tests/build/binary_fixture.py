"""The one-file agent, built once per test session (`make binary`, about a minute), and a way to
run it as a fleet host does: no environment at all."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("binary")
    # -o: the set-up stamp counts as fresh: this session's virtualenv is the one to build with
    make = ["make", "-s", "-o", ".venv/.installed", "binary", f"BIN={VENV_BIN}"]
    result = subprocess.run(
        [*make, f"DIST={out}/dist", f"WORK={out}/work"], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout + result.stderr
    path = out / "dist" / "umbra-agent"
    assert path.is_file()
    yield path


def bare(binary: Path, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The binary with an empty environment: no PATH, no PYTHONPATH, no VIRTUAL_ENV, no HOME."""
    return subprocess.run(
        ["env", "-i", str(binary), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
