"""NNAPI delegate coverage by API level, checked on the reference models and through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.targets import nnapi
from tests.helpers import conv_net, convert


def _check(path: Path, level: int) -> dict:
    return nnapi.check(path, level).to_dict()


def test_uint8_mobilenet_is_delegated_from_api_27(reference_dir: Path) -> None:
    report = _check(reference_dir / "mobilenet_v1_0.25_128_quant.tflite", 27)
    assert report["delegated_ops"] == report["total_ops"] == 31 and report["partitions"] == 1
    assert set(report["delegated_by_api_level"].values()) == {31}


def test_int8_mobilenet_v2_by_api_level(reference_dir: Path) -> None:
    """12 of 68 ops pass the per-op rules at API 27/28 (10 int8 ADDs, RESHAPE, SOFTMAX), but they form 11
    partitions and the delegate takes only the 3 largest: RESHAPE+SOFTMAX and the first two ADDs."""
    path = reference_dir / "tf2_mobilenet_v2_1.0_224_ptq.tflite"
    at27, at28, at29, at30 = (_check(path, level) for level in (27, 28, 29, 30))
    assert (at27["supported_ops"], at27["delegated_ops"], at27["total_ops"], at27["partitions"]) == (12, 4, 68, 3)
    assert [o["name"] for o in at27["ops"] if o["delegated"]] == ["ADD", "ADD", "RESHAPE", "SOFTMAX"]
    limited = [o for o in at27["ops"] if o["reasons"] and "3 largest of 11" in o["reasons"][0]]
    assert len(limited) == 8 and {o["name"] for o in limited} == {"ADD"}
    assert "int8 input needs API 29 (float32 or uint8 before)" in at27["placements"][1]["reason"]
    assert any("re-expresses them as uint8" in n for n in at27["notes"])
    assert (at28["supported_ops"], at28["delegated_ops"]) == (12, 4)
    assert at29["cpu_ops"] == {"QUANTIZE": 1, "MEAN": 1} and at29["partitions"] == 2
    assert at29["placements"][0]["reason"] == "int8 output needs API 30 (uint8 before)"
    assert at30["cpu_ops"] == {"MEAN": 1} and at30["delegated_ops"] == 67 and at30["partitions"] == 2
    assert at30["placements"][63]["reason"] == "input and output must share one scale and zero point"
    assert at30["delegated_by_api_level"] == {27: 4, 28: 4, 29: 66, 30: 67, 31: 67, 32: 67, 33: 67, 34: 67}


def test_split_needs_api_29_and_int8_lstm_stays_on_the_cpu(reference_dir: Path) -> None:
    split = _check(reference_dir / "split_concat.tflite", 28)
    assert split["cpu_ops"] == {"SPLIT": 1} and split["partitions"] == 2
    lstm = _check(reference_dir / "keras_lstm_mnist_ptq.tflite", 34)
    assert lstm["cpu_ops"] == {"UNIDIRECTIONAL_SEQUENCE_LSTM": 1}


def test_float_model_uses_nnapi_1_0(tmp_path: Path) -> None:
    path = convert(conv_net, (8, 8, 3), tmp_path / "f.tflite", int8=False)
    assert _check(path, 27)["cpu_ops"] == {"MEAN": 1}  # MEAN arrived with NNAPI 1.1
    assert _check(path, 28)["cpu_ops"] == {}


def test_cli_json_and_deprecation_note(reference_dir: Path) -> None:
    args = ["nnapi", "check", str(reference_dir / "split_concat.tflite"), "--api-level", "29", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["delegated_ops"] == data["supported_ops"] == 3 and data["nnapi_version"] == "NNAPI 1.2"
    assert "deprecated from Android 15" in data["notes"][0]


@pytest.mark.parametrize("args", [["--api-level", "26"], ["--api-level", "35"]])
def test_cli_rejects_unknown_api_levels(reference_dir: Path, args: list[str]) -> None:
    result = CliRunner().invoke(main, ["nnapi", "check", str(reference_dir / "split_concat.tflite"), *args])
    assert result.exit_code == 2


def test_missing_model_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["nnapi", "check", str(tmp_path / "x.tflite")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
