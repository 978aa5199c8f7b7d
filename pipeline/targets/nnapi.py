"""Which ops of a .tflite file the Android NNAPI delegate would take, per Android API level (27-34).

Source: the TFLite NNAPI delegate, tensorflow/lite/delegates/nnapi/nnapi_delegate.cc and
nnapi_delegate.h (TensorFlow, Apache-2.0), with tensorflow/lite/graph_info.cc for the partitioning,
read at tensorflow/tensorflow master commit 002e5f47 (TF 2.20 development; no 2.21 copy was at hand,
and the delegate, in maintenance since NNAPI's deprecation, rarely changes between releases).
Two parts of it decide where an op runs, both with the delegate's default options:

* ``NNAPIDelegateKernel::Validate``, the per-op rules (:data:`OPS`, :func:`op_issues`): the op's
  version from the flatbuffer (``ExpectMaxOpVersion``), the device's API level (27 = NNAPI 1.0,
  28 = 1.1, 29 = 1.2, 30 = 1.3; nothing checks above 30, so 31-34 behave like 30), tensor types and
  parameters. Signed int8 has no NNAPI type before 1.3, but below API 30 the delegate re-expresses int8
  tensors as uint8 (zero point + 128, ``NeedInt8Conversion``), so ADD, MUL, the pools, SOFTMAX,
  RESHAPE, CONCATENATION, HARD_SWISH, LOGISTIC, RELU... take int8 from API 27. Only the ops whose
  rule says so need API 29 for int8 (CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED accept float32 or
  uint8 only before 29; MEAN, PAD, TANH, SUB and RESIZE_BILINEAR take quantized inputs from 29).
* ``StatefulNnApiDelegate::DoPrepare``, the graph: TFLite partitions the accepted ops greedily
  (``PartitionGraphIntoIndependentNodeSubsets``) and the delegate keeps only the
  ``max_number_delegated_partitions`` = 3 largest partitions (``LimitDelegatedPartitions``); ops in
  smaller ones stay on the CPU. ``is_accelerator_specified`` is true from API 29, because
  ``disallow_nnapi_cpu`` defaults to true: that relaxes MUL's version limit and the quantized
  AVERAGE_POOL_2D window limit there.

Deliberate deviations, each because the prediction would otherwise be wrong or undefined:

* UNIDIRECTIONAL_SEQUENCE_LSTM is predicted for float32 only: Validate accepts any non-hybrid one, but
  NNAPI's operation has no 8-bit variant, so building the NNAPI model fails for an int8 LSTM.
* A CONV_2D whose bias is the optional index -1 counts as without bias: Validate only counts three
  inputs, and the delegate has no operand to give NNAPI for index -1.
* Partitions of equal size: the delegate's ``std::sort`` leaves their order unspecified; here the
  earlier one in the graph wins.
* From API 29 the delegate also asks the driver which ops it supports and, with default options,
  never uses the ``nnapi-reference`` CPU device: the prediction assumes an accelerator that supports
  every op the rules accept (a device without one delegates nothing).

NNAPI is deprecated from Android 15 (API 35); there the GPU delegate or a vendor NPU delegate is the
path forward, so the report says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.target_report import CPU, OpPlacement, TargetReport
from pipeline.core.tflite_file import Operator, Tensor, TFLiteModel, read_model

TARGET = "nnapi"
MIN_API, MAX_API = 27, 34
NNAPI_VERSIONS = {27: "NNAPI 1.0", 28: "NNAPI 1.1", 29: "NNAPI 1.2", 30: "NNAPI 1.3"}
MAX_PARTITIONS = 3  # StatefulNnApiDelegate::Options::max_number_delegated_partitions
POOL_WINDOW_LIMIT = 256  # quantized AVERAGE_POOL_2D window elements NNAPI's reference CPU path can sum
INT32_TYPE = 2  # schema TensorType.INT32 (ArgMax/ArgMin output_type)
LSH_SPARSE = 1  # schema LSHProjectionType.SPARSE
DEPRECATION_NOTE = ("NNAPI is deprecated from Android 15 (API 35): prefer the LiteRT GPU delegate (or a vendor NPU "
                    "delegate such as Qualcomm QNN) there, with XNNPACK on the CPU as the fallback")
ACCELERATOR_NOTE = ("from API 29 the delegate (default options) uses NNAPI accelerators only, never the "
                    "nnapi-reference CPU: a device without one delegates nothing, and the driver may still decline "
                    "some of these ops")
INT8_NOTE = ("signed int8 tensors: below API 30 the delegate re-expresses them as uint8 (zero point + 128); "
             "CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED take int8 from API 29, most other ops from 27")

Check = Callable[[TFLiteModel, Operator, int], list[str]]
FQ8 = ("float32", "uint8", "int8")


@dataclass(frozen=True)
class NnapiOp:
    min_api: int
    max_version: int | None  # ExpectMaxOpVersion / ExpectOpVersion bound; None: not checked
    types: dict[str, int] | None  # input-0 dtype -> first API level that accepts it; None: not checked
    check: Check | None = None


def _from(level: int, *dtypes: str) -> dict[str, int]:
    return dict.fromkeys(dtypes, level)


class _MissingOperand(Exception):
    """A tensor a rule reads is absent from a (malformed) op; the delegate would read past the op's operands."""


