"""The one reader of class labels: labels files, ``.tflite`` metadata and class folder names all go through it.

Labels come from files we did not write (third-party models, users' folders), so they are untrusted
text: they are split on ``\\n`` only, escaped before they reach a terminal or a frame
(:func:`display_label`), and checked before we write them into a model or an app
(:func:`label_problem`).
"""
from __future__ import annotations

import codecs
import unicodedata
from pathlib import Path

from pipeline.core.errors import PipelineError

DISPLAY_LIMIT = 64  # characters of a label shown to people; a label is a class name, not a paragraph
# Control characters (C0, DEL, C1: ESC starts ANSI/OSC sequences, CR rewrites the line), line and paragraph
# separators, and format characters (bidi overrides reorder the text around them, zero-width ones hide).
_UNPRINTABLE = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs"))
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def parse_labels(text: str) -> list[str]:
    """One label per ``\\n``-terminated line (``\\r\\n`` too), surrounding blanks stripped, blank lines dropped.

    Only ``\\n`` separates labels: ``str.splitlines`` also splits on ``\\r``, ``\\x0b``, ``\\x1c`` or
    ``\\u2028``, so one stray character inside a label would shift every class name after it.
    """
    return [line.strip() for line in text.split("\n") if line.strip()]


def read_labels(path: str | Path) -> list[str]:
    """The labels of a labels file; a missing, undecodable or empty file is a one-line error.

    The file is UTF-8 (a leading byte-order mark is dropped); UTF-16 with a byte-order mark, as
    Windows editors save "Unicode" text, is decoded too. Anything else is refused rather than guessed.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"labels file not found: {path}")
    data = path.read_bytes()
    encoding = "utf-16" if data.startswith(_UTF16_BOMS) else "utf-8-sig"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        raise PipelineError(f"labels file {path} is not UTF-8 text; save it as UTF-8") from None
    if "\x00" in text:
        raise PipelineError(f"labels file {path} holds NUL characters (UTF-16 without a byte-order mark?); "
                            "save it as UTF-8")
    labels = parse_labels(text)
    if not labels:
        raise PipelineError(f"labels file is empty: {path}")
    return labels


def display_label(text: str, limit: int = DISPLAY_LIMIT) -> str:
    """``text`` safe to print or draw: unprintable characters become ``\\xNN``/``\\uNNNN`` escapes, and at
    most ``limit`` characters are kept (``...`` marks the cut), so a label cannot drive the terminal."""
    shown: list[str] = []
    length = 0
    for char in text:
        piece = _escape(char) if unicodedata.category(char) in _UNPRINTABLE else char
        if length + len(piece) > limit:
            return "".join(shown) + "..."
        shown.append(piece)
        length += len(piece)
    return "".join(shown)


def label_problem(text: str) -> str | None:
    """Why ``text`` cannot be written as a label (into a labels file, a model or the app), or None.

    A control or format character or a line separator splits or hides the label in some reader (the
    Android app splits on ``\\r``), and surrounding blanks are stripped on reading, changing the name.
    """
    if not text:
        return "it is empty"
    bad = next((c for c in text if unicodedata.category(c) in _UNPRINTABLE), None)
    if bad is not None:
        return f"it holds the control character {_escape(bad)}"
    if text != text.strip():
        return "it starts or ends with a blank"
    return None


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
