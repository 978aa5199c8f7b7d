"""The Edge TPU's op table and model requirements, as Coral documents them.

Source: Coral, "TensorFlow models on the Edge TPU", sections "Model requirements" and
"Supported operations" (https://coral.ai/docs/edgetpu/models-intro/#supported-operations); the same
table with the runtime-14 limits is mirrored in Axis' ARTPEC-7 (Edge TPU) docs
(https://developer.axis.com/computer-vision/on-device/system-on-chip/artpec-7/supported-ops/).
Requirements: every tensor 8-bit quantized, tensor sizes fixed at compile time, parameters (weights,
biases) constant, tensors of rank <= 3 (beyond 3 dims only the 3 innermost may exceed 1), and only
the ops below, each within its documented limits. Where the table is vague ("depending on input/output
size") or incomplete (TILE), a rule follows what the compiler did to Coral's published models, and its
comment names them. The checks read the flatbuffer only, so a user sees the mapping without the
compiler; ``edgetpu.check`` turns them into a partition prediction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.core.target_report import Issue
from pipeline.core.tflite_file import Operator, TFLiteModel

QUANTIZED_TYPES = frozenset({"int8", "uint8"})
PARAMETER_TYPES = QUANTIZED_TYPES | {"int32", "int64"}  # biases, shapes, axes, paddings
# The integer LSTM kernel keeps its cell state (and that state's initial value) in int16 by design;
# the compiler maps such LSTMs (shared/reference_models/keras_lstm_mnist_ptq_edgetpu.tflite).
LSTM_STATE_TYPES = {"int16"}
ON_CHIP_CACHE_BYTES = 8 * 1024 * 1024  # "roughly 8 MB of SRAM" for parameter caching (Coral compiler docs)
LATEST_RUNTIME = 14  # newest runtime version the supported-operations table distinguishes


Check = Callable[[TFLiteModel, Operator, int], list[Issue]]


@dataclass(frozen=True)
class OpRule:
    name: str  # builtin name as the TFLite schema spells it
    min_runtime: int  # Edge TPU runtime version that first maps it (1: all versions)
    limits: str  # Coral's "known limitations", paraphrased
    check: Check | None = None


def _activation_none(model: TFLiteModel, op: Operator, runtime: int) -> list[Issue]:
    act = getattr(op.options, "fusedActivationFunction", 0)
    if act:
        return [Issue("has a fused activation function", "apply the activation as a separate layer after it")]
    return []


def _batch_axis(model: TFLiteModel, op: Operator, axes: list[int], what: str) -> list[Issue]:
    rank = model.tensor(op.inputs[0]).rank if op.inputs else 0
    if any(a % max(rank, 1) == 0 for a in axes):
        return [Issue(f"{what} the batch dimension", f"keep the batch axis out of the {what.split()[0]}")]
    return []


def _const_values(model: TFLiteModel, index: int) -> list[int] | None:
    if index < 0 or index not in model.constant_buffers:
        return None
    return [int(v) for v in np.asarray(model.tensor_data(index)).ravel()]


def _concatenation(model: TFLiteModel, op: Operator, runtime: int) -> list[Issue]:
    issues = _activation_none(model, op, runtime)
    constants = [i for i in op.inputs if model.tensor(i).constant]
    if constants:
        zeros = all(not any(model.constant_buffers[i]) for i in constants)
        if len(op.inputs) != 2 or not zeros:
            issues.append(Issue("concatenates a constant tensor that is not a 2-input all-zero padding",
                                "feed only computed tensors to the concatenation (use PAD for zero padding)"))
    return issues


def _same_dilation(model: TFLiteModel, op: Operator, runtime: int) -> list[Issue]:
    w, h = getattr(op.options, "dilationWFactor", 1), getattr(op.options, "dilationHFactor", 1)
    if op.name == "DEPTHWISE_CONV_2D" and runtime <= 12 and (w, h) != (1, 1):
        return [Issue("dilated depthwise convolution needs Edge TPU runtime 13+", "compile with -m 13 or higher")]
    if w != h:
        return [Issue(f"dilation differs in x and y ({w} vs {h})", "use the same dilation rate in both directions")]
    return []


def _fully_connected(model: TFLiteModel, op: Operator, runtime: int) -> list[Issue]:
    issues = []
    if getattr(op.options, "weightsFormat", 0) != 0:
        issues.append(Issue("uses a shuffled weights format", "convert with the default fully-connected weights format"))
    out = model.tensor(op.outputs[0])
    if sum(d > 1 for d in out.shape) > 1:
        issues.append(Issue(f"output {list(out.shape)} is not one-dimensional", "flatten its input so it produces a vector"))
    return issues


def _mean(model: TFLiteModel, op: Operator, runtime: int) -> list[Issue]:
    issues, axes = _reduce_no_batch(model, op, runtime), _reduction_axes(model, op)
    if axes is None:
        return issues
    rank = model.tensor(op.inputs[0]).rank
    axes = [a % rank for a in axes]
    if runtime <= 12 and any(a not in (1, 2) for a in axes if a):
        issues.append(Issue("reduces over the channel axis, which needs runtime 13+", "compile with -m 13 or higher"))
    channels = model.tensor(op.inputs[0]).shape[-1]
    if rank - 1 in axes and channels % 4:
        issues.append(Issue(f"reduces over {channels} channels, not a multiple of 4", "make the channel count a multiple of 4"))
    return issues


def _reduction_axes(model: TFLiteModel, op: Operator) -> list[int] | None:
    return _const_values(model, op.inputs[1]) if len(op.inputs) > 1 else None


def _reduce_no_batch(model: TFLiteModel, op: Operator, runtime: int) -> list[Issue]:
    axes = _reduction_axes(model, op)
    if axes is None:
        return [Issue("reduction axes are not constant", "use constant axes")]
    rank = model.tensor(op.inputs[0]).rank
    return _batch_axis(model, op, [a % rank for a in axes], "reduces over")


def _pad(model: TFLiteModel, op: Operator, runtime: int) -> list[Issue]:
    pads = _const_values(model, op.inputs[1]) if len(op.inputs) > 1 else None
    if pads is None:
        return [Issue("paddings are not constant", "use constant paddings")]
    pairs = [pads[i : i + 2] for i in range(0, len(pads), 2)]
    if pairs and any(pairs[0]):
        return [Issue("pads the batch dimension", "pad only spatial or channel dimensions")]
    if runtime <= 12 and len(pairs) == 4 and any(pairs[3]):
        return [Issue("pads channels, which needs runtime 13+", "compile with -m 13 or higher")]
    return []


def _pack(model: TFLiteModel, op: Operator, runtime: int) -> list[Issue]:
    return _batch_axis(model, op, [getattr(op.options, "axis", 0)], "packs along")


def _split(model: TFLiteModel, op: Operator, runtime: int) -> list[Issue]:
    axis = _const_values(model, op.inputs[0])
    if axis is None:
        return [Issue("split axis is not constant", "use a constant axis")]
    rank = model.tensor(op.inputs[1]).rank
    return [Issue("splits the batch dimension", "split along another axis")] if axis[0] % rank == 0 else []


def _prelu(model: TFLiteModel, op: Operator, runtime: int) -> list[Issue]:
    alpha = model.tensor(op.inputs[1])
    if sum(d > 1 for d in alpha.shape[:-1]):
        return [Issue(f"alpha {list(alpha.shape)} is not one-dimensional",
                      "share PReLU parameters across height and width (Keras shared_axes=[1, 2])")]
    return []


def _resize(model: TFLiteModel, op: Operator, runtime: int) -> list[Issue]:
    shape = model.tensor(op.inputs[0]).shape
    if len(shape) == 4 and shape[0] != 1:
        return [Issue("resizes a batch of images (input must be a 3-D image)", "use batch size 1")]
    # Coral's table: "Depending on input/output size, this operation might not be mapped to the Edge TPU
    # to avoid loss in precision". Which sizes, as Coral's own compiled models show: an align_corners
    # resize that changes the size stays on the CPU (DeepLab v3's 1x1 -> 33x33 image pooling, and its
    # 33x33 -> 513x513 logits upsampling although that is a whole factor of 16 on the align_corners grid),
    # while a size-preserving align_corners resize (the Cityscapes DeepLab) and half-pixel-centre 2x
    # upsamplings (MoveNet) map.
    size_in, size_out = tuple(shape[-3:-1]), tuple(model.tensor(op.outputs[0]).shape[-3:-1])
    if getattr(op.options, "alignCorners", False) and size_in != size_out:
        return [Issue(f"align_corners resize from {'x'.join(map(str, size_in))} to {'x'.join(map(str, size_out))} "
                      "(the compiler keeps such resizes on the CPU to avoid precision loss)",
                      "resize with align_corners=False (TF2 tf.image.resize / Keras UpSampling2D), or TILE to "
                      "broadcast a 1x1 map, or upsample outside the model")]
    return []


def _tile(model: TFLiteModel, op: Operator, runtime: int) -> list[Issue]:
    if _const_values(model, op.inputs[1]) is None:
        return [Issue("tile multiples are not constant (tensor sizes must be fixed at compile time)",
                      "use constant multiples")]
    return []


def _softmax(model: TFLiteModel, op: Operator, runtime: int) -> list[Issue]:
    shape = model.tensor(op.inputs[0]).shape
    size = int(np.prod(shape)) if shape else 1
    if sum(d > 1 for d in shape) > 1:
        return [Issue(f"input {list(shape)} is not one-dimensional", "apply softmax to a flattened vector")]
    if size > 16000:
        return [Issue(f"input has {size} elements (limit 16,000)", "reduce the number of classes")]
    return []


def _squeeze(model: TFLiteModel, op: Operator, runtime: int) -> list[Issue]:
    shape = model.tensor(op.inputs[0]).shape
    if runtime <= 12:
        leading = 0
        while leading < len(shape) and shape[leading] == 1:
            leading += 1
        if any(d == 1 for d in shape[leading:]):
            return [Issue("squeezes an inner dimension (needs a relayout before runtime 13)", "compile with -m 13 or higher")]
    return []


def _strided_slice(model: TFLiteModel, op: Operator, runtime: int) -> list[Issue]:
    issues = []
    if getattr(op.options, "ellipsisMask", 0) or getattr(op.options, "newAxisMask", 0):
        issues.append(Issue("uses an ellipsis or new-axis mask", "index explicitly, without ... or tf.newaxis"))
    strides = _const_values(model, op.inputs[3]) if len(op.inputs) > 3 else None
    if runtime <= 12 and (strides is None or any(s != 1 for s in strides)):
        issues.append(Issue("strides other than 1 need runtime 13+", "compile with -m 13 or higher"))
    return issues


def _rule(name: str, min_runtime: int = 1, limits: str = "", check: Check | None = None) -> OpRule:
    return OpRule(name, min_runtime, limits, check)


# Coral's supported-operations table, keyed by the schema's spelling of each builtin.
SUPPORTED_OPS: dict[str, OpRule] = {r.name: r for r in [
    _rule("ADD"),
    _rule("AVERAGE_POOL_2D", limits="No fused activation function.", check=_activation_none),
    _rule("CONCATENATION", limits="No fused activation function. A constant input is allowed only as the "
          "second of two inputs and must be all zeros.", check=_concatenation),
    _rule("CONV_2D", limits="Same dilation in x and y.", check=_same_dilation),
    _rule("DEPTHWISE_CONV_2D", limits="Runtime <= 12: no dilation; 13+: same dilation in x and y.", check=_same_dilation),
    _rule("EXPAND_DIMS", 13),
    _rule("FULLY_CONNECTED", limits="Default weights format only; output tensor is one-dimensional.", check=_fully_connected),
    _rule("L2_NORMALIZATION"),
    _rule("LOGISTIC"),
    _rule("LSTM", 14, "Unidirectional LSTM only."),
    _rule("UNIDIRECTIONAL_SEQUENCE_LSTM", 14, "Unidirectional LSTM only."),
    _rule("MAXIMUM"),
    _rule("MAX_POOL_2D", limits="No fused activation function.", check=_activation_none),
    _rule("MEAN", limits="No reduction in the batch dimension; a channel (z) reduction needs a multiple of 4 "
          "channels (runtime <= 12: x/y reduction only).", check=_mean),
    _rule("MINIMUM"),
    _rule("MUL"),
    _rule("PACK", limits="No packing in the batch dimension.", check=_pack),
    _rule("PAD", limits="No padding in the batch dimension (runtime <= 12: x/y only).", check=_pad),
    _rule("PRELU", 13, "Alpha must be one-dimensional (Keras shared_axes=[1, 2]).", _prelu),
    _rule("QUANTIZE", 13),
    _rule("REDUCE_MAX", 14, "Cannot operate on the batch dimension.", _reduce_no_batch),
    _rule("REDUCE_MIN", 14, "Cannot operate on the batch dimension.", _reduce_no_batch),
    _rule("RELU"),
    _rule("RELU6"),
    _rule("RELU_N1_TO_1"),
    _rule("RESHAPE", limits="Certain reshapes might not be mapped for large tensor sizes."),
    _rule("RESIZE_BILINEAR", limits="Input/output is a 3-D image; may stay on the CPU for sizes that would lose "
          "precision: an align_corners resize maps only if it keeps the size.", check=_resize),
    _rule("RESIZE_NEAREST_NEIGHBOR", limits="Input/output is a 3-D image; may stay on the CPU for sizes that "
          "would lose precision: an align_corners resize maps only if it keeps the size.", check=_resize),
    _rule("RSQRT", 14),
    _rule("SLICE"),
    _rule("SOFTMAX", limits="1-D input with at most 16,000 elements.", check=_softmax),
    _rule("SPACE_TO_DEPTH"),
    _rule("SPLIT", limits="No splitting in the batch dimension.", check=_split),
    _rule("SQUARED_DIFFERENCE", 14),
    _rule("SQUEEZE", limits="Runtime <= 12: only leading 1s may be squeezed.", check=_squeeze),
    _rule("STRIDED_SLICE", limits="ellipsis and new-axis masks must be 0 (runtime <= 12: strides of 1 only).",
          check=_strided_slice),
    _rule("SUB"),
    _rule("SUM", 13, "Cannot operate on the batch dimension.", _reduce_no_batch),
    _rule("TANH"),
    # Not in Coral's table, but the compiler maps it: Coral's Edge TPU DeepLab (Cityscapes) broadcasts its
    # 1x1 image-pooling features with TILE instead of the align_corners resize that stays on the CPU, and
    # its compiled file has the TILE inside the edgetpu-custom-op. No runtime version is documented for it.
    _rule("TILE", limits="Constant multiples.", check=_tile),
    _rule("TRANSPOSE", 14),
    _rule("TRANSPOSE_CONV", 13),
]}

# Ops whose inputs at these positions are trained parameters that must be compile-time constants.
PARAMETER_INPUTS = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2),
                    "TRANSPOSE_CONV": (1, 3)}

# What to do instead of a common unsupported op, so the report says more than "unsupported".
REPLACEMENTS = {
    "HARD_SWISH": "use ReLU/ReLU6 (e.g. a 'minimalistic' MobileNetV3) or x*relu6(x+3)/6 built from ADD/MUL/RELU6",
    "DEQUANTIZE": "keep the model's outputs quantized (uint8/int8 inference_output_type)",
    "LEAKY_RELU": "use ReLU or PReLU with shared_axes=[1, 2]",
    "GELU": "use ReLU or LOGISTIC-based activations",
    "DIV": "multiply by a constant reciprocal instead",
    "BATCH_MATMUL": "use a FULLY_CONNECTED (Dense) layer with constant weights",
    "GATHER": "replace the lookup by a slice or a one-hot FULLY_CONNECTED",
}


def check_tensors(model: TFLiteModel, op: Operator) -> list[Issue]:
    """The model requirements that apply to every op: int8 data, constant parameters, rank <= 3."""
    issues: list[Issue] = []
    params = PARAMETER_INPUTS.get(op.name, ())
    for position, index in enumerate(op.inputs):
        if index < 0:
            continue
        t = model.tensor(index)
        allowed = PARAMETER_TYPES if t.constant else QUANTIZED_TYPES
        if "LSTM" in op.name:
            allowed = allowed | LSTM_STATE_TYPES
        if t.dtype not in allowed:
            issues.append(Issue(f"input {t.name!r} is {t.dtype}",
                                "quantize the whole model to int8 (full-integer conversion with a representative dataset)"))
        if position in params and not t.constant:
            issues.append(Issue(f"parameter {t.name!r} is computed at run time, not a constant",
                                "make weights and biases constants of the layer"))
    for index in op.outputs:
        t = model.tensor(index)
        if t.dtype not in QUANTIZED_TYPES:
            issues.append(Issue(f"output {t.name!r} is {t.dtype}",
                                "quantize the whole model to int8 (uint8/int8 model inputs and outputs)"))
    for index in (*op.inputs, *op.outputs):
        if index < 0 or model.tensor(index).constant:
            continue
        t = model.tensor(index)
        if t.rank > 3 and any(d > 1 for d in t.shape[:-3]):
            issues.append(Issue(f"tensor {t.name!r} has shape {list(t.shape)}; beyond 3 dims only the 3 innermost may exceed 1",
                                "reshape so that at most 3 dimensions are larger than 1"))
            break
    return issues


def check_op(model: TFLiteModel, op: Operator, runtime: int = LATEST_RUNTIME) -> list[Issue]:
    """Everything that keeps ``op`` off the Edge TPU under runtime ``runtime`` (empty: it maps)."""
    rule = SUPPORTED_OPS.get(op.name)
    if rule is None:
        kind = "custom op" if op.custom else "op"
        fix = REPLACEMENTS.get(op.name, "replace it with ops from Coral's supported-operations table")
        return [Issue(f"{kind} not supported by the Edge TPU", fix)]
    issues = check_tensors(model, op)
    if rule.min_runtime > runtime:
        issues.append(Issue(f"needs Edge TPU runtime {rule.min_runtime}+", f"compile with -m {rule.min_runtime} or higher"))
    if rule.check is not None:
        issues.extend(rule.check(model, op, runtime))
    return issues


def dynamic_tensors(model: TFLiteModel) -> list[str]:
    """Tensors whose size is only known at run time (the compiler rejects such a graph outright).

    The converter records a free batch dimension as -1 in the shape signature while storing batch 1 in
    the shape; the batch is fixed at 1 for inference, so only other free dimensions count.
    """
    return [t.name for t in model.tensors if any(d < 0 for d in t.shape_signature[1:])]
