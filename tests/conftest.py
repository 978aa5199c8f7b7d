"""Session fixtures: the read-only reference models, tiny image folders, and the one tiny ``tflpipe run``
that the run, resume, target and verb tests share (copy it before changing anything in it)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.helpers import REFERENCE_DIR, TINY_V2, invoke, json_output, write_image_folder  # noqa: E402

# The longest files (measured with --durations), longest first. With `--no-loadscope-reorder` (setup.cfg)
# pytest-xdist's loadfile hands files to its two workers in collection order; by default it orders them by test
# count, which started the long, few-test files last and kept one worker busy long after the other had finished.
LONGEST_FILES = ("test_pipeline_run.py", "test_compression.py", "test_adapt.py", "test_supernet.py", "test_macs.py",
                 "test_search_space.py", "test_zoo.py", "test_channel_prune.py", "test_search.py", "test_fuzz.py",
                 "test_latency.py")


def pytest_collection_modifyitems(items: list) -> None:
    def rank(item) -> int:
        name = Path(str(item.fspath)).name
        return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)  # stable: the order within a file is kept


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference models not found at {REFERENCE_DIR}")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def run_data(tmp_path_factory) -> Path:
    """3 classes x 40 colour-blob images at 32 px: enough for a tiny net to learn in a few epochs."""
    return write_image_folder(tmp_path_factory.mktemp("run_data"), classes=3, per_class=40, size=32)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, run_data) -> dict:
    """``tflpipe run`` on a 32 px MobileNet v2 α=0.35: train, prune, QAT, convert, metadata, evaluate, NNAPI.

    Read-only for the tests: those that change a run work on ``copy_run``'s copy.
    """
    root = tmp_path_factory.mktemp("tiny_run")
    config = root / "config.yaml"
    # 4 epochs (24 steps) left the net at chance on 3 of 6 seeds; 8 learned on 12 of 12 (accuracy >= 0.75).
    # A quarter held out (30 images): with 12, one fresh clone scored 7 of 12 (0.58) and failed the 0.6 bar.
    config.write_text("epochs: 8\nlearning_rate: 0.02\nprune_sparsity: 0.5\nprune_epochs: 1\nqat_epochs: 1\n"
                      "validation_split: 0.25\nbenchmark_runs: 3\ntargets: [nnapi]\n")
    out = root / "out"
    args = ["--config", config, *TINY_V2, "--data", run_data]
    summary = json_output(invoke("run", *args, "--out", out, "--json"))
    return {"out": out, "data": run_data, "config": config, "args": args, "summary": summary}


@pytest.fixture
def copy_run(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny run's folder, for tests that resume, extend or break it."""
    out = tmp_path / "out"
    shutil.copytree(tiny_run["out"], out)
    return out


@pytest.fixture(scope="session")
def cpu_table(tmp_path_factory) -> Path:
    """A small latency table of this CPU (1 thread) over the ops of the tiny nets the tests adapt and search."""
    from pipeline.latency.measure import LocalMeasurer
    from pipeline.latency.table import BuildPlan, build_table

    out = tmp_path_factory.mktemp("table") / "cpu.json"
    plan = BuildPlan(initial=70, rounds=0, validation=0, neighbours=0, fusion_samples=1, minutes=3)
    build_table(LocalMeasurer(threads=1, min_seconds=0.01), "cpu-int8", out, plan, progress=False,
                ops=["CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "MUL", "FULLY_CONNECTED", "SOFTMAX", "QUANTIZE"])
    return out
