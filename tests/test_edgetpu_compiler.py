"""The compiler wrapper: log parsing on real recorded compiler output (see data/edgetpu_logs/SOURCES.md)."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edgetpu.compiler import parse_log, parse_size
from pipeline.cli import main

LOGS = Path(__file__).parent / "data" / "edgetpu_logs"


def test_operation_log_with_a_partition() -> None:
    log = parse_log((LOGS / "tiny_yolo_v14.log").read_text())
    assert log.version == "14.1.317412892"
    model = log.models[0]
    assert (model.input, model.output) == ("tiny_yolo.tflite", "tiny_yolo_edgetpu.tflite")
    assert model.cpu_ops == {"CONCATENATION": 1, "RESIZE_NEAREST_NEIGHBOR": 1, "CONV_2D": 2, "QUANTIZE": 2}
    assert sum(r["count"] for r in model.operators if r["status"] == "Mapped to Edge TPU") == 19


def test_console_summary_v16() -> None:
    log = parse_log((LOGS / "issue572_v16.txt").read_text())
    assert log.succeeded and log.compile_ms == 542 and log.version == "16.0.384591198"
    model = log.models[0]
    assert model.total_ops == 50 and model.tpu_subgraphs == 1
    assert model.on_chip_used == round(604.5 * 1024) and model.off_chip == round(3.45 * 2**20)


def test_console_partial_mapping_v15() -> None:
    model = parse_log((LOGS / "issue324_v15_excerpt.txt").read_text()).models[0]
    assert (model.tpu_ops, model.cpu_op_count, model.tpu_subgraphs) == (23, 2, 3)
    assert model.operators == [{"op": "RESHAPE", "count": 2, "status": "Mapped to Edge TPU"}]


def test_failed_compilation() -> None:
    log = parse_log((LOGS / "issue829_v16_failure.txt").read_text())
    assert not log.succeeded and not log.models
    assert "dynamic-sized tensors" in log.errors[0]


@pytest.mark.parametrize("text,expected", [("0.00B", 0), ("1.75KiB", 1792), ("4.41MiB", round(4.41 * 2**20))])
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_missing_compiler_is_one_line_with_install_hint(reference_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(main, ["edgetpu", "compile", str(reference_dir / "split_concat.tflite"), "-o", str(tmp_path)])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1 and "apt-get install edgetpu-compiler" in result.output


def test_missing_model_fails_before_looking_for_the_compiler(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["edgetpu", "compile", str(tmp_path / "x.tflite")])
    assert result.exit_code == 1 and "not found" in result.output
