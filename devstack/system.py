"""Machine-level chores shared by the services that run as their own OS user or come from Debian."""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Sequence
from pathlib import Path

from devstack.paths import stack_home
from devstack.process import StackError, run


def apt_install(packages: Sequence[str], *, missing: Path) -> None:
    """apt-get install PACKAGES as root; where package lists were never fetched, update first.

    MISSING is the file whose absence made the install necessary, named in the error for non-root.
    """
    if os.geteuid() != 0:
        raise StackError(f"{missing} is missing: as root, `apt-get install {' '.join(packages)}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=600"]  # a fresh machine's unattended-upgrades
    argv = ["apt-get", *lock, "install", "-y", "--no-install-recommends", *packages]
    what = f"apt-get install {' '.join(packages)}"
    try:
        run(argv, what=what, env=env)
    except StackError:
        run(["apt-get", *lock, "update"], what="apt-get update", env=env)
        run(argv, what=what, env=env)


def chown_to(path: Path, user: str, mode: int) -> None:
    """Give PATH to the OS user USER (and its group) with MODE."""
    if os.geteuid() != 0:  # else a bare PermissionError from os.chown
        raise StackError(f"{path} must be given to the `{user}` user, which needs root: the "
                         "stack runs PostgreSQL and ClickHouse as their own users; run it as "
                         "root")
    account = pwd.getpwnam(user)
    os.chown(path, account.pw_uid, account.pw_gid)
    os.chmod(path, mode)


def ensure_traversable(path: Path, user: str) -> None:
    """A server running as USER must be able to pass through every folder above PATH.

    Folders of the stack home are ours to open (o+x, not o+r); above it we only check, since
    changing, say, /root's mode is not the stack's decision.
    """
    home = stack_home()
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & stat.S_IXOTH:
            continue
        if parent == home or home in parent.parents:
            os.chmod(parent, mode | stat.S_IXOTH)
        else:
            raise StackError(
                f"{parent} is not traversable by the `{user}` user; `chmod o+x {parent}` or "
                "set CDC_STACK_HOME to a folder outside it"
            )


def as_user(user: str, *argv: object) -> list[object]:
    """ARGV run as USER. setpriv execs (runuser forks and waits), so the PID that process.start
    records is the server itself; --init-groups gives it its own groups rather than root's."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *argv]
