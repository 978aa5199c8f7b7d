"""NNAPI delegate coverage by API level, checked on the reference models and through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgetpu_models import conv_net, convert
from pipeline.targets import nnapi
from pipeline.cli import main


def test_uint8_mobilenet_is_delegated_from_api_27(reference_dir: Path) -> None:
    report = nnapi.check_model(reference_dir / "mobilenet_v1_0.25_128_quant.tflite", 27)
    assert report["delegated_ops"] == report["total_ops"] == 31 and report["partitions"] == 1
    assert set(report["delegated_by_api_level"].values()) == {31}


def test_signed_int8_model_needs_api_29_and_30(reference_dir: Path) -> None:
    path = reference_dir / "tf2_mobilenet_v2_1.0_224_ptq.tflite"
    at28, at29, at30 = (nnapi.check_model(path, level) for level in (28, 29, 30))
    assert at28["delegated_ops"] == 0
    assert any("per-channel" in r for r in at28["reasons"])
    assert at29["cpu_ops"] == {"QUANTIZE": 1} and "int8 output needs API 30" in at29["reasons"][0]
    assert any("re-expressed as uint8" in n for n in at29["notes"])
    assert at30["delegated_ops"] == at30["total_ops"] and at30["cpu_ops"] == {}


def test_split_needs_api_29_and_int8_lstm_stays_on_the_cpu(reference_dir: Path) -> None:
    split = nnapi.check_model(reference_dir / "split_concat.tflite", 28)
    assert split["cpu_ops"] == {"SPLIT": 1} and split["partitions"] == 2
    lstm = nnapi.check_model(reference_dir / "keras_lstm_mnist_ptq.tflite", 34)
    assert lstm["cpu_ops"] == {"UNIDIRECTIONAL_SEQUENCE_LSTM": 1}


def test_float_model_uses_nnapi_1_0(tmp_path: Path) -> None:
    report = nnapi.check_model(convert(conv_net, (8, 8, 3), tmp_path / "f.tflite", int8=False), 27)
    assert report["cpu_ops"] == {"MEAN": 1}  # MEAN arrived with NNAPI 1.1
    assert nnapi.check_model(tmp_path / "f.tflite", 28)["cpu_ops"] == {}


def test_cli_json_and_deprecation_note(reference_dir: Path) -> None:
    result = CliRunner().invoke(main, ["nnapi", "check", str(reference_dir / "split_concat.tflite"), "--api-level", "29", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["delegated_ops"] == 3 and data["nnapi_version"] == "NNAPI 1.2"
    assert "deprecated from Android 15" in data["notes"][0]


@pytest.mark.parametrize("args", [["--api-level", "26"], ["--api-level", "35"]])
def test_cli_rejects_unknown_api_levels(reference_dir: Path, args: list[str]) -> None:
    result = CliRunner().invoke(main, ["nnapi", "check", str(reference_dir / "split_concat.tflite"), *args])
    assert result.exit_code == 2


def test_missing_model_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["nnapi", "check", str(tmp_path / "x.tflite")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
