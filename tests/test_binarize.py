"""Binarized networks (pipeline/stages/binarize.py): build, a few training steps, weight accounting, LCE."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.data import ImageSet
from pipeline.core.errors import PipelineError
from pipeline.stages import binarize
from pipeline.stages.train import FitSettings
from tests.helpers import colour_blobs as blobs


@pytest.fixture
def larq():
    return pytest.importorskip("larq")


def colour_blobs(classes: int = 3, per_class: int = 16, size: int = 16) -> ImageSet:
    images, labels = blobs(classes, per_class, size)
    return ImageSet(images, labels.astype(np.int64), [f"c{c}" for c in range(classes)])


def test_build_and_train_a_few_steps(larq):
    data = colour_blobs()
    model = binarize.build_binary_net((16, 16, 3), classes=3, filters=(8, 16))
    history = binarize.train_binary(model, data, data, FitSettings(epochs=2, batch_size=16, augment=False))
    assert len(history["loss"]) == 2 and np.isfinite(history["loss"]).all()
    probs = model.predict(np.zeros((2, 16, 16, 3), np.float32), verbose=0)
    assert probs.shape == (2, 3) and np.allclose(probs.sum(-1), 1.0, atol=1e-5)
    # weight_clip keeps the latent binary weights in [-1, 1]
    assert float(np.abs(model.get_layer("block1_bconv").kernel.latent_variable.numpy()).max()) <= 1.0 + 1e-6


def test_summary_counts_binary_weights_and_packed_size(larq):
    model = binarize.build_binary_net((16, 16, 3), classes=4, filters=(8, 16), binary_first_layer=False)
    summary = binarize.binary_model_summary(model)
    # block1: 3*3*8*8, block2: 3*3*8*16; the float stem (3*3*3*8) is not binarized
    assert summary["binary_layers"] == {"block1_bconv": 576, "block2_bconv": 1152}
    assert summary["binary_weights"] == 1728
    assert summary["binary_activation_layers"] == ["block1_bconv", "block2_bconv"]
    total = sum(int(np.prod(w.shape)) for w in model.weights)
    assert summary["binary_weights"] + summary["float_weights"] == total
    assert summary["float32_bytes"] == 4 * total
    assert summary["binary_weights_packed_bytes"] == 576 // 8 + 1152 // 8
    assert summary["packed_bytes"] == 216 + 4 * summary["float_weights"]
    assert summary["compression"] > 1.0

    binary_stem = binarize.binary_model_summary(binarize.build_binary_net((16, 16, 3), 4, (8, 16)))
    assert binary_stem["binary_layers"]["stem_conv"] == 3 * 3 * 3 * 8
    assert "stem_conv" not in binary_stem["binary_activation_layers"]  # pixels stay real-valued


def test_summary_of_a_float_model_has_no_binary_weights():
    from pipeline.core.tf_env import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    summary = binarize.binary_model_summary(model)
    assert summary["binary_weights"] == 0 and summary["packed_bytes"] == summary["float32_bytes"] == 40


def test_without_larq_functions_say_what_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "larq", None)  # makes `import larq` fail
    with pytest.raises(PipelineError, match="install larq"):
        binarize.build_binary_net((16, 16, 3), 3)
    with pytest.raises(PipelineError, match="install larq"):
        binarize.convert_lce(None)


def test_rejects_inputs_too_small_for_the_blocks(larq):
    with pytest.raises(PipelineError, match="too small"):
        binarize.build_binary_net((8, 8, 3), 10, filters=(8, 8, 8, 8))


def test_lce_conversion_emits_binary_kernels(larq):
    pytest.importorskip("larq_compute_engine")
    from pipeline.core.tflite_file import read_model

    model = binarize.build_binary_net((16, 16, 3), classes=3, filters=(8, 16))
    flatbuffer = binarize.convert_lce(model)
    import pathlib
    import tempfile  # noqa: E401

    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "bnn.tflite"
        path.write_bytes(flatbuffer)
        ops = read_model(path).op_histogram()
    assert ops.get("LceBconv2d") == 2 and ops.get("LceBMaxPool2d") == 1  # BN folded, pooling on packed bits
    try:
        out = binarize.lce_predict(flatbuffer, np.zeros((1, 16, 16, 3), np.float32))
    except PipelineError as exc:  # LCE 0.16's interpreter cannot read NumPy 2 arrays
        assert "NumPy" in str(exc) and np.__version__.startswith("2")
    else:
        assert out.shape == (1, 3)


def test_binarize_verb_writes_the_lce_file_and_a_report(larq, tmp_path):
    pytest.importorskip("larq_compute_engine")
    import json

    from click.testing import CliRunner

    from pipeline.cli import main

    out = tmp_path / "bnn"
    result = CliRunner().invoke(main, ["binarize", "--input-size", "16", "--filters", "8,16", "--epochs", "1",
                                       "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report == json.loads((out / "binarize.json").read_text())
    assert 0.0 <= report["accuracy"] <= 1.0 and report["n"] > 0 and report["epochs"] == 1
    # stem 3*3*3*8 + block1 3*3*8*8 + block2 3*3*8*16, all binary with the BinaryNet stem
    assert report["binary_weights"] == 216 + 576 + 1152
    assert report["lce_ops"]["LceBconv2d"] == 2 and report["lce_file_bytes"] == (out / "model_lce.tflite").stat().st_size
    assert (out / "labels.txt").read_text().split() == [str(d) for d in range(10)]
    assert (out / "binary.h5").stat().st_size > 0


@pytest.mark.parametrize("args, message", [(["--filters", "8,x"], "comma-separated integers"),
                                           (["--filters", "8,16,32,64,128"], "too small"),
                                           (["--epochs", "0"], "at least 1")])
def test_binarize_verb_rejects_bad_settings_in_one_line(larq, tmp_path, args, message):
    pytest.importorskip("larq_compute_engine")
    from click.testing import CliRunner

    from pipeline.cli import main

    result = CliRunner().invoke(main, ["binarize", "--input-size", "16", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