def _in(model: TFLiteModel, op: Operator, k: int) -> Tensor:
    if k >= len(op.inputs) or op.inputs[k] < 0:
        raise _MissingOperand(f"input {k}")
    return model.tensor(op.inputs[k])


def _out(model: TFLiteModel, op: Operator, k: int = 0) -> Tensor:
    if k >= len(op.outputs):
        raise _MissingOperand(f"output {k}")
    return model.tensor(op.outputs[k])


def _legacy(t: Tensor) -> tuple[float, int]:
    """TfLiteTensor.params: the per-tensor scale and zero point, (0, 0) when absent or per-channel."""
    return (t.scale[0], t.zero_point[0]) if len(t.scale) == 1 and len(t.zero_point) == 1 else (0.0, 0)


def _activation(op: Operator) -> int:
    return getattr(op.options, "fusedActivationFunction", 0)


def _accelerator_targeted(api: int) -> bool:
    """``is_accelerator_specified`` under default options: ``disallow_nnapi_cpu`` targets accelerators from API 29."""
    return api >= 29


def _quantized(t: Tensor) -> bool:
    return t.dtype in ("uint8", "int8")


def _hybrid(model: TFLiteModel, op: Operator, weights: int) -> bool:
    """Float activations with 8-bit weights (IsHybridOperator)."""
    return _in(model, op, 0).dtype == "float32" and _quantized(_in(model, op, weights))


def _const(model: TFLiteModel, op: Operator, k: int) -> bool:
    return len(op.inputs) > k and op.inputs[k] >= 0 and _in(model, op, k).constant


def _all(*checks: Check) -> Check:
    def check(model: TFLiteModel, op: Operator, api: int) -> list[str]:
        return [issue for c in checks for issue in c(model, op, api)]
    return check


def _const_input(k: int, what: str) -> Check:
    def check(model: TFLiteModel, op: Operator, api: int) -> list[str]:
        return [] if _const(model, op, k) else [f"{what} must be a constant tensor"]
    return check


def _input_type(k: int, what: str, *dtypes: str) -> Check:
    def check(model: TFLiteModel, op: Operator, api: int) -> list[str]:
        dtype = _in(model, op, k).dtype
        return [] if dtype in dtypes else [f"{what} must be {' or '.join(dtypes)}, not {dtype}"]
    return check


def _const_int32(k: int, what: str) -> Check:
    return _all(_input_type(k, what, "int32"), _const_input(k, what))


