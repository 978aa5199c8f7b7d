"""The one exception type stages raise for user mistakes; the CLI prints it as one line."""
from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message: what a one-line error quotes of a library's long one."""
    return (str(exc).splitlines() or [""])[0]


class PipelineError(Exception):
    """Bad input or an impossible request, described in one actionable line (no traceback)."""


class StageFailed(PipelineError):
    """A stage that ran to the end but whose verdict stops the run; its result still goes into the report."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result
