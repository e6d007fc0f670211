"""What spooling a batch costs per item: the spool's format (connectors/spool_format.py) next
to pickling the row operations as they are (the format before it), both ways.

    python benchmarks/spool_format.py [--rows 10000] [--repeat 7] [--deletes 0.1]

Patient-like rows as the flow spools them after masking (a uuid key; tokens, an HMAC and a
redaction as text; a date, a timestamp, numbers), each with its own commit-log position.
Prints the best of REPEAT runs, in microseconds per item, and the payload sizes. No server is
needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import datetime
import pickle
import random
import time
import uuid

from benchmarks.sink_bench import load_average
from connectors.cassandra.events import Position
from connectors.spool_format import decode_batch, encode_batch
from operators.row_ops import RowDelete, RowUpsert, Source


def batch(rows: int, deletes: float, rng: random.Random) -> list:
    ops = []
    for i in range(rows):
        key = {"patient_id": uuid.UUID(int=rng.randrange(2**128))}
        source = Source("node1", Position(1700000000000 + i // 1000, 100 + i * 300))
        if rng.random() < deletes:
            ops.append(RowDelete("clinic", "patients", key, 1_700_000_000_000_000 + i, source))
            continue
        values = {"first_name": f"tok:{rng.randrange(10**12):x}",
                  "last_name": f"tok:{rng.randrange(10**12):x}",
                  "email": f"hmac:{rng.randrange(2**128):032x}",
                  "birth_date": datetime.date(1950, 1, 1) + datetime.timedelta(days=i % 20000),
                  "diagnosis": "[redacted]", "visits": i % 40, "balance": i * 0.25,
                  "updated_at": datetime.datetime(2026, 1, 1) + datetime.timedelta(seconds=i)}
        ops.append(RowUpsert("clinic", "patients", key, values, 1_700_000_000_000_000 + i,
                             source))
    return ops


def best(action, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--deletes", type=float, default=0.1)
    args = parser.parse_args()
    ops = batch(args.rows, args.deletes, random.Random(1))
    print(f"{args.rows:,} row operations ({args.deletes:.0%} deletes), best of {args.repeat}, "
          f"load {load_average()}")
    pickled = pickle.dumps(ops, protocol=pickle.HIGHEST_PROTOCOL)
    tagged = encode_batch(ops)
    assert decode_batch(tagged) == ops == pickle.loads(pickled)  # noqa: S301 - made here
    per_item = 1e6 / args.rows
    rows = [("pickle of the dataclasses", len(pickled),
             best(lambda: pickle.dumps(ops, protocol=pickle.HIGHEST_PROTOCOL), args.repeat),
             best(lambda: pickle.loads(pickled), args.repeat)),  # noqa: S301
            (f"spool format {tagged[:2].decode()}", len(tagged),
             best(lambda: encode_batch(ops), args.repeat),
             best(lambda: decode_batch(tagged), args.repeat))]
    print(f"{'format':28s} {'bytes/item':>10s} {'encode µs':>10s} {'decode µs':>10s}")
    for name, size, encode, decode in rows:
        print(f"{name:28s} {size / args.rows:10.0f} {encode * per_item:10.2f} "
              f"{decode * per_item:10.2f}")
    (_, _, old_encode, old_decode), (_, _, new_encode, new_decode) = rows
    print(f"speed-up: encode {old_encode / new_encode:.1f}x, decode {old_decode / new_decode:.1f}x")


if __name__ == "__main__":
    main()
