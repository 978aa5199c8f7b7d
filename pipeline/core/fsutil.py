"""Atomic file writes: a crash or Ctrl-C never leaves a half-written artifact under its real name."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.core.errors import PipelineError


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (same suffix); it replaces ``target`` on success only."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}")
    os.close(fd)
    os.unlink(tmp)  # writers such as h5py want to create the file themselves
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(target: str | Path, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text(target: str | Path, text: str) -> Path:
    return write_bytes(target, text.encode("utf-8"))


def write_json(target: str | Path, data: dict) -> Path:
    return write_text(target, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and prove we can write there, before any long work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PipelineError(f"output folder {path} is not writable: {exc.strerror or exc}") from None
    return path
