"""Structured channel pruning: the pruned dense model computes what the original computes with the removed
channels zeroed, for every zoo family and a plain functional model; tied groups, failures, int8 and the CLI."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from keras_models import build_model
from keras_models.macs import count
from pipeline.cli import main
from pipeline.cli.channels import COMMANDS
from pipeline.cli.common import OneLineErrors
from pipeline.core.errors import PipelineError
from pipeline.core.tf_env import keras
from pipeline.stages.channel_prune import (
    channel_groups,
    channel_importance,
    layer_channels,
    load_ratios,
    prune_by_ratio,
    prune_channels,
)

L = keras.layers

# (zoo name, input size, knobs): every family at a tiny width.
FAMILIES = [
    ("mobilenet_v1", 32, {"alpha": 0.25}),
    ("mobilenet_v2", 32, {"alpha": 0.35}),
    ("mobilenet_v3_small", 32, {"alpha": 0.35}),
    ("mobilenet_v3_large", 32, {"alpha": 0.35}),
    ("squeezenet_1_0", 64, {}),
    ("squeezenet_1_1", 64, {}),
    ("shufflenet_v1", 32, {"alpha": 0.25, "groups": 1}),
    ("shufflenet_v1", 32, {"alpha": 0.25, "groups": 3}),  # grouped 1x1 convs and their shuffles
    ("shufflenet_v2", 32, {"alpha": 0.5}),
    ("mnasnet_a1", 32, {"alpha": 0.35}),
    ("mnasnet_b1", 32, {"alpha": 0.35}),
    ("efficientnet_lite0", 32, {}),
    ("resnet50", 32, {}),
    pytest.param("densenet121", 32, {}, marks=pytest.mark.slow, id="densenet121"),  # 8 s; its concatenations: SqueezeNet's too
]


def randomize(model: keras.Model, seed: int = 0) -> keras.Model:
    """Give every channel its own batch-norm statistics, scale and shift, and every bias a value, so removing
    a channel changes the output and the slicing of every per-channel weight is checked."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        for variable in inner.weights:
            short = variable.name.split("/")[-1].split(":")[0]
            shape = variable.shape
            if short in ("gamma", "moving_variance"):
                variable.assign(rng.uniform(0.5, 1.5, shape))
            elif short in ("beta", "moving_mean", "bias"):
                variable.assign(rng.uniform(-0.2, 0.2, shape))
    return model


def kept_channels(model: keras.Model, ratio_of: dict[int, float]) -> dict[int, np.ndarray]:
    """Group id -> indices that pruning must keep: the highest L1 scores, in their original order."""
    groups = channel_groups(model)
    kept = {}
    for gid, ratio in ratio_of.items():
        count_kept = max(1, round(groups[gid].size * (1 - ratio)))
        scores = channel_importance(model, groups[gid], "l1")
        kept[gid] = np.sort(np.argsort(-scores, kind="stable")[:count_kept])
    return kept


def zero_removed(model: keras.Model, kept: dict[int, np.ndarray]) -> None:
    """Zero the removed channels in place: gamma and beta of every batch norm reading them, kernel and bias of
    every layer writing them, so every tensor of the group carries exact zeros there (or a gate multiplying a
    zero)."""
    layouts = layer_channels(model)

    def removed_positions(channel_map: np.ndarray) -> np.ndarray:
        removed = np.zeros(len(channel_map), dtype=bool)
        for gid, indices in kept.items():
            mine = channel_map[:, 0] == gid
            removed[mine] = ~np.isin(channel_map[mine, 1], indices)
        return np.flatnonzero(removed)

    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if layer.name not in layouts or not inner.weights:
            continue
        channels = layouts[layer.name]
        if isinstance(inner, L.BatchNormalization):
            removed = removed_positions(channels.input_map[0])
            for variable in (inner.gamma, inner.beta):
                value = variable.numpy()
                value[removed] = 0
                variable.assign(value)
        elif isinstance(inner, (L.Conv2D, L.Dense, L.DepthwiseConv2D)):
            removed = removed_positions(channels.output_map[0])
            weights = inner.get_weights()
            kernel_axis = 2 if isinstance(inner, L.DepthwiseConv2D) else -1
            np.moveaxis(weights[0], kernel_axis, 0)[removed] = 0
            if len(weights) > 1:
                weights[1][removed] = 0
            inner.set_weights(weights)


