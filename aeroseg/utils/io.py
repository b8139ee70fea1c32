"""Small file-system helpers shared by generated artefacts (synthetic dataset, pretrained CLIP cache)."""
import os
from contextlib import contextmanager

__all__ = ["folder_lock", "write_bytes_atomic"]


def write_bytes_atomic(path: str, data: bytes, durable: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed over it (a reader never sees half a file).

    The temporary name carries the process id, so two processes writing the same path do not
    collide; ``durable`` also fsyncs it before the rename (for files that must survive a crash).
    """
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def folder_lock(folder: str):
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
