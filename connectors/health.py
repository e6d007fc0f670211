"""What the pipeline's parts report about their health, for the probes of dataflows/health.py.

- each capture partition `beat`s every time it polls its node's cdc_raw;
- each spooled destination partition reports `trouble` while its writes fail with transient
  errors (the destination down) and `ok` once a write commits again; a failure retries
  cannot fix is `fatal`. It also `watch`es its drain lag: a write can hang for minutes inside
  the destination's own retries before any error comes back, and a backlog older than the
  spool's limit is trouble meanwhile.

One registry per process (`HEALTH`): the parts report to it, the HTTP endpoints read it.
Details are component names, states and error classes only, never values.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["HEALTH", "Health"]


@dataclass
class _Check:
    state: str  # "ok", "trouble" or "fatal"
    detail: str
    at: float  # monotonic time of the last report


class Health:
    """What the steps of this process last reported (thread-safe)."""

    def __init__(self, *, stall_after: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_after = stall_after
        self._clock = clock
        self._checks: dict[str, _Check] = {}
        self._beating: set[str] = set()
        self._watches: dict[str, Callable[[], str | None]] = {}
        self._lock = threading.Lock()

    def watch(self, name: str, problem: Callable[[], str | None]) -> None:
        """Ask PROBLEM() at every report: a text is trouble for NAME (unless already worse)."""
        with self._lock:
            self._watches[name] = problem
            self._checks.setdefault(name, _Check("ok", "", self._clock()))

    def beat(self, name: str) -> None:
        """NAME made progress now (a capture partition polled)."""
        with self._lock:
            self._beating.add(name)
            self._checks[name] = _Check("ok", "", self._clock())

    def ok(self, name: str) -> None:
        with self._lock:
            self._checks[name] = _Check("ok", "", self._clock())

    def trouble(self, name: str, detail: str) -> None:
        """NAME cannot do its work for now (retried): not ready."""
        with self._lock:
            self._checks[name] = _Check("trouble", detail, self._clock())

    def fatal(self, name: str, detail: str) -> None:
        """NAME stopped on an error retries cannot fix: not live."""
        with self._lock:
            self._checks[name] = _Check("fatal", detail, self._clock())

    def forget(self, name: str) -> None:
        """NAME is gone (its partition closed)."""
        with self._lock:
            self._checks.pop(name, None)
            self._watches.pop(name, None)
            self._beating.discard(name)

    def report(self) -> tuple[bool, bool, dict[str, Any]]:
        """(live, ready, body)."""
        now = self._clock()
        with self._lock:
            checks = dict(self._checks)
            beating = set(self._beating)
            watches = dict(self._watches)
        body: dict[str, Any] = {}
        live = ready = True
        for name, check in sorted(checks.items()):
            state = check.state
            age = now - check.at
            detail = check.detail
            if name in beating and state == "ok" and age > self.stall_after:
                state = "stalled"
            if state == "ok" and name in watches:
                try:
                    problem = watches[name]()
                except Exception as error:  # noqa: BLE001 - a probe must not break the report
                    problem = f"cannot tell ({type(error).__name__})"
                if problem:
                    state, detail = "trouble", problem
            entry: dict[str, Any] = {"state": state, "seconds_since_report": round(age, 1)}
            if detail:
                entry["detail"] = detail
            body[name] = entry
            live = live and state != "fatal"
            ready = ready and state == "ok"
        return live, ready, {"live": live, "ready": ready, "checks": body}


HEALTH = Health()
