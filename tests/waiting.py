"""Waiting in tests for something another process or thread does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout: float,
             interval: float = 0.2) -> T:
    """CONDITION()'s first truthy result, asked every INTERVAL seconds and once more at the
    deadline; AssertionError naming WHAT if none came within TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(min(interval, left))