def images(model: keras.Model, n: int = 3) -> np.ndarray:
    return np.random.default_rng(1).uniform(-1, 1, (n, *model.input_shape[1:])).astype(np.float32)


def assert_pruning_is_exact(model: keras.Model, seed: int = 0) -> keras.Model:
    """Prune 30-50% of every prunable group; the pruned model must equal the original with those channels zeroed."""
    randomize(model, seed)
    rng = np.random.default_rng(seed)
    prunable = [g for g in channel_groups(model) if g.prunable and g.size > 1]
    assert prunable, "nothing to prune"
    kept = kept_channels(model, {g.id: rng.uniform(0.3, 0.5) for g in prunable})
    x = images(model)
    original = model(x).numpy()

    pruned = prune_channels(model, {gid: len(ix) for gid, ix in kept.items()})

    np.testing.assert_array_equal(model(x).numpy(), original)  # the original is left untouched
    assert [layer.name for layer in pruned.layers] == [layer.name for layer in model.layers]
    assert pruned.count_params() < model.count_params()
    assert count(pruned).macs < count(model).macs
    pruned_groups = channel_groups(pruned)
    assert [g.size for g in pruned_groups] == [len(kept.get(g.id, range(g.size))) for g in channel_groups(model)]
    zero_removed(model, kept)
    zeroed = model(x).numpy()
    assert not np.allclose(zeroed, original, atol=1e-3), "zeroing the pruned channels changed nothing"
    scale = max(1.0, float(np.abs(zeroed).max()))
    np.testing.assert_allclose(pruned(x).numpy(), zeroed, rtol=1e-4, atol=1e-4 * scale)
    return pruned


@pytest.mark.parametrize("name,size,knobs", FAMILIES, ids=[getattr(f, "id", None) or f[0] + (
    f"_g{f[2]['groups']}" if "groups" in f[2] else "") for f in FAMILIES])
def test_every_zoo_family_prunes_exactly(name: str, size: int, knobs: dict) -> None:
    model = build_model(name, input_size=size, classes=10, classifier_activation=None, **knobs)
    assert_pruning_is_exact(model)


def plain_net() -> keras.Model:
    """Conv-BN-ReLU, a residual Add, a Concatenate of two branches, a conv with bias and no BN, a Dense head."""
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(12, 3, padding="same", name="stem")(inputs)
    x = L.ReLU(name="stem_relu")(L.BatchNormalization(name="stem_bn")(x))
    y = L.BatchNormalization(name="res_bn")(L.Conv2D(12, 3, padding="same", use_bias=False, name="res")(x))
    x = L.Add(name="add")([x, y])
    left = L.Conv2D(6, 1, activation="relu", name="left")(x)
    right = L.ReLU(name="right_relu")(L.BatchNormalization(name="right_bn")(L.Conv2D(10, 3, padding="same",
                                                                                       name="right")(x)))
    x = L.Concatenate(name="concat")([left, right])
    x = L.Conv2D(16, 1, name="mix")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(20, activation="relu", name="fc")(x)
    return keras.Model(inputs, L.Dense(5, name="logits")(x), name="plain")


def test_plain_functional_model_groups_and_exactness() -> None:
    model = plain_net()
    groups = {g.producers[0] if g.producers else "input": g for g in channel_groups(model)}
    assert not groups["input"].prunable and groups["input"].reason == "model input"
    assert groups["stem"].producers == ("stem", "res") and groups["stem"].size == 12  # tied by the Add
    assert {"stem_bn", "res_bn", "add", "left", "right"} <= set(groups["stem"].consumers)
    assert groups["left"].prunable and groups["right"].prunable  # concat inputs keep their own groups
    assert layer_channels(model)["mix"].inputs == ((groups["left"].id, groups["right"].id),)
    assert not groups["logits"].prunable and groups["logits"].reason == "model output"
    assert [g.producers for g in channel_groups(model)] == [g.producers for g in groups.values()]  # graph order
    pruned = assert_pruning_is_exact(model)
    assert pruned.get_layer("mix").kernel.shape[2] < 16


