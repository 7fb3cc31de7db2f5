"""The one owner of our temporary files and folders (outputs written aside then renamed into place).

Every temporary is named ``.meshtalk-tmp.<pid>.<label>.<random><suffix>`` beside its destination (the
same file system, so the final ``os.replace`` is atomic), and is removed:

- when the writer is done or fails (``temp_path``'s ``finally``; the destination's rename took it away
  on success);
- on SIGTERM / SIGINT: ``termination_raises`` turns SIGTERM into ``Terminated`` (a ``KeyboardInterrupt``),
  so those ``finally`` blocks run, and an ``atexit`` hook removes whatever is still registered;
- after ``kill -9`` (nothing runs): by the next run that writes into the same folder, which removes the
  entries of this naming pattern whose process is gone (``sweep_stale``). An entry of a live process,
  or any name not of this pattern, is never touched. A pid reused by a new process only keeps an
  orphan until that process ends. Folders shared between machines are not considered (the pid is
  local).
"""
from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import tempfile
from typing import Iterator, List, Set

__all__ = ["TEMP_PREFIX", "make_temp", "release", "temp_path", "sweep_stale", "Terminated", "termination_raises"]

TEMP_PREFIX = ".meshtalk-tmp."
_PATTERN = re.compile(r"^\.meshtalk-tmp\.(\d+)\.")
_LIVE: Set[str] = set()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program was, so cleanup runs as for Ctrl-C."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: the process exists (another user's)
        return True
    return True


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        try:
            os.unlink(path)
        except OSError:
            pass


def sweep_stale(folder) -> List[str]:
    """Remove this pattern's temporaries in ``folder`` whose process is no longer running; returns them."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _PATTERN.match(name)
        if m and not _alive(int(m.group(1))):
            path = os.path.join(folder, name)
            _remove(path)
            removed.append(path)
    return removed


def make_temp(folder, label: str, suffix: str = "", directory: bool = False) -> str:
    """A new temporary file (empty) or folder in ``folder``, registered until ``release``; stale
    temporaries of dead processes in ``folder`` are swept first."""
    folder = os.fspath(folder)
    sweep_stale(folder)
    label = re.sub(r"[^A-Za-z0-9_-]", "_", label)[:40] or "tmp"
    prefix = f"{TEMP_PREFIX}{os.getpid()}.{label}."
    if directory:
        path = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=folder)
    else:
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
        os.close(fd)
    _LIVE.add(path)
    return path


def release(path: str) -> None:
    """Remove ``path`` if it is still there (a rename into place took it away already) and forget it."""
    _LIVE.discard(path)
    _remove(path)


@contextlib.contextmanager
def temp_path(folder, label: str, suffix: str = "", directory: bool = False) -> Iterator[str]:
    """``with temp_path(folder, "meshes", ".npz") as tmp: write(tmp); os.replace(tmp, dst)``: whatever
    happens (an error, Ctrl-C, SIGTERM under ``termination_raises``), nothing is left behind."""
    path = make_temp(folder, label, suffix, directory)
    try:
        yield path
    finally:
        release(path)


@atexit.register
def _release_all() -> None:
    for path in list(_LIVE):
        release(path)


@contextlib.contextmanager
def termination_raises() -> Iterator[None]:
    """Within the block SIGTERM raises ``Terminated`` in the main thread (then cleanup runs as for
    Ctrl-C); the previous handler is restored after. Outside the main thread it does nothing."""
    def handler(signum, frame):
        raise Terminated(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
