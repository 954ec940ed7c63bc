"""Each `faasd-py up` run's identity on the host: a run id, and a lock file that the run holds
with flock(2) for as long as it runs.

What a run leaves outside its data dir is named by its id (its cgroups are
faasd-py/<run id>/<instance>, see faasd_py.isolation.cgroups), so that a later run can tell a dead
run's leftovers from a live run's things without guessing by age: a run is dead exactly when its
lock can be taken, because the kernel drops a flock when the last descriptor of it closes, which
a `kill -9` does as surely as a clean exit. (A pid would not do: pids are reused.)

Lock files live in RUN_LOCKS, one per run, `<run id>.lock`, holding the run's pid for an
operator to read. /run is a tmpfs, emptied at boot along with the cgroups themselves, and it is
host-wide, as cgroups are: runs with different data dirs still see each other.

Runs may start and sweep at the same moment; the steps keep them apart:
- a run creates its lock file (O_EXCL: never someone else's), locks it, then checks that the
  path still names the file it locked, since a sweeper may have taken the fresh, unlocked file
  for a dead run's and removed it in between; if so it starts over with a new id. Only then
  does it make anything named by its id.
- a sweeper takes a run's lock without waiting (`dead_run`); if it can, the run is dead: it
  removes the run's leftovers, then the lock file, all while holding the lock. A run whose lock
  file is missing is dead too: a live run's file is only ever removed by a sweeper that held
  its lock, which a live run never lets go.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["RUN_LOCKS", "RunLock", "dead_run", "is_run_id", "lock_file_ids"]

RUN_LOCKS = Path("/run/faasd-py/runs")
_ID = re.compile(r"run-[0-9a-f]{12}")
_SUFFIX = ".lock"


def is_run_id(name: str) -> bool:
    """Whether `name` is a run id (as a cgroup folder of a run is named)."""
    return _ID.fullmatch(name) is not None


def lock_file_ids(directory: Path = RUN_LOCKS) -> list[str]:
    """The run ids that have a lock file in `directory` (live runs' and dead ones')."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    ids = (name.removesuffix(_SUFFIX) for name in names if name.endswith(_SUFFIX))
    return sorted(run_id for run_id in ids if is_run_id(run_id))


class RunLock:
    """This run's identity, held until `release` (or until the process ends, however it ends).
    Make one with `RunLock.acquire`."""

    def __init__(self, run_id: str, path: Path, fd: int) -> None:
        self.id = run_id
        self.path = path
        self._fd = fd

    def __repr__(self) -> str:
        return f"RunLock({self.id!r}, {str(self.path)!r})"

    @classmethod
    def acquire(cls, directory: Path = RUN_LOCKS) -> RunLock:
        """A new run id with its lock taken. OSError if `directory` cannot be written."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        while True:
            run_id = f"run-{secrets.token_hex(6)}"
            path = directory / f"{run_id}{_SUFFIX}"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a sweeper holds it, and removes it: take another id
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            if not _names(path, fd):  # swept between the open and the lock
                os.close(fd)
                continue
            os.write(fd, f"{os.getpid()}\n".encode())
            return cls(run_id, path, fd)

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        """Remove the lock file and let go of the lock: what carries this run's id from now on
        is a dead run's, for the next run to remove. Idempotent."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            if _names(self.path, fd):
                self.path.unlink()
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


@contextlib.contextmanager
def dead_run(run_id: str, directory: Path = RUN_LOCKS) -> Iterator[bool]:
    """True when run `run_id` is no longer running; its lock is then held for the block, so
    that the run's leftovers can be removed in it, and its lock file is removed at the end.
    False when the run is alive: leave what is named by its id alone."""
    path = directory / f"{run_id}{_SUFFIX}"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        yield True  # no lock file: no live run has this id
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            alive = True
        else:
            alive = False
        yield not alive
        if not alive and _names(path, fd):
            path.unlink()
    finally:
        os.close(fd)


def _names(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        by_path = os.stat(path)
    except FileNotFoundError:
        return False
    by_fd = os.fstat(fd)
    return (by_path.st_dev, by_path.st_ino) == (by_fd.st_dev, by_fd.st_ino)