def test_sequential_model_prunes() -> None:
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(8, 3, name="a"), L.BatchNormalization(name="a_bn"),
                              L.ReLU(), L.Conv2D(8, 3, name="b"), L.Flatten(), L.Dense(3, name="out")])
    randomize(model)
    groups = channel_groups(model)
    a, b = (next(g for g in groups if name in g.producers) for name in "ab")
    assert a.prunable and not b.prunable and "reshaped" in b.reason  # Flatten folds space into channels
    pruned = prune_by_ratio(model, 0.5)
    assert isinstance(pruned, keras.Sequential)
    assert pruned.get_layer("a").filters == 4 and pruned.get_layer("b").kernel.shape[2] == 4


def test_squeeze_excite_ties_expand_to_block_and_reduce_is_its_own_group() -> None:
    model = build_model("mobilenet_v3_small", input_size=32, classes=10, alpha=0.35)
    groups = channel_groups(model)
    expand = next(g for g in groups if "expanded_conv_0_se_expand" in g.producers)
    reduce = next(g for g in groups if "expanded_conv_0_se_reduce" in g.producers)
    assert "expanded_conv_0_depthwise" in expand.producers and expand.prunable
    assert reduce.producers == ("expanded_conv_0_se_reduce",) and reduce.prunable
    assert "expanded_conv_0_se_mul" in expand.consumers


def kept_filters(pruned: keras.Model, model: keras.Model, conv: str) -> np.ndarray:
    """Which filters of conv layer ``conv`` pruning kept, found by its batch norm's gammas (all distinct)."""
    old, new = (m.get_layer(f"{conv}_bn").gamma.numpy() for m in (model, pruned))
    return np.array([int(np.argmin(np.abs(old - gamma))) for gamma in new])


def test_shufflenet_v2_shuffle_ties_the_same_indices_and_splits_halve_the_identity_path() -> None:
    model = randomize(build_model("shufflenet_v2", input_size=32, classes=10, alpha=0.5))
    groups = channel_groups(model)
    path = next(g for g in groups if "stage4_unit1_left_conv" in g.producers)  # the shuffle's two halves, tied
    assert path.prunable and {"stage4_unit1_conv2", "stage4_unit4_conv2"} <= set(path.producers)
    assert path.size == 96 // 8  # three splits after the first unit: each channel is 8 of left_conv's filters
    assert layer_channels(model)["stage4_unit1_shuffle"].outputs == ((path.id,) * 16,)  # 192 channels
    stage3 = next(g for g in groups if "stage3_unit1_left_conv" in g.producers)
    assert stage3.size == 1  # seven splits of 96 channels: ties chain across the odd halves, nothing left to prune
    branch = next(g for g in groups if g.producers == ("stage4_unit2_conv1", "stage4_unit2_dwconv"))
    assert branch.size == 96 and branch.prunable  # inside a branch: untouched by the shuffle

    pruned = prune_channels(model, {path.id: 5, branch.id: 40})
    left, right = (kept_filters(pruned, model, f"stage4_unit1_{n}") for n in ("left_conv", "conv2"))
    assert len(left) == 40 and np.array_equal(left, right)  # the same filters removed from both shuffled halves
    assert pruned.get_layer("stage4_unit2_conv1").kernel.shape[2:] == (40, 40)  # split half in, branch group out
    assert pruned.get_layer("conv5").kernel.shape[2] == 80


