"""The compression toolbox: m:n and XNNPACK-layout pruning, clustering with CQAT/PCQAT, distillation,
post-training modes, the quantization debugger and selective quantization, through ``run`` and the verbs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.core.tflite_file import read_model
from tests.helpers import TINY_V1, invoke, json_output


@pytest.fixture(scope="module")
def data(run_data):
    return run_data


def _toolbox(out, data, qat_epochs: int) -> dict:
    """One run with every switch: zoo teacher, 2:4 pruning, 8 clusters (PCQAT), PTQ modes, selective int8."""
    result = invoke("run", *TINY_V1, "--data", data, "--epochs", 1, "--learning-rate", 0.02,
                    "--teacher", "mobilenet_v1", "--teacher-alpha", 0.5, "--teacher-epochs", 1,
                    "--prune-sparsity", 0.5, "--prune-pattern", "2:4", "--prune-epochs", 1, "--cluster", 8,
                    "--qat-epochs", qat_epochs, "--ptq-mode", "dynamic", "--ptq-mode", "float16", "--ptq-mode", "int16x8",
                    "--selective-float", 2, "--benchmark-runs", 2, "--out", out, "--json")
    return {"out": out, "summary": json_output(result)}


@pytest.fixture(scope="module")
def toolbox_run(tmp_path_factory, data):
    # Tracing PCQAT's training step takes about a minute here (then 0.1 s per epoch): the fast tier wraps
    # and converts without QAT epochs; test_pcqat_training_keeps_clusters_and_zeros trains them.
    return _toolbox(tmp_path_factory.mktemp("toolbox") / "out", data, qat_epochs=0)


def _report(run) -> dict:
    return json.loads((run["out"] / "report.json").read_text())


def test_every_toolbox_stage_ran_in_order(toolbox_run):
    done = toolbox_run["summary"]["stages_done"]
    assert done == ["teacher", "train", "prune", "cluster", "qat", "convert", "quant_debug", "metadata", "evaluate"]
    results = _report(toolbox_run)["results"]
    assert results["qat"]["scheme"] == "PCQAT"
    assert results["train"]["distilled_from"] == "mobilenet_v1" and "distill_loss" in results["train"]["history"]
    assert results["teacher"]["params"] > results["train"]["params"]


def test_two_of_every_four_input_channel_weights_are_zero(toolbox_run):
    model = read_model(toolbox_run["out"] / "model_pruned_ptq_int8.tflite")
    checked = 0
    for op in model.operators:
        kernel = model.tensors[op.inputs[1]] if op.name == "CONV_2D" else None
        if kernel is None or kernel.shape[1:3] != (1, 1):
            continue
        groups = model.tensor_data(op.inputs[1]).reshape(-1, 4)
        assert np.all(np.sum(groups == 0, axis=1) >= 2), kernel.name
        checked += 1
    assert checked >= 13  # every pointwise conv of MobileNet v1


def _clusters_and_zeros_survive(run: dict) -> None:
    results = _report(run)["results"]
    assert max(results["cluster"]["unique_values"].values()) <= 8
    from pipeline.stages.cluster import tflite_unique_values

    uniques = tflite_unique_values(run["out"] / "model_int8.tflite")
    assert uniques and all(u["max_unique_per_channel"] <= 8 for u in uniques.values())
    assert results["evaluate"]["stages"]["tflite_int8"]["max_unique_per_channel"] <= 8
    assert results["evaluate"]["stages"]["tflite_int8"]["weight_sparsity"] > 0.4  # zeros kept too


def test_clusters_survive_pcqat_into_the_int8_file(toolbox_run):
    _clusters_and_zeros_survive(toolbox_run)


@pytest.mark.slow
def test_pcqat_training_keeps_clusters_and_zeros(tmp_path, data):
    _clusters_and_zeros_survive(_toolbox(tmp_path / "out", data, qat_epochs=1))


def test_post_training_modes_have_their_tensor_types(toolbox_run):
    dtypes = {name: {t.dtype for t in read_model(toolbox_run["out"] / f"model_{name}.tflite").tensors}
              for name in ("dynamic", "float16", "int16x8")}
    assert "int8" in dtypes["dynamic"] and "float32" in dtypes["dynamic"]
    assert "float16" in dtypes["float16"] and "int8" not in dtypes["float16"]
    assert "int16" in dtypes["int16x8"] and "int8" in dtypes["int16x8"]
    stages = _report(toolbox_run)["results"]["evaluate"]["stages"]
    for name in ("dynamic", "float16", "int16x8", "selective_int8"):
        assert 0.0 <= stages[f"tflite_{name}"]["accuracy"] <= 1.0 and stages[f"tflite_{name}"]["latency_ms_1t"] > 0


def test_quant_debug_ranks_layers_and_selective_int8_says_it_is_not_for_the_edgetpu(toolbox_run):
    out = toolbox_run["out"]
    layers = json.loads((out / "quant_debug.json").read_text())["layers"]
    errors = [row["rmse_over_scale"] for row in layers]
    assert len(layers) > 10 and errors == sorted(errors, reverse=True)
    selective = _report(toolbox_run)["results"]["quant_debug"]["selective"]
    assert selective["float_layers"] == [row["layer"] for row in layers[:2]]
    assert selective["float_ops"]  # the kept layers compute in float
    assert "Edge TPU" in selective["edgetpu"] and "Edge TPU" in (out / "report.md").read_text()


@pytest.mark.slow  # a whole run for one pattern; its setting checks stay in the fast tier
def test_xnnpack_pattern_prunes_only_pointwise_convs_and_stores_them_sparse(tmp_path, data):
    config = tmp_path / "c.yaml"
    config.write_text("model_args: {explicit_padding: true}\nepochs: 1\nqat: false\nbenchmark_runs: 2\n")
    out = tmp_path / "out"
    result = invoke("run", "--config", config, *TINY_V1, "--data", data, "--prune-sparsity", 0.75,
                    "--prune-pattern", "xnnpack", "--prune-epochs", 1, "--out", out, "--json")
    json_output(result)
    per_layer = _report({"out": out})["results"]["prune"]["per_layer"]
    assert per_layer["conv1"] == 0.0 and per_layer["predictions"] == 0.0
    assert all(v >= 0.7 for k, v in per_layer.items() if k.startswith("conv_pw_"))
    assert "DENSIFY" in read_model(out / "model_sparse_float32.tflite").op_histogram()


def test_erk_allocation_keeps_the_overall_target_and_prunes_big_layers_more():
    import math

    from keras_models import build_model
    from pipeline.stages.prune import layer_sparsities

    model = build_model("mobilenet_v1", 64, classes=10, alpha=0.5)
    uniform = layer_sparsities(model, 0.75)
    assert set(uniform) == {"conv1", "predictions", *(f"conv_pw_{i}" for i in range(1, 14))}  # no depthwise, no BN
    assert set(uniform.values()) == {0.75}
    sizes = {name: math.prod(model.get_layer(name).get_weights()[0].shape) for name in uniform}
    erk = layer_sparsities(model, 0.75, "erk")
    assert set(erk) == set(sizes)
    assert sum(erk[n] * sizes[n] for n in sizes) / sum(sizes.values()) == pytest.approx(0.75)
    assert erk["conv1"] == 0.0 and erk["conv_pw_1"] == 0.0  # the stem stays dense
    assert erk["conv_pw_13"] > erk["conv_pw_12"] > erk["conv_pw_7"] > erk["conv_pw_5"] > 0.0
    assert all(0.0 <= value < 1.0 for value in erk.values())


@pytest.mark.slow  # a whole run; ERK's allocation itself is checked fast above
def test_erk_allocation_and_small_kernels_left_unclustered_through_ptq(tmp_path, data):
    out = tmp_path / "out"
    result = invoke("run", *TINY_V1, "--data", data, "--epochs", 1, "--prune-sparsity", 0.6, "--prune-epochs", 1,
                    "--prune-allocation", "erk", "--cluster", 4, "--cluster-min-weights", 1000, "--no-qat",
                    "--benchmark-runs", 2, "--out", out, "--json")
    json_output(result)
    results = _report({"out": out})["results"]
    prune = results["prune"]
    assert prune["allocation"] == "erk" and prune["sparsity"] == pytest.approx(0.6, abs=0.02)
    assert prune["per_layer"]["conv1"] == 0.0 and prune["per_layer"]["conv_pw_13"] > 0.6
    assert "erk over layers" in (out / "report.md").read_text()
    unique = results["cluster"]["unique_values"]
    assert unique["conv1"] > 4 and unique["conv_pw_1"] > 4  # 216 and 128 weights: left alone
    assert unique["conv_pw_3"] <= 4 and unique["conv_pw_13"] <= 4
    assert "qat" not in results
    assert results["evaluate"]["stages"]["tflite_int8"]["max_unique_per_channel"] <= 4


@pytest.mark.parametrize("args, message", [
    (["--cluster", 4, "--cluster-min-weights", -1], "--cluster-min-weights"),
    (["--cluster", 4, "--cluster-min-weights", 100], "needs --no-qat"),
    (["--prune-allocation", "erk", "--prune-pattern", "2:4"], "needs --prune-pattern unstructured"),
    (["--prune-pattern", "xnnpack", "--prune-sparsity", 0.75], "explicit_padding"),
    (["--prune-pattern", "xnnpack", "--prune-sparsity", 0.5], "at least 2/3"),
    (["--prune-pattern", "4:2"], "unknown prune pattern"),
    (["--cluster", 300], "--cluster must be"),
    (["--kd-alpha", 1.5], "--kd-alpha"),
    (["--teacher", "no_such_net"], "no_such_net"),
])
def test_bad_toolbox_settings_are_one_line(tmp_path, data, args, message):
    result = invoke("run", *TINY_V1, "--data", data, "--epochs", 1, "--prune-epochs", 1, *args, "--out", tmp_path / "o")
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


@pytest.mark.slow  # 39 s; toolbox_run covers the same stages through `run` in the default tier
def test_stage_verbs_distill_cluster_qat_convert_and_quant_debug(toolbox_run, tmp_path, data):
    student, clustered, qat = (tmp_path / f"{n}.h5" for n in ("student", "clustered", "qat"))
    teacher = toolbox_run["out"] / "teacher.h5"
    trained = json_output(invoke("train", *TINY_V1, "--data", data, "--epochs", 1, "--teacher", teacher,
                                 "--kd-temperature", 2, "--out", student, "--json"))
    assert trained["n"] > 0
    info = json_output(invoke("cluster", student, "--data", data, "--clusters", 6, "--epochs", 0, "--out", clustered, "--json"))
    assert max(info["unique_values"].values()) <= 6
    # CQAT's first epoch spends a minute tracing (see toolbox_run): wrap without training here.
    assert json_output(invoke("qat", clustered, "--data", data, "--epochs", 0, "--out", qat, "--json"))["scheme"] == "CQAT"
    refused = invoke("convert", qat, "--mode", "qat_int8", "--representative-data", data, "--out", tmp_path / "q.tflite")
    assert refused.exit_code != 0 and "--qat-base" in refused.output
    converted = json_output(invoke("convert", qat, "--qat-base", clustered, "--mode", "qat_int8", "--representative-data", data,
                                   "--out", tmp_path / "q.tflite", "--json"))
    assert converted["float_ops"] == []
    half = json_output(invoke("convert", student, "--mode", "float16", "--out", tmp_path / "h.tflite", "--json"))
    assert half["size_bytes"] < (tmp_path / "q.tflite").stat().st_size * 2.5
    debug = json_output(invoke("quant-debug", student, "--representative-data", data, "--selective-float", 1,
                               "--out", tmp_path / "sel.tflite", "--json"))
    assert debug["layers"][0]["rmse_over_scale"] >= debug["layers"][-1]["rmse_over_scale"]
    assert debug["selective"]["float_layers"] == [debug["layers"][0]["layer"]] and debug["selective"]["float_ops"]


def test_train_refuses_a_zoo_name_teacher_and_a_mismatched_teacher(tmp_path, data):
    result = invoke("train", *TINY_V1, "--data", data, "--epochs", 1, "--teacher", "mobilenet_v2", "--out", tmp_path / "s.h5")
    assert result.exit_code != 0 and "saved Keras model" in result.output
    from keras_models import build_model
    from pipeline.core.fsutil import save_keras_model

    wide = save_keras_model(build_model("mobilenet_v1", input_size=48, classes=3, alpha=0.25), tmp_path / "wide.h5")
    result = invoke("train", *TINY_V1, "--data", data, "--epochs", 1, "--teacher", wide, "--out", tmp_path / "s.h5")
    assert result.exit_code != 0 and "teacher" in result.output and "Traceback" not in result.output
