"""The zoo: every net builds, saves/loads, rejects bad knobs, and survives pruning + QAT + full-int8
conversion with no float op, nothing skipped by TF-MOT, and a graph the Edge TPU maps completely."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
from click.testing import CliRunner

import keras_models
from keras_models import ZooError, build_model
from keras_models.layers import ChannelShuffle, HardSigmoid, HardSwish
from keras_models.macs import count
from pipeline.cli import main
from pipeline.core.tf_env import keras, tf
from pipeline.core.tflite_file import read_model
from pipeline.stages.convert import convert

# name -> (knobs, input size) of a small configuration that still has every block of the net.
TINY = {
    "mobilenet_v1": ({"alpha": 0.25}, 32),
    "mobilenet_v2": ({"alpha": 0.35}, 32),
    "mobilenet_v3_small": ({"alpha": 0.35}, 32),
    "mobilenet_v3_large": ({"alpha": 0.35}, 32),
    "squeezenet_1_0": ({}, 32),
    "squeezenet_1_1": ({}, 32),
    "shufflenet_v1": ({"groups": 3, "alpha": 0.25}, 32),
    "shufflenet_v2": ({"alpha": 0.5}, 32),
    "mnasnet_a1": ({"alpha": 0.35}, 32),
    "mnasnet_b1": ({"alpha": 0.35}, 32),
    "efficientnet_lite0": ({}, 32),
    "efficientnet_lite1": ({}, 32),
    "efficientnet_lite2": ({}, 32),
    "efficientnet_lite3": ({}, 32),
    "efficientnet_lite4": ({}, 32),
    "resnet50": ({}, 32),
    "densenet121": ({}, 32),
}
# The default run converts one net end to end (the custom layers have their own fast int8 tests above);
# the rest of the int8 round trips are marked slow.
FAST_INT8 = {"squeezenet_1_1"}
CLASSES = 3


def test_registry_has_every_net_of_the_issue():
    expected = {"mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "squeezenet_1_0",
                "squeezenet_1_1", "shufflenet_v1", "shufflenet_v2", "mnasnet_a1", "mnasnet_b1", "resnet50",
                "densenet121", *(f"efficientnet_lite{i}" for i in range(5))}
    assert {spec.name for spec in keras_models.list_models()} == expected == set(TINY)


# Nets whose save/load round trip exercises every custom layer and quantize config of the zoo.
FAST_SAVE = {"mobilenet_v3_small", "shufflenet_v1", "shufflenet_v2", "mnasnet_a1", "squeezenet_1_1"}


@pytest.mark.parametrize("name", sorted(TINY))
def test_builds_small_without_lambda(name):
    knobs, size = TINY[name]
    model = build_model(name, size, classes=CLASSES, **knobs)
    assert model.output_shape == (None, CLASSES)
    assert not [layer.name for layer in model.layers if isinstance(layer, keras.layers.Lambda)]


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n in FAST_SAVE else pytest.mark.slow) for n in sorted(TINY)
])
def test_round_trips_through_save_and_load(name, tmp_path):
    knobs, size = TINY[name]
    model = build_model(name, size, classes=CLASSES, **knobs)
    x = np.random.default_rng(0).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    with keras_models.quantize_scope():
        loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), atol=1e-5)


@pytest.mark.parametrize("name, knobs, message", [
    ("nonet", {}, "unknown model 'nonet'"),
    ("squeezenet_1_1", {"alpha": 0.5}, "does not take alpha"),
    ("resnet50", {"groups": 3}, "does not take groups"),
    ("shufflenet_v2", {"alpha": 0.75}, "`alpha` must be one of"),
    ("shufflenet_v1", {"groups": 5}, "`groups` must be one of"),
    ("mobilenet_v3_large", {"alpha": -1.0}, "`alpha` must be positive"),
    ("mnasnet_a1", {"alpha": 0.0}, "`alpha` must be positive"),
])
def test_bad_requests_raise_one_line_zoo_errors(name, knobs, message):
    with pytest.raises(ZooError, match=message) as info:
        build_model(name, 64, **knobs)
    assert "\n" not in str(info.value)


def _textbook_shuffle(x: np.ndarray, groups: int) -> np.ndarray:
    """Zhang et al.'s channel shuffle: reshape to (N, H, W, g, C/g), swap the last two axes, flatten."""
    n, h, w, c = x.shape
    return x.reshape(n, h, w, groups, c // groups).transpose(0, 1, 2, 4, 3).reshape(n, h, w, c)


@pytest.mark.parametrize("groups, channels", [(2, 8), (2, 58), (3, 60), (4, 16), (8, 96)])
def test_channel_shuffle_equals_the_textbook_permutation(groups, channels):
    x = np.random.default_rng(groups).normal(size=(2, 5, 7, channels)).astype(np.float32)
    out = ChannelShuffle(groups)(tf.constant(x)).numpy()
    np.testing.assert_array_equal(out, _textbook_shuffle(x, groups))
    assert not np.array_equal(out, x)  # a real permutation, not the identity


def _int8_model(model: keras.Model, images: np.ndarray, tmp_path, name: str = "m") -> object:
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(convert(model, "qat_int8" if _is_qat(model) else "ptq_int8", images, io_dtype="int8"))
    return read_model(path)


def _is_qat(model: keras.Model) -> bool:
    return any(isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2) for layer in model.layers)


