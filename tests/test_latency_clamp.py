"""Quantized clamp kernels (RELU, RELU6) carry their input/output quantization: LiteRT's int8 RELU costs 0.29 to
0.78 ms on one shape as the share of inputs on each of its branches moves, so the table keys and predicts them
by it. Fast: one tiny conversion, no timing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.core.tflite_file import parse_model
from pipeline.latency import space
from pipeline.latency.kernels import QUANT, Kernel, default_quant, kernel_of, synthesize, unpack
from pipeline.latency.predict import model_kernels
from pipeline.latency.table import as_float, as_uint8, clamp_branches, features
from tests.helpers import convert

SHAPE = (1, 14, 14, 48)


def _concat_relu(x):
    """A concat before the ReLU: the converter cannot fuse it, so the net keeps a standalone RELU."""
    from pipeline.core.tf_env import keras

    a = keras.layers.Conv2D(8, 1)(x)
    b = keras.layers.Conv2D(8, 1)(x)
    return keras.layers.ReLU()(keras.layers.Concatenate()([a, b]))


@pytest.fixture(scope="module")
def relu_net(tmp_path_factory):
    path = convert(_concat_relu, (8, 8, 3), tmp_path_factory.mktemp("clamp") / "relu.tflite")
    return unpack(path.read_bytes())


def test_kernel_of_reads_the_clamps_quantization(relu_net):
    kernels = [row.kernel for row in model_kernels(relu_net)]
    relu = next(k for k in kernels if k.op == "RELU")
    zp_in, zp_out, ratio, scale_out = relu.option(QUANT)
    graph = relu_net.subgraphs[0]
    op = next(o for i, o in enumerate(graph.operators) if kernel_of(relu_net, i).op == "RELU")
    t_in, t_out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    assert (zp_in, zp_out) == (t_in.quantization.zeroPoint[0], t_out.quantization.zeroPoint[0]) and zp_out == -128
    assert ratio == pytest.approx(t_in.quantization.scale[0] / t_out.quantization.scale[0], abs=1e-3)
    assert scale_out == pytest.approx(t_out.quantization.scale[0], rel=1e-3)
    assert all(k.option(QUANT) is None for k in kernels if k.op != "RELU")
    assert Kernel.from_json(json.loads(relu.key)) == relu  # survives a table's JSON, hashable again
    assert hash(Kernel.from_json(json.loads(relu.key))) == hash(relu)


def test_synthesize_applies_the_quantization():
    quant = (-92, -128, 1.165, 0.003423)
    tensors = parse_model(synthesize(space.clamp("RELU6", SHAPE, quant)), "relu6").tensors
    (t_in,), (t_out,) = [t for t in tensors if t.index == 0], [t for t in tensors if t.index == 1]
    assert (t_in.zero_point, t_out.zero_point) == ((-92,), (-128,))
    assert t_out.scale[0] == pytest.approx(0.003423) and t_in.scale[0] / t_out.scale[0] == pytest.approx(1.165)


def test_kernels_without_the_option_keep_their_key_and_model():
    plain = space.unary("RELU", SHAPE)
    assert QUANT not in plain.key and plain.quant == default_quant("int8")
    tensors = parse_model(synthesize(plain), "relu").tensors
    assert [(pytest.approx(t.scale), t.zero_point) for t in tensors] == [((0.05,), (0,))] * 2
    # read back from a model, a clamp quantized like the synthesizer's default is the same kernel as before
    assert kernel_of(unpack(synthesize(plain)), 0).key == plain.key
    quantized = space.clamp("RELU", SHAPE, (-92, -128, 1.165, 0.003423))
    assert kernel_of(unpack(synthesize(quantized)), 0) == quantized
    conv = space.conv(14, 14, 8, 16, 3, 1)
    assert json.loads(conv.key)["options"] == [list(o) for o in conv.options]


def test_features_follow_the_branch_mix():
    real = space.clamp("RELU", SHAPE, (-92, -128, 1.165, 0.003423))  # 14% clamped, the rest passed
    half = space.clamp("RELU", SHAPE, (0, -128, 2.0, 0.003423))  # half clamped
    saturated = space.clamp("RELU6", SHAPE, (-128, -128, 3.0, 6 / 255))  # two thirds above 6
    assert clamp_branches(real) == pytest.approx((36 / 256, 0.0, 220 / 256))
    assert clamp_branches(half) == pytest.approx((0.5, 0.0, 0.5))
    assert clamp_branches(saturated)[1] == pytest.approx(2 / 3, abs=0.01)
    assert features(real) != features(half)
    assert len(features(real)) == len(features(space.unary("RELU", SHAPE)))  # one length per family
    assert len(features(as_float(real))) < len(features(real))  # float clamps have no branch mix


def test_twins_and_sampler_keep_the_relation():
    real = space.clamp("RELU", SHAPE, (-92, -128, 1.165, 0.003423))
    assert as_float(real).option(QUANT) is None
    assert as_uint8(real).option(QUANT) == (36, 0, 1.165, 0.003423)
    assert clamp_branches(as_uint8(real)) == clamp_branches(real)
    rng = np.random.default_rng(0)
    drawn = [space.sample("RELU6", rng) for _ in range(50)]
    assert all(k.option(QUANT) is not None for k in drawn)
    assert np.mean([k.option(QUANT)[1] == -128 for k in drawn]) > 0.8  # converted nets' outputs start at 0
    near = space.neighbours(drawn[0], rng, 3)
    assert near and all(abs(k.option(QUANT)[0] - drawn[0].option(QUANT)[0]) <= 12 for k in near)
