"""What the chaos scripts share: rounds at random moments, and their options, checked."""

from __future__ import annotations

import argparse


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
