"""The kernel configurations the latency table samples: the ops, shapes and options the zoo and the search
space produce (convolutions kxk, depthwise, pointwise, dense, squeeze-excite's mean/mul/logistic,
hard-swish, add, concat, split/reshape of channel shuffles, pools, softmax, pad, quantize).

One generator per op family, each drawing shapes with the distributions mobile nets have: spatial sizes
from 224 px stems down to 1x1 heads, channel counts that are mostly multiples of 8 (``make_divisible``),
strides 1 and 2. ``neighbours`` perturbs a configuration for nn-Meter's adaptive resampling.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from pipeline.latency.kernels import QUANT, Kernel, TensorSpec, quant_option

MAX_MACS = 250e6  # bigger kernels cost seconds to time and no mobile net has them
# XNNPACK's depthwise microkernels cover up to this many taps (3x3 and 5x5 unipass); a larger kernel (7x7)
# runs a generic path that costs ~10x per tap and packs ~6 KB of weights per channel (measured, issue 15).
DEPTHWISE_FAST_TAPS = 25
LARGE_DEPTHWISE = "DEPTHWISE_CONV_2D:large"  # the sampler (and kernel class) of depthwise kernels beyond it
LARGE_DEPTHWISE_KERNELS = (7, 9)
STEM_CONV = "CONV_2D:stem"  # the sampler of a net's first convolutions (3 input channels, full-size inputs)
MAX_ELEMENTS = 112 * 112 * 144  # largest activation of MobileNet v2 at 224 px (expanded, after stride 2)
_SIZES = (1, 2, 3, 4, 5, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224)
_ACTS = {"NONE": 0, "RELU": 1, "RELU6": 3}
_SAME, _VALID = 0, 1


def _size(rng: np.random.Generator, low: int = 1, high: int = 224) -> int:
    choices = [s for s in _SIZES if low <= s <= high]
    return int(rng.choice(choices)) if rng.random() < 0.8 else int(rng.integers(low, high + 1))


def _channels(rng: np.random.Generator, low: int = 8, high: int = 1280) -> int:
    value = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    step = 8 if rng.random() < 0.8 else int(rng.choice([1, 2, 4]))
    return int(max(low, min(high, round(value / step) * step)))


def _act(rng: np.random.Generator) -> int:
    return int(rng.choice(list(_ACTS.values()), p=[0.4, 0.3, 0.3]))


def _out(size: int, stride: int, kernel: int = 1, padding: int = _SAME) -> int:
    return -(-size // stride) if padding == _SAME else (size - kernel) // stride + 1


def _act4(shape: tuple[int, ...], dtype: str = "int8") -> TensorSpec:
    return TensorSpec(tuple(shape), dtype)


def conv(h: int, w: int, cin: int, cout: int, k: int, stride: int, act: int = 0, padding: int = _SAME) -> Kernel:
    ho, wo = _out(h, stride, k, padding), _out(w, stride, k, padding)
    return Kernel("CONV_2D", (_act4((1, h, w, cin)), TensorSpec((cout, k, k, cin), "int8", True),
                              TensorSpec((cout,), "int32", True)), (_act4((1, ho, wo, cout)),),
                  (("dilationHFactor", 1), ("dilationWFactor", 1), ("fusedActivationFunction", act),
                   ("padding", padding), ("strideH", stride), ("strideW", stride)))


def depthwise(h: int, w: int, c: int, k: int, stride: int, act: int = 0, padding: int = _SAME) -> Kernel:
    ho, wo = _out(h, stride, k, padding), _out(w, stride, k, padding)
    return Kernel("DEPTHWISE_CONV_2D", (_act4((1, h, w, c)), TensorSpec((1, k, k, c), "int8", True),
                                        TensorSpec((c,), "int32", True)), (_act4((1, ho, wo, c)),),
                  (("depthMultiplier", 1), ("dilationHFactor", 1), ("dilationWFactor", 1),
                   ("fusedActivationFunction", act), ("padding", padding), ("strideH", stride), ("strideW", stride)))


def dense(cin: int, cout: int, act: int = 0) -> Kernel:
    return Kernel("FULLY_CONNECTED", (_act4((1, cin)), TensorSpec((cout, cin), "int8", True),
                                      TensorSpec((cout,), "int32", True)), (_act4((1, cout)),),
                  (("fusedActivationFunction", act), ("keepNumDims", False), ("weightsFormat", 0)))


def binary(op: str, shape: tuple[int, ...], other: tuple[int, ...], act: int = 0) -> Kernel:
    out = tuple(max(a, b) for a, b in zip(shape, other))
    return Kernel(op, (_act4(shape), _act4(other)), (_act4(out),), (("fusedActivationFunction", act),))


def unary(op: str, shape: tuple[int, ...]) -> Kernel:
    return Kernel(op, (_act4(shape),), (_act4(shape),))


def clamp(op: str, shape: tuple[int, ...], quant: tuple[int, int, float, float]) -> Kernel:
    """A quantized clamp kernel (RELU, RELU6) with its (zp_in, zp_out, scale_in / scale_out, scale_out)."""
    return Kernel(op, (_act4(shape),), (_act4(shape),), ((QUANT, quant_option(*quant)),))


def mean(h: int, w: int, c: int, keepdims: bool) -> Kernel:
    out = (1, 1, 1, c) if keepdims else (1, c)
    return Kernel("MEAN", (_act4((1, h, w, c)), TensorSpec((2,), "int32", True, (1, 2))), (_act4(out),),
                  (("keepDims", keepdims),))


def pool(op: str, h: int, w: int, c: int, k: int, stride: int, padding: int) -> Kernel:
    out = (1, _out(h, stride, k, padding), _out(w, stride, k, padding), c)
    return Kernel(op, (_act4((1, h, w, c)),), (_act4(out),),
                  (("filterHeight", k), ("filterWidth", k), ("fusedActivationFunction", 0), ("padding", padding),
                   ("strideH", stride), ("strideW", stride)))


def concat(shapes: list[tuple[int, ...]]) -> Kernel:
    out = (*shapes[0][:-1], sum(s[-1] for s in shapes))
    return Kernel("CONCATENATION", tuple(_act4(s) for s in shapes), (_act4(out),),
                  (("axis", len(out) - 1), ("fusedActivationFunction", 0)))


def split(shape: tuple[int, ...], parts: int) -> Kernel:
    part = (*shape[:-1], shape[-1] // parts)
    return Kernel("SPLIT", (TensorSpec((), "int32", True, (len(shape) - 1,)), _act4(shape)),
                  tuple(_act4(part) for _ in range(parts)), (("numSplits", parts),))


def reshape(shape: tuple[int, ...], new: tuple[int, ...]) -> Kernel:
    return Kernel("RESHAPE", (_act4(shape), TensorSpec((len(new),), "int32", True, tuple(new))), (_act4(new),))


def pad(h: int, w: int, c: int, before: int, after: int) -> Kernel:
    paddings = (0, 0, before, after, before, after, 0, 0)
    out = (1, h + before + after, w + before + after, c)
    return Kernel("PAD", (_act4((1, h, w, c)), TensorSpec((4, 2), "int32", True, paddings)), (_act4(out),))


def quantize(shape: tuple[int, ...], to_uint8: bool) -> Kernel:
    src, dst = ("int8", "uint8") if to_uint8 else ("uint8", "int8")
    return Kernel("QUANTIZE", (TensorSpec(shape, src),), (TensorSpec(shape, dst),))


# --- samplers: one per op family, each returns a kernel within the size bounds ------------------------------

def _sample_conv(rng: np.random.Generator) -> Kernel:
    k = int(rng.choice([1, 3, 5, 7], p=[0.55, 0.35, 0.05, 0.05]))
    stem = rng.random() < 0.08
    cin = 3 if stem else _channels(rng, 4, 2048)  # up to ResNet-50's widest layers
    return conv(*(2 * [_size(rng, 1, 224 if stem or k > 1 else 112)]), cin, _channels(rng, 4, 2048), k,
                int(rng.choice([1, 2], p=[0.75, 0.25])), _act(rng))


def _sample_stem_conv(rng: np.random.Generator) -> Kernel:
    """A net's first convolution: 3 input channels over a 96-224 px input. The general sampler draws few of
    them at these sizes (~10 of 7x7 in a 4,000-kernel table), and the forest, which cannot extrapolate,
    predicted SqueezeNet's 7x7 stride-2 stem at 224 px (96 filters, 167M MACs) at 1.67 ms against 2.34
    profiled."""
    k = int(rng.choice([3, 5, 7], p=[0.5, 0.2, 0.3]))
    size = int(rng.integers(96, 225))
    return conv(size, size, 3, _channels(rng, 8, 128), k, int(rng.choice([1, 2], p=[0.2, 0.8])), _act(rng),
                int(rng.choice([_SAME, _VALID])))


def _sample_depthwise(rng: np.random.Generator) -> Kernel:
    return depthwise(*(2 * [_size(rng, 2, 112)]), _channels(rng, 8, 2048), int(rng.choice([3, 5, 7], p=[.6, .3, .1])),
                     int(rng.choice([1, 2], p=[0.7, 0.3])), _act(rng))


def _sample_large_depthwise(rng: np.random.Generator) -> Kernel:
    """Depthwise kernels over 25 taps (7x7 and up), where XNNPACK leaves its fast depthwise path: mostly the
    small feature maps of 32-64 px nets and of late stages (1x1 to 16x16), where the slow path's per-channel
    cost dominates and the general sampler has few points."""
    size = int(rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32],
                          p=[.12, .12, .06, .12, .05, .04, .06, .12, .04, .03, .04, .08, .03, .03, .03, .03]))
    k = int(rng.choice(LARGE_DEPTHWISE_KERNELS, p=[0.8, 0.2]))
    return depthwise(size, size, _channels(rng, 8, 1280), k, int(rng.choice([1, 2], p=[0.7, 0.3])), _act(rng))


def _sample_dense(rng: np.random.Generator) -> Kernel:
    return dense(_channels(rng, 8, 2048), _channels(rng, 2, 1280), int(rng.choice([0, 1])))


def _feature_map(rng: np.random.Generator, high: int = 112) -> tuple[int, int, int, int]:
    s = _size(rng, 1, high)
    return (1, s, s, _channels(rng, 8, 1280))


def _sample_add(rng: np.random.Generator) -> Kernel:
    shape = _feature_map(rng)
    return binary("ADD", shape, shape, int(rng.choice([0, 1], p=[0.8, 0.2])))


def _sample_mul(rng: np.random.Generator) -> Kernel:
    shape = _feature_map(rng)
    other = (1, 1, 1, shape[-1]) if rng.random() < 0.6 else shape  # squeeze-excite's scaling, or element-wise
    return binary("MUL", shape, other)


def _unary_sampler(op: str, se_share: float = 0.0) -> Callable[[np.random.Generator], Kernel]:
    def sample(rng: np.random.Generator) -> Kernel:
        shape = _feature_map(rng)
        return unary(op, (1, 1, 1, shape[-1]) if rng.random() < se_share else shape)
    return sample


def _sample_quant(op: str, rng: np.random.Generator) -> tuple[int, int, float, float]:
    """A clamp op's quantization as the converter calibrates it: the input spans [lo, hi] with a share ``r`` of
    it negative (small after a concat of ReLU'd branches, up to ~0.6 after a batch norm), the output spans [0,
    hi] (RELU6: [0, min(hi, 6)]), so zp_out is -128 and zp_in, the scale ratio and the saturated share follow.
    One draw in seven is spread wider (any zero points, ratio 0.5-2) so the forest sees every branch mix."""
    hi = float(np.exp(rng.uniform(np.log(1.0), np.log(24.0))))
    r = float(rng.uniform(0, 0.15) if rng.random() < 0.4 else rng.uniform(0, 0.65))
    span_out = min(hi, 6.0) if op == "RELU6" else hi
    scale_in, scale_out = hi / (1 - r) / 255, span_out / 255
    if rng.random() < 1 / 7:
        return (int(rng.integers(-128, 128)), int(rng.choice([-128, int(rng.integers(-128, 128))])),
                float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))), scale_out)
    return (-128 + round(255 * r), -128, scale_in / scale_out, scale_out)


def _clamp_sampler(op: str) -> Callable[[np.random.Generator], Kernel]:
    def sample(rng: np.random.Generator) -> Kernel:
        return clamp(op, _feature_map(rng), _sample_quant(op, rng))
    return sample


def _sample_mean(rng: np.random.Generator) -> Kernel:
    _, s, _, c = _feature_map(rng, 56)
    return mean(s, s, c, bool(rng.random() < 0.7))


def _pool_sampler(op: str) -> Callable[[np.random.Generator], Kernel]:
    def sample(rng: np.random.Generator) -> Kernel:
        _, s, _, c = _feature_map(rng)
        k = int(rng.choice([2, 3]))
        return pool(op, max(s, k), max(s, k), c, k, int(rng.choice([1, 2], p=[0.3, 0.7])),
                    int(rng.choice([_SAME, _VALID])))
    return sample


def _sample_concat(rng: np.random.Generator) -> Kernel:
    _, s, _, _ = _feature_map(rng)
    parts = int(rng.choice([2, 3, 4], p=[0.7, 0.2, 0.1]))
    if rng.random() < 0.25:  # ShuffleNet's shuffle: reshape to (1, HW, C, 1) and concat on the last axis
        c = _channels(rng, 8, 512)
        return concat([(1, s * s, c, 1)] * parts)
    return concat([(1, s, s, _channels(rng, 8, 512)) for _ in range(parts)])


def _sample_split(rng: np.random.Generator) -> Kernel:
    _, s, _, c = _feature_map(rng)
    parts = int(rng.choice([2, 3, 4, 8], p=[0.6, 0.2, 0.1, 0.1]))
    return split((1, s, s, max(parts, c // parts * parts)), parts)


def _sample_reshape(rng: np.random.Generator) -> Kernel:
    _, s, _, c = _feature_map(rng)
    return reshape((1, s, s, c), (1, s * s, c, 1)) if rng.random() < 0.5 else reshape((1, s, s, c), (1, s * s * c))


def _sample_pad(rng: np.random.Generator) -> Kernel:
    _, s, _, c = _feature_map(rng)
    before = int(rng.choice([0, 1, 2, 3]))
    return pad(s, s, c, before, int(rng.choice([1, 2, 3])))


def _sample_softmax(rng: np.random.Generator) -> Kernel:
    return unary("SOFTMAX", (1, _channels(rng, 2, 1001)))


def _sample_quantize(rng: np.random.Generator) -> Kernel:
    if rng.random() < 0.5:
        s = _size(rng, 16, 224)
        return quantize((1, s, s, 3), to_uint8=False)
    return quantize((1, _channels(rng, 2, 1001)), to_uint8=True)


SAMPLERS: dict[str, Callable[[np.random.Generator], Kernel]] = {
    "CONV_2D": _sample_conv, "DEPTHWISE_CONV_2D": _sample_depthwise, "FULLY_CONNECTED": _sample_dense,
    "ADD": _sample_add, "MUL": _sample_mul, "HARD_SWISH": _unary_sampler("HARD_SWISH"),
    "LOGISTIC": _unary_sampler("LOGISTIC", se_share=0.6), "RELU": _clamp_sampler("RELU"),
    "RELU6": _clamp_sampler("RELU6"), "MEAN": _sample_mean, "AVERAGE_POOL_2D": _pool_sampler("AVERAGE_POOL_2D"),
    "MAX_POOL_2D": _pool_sampler("MAX_POOL_2D"), "CONCATENATION": _sample_concat, "SPLIT": _sample_split,
    "RESHAPE": _sample_reshape, "PAD": _sample_pad, "SOFTMAX": _sample_softmax, "QUANTIZE": _sample_quantize,
    LARGE_DEPTHWISE: _sample_large_depthwise, STEM_CONV: _sample_stem_conv,
}
# Relative sampling effort: the ops that dominate a mobile net's time get the most configurations.
WEIGHTS = {"CONV_2D": 8, "DEPTHWISE_CONV_2D": 5, "FULLY_CONNECTED": 1.5, "ADD": 2, "MUL": 2, "HARD_SWISH": 1.5,
           "MEAN": 1.5, "CONCATENATION": 2, "SPLIT": 1.5, "RESHAPE": 0.5, "LOGISTIC": 1, "RELU": 1, "RELU6": 1,
           "AVERAGE_POOL_2D": 1, "MAX_POOL_2D": 1, "PAD": 1, "SOFTMAX": 0.4, "QUANTIZE": 0.5}
# Kernel classes sampled on top of the ops' shares (their weight does not shrink the others', so an existing
# table extended with them keeps every kernel it had): the count is initial * weight / sum(WEIGHTS).
EXTRA_WEIGHTS = {LARGE_DEPTHWISE: 1.5, STEM_CONV: 1.0}


def kernel_size(kernel: Kernel) -> tuple[float, int]:
    """(MACs, largest activation elements) of a kernel, to keep samples within mobile-net sizes."""
    elements = max(int(np.prod(t.shape)) for t in (*kernel.activations, *kernel.outputs))
    out = int(np.prod(kernel.outputs[0].shape))
    if kernel.op == "CONV_2D":
        w = kernel.inputs[1].shape
        return float(out) * w[1] * w[2] * w[3], elements
    if kernel.op == "DEPTHWISE_CONV_2D":
        w = kernel.inputs[1].shape
        return float(out) * w[1] * w[2], elements
    if kernel.op == "FULLY_CONNECTED":
        return float(np.prod(kernel.inputs[1].shape)), elements
    return float(elements), elements


def sample(op: str, rng: np.random.Generator) -> Kernel:
    """A configuration of sampler ``op`` (an op, or a kernel class such as :data:`LARGE_DEPTHWISE`) within :data:`MAX_MACS` and :data:`MAX_ELEMENTS`."""
    while True:
        kernel = SAMPLERS[op](rng)
        macs, elements = kernel_size(kernel)
        if macs <= MAX_MACS and elements <= MAX_ELEMENTS:
            return kernel


def neighbours(kernel: Kernel, rng: np.random.Generator, count: int) -> list[Kernel]:
    """Configurations near ``kernel`` (channels and sizes moved by up to 25%, a clamp's input zero point by up
    to 12 and its scale ratio by up to 5%), for adaptive resampling."""
    found = []
    for _ in range(count * 4):
        if len(found) >= count:
            break
        candidate = _perturb(kernel, rng)
        if candidate is not None and candidate != kernel:
            macs, elements = kernel_size(candidate)
            if macs <= MAX_MACS and elements <= MAX_ELEMENTS:
                found.append(candidate)
    return found


def _scale(value: int, rng: np.random.Generator, low: int = 1) -> int:
    return max(low, int(round(value * rng.uniform(0.75, 1.25))))


def _perturb(kernel: Kernel, rng: np.random.Generator) -> Kernel | None:
    op, x = kernel.op, kernel.activations[0].shape
    if op == "CONV_2D":
        w = kernel.inputs[1].shape
        return conv(_scale(x[1], rng), _scale(x[1], rng), _scale(x[3], rng), _scale(w[0], rng), w[1],
                    kernel.option("strideH"), kernel.option("fusedActivationFunction"))
    if op == "DEPTHWISE_CONV_2D":
        size = _scale(x[1], rng, 2)
        return depthwise(size, size, _scale(x[3], rng), kernel.inputs[1].shape[1], kernel.option("strideH"),
                         kernel.option("fusedActivationFunction"))
    if op == "FULLY_CONNECTED":
        return dense(_scale(x[1], rng), _scale(kernel.outputs[0].shape[1], rng))
    if len(x) == 4 and op in ("ADD", "MUL", "HARD_SWISH", "LOGISTIC", "RELU", "RELU6"):
        size, c = _scale(x[1], rng), _scale(x[3], rng)
        shape = (1, size, size, c) if x[1] > 1 else (1, 1, 1, c)
        if op in ("ADD", "MUL"):
            other = kernel.activations[1].shape
            return binary(op, shape, (1, 1, 1, c) if other[1] == 1 else shape,
                          kernel.option("fusedActivationFunction", 0))
        if kernel.option(QUANT) is not None:
            zp_in, zp_out, ratio, scale_out = kernel.option(QUANT)
            low, high = (0, 255) if kernel.activations[0].dtype == "uint8" else (-128, 127)
            zp_in = int(np.clip(zp_in + rng.integers(-12, 13), low, high))
            return clamp(op, shape, (zp_in, zp_out, ratio * rng.uniform(0.95, 1.05), scale_out))
        return unary(op, shape)
    if op == "MEAN":
        size = _scale(x[1], rng)
        return mean(size, size, _scale(x[3], rng), kernel.option("keepDims"))
    return None  # cheap ops: fresh samples cover them
SAMPLERS_ORDER = list(SAMPLERS)  # stable op numbering for per-op random seeds
