"""Atomic file writes and a folder lock: the one implementation every writer of the project uses.

A file is written under a temporary name beside it and renamed over it when complete, so a
reader (or a killed run's successor) never sees half a file. Temporary names are
``.<name>.tmp.<pid>.<random><suffix>``: hidden from ``*.png``-style globs, unique per process and
call (two processes or threads writing the same file cannot collide), and ending in the file's
own suffix, so libraries that choose a format by extension (PIL, rasterio, numpy) still do.
:func:`is_temp_name` recognises leftovers of killed writers. ``durable=True`` also fsyncs the
file before the rename: for what must survive a crash (checkpoints, manifests, results).
"""
import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Union

__all__ = ["atomic_write", "folder_lock", "is_temp_name", "temp_path", "write_bytes_atomic", "write_text_atomic"]

PathLike = Union[str, "os.PathLike[str]"]
_TEMP_NAME = re.compile(r"^\..+\.tmp\.\d+\.[0-9a-f]{8}(\.[^.]*)?$")


def temp_path(path: PathLike) -> Path:
    """A fresh temporary path beside ``path`` (same folder, so the final rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp.{os.getpid()}.{secrets.token_hex(4)}{path.suffix}")


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of :func:`temp_path`'s (e.g. left by a killed writer)."""
    return bool(_TEMP_NAME.match(name))


@contextmanager
def atomic_write(path: PathLike, mode: str = "wb", durable: bool = False) -> Iterator[IO]:
    """``with atomic_write(path) as f: f.write(...)``: ``path`` appears complete, or not at all.

    On an exception (or a failed rename) the temporary file is removed and ``path`` keeps what it
    held before. ``mode`` is ``"wb"`` or ``"w"`` (UTF-8 text).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode={mode!r}, expected 'wb' or 'w'")
    tmp = temp_path(path)
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: PathLike, data: bytes, durable: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "wb", durable) as f:
        f.write(data)


def write_text_atomic(path: PathLike, text: str, durable: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "w", durable) as f:
        f.write(text)


@contextmanager
def folder_lock(folder: PathLike):
    """Exclusive lock on ``folder/.lock`` where the OS offers one (several processes may build at once)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cross-process lock
        yield
        return
    with open(os.path.join(folder, ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
