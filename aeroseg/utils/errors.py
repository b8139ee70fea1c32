"""Exceptions whose message is a single, self-explaining line.

Tools catch :class:`AerOSegError` at the top level and print ``error: <message>`` instead of a
traceback, so every message must name the offending file / config key / value and say what was
expected.
"""


class AerOSegError(Exception):
    """Base class of all user-facing AerOSeg errors (one-line messages)."""


class ConfigError(AerOSegError, ValueError):
    """A config key holds a value the code cannot use."""


class CheckpointError(AerOSegError, RuntimeError):
    """A weights file is missing, unreadable or does not match the model it is loaded into."""


class DatasetError(AerOSegError, FileNotFoundError):
    """A dataset folder or file is missing or malformed."""


class OutputDirError(AerOSegError, RuntimeError):
    """The output folder cannot be used: another run holds it, or it cannot be written."""


class LauncherError(AerOSegError, RuntimeError):
    """A job cannot be submitted (--launcher): bad options, no scheduler, or the scheduler refused."""


def one_line(text: str, limit: int = 400) -> str:
    """Collapse ``text`` (e.g. a wrapped library error) to one line of at most ``limit`` chars."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe_exception(exc: BaseException, limit: int = 200, with_type: bool = False) -> str:
    """``exc`` as one line; its type name when the message is empty (e.g. ``EOFError()``).

    ``with_type`` puts the type name first (``"UnidentifiedImageError: cannot identify ..."``),
    for messages about files that a library could not read.
    """
    text = one_line(exc, limit)
    if with_type:
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if text else type(exc).__name__
