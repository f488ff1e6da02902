"""Report files: where they live and how they are written (atomically)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from metering.core.timeutil import from_us


def day_name(start_us: int) -> str:
    return from_us(start_us).strftime("%Y-%m-%d")


def workspace_dir(workspace_id: str) -> str:
    # Ids may be "." or ".." (the id alphabet allows dots): never let one name a parent
    # or hidden directory. Other id characters are safe in a file name.
    return workspace_id if not workspace_id.startswith(".") else "%2E" + workspace_id[1:]


def relative_paths(workspace_id: str, start_us: int) -> tuple[str, str]:
    """``<workspace>/<YYYY-MM-DD>.json`` and ``.csv``, relative to the reports directory."""
    base = f"{workspace_dir(workspace_id)}/{day_name(start_us)}"
    return f"{base}.json", f"{base}.csv"


def resolve(reports_dir: str, relative: str) -> Path:
    root = Path(reports_dir).resolve()
    path = (root / relative).resolve()
    if root not in path.parents:
        raise ValueError(f"report path {relative!r} leaves the reports directory")
    return path


def write_atomic(path: Path, content: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over the target.

    A reader (or a crash) sees the old file or the new one, never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power loss
    finally:
        os.close(dir_fd)
