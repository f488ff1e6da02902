"""Running the ``metering`` command as a user would: the installed script, a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

METERING = Path(sys.executable).with_name("metering")


# A first request can wait on the SQLite writer process starting on a busy machine.
http = httpx.Client(timeout=60)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the caller's METERING_* settings, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("METERING_")}, **extra}


def metering(*args: str, env: dict[str, str], cwd: Path, **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([str(METERING), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60, **kwargs)