def _no_activation(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    return ["fused activation is not supported"] if _activation(op) else []


def _not_hybrid(weights: int) -> Check:
    def check(model: TFLiteModel, op: Operator, api: int) -> list[str]:
        return ["hybrid (float input, 8-bit weights) is not supported"] if _hybrid(model, op, weights) else []
    return check


def _scalar_output(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    return ["scalar output is not supported"] if _out(model, op).rank == 0 else []


def _int32_activation(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    if _in(model, op, 0).dtype == "int32" and _activation(op):
        return ["int32 input with a fused activation is not supported"]
    return []


def _mul(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = _int32_activation(model, op, api)
    if op.version == 3 and not _accelerator_targeted(api):
        issues.append("op version 3 is taken only with an accelerator targeted (API 29 and up by default)")
    return issues


def _sub(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = _int32_activation(model, op, api)
    if _in(model, op, 0).rank > 4 or _in(model, op, 1).rank > 4:
        issues.append("input rank above 4")
    return issues


def _average_pool(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    window = getattr(op.options, "filterWidth", 1) * getattr(op.options, "filterHeight", 1)
    if _quantized(_in(model, op, 0)) and window > POOL_WINDOW_LIMIT and not _accelerator_targeted(api):
        return [(f"a quantized {window}-element window overflows NNAPI's reference CPU path (at most "
                 f"{POOL_WINDOW_LIMIT} without an accelerator targeted, i.e. before API 29)")]
    return []


def _l2_pool(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    return ["fused activation needs API 29"] if api < 29 and _activation(op) else []


def _restricted_scales(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    """NNAPI 1.0/1.1 need input_scale * weight_scale < output_scale for uint8 CONV/DEPTHWISE/FC (float32 maths)."""
    x, w, y = (np.float32(_legacy(t)[0]) for t in (_in(model, op, 0), _in(model, op, 1), _out(model, op)))
    return [] if x * w < y else ["before API 29 input_scale * weight_scale must be below output_scale"]


def _float_or_uint8_before_29(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    """CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED before API 29: float32 or uint8, NNAPI 1.0/1.1's scale rule."""
    dtype = _in(model, op, 0).dtype
    if dtype == "uint8":
        return _restricted_scales(model, op, api)
    return [] if dtype == "float32" else [f"{dtype} input needs API 29 (float32 or uint8 before)"]


def _conv(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = []
    if api < 29:
        if _hybrid(model, op, 1):
            issues.append("hybrid (float input, 8-bit weights) needs API 29")
        issues += _float_or_uint8_before_29(model, op, api)
        if len(_in(model, op, 1).scale) > 1:
            issues.append("per-channel quantized weights need API 29")
    if len(op.inputs) != 3 or op.inputs[2] < 0:
        issues.append("convolution without a bias tensor is not supported")
    if (getattr(op.options, "dilationWFactor", 1), getattr(op.options, "dilationHFactor", 1)) != (1, 1) and api < 29:
        issues.append("dilated convolution needs API 29")
    return issues


def _depthwise(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    if api >= 29:
        return []
    issues = _float_or_uint8_before_29(model, op, api)
    if (getattr(op.options, "dilationWFactor", 1), getattr(op.options, "dilationHFactor", 1)) != (1, 1):
        issues.append("dilated convolution needs API 29")
    return issues


def _fully_connected(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = ["int16 output is not supported"] if _out(model, op).dtype == "int16" else []
    if api < 29:
        if _hybrid(model, op, 1):
            issues.append("hybrid (float input, 8-bit weights) needs API 29")
        issues += _float_or_uint8_before_29(model, op, api)
    if getattr(op.options, "keepNumDims", False) and api < 30:
        issues.append("keep_num_dims needs API 30")
    return issues


def _softmax(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    out, rank = _out(model, op).dtype, _in(model, op, 0).rank
    issues = [] if out in FQ8 else [f"{out} output is not supported"]
    if rank > 4:
        issues.append("input rank above 4")
    elif api < 29 and rank not in (2, 4):
        issues.append("before API 29 only 2-D and 4-D inputs")
    return issues


def _reshape(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    if len(op.inputs) > 1:
        return _const_input(1, "the target shape")(model, op, api)
    shape = list(getattr(op.options, "newShape", None) or [])
    return [] if shape and shape != [0] else ["reshaping to a scalar is not supported"]


def _resize(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = _const_input(1, "the output size")(model, op, api)
    if api <= 29 and (getattr(op.options, "alignCorners", False) or getattr(op.options, "halfPixelCenters", False)):
        issues.append("align_corners / half_pixel_centers need API 30")
    if op.name == "RESIZE_BILINEAR":
        if _in(model, op, 0).rank != 4:
            issues.append("input must have rank 4")
        out = _out(model, op).shape
        if api < 29 and len(out) == 4 and out[1] != out[2]:
            issues.append("before API 29 the output must be square")
    return issues


def _squeeze(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    listed = getattr(op.options, "squeezeDims", None)
    return ["on API 28 the squeezed dimensions must be listed"] if api == 28 and not listed else []


def _sequence_lstm(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = _not_hybrid(2)(model, op, api)
    return issues + ([] if len(op.inputs) in (20, 24) else ["only the 20- or 24-input variant is supported"])


def _l2_normalization(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = _no_activation(model, op, api)
    if api < 29:
        x = _in(model, op, 0)
        if x.dtype != "float32":
            issues.append(f"{x.dtype} input needs API 29 (float32 before)")
        if x.rank != 4:
            issues.append("before API 29 the input must have rank 4")
    return issues


def _concatenation(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = _no_activation(model, op, api)
    first = _in(model, op, 0)
    if first.rank > 4:
        issues.append("input rank above 4")
    if first.dtype == "uint8" and api < 29 and len({_legacy(_in(model, op, k)) for k in range(len(op.inputs))}) > 1:
        issues.append("before API 29 uint8 inputs must share one scale and zero point")
    return issues


def _fp16_weights(model: TFLiteModel, op: Operator) -> bool:
    """A DEQUANTIZE of constant float16 weights: the delegate's FP16 partition helper handles those."""
    return op.name == "DEQUANTIZE" and _const(model, op, 0) and _in(model, op, 0).dtype == "float16"


def _dequantize(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    x = _in(model, op, 0)
    if x.dtype == "float16":  # constant float16 weights: see _delegation
        return [] if x.constant or api >= 30 else ["float16 input needs API 30"]
    issues = [] if op.version in (1, 2) else [f"op version {op.version} is not supported (1 or 2 only)"]
    if x.dtype == "int8" and api < 29:
        issues.append("int8 input needs API 29 (uint8 before)")
    elif x.dtype not in ("uint8", "int8"):
        issues.append(f"{x.dtype} input is not supported")
    elif x.dtype == "int8" and api == 29 and _legacy(x)[1] != 0:
        issues.append("on API 29 int8 input must be symmetric (zero point 0)")
    return issues


def _quantize(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    x, y = _in(model, op, 0), _out(model, op)
    issues = ["input scale must be above 0"] if _quantized(x) and not _legacy(x)[0] > 0 else []
    if y.dtype == "int8" and api < 30:
        issues.append("int8 output needs API 30 (uint8 before)")
    elif y.dtype not in ("uint8", "int8"):
        issues.append(f"{y.dtype} output is not supported")
    if not _legacy(y)[0] > 0:
        issues.append("output scale must be above 0")
    return issues


def _pad(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = ["an empty input is not supported"] if 0 in _in(model, op, 0).shape else []
    if len(op.inputs) < 2:
        issues.append("the paddings input is missing")
    if len(op.inputs) == 3 and api < 29:
        issues.append("an explicit padding value (PADV2) needs API 29")
    elif len(op.inputs) != 3 and api < 29 and _in(model, op, 0).dtype != "float32":
        issues.append("quantized padding needs API 29")
    return issues


def _batch_to_space(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    crops = model.constant_buffers.get(op.inputs[2]) if len(op.inputs) > 2 else None
    return [] if crops is not None and len(crops) == 16 and not any(crops) else ["crops must be constant zeros"]


def _transpose_conv(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    constant = _const(model, op, 0) and _const(model, op, 1)
    return [] if constant else ["the output shape and the weights must be constant"]


def _lstm(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    basic = len(op.inputs) == 5
    weights = _in(model, op, 2 if basic else 4).dtype
    issues = []
    if api < 29 and len(op.inputs) in (20, 24) and _hybrid(model, op, 2):
        issues.append("hybrid (float input, 8-bit weights) needs API 29")
    if basic:
        if weights != "uint8":
            issues.append("the basic (5-input) kernel takes uint8 weights only")
        if _legacy(_in(model, op, 0)) != (1 / 128, 128) or _legacy(_out(model, op)) != (1 / 128, 128):
            issues.append("the basic kernel needs input and output quantized with scale 1/128, zero point 128")
        cell_scale, cell_zero = _legacy(_out(model, op, 1))
        if cell_scale != 16 / 32768 and cell_zero != 0:
            issues.append("the basic kernel needs the cell state quantized with scale 16/32768 or zero point 0")
        if not (_const(model, op, 2) and _const(model, op, 3)):
            issues.append("the basic kernel needs constant weights and biases")
        return issues
    if len(op.inputs) == 24 and api < 29:
        issues.append("the 24-input (layer norm) variant needs API 29")
    if weights == "int8" and api < 30:
        issues.append("int8 weights need API 30")
    elif weights not in ("float32", "uint8", "int8"):
        issues.append(f"{weights} weights are not supported")
    return issues


def _mean(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = _scalar_output(model, op, api)
    if _legacy(_in(model, op, 0)) != _legacy(_out(model, op)):
        issues.append("input and output must share one scale and zero point")
    return issues


def _min_max(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    scalars = [k for k in (0, 1) if _in(model, op, k).rank == 0 and not _in(model, op, k).constant]
    return ["a scalar operand must be constant"] if scalars else []


def _cast(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    out = _out(model, op).dtype
    if out == "int8" and api < 30:
        return ["int8 output needs API 30"]
    return [] if out in ("float32", "int32", "uint8", "int8") else [f"{out} output is not supported"]


def _select(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = _input_type(1, "the values", "float32", "int32", "uint8", "int8")(model, op, api)
    same = _in(model, op, 0).shape == _in(model, op, 1).shape
    return issues + ([] if same else ["condition and values must have one shape"])


def _gather(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = _input_type(1, "the positions", "int32")(model, op, api)
    return issues + (["scalar positions are not supported"] if _in(model, op, 1).rank == 0 else [])


def _split(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = _const_int32(0, "the split axis")(model, op, api)
    dtype = _in(model, op, 1).dtype
    if dtype == "int8" and api < 30:
        issues.append("int8 input needs API 30")
    elif dtype not in ("float32", "uint8", "int8", "int32"):
        issues.append(f"{dtype} input is not supported")
    return issues


def _reduce_min_max(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    return ["scalar input is not supported"] if _in(model, op, 0).rank == 0 else []


def _fits_int32(values: np.ndarray) -> bool:
    return bool(np.all((values >= np.iinfo(np.int32).min) & (values <= np.iinfo(np.int32).max)))


def _fill(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = _const_input(0, "the output dimensions")(model, op, api)
    issues += _input_type(0, "the output dimensions", "int32", "int64")(model, op, api)
    dims, value = _in(model, op, 0), _in(model, op, 1)
    if dims.constant and dims.shape and dims.shape[0] == 0:
        issues.append("a scalar output is not supported")
    if dims.constant and dims.dtype == "int64" and not _fits_int32(model.tensor_data(op.inputs[0])):
        issues.append("int64 dimensions must fit int32")
    issues += _input_type(1, "the fill value", "float32", "int32", "int64")(model, op, api)
    if value.constant and value.dtype == "int64" and not _fits_int32(model.tensor_data(op.inputs[1])):
        issues.append("an int64 fill value must fit int32")
    return issues


def _pack(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    axis = getattr(op.options, "axis", 0)
    return ["packing along the last axis is not supported"] if axis in (-1, _in(model, op, 0).rank) else []


def _arg_min_max(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    axis = _in(model, op, 1)
    if axis.dtype == "int64":
        fits = axis.constant and _fits_int32(model.tensor_data(op.inputs[1]))
        issues = [] if fits else ["an int64 axis must be a constant that fits int32"]
    else:
        issues = _input_type(1, "the axis", "int32")(model, op, api)
    if getattr(op.options, "outputType", None) != INT32_TYPE:
        issues.append(f"{_out(model, op).dtype} output is not supported (int32 only)")
    return issues


def _lsh_projection(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    if getattr(op.options, "type", None) != LSH_SPARSE:
        return []
    issues = ["sparse projection needs API 29"] if api < 29 else []
    return issues + ([] if len(op.inputs) == 2 else ["sparse projection with weights is not supported"])


def _five_inputs_float_weights(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = [] if len(op.inputs) == 5 else ["only the 5-input variant is supported"]
    return issues + _input_type(1, "the weights", "float32")(model, op, api)


def _float_output(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    return [] if _out(model, op).dtype == "float32" else [f"{_out(model, op).dtype} output is not supported"]


_UNARY_FLOAT = NnapiOp(29, 1, _from(29, "float32"))
_COMPARISON = NnapiOp(28, 2, _from(28, *FQ8, "bool", "int32"))
OPS: dict[str, NnapiOp] = {
    "ADD": NnapiOp(27, 2, {**_from(27, *FQ8), "int32": 30}, _int32_activation),
    "MUL": NnapiOp(27, 3, {**_from(27, *FQ8), "int32": 30}, _mul),
    "SUB": NnapiOp(28, 3, {"float32": 28, "uint8": 29, "int8": 29, "int32": 30}, _sub),
    "DIV": NnapiOp(28, 1, _from(28, "float32")),
    "AVERAGE_POOL_2D": NnapiOp(27, 2, _from(27, *FQ8), _average_pool),
    "MAX_POOL_2D": NnapiOp(27, 2, _from(27, *FQ8)),
    "L2_POOL_2D": NnapiOp(27, 1, _from(27, "float32"), _l2_pool),
    "CONV_2D": NnapiOp(27, 3, None, _conv),
    "DEPTHWISE_CONV_2D": NnapiOp(27, 3, None, _depthwise),
    "FULLY_CONNECTED": NnapiOp(27, 5, None, _fully_connected),
    "HARD_SWISH": NnapiOp(27, None, _from(27, *FQ8)),
    "SOFTMAX": NnapiOp(27, 2, _from(27, *FQ8), _softmax),
    "RESHAPE": NnapiOp(27, 1, _from(27, *FQ8), _reshape),
    "RESIZE_BILINEAR": NnapiOp(27, 3, {"float32": 27, "uint8": 29, "int8": 29}, _resize),
    "RESIZE_NEAREST_NEIGHBOR": NnapiOp(29, 3, _from(29, *FQ8), _resize),
    "SQUEEZE": NnapiOp(28, 1, None, _squeeze),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": NnapiOp(29, 2, _from(29, "float32"), _sequence_lstm),  # float only: see above
    "UNIDIRECTIONAL_SEQUENCE_RNN": NnapiOp(29, 1, None, _not_hybrid(1)),
    "BIDIRECTIONAL_SEQUENCE_LSTM": NnapiOp(29, 1, None, _not_hybrid(2)),
    "LSTM": NnapiOp(28, 3, None, _lstm),
    "RNN": NnapiOp(27, 1, None, _five_inputs_float_weights),
    "SVDF": NnapiOp(28, 1, None, _five_inputs_float_weights),
    "LSH_PROJECTION": NnapiOp(27, 1, None, _lsh_projection),
    "EMBEDDING_LOOKUP": NnapiOp(27, 1, None, _input_type(1, "the values", "float32")),
    "HASHTABLE_LOOKUP": NnapiOp(27, 1, None, _float_output),
    "L2_NORMALIZATION": NnapiOp(27, 2, None, _l2_normalization),
    "LOCAL_RESPONSE_NORMALIZATION": NnapiOp(27, 1, None),
    "CONCATENATION": NnapiOp(27, 2, _from(27, "float16", *FQ8), _concatenation),
    "DEQUANTIZE": NnapiOp(27, None, None, _dequantize),
    "QUANTIZE": NnapiOp(29, 2, _from(29, *FQ8), _quantize),
    "DENSIFY": NnapiOp(30, None, None, _const_input(0, "the sparse tensor")),
    "FLOOR": NnapiOp(27, 1, None),
    "RELU": NnapiOp(27, 2, _from(27, *FQ8)),
    "RELU6": NnapiOp(27, 2, _from(27, *FQ8)),
    "RELU_N1_TO_1": NnapiOp(27, 2, _from(27, *FQ8)),
    "LOGISTIC": NnapiOp(27, 2, _from(27, *FQ8)),
    "TANH": NnapiOp(27, 2, {"float32": 27, "uint8": 29, "int8": 29}),
    "ELU": NnapiOp(30, 1, _from(30, "float32")),
    "PRELU": NnapiOp(29, 1, _from(29, *FQ8)),
    "LEAKY_RELU": NnapiOp(29, 1, _from(29, *FQ8)),
    "PAD": NnapiOp(28, 2, _from(28, *FQ8), _pad),
    "PADV2": NnapiOp(28, 2, _from(28, *FQ8), _pad),
    "MEAN": NnapiOp(28, 2, {"float32": 28, "uint8": 29, "int8": 29}, _mean),
    "SUM": NnapiOp(29, 1, _from(29, "float32"), _scalar_output),
    "REDUCE_PROD": NnapiOp(29, 1, _from(29, "float32"), _scalar_output),
    "REDUCE_MAX": NnapiOp(29, 2, _from(29, *FQ8), _reduce_min_max),
    "REDUCE_MIN": NnapiOp(29, 2, _from(29, *FQ8), _reduce_min_max),
    "REDUCE_ANY": NnapiOp(29, 2, None, _scalar_output),
    "SPACE_TO_BATCH_ND": NnapiOp(28, 2, None),
    "BATCH_TO_SPACE_ND": NnapiOp(28, 2, None, _batch_to_space),
    "SPACE_TO_DEPTH": NnapiOp(27, 2, _from(27, *FQ8)),
    "DEPTH_TO_SPACE": NnapiOp(27, None, _from(27, *FQ8)),
    "STRIDED_SLICE": NnapiOp(28, 2, None),
    "SLICE": NnapiOp(29, 2, _from(29, *FQ8, "int32"),
                     _all(_input_type(1, "begin", "int32"), _input_type(2, "size", "int32"))),
    "TRANSPOSE": NnapiOp(28, 2, None, _const_input(1, "the permutation")),
    "TRANSPOSE_CONV": NnapiOp(29, 3, None, _transpose_conv),
    "EXPAND_DIMS": NnapiOp(29, 1, _from(29, "float16", *FQ8, "int32"), _const_int32(1, "the axis")),
    "SPLIT": NnapiOp(29, 3, None, _split),
    "PACK": NnapiOp(30, 2, _from(30, "int32", "float32", "int8"), _pack),
    "TILE": NnapiOp(29, 1, _from(29, *FQ8, "int32"), _input_type(1, "the multipliers", "int32")),
    "GATHER": NnapiOp(29, 2, _from(29, "float16", *FQ8, "int32"), _gather),
    "FILL": NnapiOp(30, 1, None, _fill),
    "CAST": NnapiOp(29, 1, {"float32": 29, "int32": 29, "uint8": 29, "int8": 30}, _cast),
    "ARG_MAX": NnapiOp(29, 2, _from(29, "float16", *FQ8, "int32"), _arg_min_max),
    "ARG_MIN": NnapiOp(29, 2, _from(29, "float16", *FQ8, "int32"), _arg_min_max),
    "TOPK_V2": NnapiOp(29, 2, _from(29, *FQ8, "int32"), _const_int32(1, "k")),
    "MAXIMUM": NnapiOp(29, 3, _from(29, *FQ8, "int32"), _min_max),
    "MINIMUM": NnapiOp(29, 3, _from(29, *FQ8, "int32"), _min_max),
    "SELECT": NnapiOp(28, 2, None, _select),
    "LESS": _COMPARISON, "LESS_EQUAL": _COMPARISON, "GREATER": _COMPARISON, "GREATER_EQUAL": _COMPARISON,
    "EQUAL": _COMPARISON, "NOT_EQUAL": _COMPARISON,
    "NEG": NnapiOp(28, 2, _from(28, "float32", "int32")),
    "LOGICAL_AND": NnapiOp(29, 1, _from(29, "bool")),
    "LOGICAL_OR": NnapiOp(29, 1, _from(29, "bool")),
    "LOGICAL_NOT": NnapiOp(29, 1, _from(29, "bool")),
    "ABS": _UNARY_FLOAT, "EXP": _UNARY_FLOAT, "LOG": _UNARY_FLOAT, "RSQRT": _UNARY_FLOAT, "SQRT": _UNARY_FLOAT,
    "SIN": _UNARY_FLOAT, "POW": _UNARY_FLOAT, "LOG_SOFTMAX": _UNARY_FLOAT,
}


def op_issues(model: TFLiteModel, op: Operator, api_level: int) -> list[str]:
    """Why ``NNAPIDelegateKernel::Validate`` would refuse ``op`` at ``api_level`` (empty: accepted)."""
    spec = OPS.get(op.name)
    if spec is None:
        return [("custom op" if op.custom else "op") + " has no NNAPI mapping in the TFLite delegate"]
    issues = []
    if api_level < spec.min_api:
        issues.append(f"needs API {spec.min_api} ({NNAPI_VERSIONS[spec.min_api]})")
    if spec.max_version is not None and op.version > spec.max_version:
        issues.append(f"op version {op.version} is newer than the delegate maps (at most {spec.max_version})")
    try:
        if spec.types is not None:
            dtype = _in(model, op, 0).dtype
            first = spec.types.get(dtype)
            if first is None:
                issues.append(f"{dtype} input is not supported")
            elif api_level < first and first > spec.min_api:
                issues.append(f"{dtype} input needs API {first}")
        if spec.check is not None:
            issues.extend(spec.check(model, op, api_level))
    except _MissingOperand as missing:
        issues.append(f"malformed op: {missing} is missing")
    return issues


def _partitions(model: TFLiteModel, delegated: set[int]) -> list[list[int]]:
    """The delegated node subsets of TFLite's greedy partitioning (graph_info.cc), in the order it forms them.

    Each round starts with the first op (in graph order) whose inputs are computed; it fixes the round's
    kind (delegated or CPU) and the round takes every op of that kind whose inputs become available.
    """
    waiting = list(model.operators)
    pending = {t for op in waiting for t in op.outputs if t >= 0}
    subsets = []
    while waiting:
        kind, nodes, grew = None, [], True
        while grew:
            grew = False
            for op in list(waiting):
                if any(t in pending for t in op.inputs):
                    continue
                if kind is None:
                    kind = op.index in delegated
                if (op.index in delegated) == kind:
                    nodes.append(op.index)
                    waiting.remove(op)
                    pending.difference_update(op.outputs)
                    grew = True
        if not nodes:  # ops whose inputs are never computed: TFLite stops there too
            break
        if kind:
            subsets.append(nodes)
    return subsets


def delegation(model: TFLiteModel, api_level: int) -> tuple[list[list[str]], int, int]:
    """``DoPrepare``: per op, why it stays on the CPU (empty: delegated); how many ops Validate accepts;
    how many partitions the delegate takes."""
    issues = [op_issues(model, op, api_level) for op in model.operators]
    fp16 = [op.index for op in model.operators if _fp16_weights(model, op)]
    if fp16 and any(issues[op.index] for op in model.operators if op.index not in fp16):
        for i in fp16:  # FP16GraphPartitionHelper keeps them on the CPU unless the whole graph is delegated
            issues[i] = ["float16 weights are dequantized by NNAPI only when the whole model is delegated"]
    supported = {op.index for op in model.operators if not issues[op.index]}
    partitions = _partitions(model, supported)
    if len(partitions) > MAX_PARTITIONS:
        kept = sorted(partitions, key=len, reverse=True)[:MAX_PARTITIONS]
        for nodes in partitions:
            if nodes not in kept:
                for i in nodes:
                    issues[i] = [(f"in a smaller partition: the delegate takes only the {MAX_PARTITIONS} largest "
                                  f"of {len(partitions)} (max_number_delegated_partitions)")]
        partitions = kept
    return issues, len(supported), len(partitions)


def check(model: str | Path | TFLiteModel, api_level: int = 30) -> TargetReport:
    """NNAPI coverage of a ``.tflite`` (path or parsed) on a device of ``api_level`` (27-34)."""
    if not MIN_API <= api_level <= MAX_API:
        raise PipelineError(f"--api-level must be between {MIN_API} and {MAX_API}, got {api_level}")
    if not isinstance(model, TFLiteModel):
        model = read_model(model)
    issues, supported, partitions = delegation(model, api_level)
    placements = [OpPlacement(op.index, op.name, CPU if issues[op.index] else TARGET, "; ".join(issues[op.index]))
                  for op in model.operators]
    ops = [{"index": op.index, "name": op.name, "delegated": not issues[op.index], "reasons": issues[op.index]}
           for op in model.operators]
    notes = [DEPRECATION_NOTE]
    if api_level >= 29:
        notes.append(ACCELERATOR_NOTE)
    if api_level < 30 and any(t.dtype == "int8" and not t.constant for t in model.tensors):
        notes.append(INT8_NOTE)
    coverage = {level: sum(not r for r in delegation(model, level)[0]) for level in range(MIN_API, MAX_API + 1)}
    version = NNAPI_VERSIONS[min(api_level, 30)] + ("" if api_level <= 30 else f" (feature level of API {api_level})")
    return TargetReport(TARGET, str(model.path), placements, notes=notes, details={
        "api_level": api_level, "nnapi_version": version, "delegated_ops": sum(e["delegated"] for e in ops),
        "supported_ops": supported, "partitions": partitions, "delegated_by_api_level": coverage, "ops": ops})


def format_report(data: dict) -> str:
    limited = data["supported_ops"] != data["delegated_ops"]
    lines = [f"NNAPI check: {data['model']} at API {data['api_level']} ({data['nnapi_version']})",
             f"  {data['delegated_ops']}/{data['total_ops']} ops delegated in {data['partitions']} partition(s)"
             + (f" ({data['supported_ops']} pass the per-op rules)" if limited else "")
             + ("" if not data["cpu_ops"] else "; CPU: " + ", ".join(f"{k} x{v}" for k, v in data["cpu_ops"].items()))]
    lines += [f"  cpu  {r}" for r in data["reasons"]]
    by_level = data["delegated_by_api_level"]
    lines.append("  delegated ops by API level: " + ", ".join(f"{k}: {v}" for k, v in by_level.items()))
    lines += [f"  note: {n}" for n in data["notes"]]
    return "\n".join(lines)
