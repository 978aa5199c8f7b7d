"""Edge TPU mapping prediction: the rules and the report (agreement with the compiler: test_edgetpu_pairs.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgetpu.check import check, compiled_cpu_ops
from edgetpu.rules import check_op
from pipeline.cli import main
from pipeline.core.errors import PipelineError
from pipeline.core.tflite_file import Operator, Tensor, TFLiteModel, read_model
from tests.helpers import big_dense, conv_net, convert, five_d, hard_swish_in_middle


def test_cli_json_shape_and_schema_spelling(reference_dir: Path) -> None:
    result = CliRunner().invoke(main, ["edgetpu", "check", str(reference_dir / "keras_lstm_mnist_ptq.tflite"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["mapped_ops"] == data["total_ops"] == 6
    assert data["cpu_ops"] == {} and data["reasons"] == []
    assert {p["name"] for p in data["placements"]} >= {"UNIDIRECTIONAL_SEQUENCE_LSTM", "FULLY_CONNECTED"}


def test_older_runtime_leaves_the_lstm_and_everything_after_it_on_the_cpu(reference_dir: Path) -> None:
    report = check(reference_dir / "keras_lstm_mnist_ptq.tflite", min_runtime_version=13)
    assert report.accelerated_ops == 1  # the input QUANTIZE
    assert report.cpu_ops == {"UNIDIRECTIONAL_SEQUENCE_LSTM": 1, "RESHAPE": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1, "QUANTIZE": 1}
    assert any("runtime 14" in r for r in report.reasons)


def test_parameter_estimate_counts_mapped_constants(reference_dir: Path) -> None:
    path = reference_dir / "mobilenet_v1_0.75_192_quant.tflite"
    report = check(path)
    assert report.details["parameter_bytes"] == sum(t.data_bytes for t in read_model(path).tensors if t.constant)
    assert report.details["off_chip_bytes_estimate"] == 0 and not report.warnings


def resizes(x):
    """One 8x8 map resized with align_corners to 16x16 (TF1 DeepLab) and to 8x8, and half-pixel to 16x16 (TF2)."""
    from pipeline.core.tf_env import keras, tf

    x = keras.layers.Conv2D(8, 1)(x)
    return [keras.layers.Lambda(lambda t, size=size, corners=corners: tf.compat.v1.image.resize_bilinear(
                t, size, align_corners=corners, half_pixel_centers=not corners))(x)
            for size, corners in [((16, 16), True), ((8, 8), True), ((16, 16), False)]]


def tiled_pooling(x):
    """DeepLab's image pooling as Coral's Edge TPU DeepLab builds it: pool to 1x1, TILE back, concatenate."""
    from pipeline.core.tf_env import keras, tf

    x = keras.layers.Conv2D(8, 1)(x)
    tiled = keras.layers.Lambda(lambda t: tf.tile(t, (1, 8, 8, 1)))(keras.layers.AveragePooling2D(8)(x))
    return keras.layers.Conv2D(4, 1)(keras.layers.Concatenate()([tiled, x]))


def graph(ops: list[tuple[str, tuple[int, ...], tuple[int, ...]]], inputs: tuple[int, ...] = (0,)) -> TFLiteModel:
    """A graph of uint8 [1, 4, 4, 8] tensors in the given execution order, to test the partition op by op."""
    count = 1 + max(t for _, ins, outs in ops for t in (*ins, *outs))
    tensors = [Tensor(i, f"t{i}", (1, 4, 4, 8), "uint8") for i in range(count)]
    operators = [Operator(i, name, ins, outs, custom=False, version=1) for i, (name, ins, outs) in enumerate(ops)]
    return TFLiteModel(Path("graph.tflite"), 0, tensors, operators, list(inputs), [count - 1], subgraph_count=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("edgetpu_models")
    return {
        "float": convert(conv_net, (8, 8, 3), d / "float.tflite", int8=False),
        "dynamic": convert(conv_net, (None, None, 3), d / "dynamic.tflite"),
        "hard_swish": convert(hard_swish_in_middle, (8, 8, 3), d / "hard_swish.tflite"),
        "five_d": convert(five_d, (4, 4, 3), d / "five_d.tflite"),
        "resizes": convert(resizes, (8, 8, 3), d / "resizes.tflite"),
        "tile": convert(tiled_pooling, (8, 8, 3), d / "tile.tflite"),
    }


def test_float_model_maps_nothing(tiny: dict[str, Path]) -> None:
    report = check(tiny["float"])
    assert report.accelerated_ops == 0 and report.total_ops > 0
    assert all("float32" in r for r in report.reasons)


def test_dynamic_shapes_fail_the_whole_model(tiny: dict[str, Path]) -> None:
    report = check(tiny["dynamic"])
    assert report.accelerated_ops == 0 and not report.fully_mapped
    assert "dynamic-sized" in report.model_errors[0]


def test_unsupported_op_in_the_middle_partitions_there(tiny: dict[str, Path]) -> None:
    report = check(tiny["hard_swish"])
    devices = [(p.name, p.device) for p in report.placements]
    cut = [name for name, _ in devices].index("HARD_SWISH")
    assert all(device == "edgetpu" for _, device in devices[:cut])
    assert all(device == "cpu" for _, device in devices[cut:])
    assert report.reasons[0].startswith("HARD_SWISH: op not supported")
    assert "follows an unsupported op" in report.reasons[1]


def test_five_d_tensors_stay_on_the_cpu(tiny: dict[str, Path]) -> None:
    report = check(tiny["five_d"])
    assert report.cpu_ops["RESHAPE"] == 2 and report.cpu_ops["TRANSPOSE"] == 1
    assert "only the 3 innermost" in report.reasons[0]


def test_align_corners_resize_maps_only_when_it_keeps_the_size(tiny: dict[str, Path]) -> None:
    model = read_model(tiny["resizes"])
    issues = {(op.options.alignCorners, model.tensor(op.outputs[0]).shape[1]): check_op(model, op)
              for op in model.operators if op.name == "RESIZE_BILINEAR"}
    assert issues[(False, 16)] == [] and issues[(True, 8)] == []
    assert "align_corners resize from 8x8 to 16x16" in issues[(True, 16)][0].reason


def test_tile_maps(tiny: dict[str, Path]) -> None:
    report = check(tiny["tile"])
    assert "TILE" in {p.name for p in report.placements} and report.fully_mapped


def test_cpu_ops_on_the_inputs_stay_alone_wherever_they_sit_in_execution_order() -> None:
    # Both inputs' CPU ops form TFLite's first partition even though the second runs after a mappable op.
    model = graph([("HARD_SWISH", (0,), (2,)), ("ADD", (2, 2), (3,)),
                   ("HARD_SWISH", (1,), (4,)), ("ADD", (3, 4), (5,))], inputs=(0, 1))
    assert [p.device for p in check(model).placements] == ["cpu", "edgetpu", "cpu", "edgetpu"]


def test_ops_that_do_not_read_the_first_cpu_op_still_join_the_segment() -> None:
    # MoveNet's shape: a head after the first CPU op in execution order maps if it does not depend on it.
    model = graph([("ADD", (0, 0), (1,)), ("HARD_SWISH", (1,), (2,)), ("ADD", (1, 1), (3,)), ("ADD", (2, 3), (4,))])
    placements = check(model).placements
    assert [p.device for p in placements] == ["edgetpu", "cpu", "edgetpu", "cpu"]
    assert "follows an unsupported op" in placements[3].reason


def test_strict_flag_fails_a_partial_mapping(tiny: dict[str, Path]) -> None:
    result = CliRunner().invoke(main, ["edgetpu", "check", str(tiny["hard_swish"]), "--strict"])
    assert result.exit_code == 1 and "HARD_SWISH" in result.output


@pytest.mark.slow
def test_parameters_beyond_the_cache_warn(tmp_path: Path) -> None:
    report = check(convert(big_dense, (1, 1, 3000), tmp_path / "big.tflite"))
    assert report.details["off_chip_bytes_estimate"] > 0 and "stream from host memory" in report.warnings[0]


def test_missing_truncated_and_compiled_files_fail_in_one_line(reference_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    truncated = tmp_path / "t.tflite"
    truncated.write_bytes((reference_dir / "split_concat.tflite").read_bytes()[:200])
    for path, words in [(tmp_path / "nope.tflite", "not found"), (truncated, "truncated"),
                        (reference_dir / "split_concat_edgetpu.tflite", "already compiled")]:
        result = runner.invoke(main, ["edgetpu", "check", str(path)])
        assert result.exit_code == 1 and words in result.output
        assert len(result.output.strip().splitlines()) == 1
    with pytest.raises(PipelineError):
        compiled_cpu_ops(reference_dir / "split_concat.tflite")
