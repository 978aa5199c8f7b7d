"""The one exception type stages raise for user mistakes; the CLI prints it as one line."""
from __future__ import annotations


class PipelineError(Exception):
    """Bad input or an impossible request, described in one actionable line (no traceback)."""
