"""The file-level verbs on the official models in ../shared/reference_models."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from pipeline.cli import main

CLASSIFIERS = [
    "mobilenet_v1_0.25_128_quant.tflite",
    "mobilenet_v1_0.5_160_quant.tflite",
    "mobilenet_v1_0.75_192_quant.tflite",
    "mobilenet_v2_1.0_224_quant.tflite",
    "tf2_mobilenet_v2_1.0_224_ptq.tflite",
]


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def json_of(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


@pytest.mark.parametrize("name", sorted(p for p in CLASSIFIERS) + ["split_concat.tflite", "keras_lstm_mnist_ptq.tflite",
                                                                      "mobilenet_v1_0.25_128_quant_edgetpu.tflite"])
def test_inspect_every_reference_model(reference_dir, name):
    data = json_of(invoke("inspect", reference_dir / name, "--json"))
    assert sum(data["ops"].values()) == data["total_ops"] > 0
    assert data["input"]["dtype"] == "uint8" and data["input"]["scale"] > 0
    assert {"labels", "mean", "std"} <= set(data["metadata"])


def test_inspect_reads_official_metadata(reference_dir):
    data = json_of(invoke("inspect", reference_dir / "tf2_mobilenet_v2_1.0_224_ptq.tflite", "--json"))
    assert data["ops"]["CONV_2D"] == 36 and data["ops"]["DEPTHWISE_CONV_2D"] == 17
    assert data["metadata"]["mean"] == [127.5] and data["metadata"]["std"] == [127.5]
    assert len(data["metadata"]["labels"]) == 1001 and data["metadata"]["labels"][0] == "background"
    assert data["input"]["shape"] == [1, 224, 224, 3] and data["input"]["zero_point"] == 127


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_benchmark_every_reference_classifier(reference_dir, name):
    data = json_of(invoke("benchmark", reference_dir / name, "--threads", "2", "--runs", "3", "--warmup", "1", "--json"))
    assert data["threads"] == 2 and data["latency_ms_median"] > 0


@pytest.mark.parametrize("model", ["tf2_mobilenet_v2_1.0_224_ptq.tflite", "mobilenet_v2_1.0_224_quant.tflite"])
def test_predict_gives_the_labels_a_person_would(reference_dir, model):
    data = json_of(invoke("predict", reference_dir / model, reference_dir / "cat.bmp", reference_dir / "grace_hopper.bmp", "--json"))
    cat, hopper = (p["top_k"] for p in data["predictions"])
    assert "cat" in cat[0]["label"]  # Egyptian cat / tabby cat / tiger cat
    assert hopper[0]["label"] == "military uniform"
    assert cat[0]["score"] > cat[1]["score"] > 0


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_evaluate_every_reference_classifier_on_labelled_folder(reference_dir, tmp_path, name):
    for label, image in [("Egyptian cat", "cat.bmp"), ("military uniform", "grace_hopper.bmp")]:
        (tmp_path / label).mkdir(exist_ok=True)
        shutil.copy(reference_dir / image, tmp_path / label / image)
    data = json_of(invoke("evaluate", reference_dir / name, "--data", tmp_path, "--json"))
    assert data["n"] == 2 and 0.0 <= data["accuracy"] <= 1.0
    if name.startswith("tf2"):
        assert data["accuracy"] == 1.0


@pytest.mark.parametrize("verb", ["inspect", "benchmark", "evaluate", "predict"])
def test_truncated_and_missing_models_fail_in_one_line(reference_dir, tmp_path, verb):
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes((reference_dir / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()[:20000])
    extra = {"evaluate": ["--data", "builtin:digits"], "predict": [reference_dir / "cat.bmp"]}.get(verb, [])
    for model in (truncated, tmp_path / "missing.tflite"):
        result = invoke(verb, model, *extra)
        assert result.exit_code != 0
        assert "Traceback" not in result.output and result.output.strip().count("\n") == 0, result.output
        assert result.output.startswith("Error:")


def test_edgetpu_compiled_file_cannot_run_without_delegate(reference_dir):
    result = invoke("benchmark", reference_dir / "mobilenet_v1_0.25_128_quant_edgetpu.tflite")
    assert result.exit_code != 0 and "Traceback" not in result.output
