"""The NNAPI delegate's own rules at their boundaries (API level, dtype, parameter, op version) and its
partition limit, on tiny models converted with TensorFlow (each converts in about a second)."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.tflite_file import Operator, TFLiteModel, read_model
from pipeline.targets import nnapi
from tests.helpers import convert


def _int8_ops(x):
    """Most ops a quantized CNN uses, each on int8 tensors (the file's uint8 I/O adds QUANTIZE ops)."""
    from pipeline.core.tf_env import keras, tf

    layers = keras.layers
    a = layers.Conv2D(4, 3, padding="same")(x)
    b = layers.DepthwiseConv2D(3, padding="same")(a)
    added = layers.Add()([a, b])
    d = layers.Subtract()([layers.Multiply()([added, a]), b])
    c = layers.Concatenate()([layers.MaxPooling2D(2)(d), layers.AveragePooling2D(2)(d)])
    swish = layers.Lambda(lambda t: t * tf.nn.relu6(t + 3.0) / 6.0)(c)
    r = layers.ReLU()(layers.Concatenate()([layers.Activation("sigmoid")(swish), layers.Activation("tanh")(c)]))
    padded = layers.Lambda(lambda t: tf.pad(t, [[0, 0], [1, 1], [1, 1], [0, 0]]))(r)
    resized = layers.Add()([layers.Lambda(lambda t: tf.compat.v1.image.resize_bilinear(t, (8, 8)))(padded),
                            layers.Lambda(lambda t: tf.image.resize(t, (8, 8)))(padded)])  # half_pixel_centers
    f = layers.Dense(4)(layers.GlobalAveragePooling2D()(resized))
    return [layers.Softmax()(f), layers.Softmax()(layers.Reshape((2, 2))(f))]


def _arg_max_and_pool(x):
    """Float ARG_MAX with int64 (TF's default) and int32 output, and a 17x17 average pool."""
    from pipeline.core.tf_env import keras, tf

    return [keras.layers.AveragePooling2D(17)(x),
            keras.layers.Lambda(lambda t: tf.math.argmax(t, axis=-1))(x),
            keras.layers.Lambda(lambda t: tf.math.argmax(t, axis=-1, output_type=tf.int32))(x)]


def _pool_windows(x):
    """Quantized average pools with a 16x16 (256-element) and a 17x17 (289-element) window."""
    from pipeline.core.tf_env import keras

    return [keras.layers.AveragePooling2D(16)(x), keras.layers.AveragePooling2D(17)(x)]


def _five_partitions(x):
    """Runs of 1, 3, 2, 4 and 1 delegable activations, each followed by SQUARE (no NNAPI mapping)."""
    from pipeline.core.tf_env import keras, tf

    activations = [tf.nn.relu, tf.math.tanh, tf.math.sigmoid]
    k = 0
    for run in (1, 3, 2, 4, 1):
        for _ in range(run):
            x = keras.layers.Lambda(activations[k % 3])(x)
            k += 1
        x = keras.layers.Lambda(tf.math.square)(x)
    return x


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("nnapi")


@pytest.fixture(scope="module")
def int8_ops(models: Path) -> TFLiteModel:
    return read_model(convert(_int8_ops, (8, 8, 3), models / "int8_ops.tflite"))


@pytest.fixture(scope="module")
def float_ops(models: Path) -> TFLiteModel:
    return read_model(convert(_arg_max_and_pool, (17, 17, 2), models / "float_ops.tflite", int8=False))


def _ops(model: TFLiteModel, name: str) -> list[Operator]:
    return [op for op in model.operators if op.name == name]


def _issues(model: TFLiteModel, name: str, level: int) -> list[str]:
    """The per-op verdict on the first ``name`` op."""
    return nnapi.op_issues(model, _ops(model, name)[0], level)


def _rank(model: TFLiteModel, op: Operator) -> int:
    return model.tensor(op.inputs[0]).rank


def _half_pixel(op: Operator) -> bool:
    return bool(getattr(op.options, "halfPixelCenters", False))


def _with_op_version(model: TFLiteModel, name: str, version: int, path: Path) -> TFLiteModel:
    """A copy of ``model`` whose ``name`` opcode claims ``version`` (the flatbuffer field Validate reads)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    fb = schema.ModelT.InitFromPackedBuf(model.path.read_bytes(), 0)
    for code in fb.operatorCodes:
        if max(code.builtinCode, code.deprecatedBuiltinCode) == getattr(schema.BuiltinOperator, name):
            code.version = version
    builder = flatbuffers.Builder(1024)
    builder.Finish(fb.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())
    return read_model(path)


@pytest.mark.parametrize("name", ["ADD", "MUL", "AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION", "HARD_SWISH",
                                  "LOGISTIC", "RELU", "RESHAPE", "SOFTMAX"])
def test_int8_ops_re_expressed_as_uint8_are_taken_from_api_27(int8_ops: TFLiteModel, name: str) -> None:
    ops = [op for op in _ops(int8_ops, name) if _rank(int8_ops, op) != 3]  # rank 3: test_rank_3_softmax...
    assert ops and all(nnapi.op_issues(int8_ops, op, 27) == [] for op in ops)


@pytest.mark.parametrize("name", ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "PAD", "TANH", "SUB",
                                  "RESIZE_BILINEAR"])
def test_int8_ops_that_need_api_29(int8_ops: TFLiteModel, name: str) -> None:
    op = next(op for op in _ops(int8_ops, name) if not _half_pixel(op))
    assert nnapi.op_issues(int8_ops, op, 28) and nnapi.op_issues(int8_ops, op, 29) == []


def test_half_pixel_centers_resize_needs_api_30(int8_ops: TFLiteModel) -> None:
    op = next(op for op in _ops(int8_ops, "RESIZE_BILINEAR") if _half_pixel(op))
    assert nnapi.op_issues(int8_ops, op, 29) == ["align_corners / half_pixel_centers need API 30"]
    assert nnapi.op_issues(int8_ops, op, 30) == []


def test_int8_mean_and_requantize(int8_ops: TFLiteModel) -> None:
    assert "int8 input needs API 29" in _issues(int8_ops, "MEAN", 28)
    assert not any("int8" in issue for issue in _issues(int8_ops, "MEAN", 29))
    requantize = [op for op in _ops(int8_ops, "QUANTIZE")
                  if int8_ops.tensor(op.inputs[0]).dtype == "int8" == int8_ops.tensor(op.outputs[0]).dtype]
    assert requantize
    for op in requantize:
        assert nnapi.op_issues(int8_ops, op, 29) == ["int8 output needs API 30 (uint8 before)"]
        assert nnapi.op_issues(int8_ops, op, 30) == []


def test_rank_3_softmax_needs_api_29(int8_ops: TFLiteModel) -> None:
    op = next(op for op in _ops(int8_ops, "SOFTMAX") if _rank(int8_ops, op) == 3)
    assert nnapi.op_issues(int8_ops, op, 28) == ["before API 29 only 2-D and 4-D inputs"]
    assert nnapi.op_issues(int8_ops, op, 29) == []


def test_arg_max_needs_an_int32_output(float_ops: TFLiteModel) -> None:
    int64, int32 = _ops(float_ops, "ARG_MAX")
    assert float_ops.tensor(int64.outputs[0]).dtype == "int64"
    assert nnapi.op_issues(float_ops, int64, 34) == ["int64 output is not supported (int32 only)"]
    assert nnapi.op_issues(float_ops, int32, 28) == ["needs API 29 (NNAPI 1.2)"]
    assert nnapi.op_issues(float_ops, int32, 29) == []


def test_quantized_average_pool_window_limit(models: Path, float_ops: TFLiteModel) -> None:
    model = read_model(convert(_pool_windows, (17, 17, 1), models / "pools.tflite"))
    window_256, window_289 = _ops(model, "AVERAGE_POOL_2D")
    assert nnapi.op_issues(model, window_256, 27) == []
    for level in (27, 28):
        assert "289-element window" in nnapi.op_issues(model, window_289, level)[0]
    assert nnapi.op_issues(model, window_289, 29) == []  # an accelerator is targeted from API 29
    assert _issues(float_ops, "AVERAGE_POOL_2D", 27) == []  # the limit is for quantized pools only


def test_op_versions_are_checked_per_op(int8_ops: TFLiteModel, models: Path) -> None:
    assert {op.name: op.version for op in int8_ops.operators}["ADD"] == 2
    add_v3 = _with_op_version(int8_ops, "ADD", 3, models / "add_v3.tflite")
    assert _issues(add_v3, "ADD", 34) == ["op version 3 is newer than the delegate maps (at most 2)"]
    mul_v3 = _with_op_version(int8_ops, "MUL", 3, models / "mul_v3.tflite")
    assert "op version 3 is taken only with an accelerator targeted" in _issues(mul_v3, "MUL", 28)[0]
    assert _issues(mul_v3, "MUL", 29) == []
    mul_v4 = _with_op_version(int8_ops, "MUL", 4, models / "mul_v4.tflite")
    assert _issues(mul_v4, "MUL", 34) == ["op version 4 is newer than the delegate maps (at most 3)"]


def test_only_the_three_largest_partitions_are_delegated(models: Path) -> None:
    path = convert(_five_partitions, (8, 8, 1), models / "partitions.tflite", int8=False)
    report = nnapi.check(path, 27).to_dict()
    assert (report["supported_ops"], report["delegated_ops"], report["partitions"]) == (11, 9, 3)
    dropped = [o for o in report["ops"] if o["name"] != "SQUARE" and not o["delegated"]]
    assert [o["index"] for o in dropped] == [0, 14]  # the two runs of one
    assert all("only the 3 largest of 5" in o["reasons"][0] for o in dropped)
    assert report["cpu_ops"] == {"RELU": 1, "SQUARE": 5, "TANH": 1}