@pytest.mark.slow  # 10 s; test_every_zoo_family_prunes_exactly[shufflenet_v1_g3] covers exactness by default
def test_shufflenet_v1_grouped_convs_prune_equally_per_group() -> None:
    model = randomize(build_model("shufflenet_v1", input_size=32, classes=10, alpha=0.5, groups=2))
    groups = channel_groups(model)
    assert next(g for g in groups if "stage4_unit2_gconv1_g0" in g.producers).size == 25  # 50 filters per group
    assert all(g.prunable for g in groups[1:-1])
    pruned = prune_by_ratio(model, 0.4)
    for unit in ("stage2_unit3", "stage3_unit1", "stage4_unit2"):
        for conv in ("gconv1", "gconv2"):
            g0, g1 = (pruned.get_layer(f"{unit}_{conv}_g{i}") for i in (0, 1))
            assert g0.kernel.shape == g1.kernel.shape  # equal per group, in and out
    kept = kept_filters(pruned, model, "stage4_unit2_gconv1_g0")
    assert len(kept) == 30 and np.array_equal(kept, kept_filters(pruned, model, "stage4_unit2_gconv1_g1"))
    x = images(model)
    assert pruned(x).shape == model(x).shape


def test_importance_criteria() -> None:
    model = randomize(plain_net())
    group = next(g for g in channel_groups(model) if g.producers == ("stem", "res"))
    stem, res = model.get_layer("stem").kernel.numpy(), model.get_layer("res").kernel.numpy()
    expected_l1 = np.abs(stem).sum((0, 1, 2)) + np.abs(res).sum((0, 1, 2))
    np.testing.assert_allclose(channel_importance(model, group, "l1"), expected_l1, rtol=1e-5)
    expected_l2 = np.sqrt((stem ** 2).sum((0, 1, 2))) + np.sqrt((res ** 2).sum((0, 1, 2)))
    np.testing.assert_allclose(channel_importance(model, group, "l2"), expected_l2, rtol=1e-5)
    gammas = np.abs(model.get_layer("stem_bn").gamma.numpy()) + np.abs(model.get_layer("res_bn").gamma.numpy())
    np.testing.assert_allclose(channel_importance(model, group, "bn"), gammas, rtol=1e-6)
    left = next(g for g in channel_groups(model) if g.producers == ("left",))
    with pytest.raises(PipelineError, match="criterion 'bn' needs a batch norm"):
        channel_importance(model, left, "bn")
    with pytest.raises(PipelineError, match="unknown pruning criterion"):
        channel_importance(model, group, "random")


def test_keeps_the_most_important_channels_in_order() -> None:
    model = randomize(plain_net())
    group = next(g for g in channel_groups(model) if g.producers == ("left",))
    scores = channel_importance(model, group, "l2")
    pruned = prune_channels(model, {group.id: 2}, criterion="l2")
    best = np.sort(np.argsort(-scores)[:2])
    np.testing.assert_array_equal(pruned.get_layer("left").kernel.numpy(),
                                  model.get_layer("left").kernel.numpy()[..., best])
    np.testing.assert_array_equal(pruned.get_layer("mix").kernel.numpy()[:, :, :2],
                                  model.get_layer("mix").kernel.numpy()[:, :, best])


def test_prune_by_ratio_divisor_and_per_layer_ratios() -> None:
    model = plain_net()
    pruned = prune_by_ratio(model, 0.3, divisor=4)
    assert pruned.get_layer("stem").filters == 8 and pruned.get_layer("res").filters == 8  # 12 * 0.7 = 8.4 -> 8
    assert pruned.get_layer("right").filters == 8 and pruned.get_layer("fc").units == 16
    assert pruned.get_layer("left").filters == 4 and pruned.get_layer("logits").units == 5
    only = prune_by_ratio(model, {"right": 0.5, "res": 0.25})  # "res" names the group it shares with "stem"
    assert only.get_layer("right").filters == 5 and only.get_layer("stem").filters == 9
    assert only.get_layer("left").filters == 6 and only.get_layer("fc").units == 20
    assert prune_by_ratio(model, 0.99).get_layer("left").filters == 1  # never below one channel


