"""The predictor against the real compiler: every (model, ``*_edgetpu.tflite``) pair in the shared reference folders.

Each compiled file keeps the ops the compiler left outside its ``edgetpu-custom-op``; the prediction for
the source model must leave exactly that multiset of ops on the CPU. Pairs are discovered, not listed,
so a pair dropped into either folder is checked too.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REFERENCE_DIR

from edgetpu.check import check, compiled_cpu_ops

SUFFIX = "_edgetpu.tflite"
FOLDERS = [REFERENCE_DIR, REFERENCE_DIR / "coral_pairs"]


def _pairs() -> list:
    """One param per compiled file (source = the name without the suffix); one placeholder if none, so the
    ``reference_dir`` fixture can skip with its reason when the shared folder is absent."""
    compiled = sorted(p for folder in FOLDERS if folder.is_dir() for p in folder.glob(f"*{SUFFIX}"))
    pairs = [pytest.param(p.with_name(p.name[: -len(SUFFIX)] + ".tflite"), p, id=p.name[: -len(SUFFIX)])
             for p in compiled]
    return pairs or [pytest.param(None, None, id="no-pairs")]


@pytest.mark.parametrize("source,compiled", _pairs())
def test_predicted_cpu_ops_are_what_the_compiler_left_on_the_cpu(reference_dir: Path, source: Path | None,
                                                                  compiled: Path | None) -> None:
    assert compiled is not None, f"no *{SUFFIX} files in {[str(f) for f in FOLDERS]}"
    assert source.is_file(), f"{compiled.name} has no source model {source.name} next to it"
    compiler_cpu = compiled_cpu_ops(compiled)
    report = check(source)
    assert report.cpu_ops == compiler_cpu, "\n".join(report.reasons)
    assert report.fully_mapped == (not compiler_cpu)