def test_channel_shuffle_int8_is_an_exact_permutation_with_edgetpu_ranks(tmp_path):
    inputs = keras.Input((4, 6, 24))
    model = keras.Model(inputs, ChannelShuffle(3)(inputs))
    images = np.random.default_rng(0).integers(0, 256, (4, 4, 6, 24), dtype=np.uint8)
    tfl = _int8_model(model, images, tmp_path)
    assert set(tfl.op_histogram()) <= {"SPLIT", "RESHAPE", "CONCATENATION"}
    assert all(sum(d > 1 for d in t.shape) <= 3 and t.rank <= 4 for t in tfl.tensors)

    from pipeline.core.litert import make_interpreter

    interpreter = make_interpreter(tfl.path)
    interpreter.allocate_tensors()
    x = np.random.default_rng(1).integers(-128, 128, (1, 4, 6, 24), dtype=np.int8)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_array_equal(out, _textbook_shuffle(x, 3))


def test_hard_activations_match_their_formulas():
    x = np.linspace(-5, 5, 101, dtype=np.float32)
    relu6 = np.clip(x + 3, 0, 6)
    np.testing.assert_allclose(HardSwish()(x).numpy(), x * relu6 / 6, atol=1e-6)
    np.testing.assert_allclose(HardSigmoid()(x).numpy(), relu6 / 6, atol=1e-6)


def _hard_swish_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    from keras_models._blocks import activation

    x = activation(x, "hard_swish", "hs")
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def test_hard_swish_is_one_kernel_after_ptq_and_edgetpu_ops_after_qat(tmp_path):
    """PTQ keeps the converter's HARD_SWISH fusion (fast on CPU); QAT's fake-quants give ADD/MUL ops
    the Edge TPU runs, each with its own trained range."""
    model = _hard_swish_model()
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    assert "HARD_SWISH" in _int8_model(model, images, tmp_path, "ptq").op_histogram()
    with keras_models.quantize_scope():
        qat = tfmot.quantization.keras.quantize_model(model)
    qat(images.astype(np.float32) / 127.5 - 1, training=True)
    ops = _int8_model(qat, images, tmp_path, "qat").op_histogram()
    assert "HARD_SWISH" not in ops and ops["MUL"] == 2 and ops["ADD"] == 1


def _prune(model: keras.Model, x: np.ndarray, sparsity: float = 0.5) -> keras.Model:
    """TF-MOT magnitude pruning of every conv/dense kernel (one masked step), then strip_pruning."""
    schedule = tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=1)
    prunable = (keras.layers.Conv2D, keras.layers.Dense)

    def wrap(layer):
        if isinstance(layer, prunable) and not isinstance(layer, keras.layers.DepthwiseConv2D):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    wrapped = keras.models.clone_model(model, clone_function=wrap)
    wrappers = [layer for layer in wrapped.layers if hasattr(layer, "pruning_step")]
    assert len(wrappers) == sum(wrap(layer) is not layer for layer in model.layers)
    for layer in wrappers:
        layer.pruning_step.assign(1)
    wrapped(x, training=True)  # the wrappers update their masks in a training-mode call
    return tfmot.sparsity.keras.strip_pruning(wrapped)


def _float_ops(tfl) -> set[str]:
    """Ops touching a non-integer tensor (int32 biases and shapes are integer too)."""
    return {op.name for op in tfl.operators
            if any(tfl.tensors[i].dtype not in ("int8", "uint8", "int32") for i in (*op.inputs, *op.outputs) if i >= 0)}


def _edgetpu_problems(tfl) -> list[str]:
    from edgetpu.check import check

    report = check(tfl)
    return [*report.model_errors, *report.reasons]


