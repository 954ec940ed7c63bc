"""Who may read what faasd-py keeps in its data dir: its owner, and sandboxes where they must.

The rule, which tests/integration/test_leaks.py checks on a data dir that ran functions with
storage and secrets:

- The data dir and every folder in it are 0700, every file 0600: the registry (secrets,
  functions), storage.sqlite3 (every app's objects) and their -wal and -shm files, the
  credentials, package metadata, instances' folders. (A function's secrets folder belongs to
  the sandbox's id instead, 0500 with files of 0400: see
  faasd_py.isolation.sandbox.prepare_secrets.)
- Wider, because sandboxes read them: a package's function/ and deps/ trees (and the pip cache
  under packages/.deps/<sha>/site/ that deps/ hard-links), and the runtime folder run/lib:
  folders 0755, files 0644, or 0755 where executable. A sandbox's uid maps to SANDBOX_UID,
  which owns none of them, so it reads them with the permissions of "other". No other user
  can reach them all the same: the folders above them are 0700. A sandbox need not cross
  those either: it opens its mounts' sources as root, before it takes its own id
  (native/sandbox.c, step 2).

Modes are set where files are made rather than by a process-wide umask: a umask would also
apply to what sandboxes must read (pip's output), and to whatever else shares the process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

__all__ = ["private_dir", "private_file", "private_sqlite", "readable_tree"]

logger = logging.getLogger(__name__)

_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner may use (0700): made if missing, with any missing
    parents (0700 too: made by faasd-py, they are its own), or tightened if it exists. A
    folder shared by design (sticky, as /tmp is) is left as it is, with a warning."""
    missing: list[Path] = []
    here = path
    while not here.exists():
        missing.append(here)
        here = here.parent
    for directory in reversed(missing):
        # Made meanwhile, perhaps: by another build, another run.
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
    mode = path.stat().st_mode
    if mode & stat.S_ISVTX:
        logger.warning("%s is a shared folder (sticky): its own files stay private", path)
    elif stat.S_IMODE(mode) != 0o700:
        path.chmod(0o700)
    return path


def private_file(path: Path) -> Path:
    """`path` as a file only its owner may read or write (0600): made empty if missing,
    tightened if it exists (a data dir from before this rule)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return path


def private_sqlite(path: Path) -> Path:
    """A SQLite database only its owner may read, with the -wal and -shm files that SQLite
    makes beside it: SQLite gives those the database's own mode when it makes them, so the
    database is made 0600 before SQLite opens it; side files left by an older run are
    tightened."""
    private_file(path)
    for suffix in _SQLITE_SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.chmod(0o600)
    return path


def readable_tree(root: Path) -> None:
    """Make a tree that sandboxes read readable by them, and by nothing that could change it:
    folders 0755, files 0644 (0755 where the owner may execute), whatever modes the source
    had (a handler saved 0600 would not load in a sandbox; one saved 0666 could be changed
    by anyone who reaches it). Symlinks are left alone."""
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            path = os.path.join(directory, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                os.chmod(path, 0o755 if mode & stat.S_IXUSR else 0o644)
