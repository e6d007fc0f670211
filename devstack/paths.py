"""Where the stack keeps its state: one project-local folder, overridable for CI or tests."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def stack_home() -> Path:
    """The folder holding every file the stack installs, generates or writes at run time."""
    home = Path(os.environ.get("CDC_STACK_HOME", REPO_ROOT / ".stack")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def service_dir(name: str) -> Path:
    """A service's own folder under the stack home (data, config and logs)."""
    path = stack_home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Downloads kept across `down`/`up` (Cassandra's jars): deleting it only costs time."""
    path = stack_home() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path
