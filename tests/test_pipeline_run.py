"""``tflpipe run`` end to end on a tiny model, its artifacts, resuming, and bad input."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from pipeline.core.tflite_file import read_model
from tests.helpers import invoke, write_image_folder

CLEAN_MOBILENET_V2_OPS = {"CONV_2D": 35, "DEPTHWISE_CONV_2D": 17, "ADD": 10, "MEAN": 1, "FULLY_CONNECTED": 1,
                          "SOFTMAX": 1, "QUANTIZE": 2}


def report(tiny_run) -> dict:
    return json.loads((tiny_run["out"] / "report.json").read_text())


def rerun(tiny_run, out, *extra):
    return invoke("run", *tiny_run["args"], "--out", out, *extra)


def test_every_stage_and_artifact_is_there(tiny_run):
    out = tiny_run["out"]
    rep = report(tiny_run)
    assert rep["stages_done"] == ["train", "prune", "qat", "convert", "metadata", "evaluate", "nnapi"]
    for name in ("float.h5", "pruned.h5", "qat.h5", "model_float32.tflite", "model_ptq_int8.tflite",
                 "model_pruned_ptq_int8.tflite", "model_int8.tflite", "labels.txt", "report.md", "report.png",
                 "tensorboard/train", "tensorboard/prune", "tensorboard/qat"):
        assert (out / name).exists(), name
    stages = {row["stage"]: row for row in rep["summary"]}
    assert set(stages) == {"keras_float", "keras_pruned", "keras_qat", "tflite_float32", "tflite_ptq_int8",
                           "tflite_pruned_ptq_int8", "tflite_int8"}
    for row in stages.values():
        assert 0.0 <= row["accuracy"] <= 1.0
    for key in ("tflite_float32", "tflite_int8"):
        assert stages[key]["latency_ms_1t"] > 0 and stages[key]["latency_ms_2t"] > 0
        assert stages[key]["gzip_bytes"] < stages[key]["size_bytes"]
    assert "| TFLite int8 (deployable) |" in (out / "report.md").read_text()


def test_the_net_learned_and_tflite_float_matches_keras(tiny_run):
    stages = {row["stage"]: row for row in report(tiny_run)["summary"]}
    assert stages["keras_float"]["accuracy"] >= 0.6  # 3 colour classes; chance is 1/3
    # Same decoded images, same normalization: the float32 file must agree with Keras.
    assert abs(stages["tflite_float32"]["accuracy"] - stages["keras_float"]["accuracy"]) <= 0.03


def test_int8_models_are_clean_full_integer(tiny_run):
    dense = read_model(tiny_run["out"] / "model_ptq_int8.tflite")
    assert dense.op_histogram() == CLEAN_MOBILENET_V2_OPS
    for name in ("model_ptq_int8.tflite", "model_pruned_ptq_int8.tflite", "model_int8.tflite"):
        model = read_model(tiny_run["out"] / name)
        assert "DEQUANTIZE" not in model.op_histogram()
        assert model.input_tensors[0].dtype == "uint8" and model.output_tensors[0].dtype == "uint8"
        inner = [t for op in model.operators if op.name != "QUANTIZE" for t in op.inputs + op.outputs if t >= 0]
        assert {model.tensors[i].dtype for i in inner} <= {"int8", "uint8", "int32"}, name


def test_pruning_sparsity_survives_qat_into_the_int8_file(tiny_run):
    rep = report(tiny_run)
    assert rep["results"]["prune"]["sparsity"] == pytest.approx(0.5, abs=0.03)
    stages = {row["stage"]: row for row in rep["summary"]}
    assert stages["tflite_ptq_int8"]["weight_sparsity"] < 0.1
    assert stages["tflite_pruned_ptq_int8"]["weight_sparsity"] >= 0.45
    assert stages["tflite_int8"]["weight_sparsity"] >= 0.45  # pruning-preserving QAT
    assert stages["tflite_int8"]["gzip_bytes"] < stages["tflite_ptq_int8"]["gzip_bytes"]


def test_deployable_model_carries_labels_and_normalization(tiny_run):
    meta = read_model(tiny_run["out"] / "model_int8.tflite").metadata
    assert meta["labels"] == ["class_0", "class_1", "class_2"]
    assert meta["mean"] == [127.5] and meta["std"] == [127.5]
    assert (tiny_run["out"] / "labels.txt").read_text().split() == meta["labels"]


def test_rerun_resumes_after_the_last_finished_stage(tiny_run, copy_run):
    state_path = copy_run / "state.json"
    state = json.loads(state_path.read_text())
    state["done"] = state["done"][:5]  # as if interrupted during "evaluate"
    state_path.write_text(json.dumps(state))
    float_mtime = os.path.getmtime(copy_run / "float.h5")
    (copy_run / "report.json").unlink()
    result = rerun(tiny_run, copy_run)
    assert result.exit_code == 0, result.output
    assert os.path.getmtime(copy_run / "float.h5") == float_mtime
    assert (copy_run / "report.json").is_file()
    assert json.loads(state_path.read_text())["done"][-2:] == ["evaluate", "nnapi"]
    assert "stage train: done earlier, skipped" in result.output


def test_the_validation_accuracy_shown_for_the_last_epoch_is_the_reported_one(tiny_run):
    results = report(tiny_run)["results"]
    assert results["train"]["history"]["val_accuracy"][-1] == results["train"]["keras_accuracy"]
    assert report(tiny_run)["summary"][0]["accuracy"] == results["train"]["keras_accuracy"]  # the Keras float row


def test_finished_stages_whose_files_are_missing_or_damaged_are_redone(tiny_run, copy_run):
    from pipeline.runner.config import load_config
    from pipeline.runner.run import verified_stages

    config = load_config(tiny_run["config"], {"data": str(tiny_run["data"]), "model": "mobilenet_v2", "alpha": 0.35,
                                              "input_size": 32, "batch_size": 16})
    done = json.loads((copy_run / "state.json").read_text())["done"]
    assert verified_stages(copy_run, config, done) == done
    (copy_run / "model_int8.tflite").write_bytes(b"TFL3 but not a model")
    assert verified_stages(copy_run, config, done) == ["train", "prune", "qat"]
    (copy_run / "pruned.h5").write_bytes((copy_run / "pruned.h5").read_bytes()[:4096])  # cut short
    assert verified_stages(copy_run, config, done) == ["train"]
    (copy_run / "float.h5").unlink()
    assert verified_stages(copy_run, config, done) == []


def test_a_second_writer_is_refused_while_a_run_holds_the_folder(tiny_run, copy_run):
    import fcntl

    with open(copy_run / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("pid 4242 on elsewhere")
        held.flush()
        result = rerun(tiny_run, copy_run)
    assert result.exit_code != 0 and "in use by another tflpipe run (pid 4242" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("content, message", [("{not json", "is corrupt"), ('{"config": {}}', "not a tflpipe run state")])
def test_a_malformed_state_file_is_one_line(tiny_run, copy_run, content, message):
    (copy_run / "state.json").write_text(content)
    result = rerun(tiny_run, copy_run)
    assert result.exit_code != 0 and message in result.output and "--restart" in result.output


def test_stage_verbs_work_alone_on_files(tiny_run, tmp_path):
    out, data = tiny_run["out"], tiny_run["data"]
    res = invoke("convert", out / "float.h5", "--mode", "ptq_int8", "--representative-data", data, "--io-dtype", "int8",
                 "--out", tmp_path / "q.tflite", "--json")
    assert res.exit_code == 0, res.output
    model = read_model(tmp_path / "q.tflite")
    assert model.input_tensors[0].dtype == "int8" and "QUANTIZE" not in model.op_histogram()
    res = invoke("metadata", tmp_path / "q.tflite", "--labels", out / "labels.txt", "--mean", "0", "--std", "255")
    assert res.exit_code == 0, res.output
    assert read_model(tmp_path / "q.tflite").metadata["std"] == [255.0]
    res = invoke("convert", out / "float.h5", "--mode", "float32", "--out", tmp_path / "f.tflite")
    assert res.exit_code == 0 and read_model(tmp_path / "f.tflite").input_tensors[0].dtype == "float32"


@pytest.mark.slow  # 29 s; the run's prune and QAT stages (same functions) are in the default tier
def test_prune_and_qat_verbs(tiny_run, tmp_path):
    # The verbs wrap the run's stage functions (trained above); a smaller net than the run's keeps their tracing short.
    from keras_models import build_model
    from pipeline.core.fsutil import save_keras_model

    float_model = save_keras_model(build_model("mobilenet_v1", input_size=32, classes=3, alpha=0.25), tmp_path / "f.h5")
    data = tiny_run["data"]
    res = invoke("prune", float_model, "--data", data, "--sparsity", "0.6", "--epochs", "1", "--out", tmp_path / "p.h5", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output[res.output.index("{"):])["sparsity"] == pytest.approx(0.6, abs=0.03)
    res = invoke("qat", tmp_path / "p.h5", "--data", data, "--epochs", "1", "--out", tmp_path / "q.h5", "--json")
    assert res.exit_code == 0, res.output
    qat_report = json.loads(res.output[res.output.index("{"):])
    assert qat_report["preserve_sparsity"] is True and qat_report["scheme"] == "PQAT"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "mobilenet_v9"], "unknown model 'mobilenet_v9'"),
        (["--input-size", "8"], "--input-size must be at least 16"),
        (["--prune-sparsity", "1.5"], "--prune-sparsity"),
        (["--data", "/nonexistent/images"], "data folder not found"),
    ],
)
def test_bad_run_input_is_one_line(tmp_path, args, message):
    result = invoke("run", "--epochs", "1", *args, "--out", tmp_path / "o")
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output


def test_unwritable_out_and_bad_config(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke("run", "--out", blocker / "sub")
    assert result.exit_code != 0 and "not writable" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 1\nlearning_rat: 0.1\n")
    result = invoke("run", "--config", bad, "--out", tmp_path / "o")
    assert result.exit_code != 0 and "unknown setting(s) learning_rat" in result.output


def test_weights_of_another_width_are_refused_in_one_line(tiny_run, tmp_path):
    args = ["--model", "mobilenet_v2", "--alpha", "0.5", "--input-size", "32", "--epochs", "1"]
    result = invoke("run", *args, "--weights", tiny_run["out"] / "float.h5", "--data", tiny_run["data"], "--out", tmp_path / "o")
    assert result.exit_code != 0 and "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: mobilenet_v2:") and "shape" in last.lower(), result.output


def test_single_class_folder_fails_before_training(tmp_path):
    data = write_image_folder(tmp_path / "d", classes=1, per_class=4)
    result = invoke("run", "--data", data, "--out", tmp_path / "o")
    assert result.exit_code != 0 and "single class" in result.output


def test_targets_join_a_finished_run_without_retraining(tiny_run, copy_run):
    out = copy_run
    float_mtime = os.path.getmtime(out / "float.h5")
    result = rerun(tiny_run, out, "--target", "edgetpu", "--target", "nnapi", "--target", "android",
                   "--nnapi-api-level", "29", "--json")
    assert result.exit_code == 0, result.output
    assert os.path.getmtime(out / "float.h5") == float_mtime
    data = json.loads(result.output[result.output.index("{"):])
    assert data["stages_done"][-3:] == ["edgetpu", "nnapi", "android"]
    edgetpu, nnapi, android = (data["targets"][k] for k in ("edgetpu", "nnapi", "android"))
    assert edgetpu["fully_mapped"] and edgetpu["check"]["mapped_ops"] == edgetpu["check"]["total_ops"] > 0
    assert "compile" in edgetpu  # compiled with the real compiler, or the reason it was not
    assert nnapi["api_level"] == 29 and nnapi["total_ops"] == edgetpu["check"]["total_ops"]
    config = json.loads((out / "android" / "model_config.json").read_text())
    assert (out / "android" / "model.tflite").read_bytes() == (out / "model_int8.tflite").read_bytes()
    assert config["num_classes"] == 3 and android["out_dir"] == str(out / "android")
    text = (out / "report.md").read_text()
    assert "## Deployment targets" in text and "Edge TPU:" in text and "NNAPI (API 29)" in text


def test_a_changed_setting_redoes_the_stages_that_read_it_and_stale_files_go(tiny_run, copy_run):
    out = copy_run
    qat_mtime = os.path.getmtime(out / "qat.h5")
    result = rerun(tiny_run, out, "--quant-debug", "--json")
    assert result.exit_code == 0, result.output
    assert "stage quant_debug ..." in result.output and "stage convert ..." not in result.output
    assert (out / "quant_debug.json").exists() and "Layers int8 hurts most" in (out / "report.md").read_text()
    # Back to the first settings: the file only the other settings produce is removed, the rest is kept.
    result = rerun(tiny_run, out)
    assert result.exit_code == 0, result.output
    assert "removed quant_debug.json" in result.output and "stage quant_debug" not in result.output
    assert not (out / "quant_debug.json").exists() and "Layers int8 hurts most" not in (out / "report.md").read_text()
    assert "stage convert ..." not in result.output and os.path.getmtime(out / "qat.h5") == qat_mtime


def test_edgetpu_target_fails_on_cpu_ops_unless_allowed(tiny_run, copy_run):
    out = copy_run
    shutil.copyfile(out / "model_float32.tflite", out / "model_int8.tflite")  # a float model cannot map
    args = ["run", *tiny_run["args"], "--out", out, "--target", "edgetpu"]
    result = invoke(*args)
    assert result.exit_code != 0
    assert "does not map fully to the Edge TPU" in result.output and "--allow-cpu-ops" in result.output
    assert "Traceback" not in result.output
    state = json.loads((out / "state.json").read_text())
    assert "edgetpu" not in state["done"] and state["results"]["edgetpu"]["failed"]
    assert "**Failed:**" in (out / "report.md").read_text()
    result = invoke(*args, "--allow-cpu-ops")
    assert result.exit_code == 0, result.output
    assert "NOT fully mapped" in result.output
