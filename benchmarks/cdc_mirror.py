"""A private view of a node's cdc_raw that nobody else prunes, for the pipeline benchmark.

On the shared local stack other runs (test sessions, people) delete segments from cdc_raw; a
segment deleted before the pipeline finished it stops the capture (SegmentVanishedError). The
mirror hard-links each segment (same inode: Cassandra's later writes show through, no copy) and
copies its _cdc.idx (Cassandra rewrites that file; a copy replaced atomically is what a reader
sees change), every INTERVAL seconds, from a given segment on. The idx is copied after its
segment is linked, so a reader never sees an idx without its segment. The links cost nothing
while Cassandra's own copy exists and are removed by remove(); Cassandra's cdc_total_space
accounting only sees cdc_raw.

The mirror adds at most INTERVAL to the capture's latency (it only matters after each
commit-log sync, when the idx moves).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path

from connectors.cassandra.cdc_index import CdcIndex, CdcIndexError, parse_cdc_index

_FILE = re.compile(r"CommitLog-\d+-(\d+)(\.log|_cdc\.idx)$")


def _whole(content: bytes) -> bool:
    """An idx as Cassandra finishes writing it (not empty, not caught mid-write)."""
    try:
        return isinstance(parse_cdc_index(content), CdcIndex)
    except CdcIndexError:
        return False


class Mirror(threading.Thread):
    def __init__(self, source: Path, target: Path, from_segment: int, *,
                 interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.source, self.target = Path(source), Path(target)
        self.from_segment = from_segment
        self.interval = interval
        self._linked: set[str] = set()
        self._idx: dict[str, bytes] = {}
        self._halt = threading.Event()
        shutil.rmtree(self.target, ignore_errors=True)
        self.target.mkdir(parents=True)

    def sync(self) -> None:
        logs, indexes = [], []
        for name in os.listdir(self.source):
            match = _FILE.match(name)
            if match is None or int(match.group(1)) < self.from_segment:
                continue
            (logs if match.group(2) == ".log" else indexes).append(name)
        for name in logs:
            if name not in self._linked:
                try:
                    os.link(self.source / name, self.target / name)
                except FileNotFoundError:  # deleted since the listing
                    continue
                self._linked.add(name)
        for name in indexes:
            if name.replace("_cdc.idx", ".log") not in self._linked:
                continue
            try:
                content = (self.source / name).read_bytes()
            except FileNotFoundError:
                continue
            if self._idx.get(name) != content and _whole(content):
                partial = self.target / f".{name}.partial"
                partial.write_bytes(content)
                os.replace(partial, self.target / name)
                self._idx[name] = content

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sync()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.target, ignore_errors=True)
