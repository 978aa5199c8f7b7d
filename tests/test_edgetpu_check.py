"""Edge TPU mapping prediction: agreement with the real compiler on the reference pairs, and the rules."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgetpu.check import check_model, compiled_cpu_ops
from edgetpu_models import big_dense, conv_net, convert, five_d, hard_swish_in_middle
from pipeline.cli import main
from pipeline.core.errors import PipelineError

PAIRS = ["keras_lstm_mnist_ptq", "mobilenet_v1_0.25_128_quant", "mobilenet_v1_0.5_160_quant",
         "mobilenet_v1_0.75_192_quant", "split_concat"]


@pytest.mark.parametrize("name", PAIRS)
def test_prediction_matches_what_the_compiler_left_on_the_cpu(reference_dir: Path, name: str) -> None:
    compiler_cpu = compiled_cpu_ops(reference_dir / f"{name}_edgetpu.tflite")
    report = check_model(reference_dir / f"{name}.tflite")
    assert report.cpu_ops == compiler_cpu
    assert report.fully_mapped == (not compiler_cpu)


def test_cli_json_shape_and_schema_spelling(reference_dir: Path) -> None:
    result = CliRunner().invoke(main, ["edgetpu", "check", str(reference_dir / "keras_lstm_mnist_ptq.tflite"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["mapped_ops"] == data["total_ops"] == 6
    assert data["cpu_ops"] == {} and data["reasons"] == []
    assert {p["name"] for p in data["placements"]} >= {"UNIDIRECTIONAL_SEQUENCE_LSTM", "FULLY_CONNECTED"}


def test_older_runtime_leaves_the_lstm_and_everything_after_it_on_the_cpu(reference_dir: Path) -> None:
    report = check_model(reference_dir / "keras_lstm_mnist_ptq.tflite", min_runtime_version=13)
    assert report.mapped_ops == 1  # the input QUANTIZE
    assert report.cpu_ops == {"UNIDIRECTIONAL_SEQUENCE_LSTM": 1, "RESHAPE": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1, "QUANTIZE": 1}
    assert any("runtime 14" in r for r in report.reasons)


def test_parameter_estimate_counts_mapped_constants(reference_dir: Path) -> None:
    from pipeline.core.tflite_file import read_model

    path = reference_dir / "mobilenet_v1_0.75_192_quant.tflite"
    report = check_model(path)
    assert report.parameter_bytes == sum(t.data_bytes for t in read_model(path).tensors if t.constant)
    assert report.off_chip_bytes == 0 and not report.warnings


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("edgetpu_models")
    return {
        "float": convert(conv_net, (8, 8, 3), d / "float.tflite", int8=False),
        "dynamic": convert(conv_net, (None, None, 3), d / "dynamic.tflite"),
        "hard_swish": convert(hard_swish_in_middle, (8, 8, 3), d / "hard_swish.tflite"),
        "five_d": convert(five_d, (4, 4, 3), d / "five_d.tflite"),
    }


def test_float_model_maps_nothing(tiny: dict[str, Path]) -> None:
    report = check_model(tiny["float"])
    assert report.mapped_ops == 0 and report.total_ops > 0
    assert all("float32" in r for r in report.reasons)


def test_dynamic_shapes_fail_the_whole_model(tiny: dict[str, Path]) -> None:
    report = check_model(tiny["dynamic"])
    assert report.mapped_ops == 0 and not report.fully_mapped
    assert "dynamic-sized" in report.model_errors[0]


def test_unsupported_op_in_the_middle_partitions_there(tiny: dict[str, Path]) -> None:
    report = check_model(tiny["hard_swish"])
    devices = [(p.name, p.device) for p in report.placements]
    cut = [name for name, _ in devices].index("HARD_SWISH")
    assert all(device == "edgetpu" for _, device in devices[:cut])
    assert all(device == "cpu" for _, device in devices[cut:])
    assert report.reasons[0].startswith("HARD_SWISH: op not supported")
    assert "follows an unsupported op" in report.reasons[1]


def test_five_d_tensors_stay_on_the_cpu(tiny: dict[str, Path]) -> None:
    report = check_model(tiny["five_d"])
    assert report.cpu_ops["RESHAPE"] == 2 and report.cpu_ops["TRANSPOSE"] == 1
    assert "only the 3 innermost" in report.reasons[0]


def test_strict_flag_fails_a_partial_mapping(tiny: dict[str, Path]) -> None:
    result = CliRunner().invoke(main, ["edgetpu", "check", str(tiny["hard_swish"]), "--strict"])
    assert result.exit_code == 1 and "HARD_SWISH" in result.output


@pytest.mark.slow
def test_parameters_beyond_the_cache_warn(tmp_path: Path) -> None:
    report = check_model(convert(big_dense, (1, 1, 3000), tmp_path / "big.tflite"))
    assert report.off_chip_bytes > 0 and "stream from host memory" in report.warnings[0]


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
