"""Running the `cellfleet` command line from tests, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).parents[2]


def run_cellfleet(
    args: list[str], cwd: Path, redis_url: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`cellfleet ARGS` in `cwd` with `REDIS_URL` (and `env`); its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "cellfleet.ops.cli", *args],
        cwd=cwd,
        env={**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
