"""An advisory lock on ``OUTPUT_DIR`` so that two runs never write into the same folder.

The lock is ``OUTPUT_DIR/.aeroseg_run.lock``: an exclusive ``fcntl.flock`` held for the whole run,
with the holder's PID, host and command line written into the file. A second run on the same
folder fails at once with a one-line error naming that PID. The kernel drops the lock when its
process dies (even on SIGKILL), so a lock file left by a killed run is *stale*: the next run
acquires the lock, says whose lock it took over, and goes on. Where ``fcntl`` does not exist
(Windows) runs are not locked.
"""
import os
import socket
import sys
from typing import Dict, Optional

from ..utils.errors import OutputDirError, describe_exception

__all__ = ["LOCK_NAME", "OutputDirLock", "acquire_output_dir_lock", "release_output_dir_lock"]

LOCK_NAME = ".aeroseg_run.lock"

# realpath(OUTPUT_DIR) -> the lock this process holds on it (a process may call setup twice).
_HELD: Dict[str, "OutputDirLock"] = {}


class OutputDirLock:
    """Exclusive advisory lock on ``output_dir`` (see the module docstring)."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_NAME)
        self._file = None
        self.stale_holder: Optional[str] = None  # the previous holder's record, when taken over

    def _open_locked(self):
        """The lock file, opened and exclusively locked; a one-line OutputDirError if another run holds it."""
        import fcntl

        try:
            handle = open(self.path, "a+")
        except OSError as exc:
            raise OutputDirError(f"cannot write to OUTPUT_DIR {self.output_dir} ({describe_exception(exc)}): "
                                 f"choose a writable OUTPUT_DIR") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = " ".join(handle.read().split()) or "unknown PID"
            handle.close()
            raise OutputDirError(f"OUTPUT_DIR {self.output_dir} is in use by another run ({holder}; lock "
                                 f"{self.path}): wait for it to finish or set another OUTPUT_DIR") from None
        return handle

    def check_free(self) -> None:
        """Raise the one-line error :meth:`acquire` would raise, without taking the lock or changing the file."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks
            return
        handle = self._open_locked()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()

    def acquire(self) -> "OutputDirLock":
        try:
            import fcntl  # noqa: F401
        except ImportError:  # pragma: no cover - Windows: no advisory locks
            return self
        handle = self._open_locked()
        handle.seek(0)
        previous = " ".join(handle.read().split())
        if previous:  # the lock file still names a holder, but nobody holds the lock: it died
            self.stale_holder = previous
        handle.seek(0)
        handle.truncate()
        handle.write(f"PID {os.getpid()} on {socket.gethostname()}: {' '.join(sys.argv)[:300]}\n")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is None:
            return
        import fcntl

        try:
            self._file.seek(0)
            self._file.truncate()  # an empty lock file = the last run ended cleanly
            self._file.flush()
        except OSError:
            pass
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def __enter__(self) -> "OutputDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def acquire_output_dir_lock(output_dir: str) -> OutputDirLock:
    """Lock ``output_dir`` for this process (idempotent: a lock it already holds is returned).

    ``stale_holder`` of the result names the run whose stale lock was taken over, if any.
    """
    key = os.path.realpath(output_dir)
    if key in _HELD:
        return _HELD[key]
    lock = OutputDirLock(output_dir).acquire()
    _HELD[key] = lock
    return lock


def release_output_dir_lock(output_dir: Optional[str] = None) -> None:
    """Release this process' lock on ``output_dir`` (all of its locks when None)."""
    keys = list(_HELD) if output_dir is None else [os.path.realpath(output_dir)]
    for key in keys:
        lock = _HELD.pop(key, None)
        if lock is not None:
            lock.release()
