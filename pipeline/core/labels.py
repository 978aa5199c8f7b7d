"""The one reader of class labels: labels files, ``.tflite`` metadata and class folder names all go through it."""
from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import PipelineError


def parse_labels(text: str) -> list[str]:
    """One label per line, surrounding blanks stripped, blank lines dropped (the Android app's rule too)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_labels(path: str | Path) -> list[str]:
    """The labels of a labels file; a missing, undecodable or empty file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"labels file not found: {path}")
    try:
        labels = parse_labels(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise PipelineError(f"labels file {path} is not UTF-8 text") from None
    if not labels:
        raise PipelineError(f"labels file is empty: {path}")
    return labels
