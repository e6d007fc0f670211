"""What the chaos scripts share: rounds at random moments, and their options, checked."""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable


def parser(description: str) -> argparse.ArgumentParser:
    """--count rounds, each after a random wait between --min and --max seconds; --seed."""
    made = argparse.ArgumentParser(description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    made.add_argument("--count", type=int, default=5, help="rounds (at least 1)")
    made.add_argument("--min", type=float, default=3.0, help="least wait before a round, s")
    made.add_argument("--max", type=float, default=7.0, help="most wait before a round, s")
    made.add_argument("--seed", type=int, default=None, help="for the waits and the choices")
    return made


def check(made: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse rounds that cannot run, each naming the option."""
    if args.count < 1:
        made.error(f"--count: must be at least 1, not {args.count}")
    if args.min < 0 or args.max < args.min:
        made.error(f"--min and --max: need 0 <= min <= max, not {args.min} and {args.max}")


def run(args: argparse.Namespace, one_round: Callable[[int, random.Random], bool]) -> int:
    """ARGS.count rounds, each ONE_ROUND(round number, the seeded generator) after a random
    wait; 0, or 1 when a round killed nothing (said, with which): a mistyped target or a
    pipeline nobody restarted must not pass for a run that did its work."""
    rng = random.Random(args.seed)
    missed = []
    for round_ in range(1, args.count + 1):
        time.sleep(rng.uniform(args.min, args.max))
        if not one_round(round_, rng):
            missed.append(round_)
    if missed:
        print(f"killed nothing in round(s) {', '.join(map(str, missed))}", file=sys.stderr)
        return 1
    return 0
