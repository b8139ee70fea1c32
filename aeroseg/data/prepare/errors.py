"""The error of a missing or malformed input file: ``<file>: <problem>`` on one line."""
from __future__ import annotations

from ...utils.errors import AerOSegError, describe_exception


class PrepareError(AerOSegError):
    """A missing or malformed input. ``str(err)`` is ``"<file>: <problem>"``.

    The scripts print it as ``error: <file>: <problem>`` and exit with code 2,
    or count and skip the input when ``--skip-bad`` is given. The message is
    always a single line.
    """

    def __init__(self, path: object, problem: str):
        super().__init__(str(path), str(problem))
        self.path = str(path)
        self.problem = " ".join(str(problem).split())

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def describe_input_error(exc: BaseException) -> str:
    """What a reader raised, for a :class:`PrepareError` (type first: ``"OSError: ..."``)."""
    return describe_exception(exc, limit=400, with_type=True)
