"""Atomic file writes: a crash or Ctrl-C never leaves a half-written artifact under its real name."""
from __future__ import annotations

import json
import os
import shutil
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
    tmp_path = Path(tmp)
    try:
        os.close(fd)
        os.unlink(tmp)  # writers such as h5py want to create the file themselves
        yield tmp_path
        os.replace(tmp_path, target)
    finally:  # also on KeyboardInterrupt: no temp is left behind
        _remove(tmp_path)


def _remove(path: Path) -> None:
    """Delete a temp file, or the folder a SavedModel writer made of it."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


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


def save_figure(fig, target: str | Path) -> Path:
    """Lay out a matplotlib figure, write it atomically (format from the suffix) and close it: pyplot keeps every
    open figure alive otherwise."""
    import matplotlib.pyplot as plt

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return target


def save_keras_model(model, target: str | Path) -> Path:
    """Save a Keras model (duck-typed: ``count_params`` and ``save``) atomically, without its optimizer.

    h5py crashes the whole process, leaving a partial temp, when a write hits a full disk; so the free
    space is checked against an estimate first (float32 weights x 1.5 for the format, plus 1 MiB).
    """
    target = Path(target)
    needed = int(4 * model.count_params() * 1.5) + 2**20
    free = shutil.disk_usage(target.parent).free
    if free < needed:
        raise PipelineError(f"not enough disk space to save {target.name}: about {needed / 2**20:.1f} MiB needed, "
                            f"{free / 2**20:.1f} MiB free in {target.parent}")
    with atomic_path(target) as tmp:
        model.save(tmp, include_optimizer=False)
    return target


def ensure_writable_file(path: str | Path) -> Path:
    """Create the folder of output file ``path`` and prove we can write there, before any long work starts."""
    path = Path(path)
    if path.is_dir():
        raise PipelineError(f"output {path} is a folder; give a file name")
    ensure_writable_dir(path.parent)
    return path


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and prove we can write there, before any long work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PipelineError(f"output folder {path} is not writable: {exc.strerror or exc}") from None
    return path
