"""A Bytewax TestingSink that dies once it holds enough items: a crash inside a sink write,
for recovery tests (the items of the failing batch are kept, as a sink that wrote them and
died before its epoch committed)."""

from __future__ import annotations

from bytewax.testing import TestingSink


class Crash(Exception):
    pass


class CrashingSink(TestingSink):
    """Appends to OUT like TestingSink, then raises Crash once OUT holds AFTER items."""

    def __init__(self, out: list, after: int) -> None:
        super().__init__(out)
        self._out = out
        self._after = after

    def build(self, step_id, worker_index, worker_count):
        part = super().build(step_id, worker_index, worker_count)
        write = part.write_batch

        def write_then_crash(items):
            write(items)
            if len(self._out) >= self._after:
                raise Crash("the sink died mid-stream")

        part.write_batch = write_then_crash
        return part
