"""The architecture as a test: no import runs back up a layer, no module shadows the standard library,
every setting is declared by the stage that reads it, and resume decisions follow those declarations."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from pipeline.runner.config import RunConfig
from pipeline.runner.run import NOT_READ_BY_STAGES, STAGES, stages_to_keep

ROOT = Path(__file__).resolve().parents[1]
# Lowest first: a module may import its own layer and the ones before it, never one after it.
LAYERS = [
    ("foundation", ["pipeline.core"]),
    ("zoo and Edge TPU", ["keras_models", "edgetpu"]),
    ("latency model", ["pipeline.latency"]),
    ("stages", ["pipeline.stages"]),
    ("targets", ["pipeline.targets"]),
    ("search", ["pipeline.search"]),
    ("runner", ["pipeline.runner"]),
    ("api and cli", ["pipeline.api", "pipeline.cli", "pipeline.__main__", "pipeline"]),
]
# The board script runs alone on a Coral board: it may import nothing of ours at all.
STANDALONE = {"edgetpu.board.classify"}


def _layer(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes if p != "pipeline"):
            return rank
    return len(LAYERS) - 1 if module == "pipeline" else -1


def _modules():
    for package in ("pipeline", "keras_models", "edgetpu"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("pipeline", "keras_models", "edgetpu")}


@pytest.mark.parametrize("module,path", list(_modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_no_import_runs_back_up_a_layer(module, path):
    own = _layer(module)
    assert own >= 0, f"{module} belongs to no layer: add it to LAYERS"
    imported = _imports(path)
    if module in STANDALONE:
        assert not imported, f"{module} runs alone on the board but imports {sorted(imported)}"
        return
    upward = sorted(name for name in imported if _layer(name) > own and name != "pipeline")
    assert not upward, f"{module} ({LAYERS[own][0]}) imports a higher layer: {upward}"


def test_no_module_shadows_the_standard_library():
    shadows = [str(path.relative_to(ROOT)) for _, path in _modules()
               if path.stem in sys.stdlib_module_names and path.stem != "__init__"]
    assert not shadows


def test_every_setting_is_read_by_a_stage_or_said_not_to_be():
    read = {name for stage in STAGES for name in stage.reads}
    fields = set(RunConfig().to_dict())
    assert read <= fields, f"stages declare unknown settings: {sorted(read - fields)}"
    assert fields - read == set(NOT_READ_BY_STAGES)


DONE = ["train", "prune", "qat", "convert", "metadata", "evaluate", "nnapi"]


@pytest.mark.parametrize("change,kept", [
    ({}, DONE),
    ({"benchmark_runs": 5}, ["train", "prune", "qat", "convert", "metadata"]),
    ({"ptq_modes": ["dynamic"]}, ["train", "prune", "qat"]),
    ({"qat_epochs": 3}, ["train", "prune"]),
    ({"prune_sparsity": 0.0}, ["train"]),
    ({"seed": 1}, []),
    ({"nnapi_api_level": 29}, ["train", "prune", "qat", "convert", "metadata", "evaluate"]),
    ({"targets": ["nnapi", "edgetpu"]}, DONE),  # adding a target runs it, and keeps everything else
    ({"targets": []}, DONE[:-1]),  # a dropped target's result goes
    ({"tensorboard": False}, DONE),
])
def test_a_changed_setting_reruns_exactly_the_stages_from_the_first_that_reads_it(change, kept):
    before = RunConfig(targets=["nnapi"])
    after = RunConfig(**{**before.to_dict(), **change})
    assert stages_to_keep(before.to_dict(), after, DONE) == kept


def test_settings_an_older_run_did_not_know_count_as_their_defaults():
    old = {k: v for k, v in RunConfig().to_dict().items() if k not in ("prune_allocation", "tensorboard")}
    assert stages_to_keep(old, RunConfig(), DONE[:-1]) == DONE[:-1]


def test_any_import_order_loads_tensorflow_with_the_keras_2_api():
    """Whatever module of ours comes first, TensorFlow imported after it (by TF-MOT, larq, a user) is Keras 2."""
    import subprocess

    code = "import pipeline.core.data, tensorflow as tf; print(tf.keras.__name__)"
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip().startswith("tf_keras"), out.stdout  # not Keras 3


def test_the_command_line_starts_without_tensorflow():
    """`tflpipe --help` and every verb's options load no TensorFlow (8 s here): defaults come from TF-free modules."""
    import subprocess

    code = "import sys, pipeline.cli; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() == "False"


def test_the_public_api_is_reachable_from_the_package_and_names_only_what_exists():
    import pipeline
    from pipeline import api

    assert all(getattr(pipeline, name) is getattr(api, name) for name in api.__all__)
    with pytest.raises(AttributeError):
        pipeline.not_in_the_api  # noqa: B018