def _int8_round_trip(name: str, tmp_path) -> None:
    knobs, size = TINY[name]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8)
    x = images.astype(np.float32) / 127.5 - 1
    model = build_model(name, size, classes=CLASSES, **knobs)

    pruned = _prune(model, x)
    kernels = [layer.kernel.numpy() for layer in pruned.layers
               if type(layer) in (keras.layers.Conv2D, keras.layers.Dense)]
    assert kernels and all(abs(np.mean(k == 0) - 0.5) < 0.05 for k in kernels if k.size >= 16)

    with keras_models.quantize_scope():
        qat = tfmot.quantization.keras.quantize_model(pruned)
    skipped = [layer.name for layer in qat.layers
               if not isinstance(layer, (keras.layers.InputLayer, tfmot.quantization.keras.QuantizeWrapperV2))
               and type(layer).__name__ != "QuantizeLayer"]
    assert not skipped, f"TF-MOT left layers unwrapped: {skipped}"
    qat(x, training=True)  # one training-mode pass sets the fake-quant ranges

    tfl = _int8_model(qat, images, tmp_path, name)
    ops = tfl.op_histogram()
    assert not _float_ops(tfl), ops
    assert "DEQUANTIZE" not in ops
    requantize = [op for op in tfl.operators if op.name == "QUANTIZE"]
    assert all(tfl.tensors[op.inputs[0]].dtype == "int8" for op in requantize)  # int8 -> int8 rescales only
    assert tfl.tensors[tfl.inputs[0]].dtype == tfl.tensors[tfl.outputs[0]].dtype == "int8"
    assert not _edgetpu_problems(tfl), ops

    from pipeline.core.litert import make_interpreter

    interpreter = make_interpreter(tfl.path)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    scale, zero = detail["quantization"]
    interpreter.set_tensor(detail["index"], np.clip(np.round(x[:1] / scale + zero), -128, 127).astype(np.int8))
    interpreter.invoke()
    assert interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).shape == (1, CLASSES)


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n in FAST_INT8 else pytest.mark.slow) for n in sorted(TINY)
])
def test_prune_qat_int8_edgetpu_round_trip(name, tmp_path):
    _int8_round_trip(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_shufflenet_v1_every_group_count_deploys(groups, tmp_path, monkeypatch):
    monkeypatch.setitem(TINY, "shufflenet_v1", ({"groups": groups, "alpha": 0.25}, 32))
    _int8_round_trip("shufflenet_v1", tmp_path)


@pytest.mark.slow
def test_mobilenet_v3_minimalistic_deploys(tmp_path, monkeypatch):
    monkeypatch.setitem(TINY, "mobilenet_v3_large", ({"alpha": 0.35, "minimalistic": True}, 32))
    _int8_round_trip("mobilenet_v3_large", tmp_path)


def test_minimalistic_drops_se_and_hard_swish():
    layers = build_model("mobilenet_v3_small", 32, minimalistic=True).layers
    kinds = {type(getattr(layer, "layer", layer)).__name__ for layer in layers}
    assert not kinds & {"HardSwish", "HardSigmoid", "Multiply"}
    assert {"HardSwish", "HardSigmoid", "Multiply"} <= {type(getattr(layer, "layer", layer)).__name__
                                                       for layer in build_model("mobilenet_v3_small", 32).layers}


def _invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_models_list_json_names_every_net():
    result = _invoke("models", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["models"]
    assert {r["name"] for r in rows} == set(TINY)
    assert next(r for r in rows if r["name"] == "shufflenet_v1")["knobs"] == ["groups", "alpha"]


def test_cli_models_info_counts_match_the_counter():
    result = _invoke("models", "info", "shufflenet_v1", "--groups", "2", "--alpha", "0.5", "--input-size", "96", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    expected = count(build_model("shufflenet_v1", 96, groups=2, alpha=0.5))
    assert (data["params"], data["macs"]) == (expected.params, expected.macs)
    assert data["input_size"] == 96 and data["knobs"] == {"groups": 2, "alpha": 0.5}


@pytest.mark.parametrize("args, message", [
    (["nonet"], "unknown model"),
    (["squeezenet_1_1", "--alpha", "0.5"], "does not take alpha"),
    (["shufflenet_v2", "--alpha", "0.3"], "`alpha` must be one of"),
    (["mobilenet_v2", "--input-size", "8"], "--input-size must be at least 16"),
])
def test_cli_models_info_bad_input_is_one_line_and_nonzero(args, message):
    result = _invoke("models", "info", *args)
    assert result.exit_code != 0
    assert message in result.output and result.output.strip().count("\n") == 0, result.output
