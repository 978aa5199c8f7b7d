"""``tflpipe export android``: model, labels and a config the app reads, from a RUN_DIR."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.core.errors import PipelineError
from pipeline.targets.android.export import export_android
from tests.helpers import official_run_dir

APP_CONFIG_READER = Path(__file__).resolve().parents[1] / "android_demo/app/src/main/java/org/tflpipe/demo/ModelConfig.kt"


@pytest.fixture()
def run_dir(reference_dir, tmp_path):
    return official_run_dir(tmp_path / "run", reference_dir)


def test_export_writes_model_labels_and_the_config_read_from_the_model(run_dir, tmp_path):
    assets = tmp_path / "assets"
    result = export_android(run_dir, assets)
    assert (assets / "model.tflite").read_bytes() == (run_dir / "model_int8.tflite").read_bytes()
    assert (assets / "labels.txt").read_text().splitlines()[:2] == ["background", "tench, Tinca tinca"]
    config = json.loads((assets / "model_config.json").read_text())
    assert config["input"] == {"height": 128, "width": 128, "channels": 3, "layout": "NHWC", "color": "RGB",
                               "dtype": "uint8", "scale": 0.0078125, "zero_point": 128, "mean": 127.5, "std": 127.5}
    assert config["output"] == {"dtype": "uint8", "scale": 0.00390625, "zero_point": 0}
    assert config["num_classes"] == 1001 and config["labels_file"] == "labels.txt" and config["model_file"] == "model.tflite"
    assert result["input"] == config["input"] and len(result["files"]) == 3


def test_cli_export_android_json(run_dir, tmp_path):
    result = CliRunner().invoke(main, ["export", "android", str(run_dir), "--out", str(tmp_path / "a"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["out_dir"] == str(tmp_path / "a")
    text = CliRunner().invoke(main, ["export", "android", str(run_dir), "--out", str(tmp_path / "b")])
    assert text.exit_code == 0 and "128x128 uint8 input, 1001 classes" in text.output


def test_every_key_the_app_reads_is_in_the_config(run_dir, tmp_path):
    """ModelConfig.kt reads the JSON with org.json; a renamed key here must break this test, not the phone."""
    if not APP_CONFIG_READER.is_file():
        pytest.fail(f"{APP_CONFIG_READER} is missing")
    config = export_android(run_dir, tmp_path)
    keys = set(re.findall(r'get(?:String|Int|Double|JSONObject)\("(\w+)"\)', APP_CONFIG_READER.read_text()))
    assert keys, "no config keys found in ModelConfig.kt"
    known = set(config) | set(config["input"]) | set(config["output"])
    assert keys <= known, keys - known


@pytest.mark.parametrize("break_it,message", [
    (lambda d: (d / "labels.txt").unlink(), "has no labels.txt"),
    (lambda d: (d / "model_int8.tflite").unlink(), "has no model_int8.tflite"),
    (lambda d: (d / "labels.txt").write_text("cat\ndog\n"), "2 labels for 1001 model outputs"),
    (lambda d: (d / "labels.txt").write_text("\n\n"), "labels file is empty"),
])
def test_broken_run_dirs_fail_in_one_line(run_dir, tmp_path, break_it, message):
    break_it(run_dir)
    result = CliRunner().invoke(main, ["export", "android", str(run_dir), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_non_image_model_and_missing_run_dir(run_dir, reference_dir, tmp_path):
    shutil.copyfile(reference_dir / "keras_lstm_mnist_ptq.tflite", run_dir / "model_int8.tflite")
    with pytest.raises(PipelineError, match="not an image classifier"):
        export_android(run_dir, tmp_path)
    with pytest.raises(PipelineError, match="run directory not found"):
        export_android(tmp_path / "nope", tmp_path)