@pytest.mark.parametrize("ratio,match", [(1.0, r"in \[0, 1\)"), (-0.1, r"in \[0, 1\)"), ("half", r"in \[0, 1\)"),
                                         ({"nope": 0.3}, "produces no channel group"),
                                         ({"logits": 0.3}, "cannot be pruned: model output"),
                                         ({"stem": 0.3, "res": 0.5}, "tied"),
                                         ({"left": 2}, r"in \[0, 1\)")])
def test_bad_ratios_are_refused(ratio, match: str) -> None:
    with pytest.raises(PipelineError, match=match):
        prune_by_ratio(plain_net(), ratio)


def test_bad_keep_and_divisor_are_refused() -> None:
    model = plain_net()
    groups = channel_groups(model)
    with pytest.raises(PipelineError, match="unknown channel group"):
        prune_channels(model, {len(groups): 1})
    with pytest.raises(PipelineError, match="keep between 1 and"):
        prune_channels(model, {groups[1].id: 0})
    with pytest.raises(PipelineError, match="cannot be pruned: model input"):
        prune_channels(model, {0: 1})
    with pytest.raises(PipelineError, match="divisor"):
        prune_by_ratio(model, 0.3, divisor=0)


def test_unsupported_layers_name_the_layer_and_its_class() -> None:
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, name="c")(inputs)
    lam = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling2D()(L.Lambda(lambda t: t * 2, name="double")(x))))
    with pytest.raises(PipelineError, match=r"cannot prune channels through layer 'double' \(Lambda\)"):
        channel_groups(lam)
    transposed = keras.Model(inputs, L.Conv2DTranspose(4, 3, name="up")(x))  # a Conv2D subclass, other kernel layout
    with pytest.raises(PipelineError, match=r"layer 'up' \(Conv2DTranspose\)"):
        prune_by_ratio(transposed, 0.5)
    import tensorflow_model_optimization as tfmot

    qat = tfmot.quantization.keras.quantize_model(keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling2D()(x))))
    with pytest.raises(PipelineError, match="prune channels before quantization-aware training"):
        channel_groups(qat)
    with pytest.raises(PipelineError, match="functional or Sequential"):
        channel_groups(keras.Sequential([L.Dense(3)]))  # no input shape: no graph to follow


def test_load_ratios(tmp_path: Path) -> None:
    yaml_file = tmp_path / "r.yaml"
    yaml_file.write_text("right: 0.5\nres: 0.25\n")
    assert load_ratios(yaml_file, plain_net()) == {"right": 0.5, "res": 0.25}
    json_file = tmp_path / "r.json"
    json_file.write_text(json.dumps({"left": 0.3}))
    assert load_ratios(json_file) == {"left": 0.3}
    for text, match in [("right: [0.5\n", "not valid YAML"), ("- 0.5\n", "mapping"), ("right: 1.5\n", r"\[0, 1\)"),
                        ("", "mapping")]:
        yaml_file.write_text(text)
        with pytest.raises(PipelineError, match=match):
            load_ratios(yaml_file)
    json_file.write_text("{nope")
    with pytest.raises(PipelineError, match="not valid JSON"):
        load_ratios(json_file)
    yaml_file.write_text("unknown_layer: 0.5\n")
    with pytest.raises(PipelineError, match="'unknown_layer' produces no channel group"):
        load_ratios(yaml_file, plain_net())
    with pytest.raises(PipelineError, match="cannot read ratios file"):
        load_ratios(tmp_path / "missing.yaml")


@pytest.mark.slow  # two int8 conversions, 20-40 s on 2 shared cores
def test_pruned_shufflenets_convert_to_full_int8(tmp_path: Path) -> None:
    from pipeline.core.tflite_file import read_model
    from tests.helpers import convert

    for name, knobs in (("shufflenet_v1", {"alpha": 0.25, "groups": 3}), ("shufflenet_v2", {"alpha": 0.5})):
        model = randomize(build_model(name, input_size=32, classes=10, **knobs))
        pruned = prune_by_ratio(model, 0.4)
        assert pruned.count_params() < 0.8 * model.count_params()
        tflite = read_model(convert(lambda inputs: pruned(inputs), (32, 32, 3), tmp_path / f"{name}.tflite"))
        assert {t.dtype for t in tflite.tensors if not t.constant} <= {"int8", "uint8", "int32"}
        assert "CONV_2D" in {op.name for op in tflite.operators}


@pytest.mark.slow  # the int8 conversion alone takes 20-30 s on 2 shared cores
def test_pruned_mobilenet_v2_converts_to_int8_and_maps_fully_to_the_edge_tpu(tmp_path: Path) -> None:
    from edgetpu.check import check
    from pipeline.core.tflite_file import read_model
    from tests.helpers import convert

    model = randomize(build_model("mobilenet_v2", input_size=32, classes=10, alpha=0.35))
    pruned = prune_by_ratio(model, 0.4, divisor=4)
    assert pruned.count_params() < 0.6 * model.count_params()
    path = convert(lambda inputs: pruned(inputs), (32, 32, 3), tmp_path / "pruned.tflite")
    tflite = read_model(path)
    assert {t.dtype for t in tflite.tensors if not t.constant} <= {"int8", "uint8", "int32"}
    report = check(tflite)
    assert report.fully_mapped, report.reasons
    assert report.accelerated_ops == report.total_ops


# The CLI: through `tflpipe` once the command is registered, through its own one-line-error group until then.
def invoke(*args) -> Result:
    cli = main
    if "prune-channels" not in main.commands:
        cli = OneLineErrors("tflpipe", commands={c.name: c for c in COMMANDS})
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def saved_v2(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("channels") / "v2.h5"
    randomize(build_model("mobilenet_v2", input_size=32, classes=10, alpha=0.35)).save(path)
    return path


def test_cli_round_trip_json(saved_v2: Path, tmp_path: Path) -> None:
    from pipeline.stages.convert import load_keras_model

    out = tmp_path / "pruned.h5"
    result = invoke("prune-channels", saved_v2, "--ratio", "0.3", "--criterion", "bn", "--divisor", "4",
                    "--out", out, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    before, after = data["before"], data["after"]
    assert after["params"] < before["params"] and after["macs"] < before["macs"]
    assert after["channels"] < before["channels"] and data["criterion"] == "bn"
    pruned = load_keras_model(out)
    assert pruned.count_params() - count(pruned).non_trainable_params == after["params"]
    assert pruned.output_shape == (None, 10)
    assert all(g.size % 4 == 0 for g in channel_groups(pruned) if g.prunable)

    ratios = tmp_path / "ratios.yaml"
    ratios.write_text("block_1_expand: 0.5\n")
    result = invoke("prune-channels", saved_v2, "--ratios", ratios, "--out", out)
    assert result.exit_code == 0, result.output
    assert "params" in result.output and "->" in result.output
    assert load_keras_model(out).get_layer("block_1_expand").filters == 24  # 48 -> 24


@pytest.mark.parametrize("args,match", [
    (["--ratio", "1.5"], r"\[0, 1\)"),
    ([], "exactly one of --ratio"),
    (["--ratio", "0.3", "--ratios", "r.yaml"], "exactly one of --ratio"),
    (["--ratios", "bad.yaml"], "produces no channel group"),
    (["--ratios", "missing.yaml"], "cannot read ratios file"),
])
def test_cli_bad_input_is_one_line_and_overwrites_nothing(saved_v2: Path, tmp_path: Path, args: list,
                                                          match: str) -> None:
    (tmp_path / "r.yaml").write_text("block_1_expand: 0.5\n")
    (tmp_path / "bad.yaml").write_text("no_such_layer: 0.5\n")
    out = tmp_path / "out.h5"
    out.write_bytes(b"keep me")
    args = [str(tmp_path / a) if a.endswith(".yaml") else a for a in args]
    result = invoke("prune-channels", saved_v2, *args, "--out", out)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert re.search(match, lines[0]), lines[0]
    assert out.read_bytes() == b"keep me"
