"""Which ops of a .tflite file the Android NNAPI delegate would take, per Android API level (27-34).

Source: the TFLite NNAPI delegate's per-op checks, ``NNAPIDelegateKernel::Validate`` in
tensorflow/lite/delegates/nnapi/nnapi_delegate.cc (TensorFlow, Apache-2.0), which gates every
builtin by the device's API level (27 = NNAPI 1.0, 28 = 1.1, 29 = 1.2, 30 = 1.3) and its tensor
types. Signed int8 operands (TENSOR_QUANT8_ASYMM_SIGNED) arrived with NNAPI 1.3 (API 30); on API 29
the delegate accepts int8 for most ops by re-expressing them as uint8, and on 27/28 most ops take
float32 or uint8 only. Levels 31-34 add no checks for the ops below, so they behave like 30.
An op the delegate rejects runs on the CPU, and every such op splits the graph into more partitions.
NNAPI is deprecated from Android 15 (API 35); there the GPU delegate or a vendor NPU delegate is the
path forward, so the report says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.core.errors import PipelineError
from pipeline.core.target_report import CPU, OpPlacement, TargetReport
from pipeline.core.tflite_file import Operator, TFLiteModel, read_model

TARGET = "nnapi"
MIN_API, MAX_API = 27, 34
NNAPI_VERSIONS = {27: "NNAPI 1.0", 28: "NNAPI 1.1", 29: "NNAPI 1.2", 30: "NNAPI 1.3"}
DEPRECATION_NOTE = ("NNAPI is deprecated from Android 15 (API 35): prefer the LiteRT GPU delegate (or a vendor NPU "
                    "delegate such as Qualcomm QNN) there, with XNNPACK on the CPU as the fallback")

Check = Callable[[TFLiteModel, Operator, int], list[str]]


@dataclass(frozen=True)
class NnapiOp:
    min_api: int
    types: dict[str, int]  # input-0 dtype -> first API level that accepts it
    check: Check | None = None


def _quant8(base: int, int8: int = 29) -> dict[str, int]:
    """Float32 or 8-bit input: uint8 from ``base``; signed int8 from ``int8`` (29 via uint8 re-expression)."""
    return {"float32": base, "uint8": base, "int8": max(base, int8)}


def _float(base: int) -> dict[str, int]:
    return {"float32": base}


def _in(model: TFLiteModel, op: Operator, k: int):
    return model.tensor(op.inputs[k])


def _act_none(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    return ["fused activation is not supported"] if getattr(op.options, "fusedActivationFunction", 0) else []


def _const_input(k: int, what: str) -> Check:
    def check(model: TFLiteModel, op: Operator, api: int) -> list[str]:
        return [] if len(op.inputs) > k and _in(model, op, k).constant else [f"{what} must be a constant tensor"]
    return check


def _conv(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = []
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        issues.append("convolution without a bias tensor is not supported")
    dil = (getattr(op.options, "dilationWFactor", 1), getattr(op.options, "dilationHFactor", 1))
    if dil != (1, 1) and api < 29:
        issues.append("dilated convolution needs API 29")
    if api < 29 and len(_in(model, op, 1).scale) > 1:
        issues.append("per-channel quantized weights need API 29")
    return issues + _restricted_scales(model, op, api)


def _restricted_scales(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    """NNAPI 1.0/1.1 require input_scale * weight_scale < output_scale for uint8 CONV/DEPTHWISE/FC."""
    x, w, y = _in(model, op, 0), _in(model, op, 1), model.tensor(op.outputs[0])
    if api < 29 and x.dtype == "uint8" and x.scale and w.scale and y.scale and not x.scale[0] * w.scale[0] < y.scale[0]:
        return ["before API 29 input_scale * weight_scale must be below output_scale"]
    return []


def _fully_connected(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = ["int16 output is not supported"] if model.tensor(op.outputs[0]).dtype == "int16" else []
    if getattr(op.options, "keepNumDims", False) and api < 30:
        issues.append("keep_num_dims needs API 30")
    return issues + _restricted_scales(model, op, api)


def _softmax(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    rank = _in(model, op, 0).rank
    if rank > 4:
        return ["input rank above 4"]
    return ["before API 29 only 2-D and 4-D inputs"] if api < 29 and rank not in (2, 4) else []


def _reshape(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    return _const_input(1, "the target shape")(model, op, api) if len(op.inputs) > 1 else []


def _resize(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = [] if _in(model, op, 0).rank == 4 else ["input must have rank 4"]
    issues += _const_input(1, "the output size")(model, op, api)
    if api <= 29 and (getattr(op.options, "alignCorners", False) or getattr(op.options, "halfPixelCenters", False)):
        issues.append("align_corners / half_pixel_centers need API 30")
    out = model.tensor(op.outputs[0]).shape
    if op.name == "RESIZE_BILINEAR" and api < 29 and len(out) == 4 and out[1] != out[2]:
        issues.append("before API 29 the output must be square")
    return issues


def _concatenation(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = _act_none(model, op, api)
    if _in(model, op, 0).rank > 4:
        issues.append("input rank above 4")
    first = _in(model, op, 0)
    if first.dtype == "uint8" and api < 29:
        params = {(model.tensor(i).scale, model.tensor(i).zero_point) for i in op.inputs}
        if len(params) > 1:
            issues.append("before API 29 quantized inputs must share one scale and zero point")
    return issues


def _dequantize(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    t = _in(model, op, 0)
    if t.dtype == "int8" and api == 29 and any(t.zero_point):
        return ["on API 29 int8 input must be symmetric (zero point 0)"]
    return []


def _quantize(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    out = model.tensor(op.outputs[0]).dtype
    if out == "int8" and api < 30:
        return ["int8 output needs API 30 (uint8 before)"]
    return [] if out in ("int8", "uint8") else [f"{out} output is not supported"]


def _pad(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = []
    if len(op.inputs) == 3 and api < 29:
        issues.append("an explicit padding value (PADV2) needs API 29")
    if api < 29 and _in(model, op, 0).dtype != "float32":
        issues.append("quantized padding needs API 29")
    return issues


def _mean(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    return ["scalar output is not supported"] if model.tensor(op.outputs[0]).rank == 0 else []


def _batch_to_space(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    crops = model.constant_buffers.get(op.inputs[2]) if len(op.inputs) > 2 else None
    return [] if crops is not None and not any(crops) else ["crops must be constant zeros"]


def _pack(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    axis = getattr(op.options, "axis", 0)
    return ["packing along the last axis is not supported"] if axis in (-1, _in(model, op, 0).rank) else []


def _lstm(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    return [] if len(op.inputs) in (20, 24) else ["only the 20- or 24-input variant is supported"]


def _split(model: TFLiteModel, op: Operator, api: int) -> list[str]:
    issues = _const_input(0, "the split axis")(model, op, api)
    dtype = _in(model, op, 1).dtype
    if dtype == "int8" and api < 30:
        issues.append("int8 split needs API 30")
    elif dtype not in ("float32", "uint8", "int8", "int32"):
        issues.append(f"{dtype} input is not supported")
    return issues


Q8 = _quant8
OPS: dict[str, NnapiOp] = {
    "ADD": NnapiOp(27, {**Q8(27), "int32": 30}),
    "MUL": NnapiOp(27, {**Q8(27), "int32": 30}),
    "SUB": NnapiOp(28, {"float32": 28, "uint8": 29, "int8": 29, "int32": 30}),
    "DIV": NnapiOp(28, _float(28)),
    "AVERAGE_POOL_2D": NnapiOp(27, Q8(27)),
    "MAX_POOL_2D": NnapiOp(27, Q8(27)),
    "L2_POOL_2D": NnapiOp(27, _float(27)),
    "CONV_2D": NnapiOp(27, Q8(27), _conv),
    "DEPTHWISE_CONV_2D": NnapiOp(27, Q8(27), _conv),
    "FULLY_CONNECTED": NnapiOp(27, Q8(27), _fully_connected),
    "HARD_SWISH": NnapiOp(27, Q8(27)),
    "SOFTMAX": NnapiOp(27, Q8(27), _softmax),
    "RESHAPE": NnapiOp(27, Q8(27), _reshape),
    "RESIZE_BILINEAR": NnapiOp(27, {"float32": 27, "uint8": 29, "int8": 29}, _resize),
    "RESIZE_NEAREST_NEIGHBOR": NnapiOp(29, Q8(29), _resize),
    "SQUEEZE": NnapiOp(28, Q8(28)),
    # NNAPI's UNIDIRECTIONAL_SEQUENCE_LSTM takes float tensors only (no 8-bit variant in the spec).
    "UNIDIRECTIONAL_SEQUENCE_LSTM": NnapiOp(29, _float(29), _lstm),
    "LSTM": NnapiOp(28, {"float32": 28, "uint8": 28, "int8": 30}),
    "L2_NORMALIZATION": NnapiOp(27, {"float32": 27, "uint8": 29, "int8": 29}, _act_none),
    "LOCAL_RESPONSE_NORMALIZATION": NnapiOp(27, _float(27)),
    "CONCATENATION": NnapiOp(27, Q8(27), _concatenation),
    "DEQUANTIZE": NnapiOp(27, {"uint8": 27, "int8": 29, "float16": 30}, _dequantize),
    "QUANTIZE": NnapiOp(29, {"float32": 29, "uint8": 29, "int8": 29}, _quantize),
    "FLOOR": NnapiOp(27, _float(27)),
    "RELU": NnapiOp(27, Q8(27)),
    "RELU6": NnapiOp(27, Q8(27)),
    "RELU_N1_TO_1": NnapiOp(27, Q8(27)),
    "LOGISTIC": NnapiOp(27, Q8(27)),
    "TANH": NnapiOp(27, {"float32": 27, "uint8": 29, "int8": 29}),
    "PAD": NnapiOp(28, Q8(28), _pad),
    "PADV2": NnapiOp(28, Q8(28), _pad),
    "MEAN": NnapiOp(28, {"float32": 28, "uint8": 29, "int8": 29}, _mean),
    "SPACE_TO_BATCH_ND": NnapiOp(28, Q8(28)),
    "BATCH_TO_SPACE_ND": NnapiOp(28, Q8(28), _batch_to_space),
    "STRIDED_SLICE": NnapiOp(28, Q8(28)),
    "TRANSPOSE": NnapiOp(28, Q8(28), _const_input(1, "the permutation")),
    "SPACE_TO_DEPTH": NnapiOp(27, Q8(27)),
    "DEPTH_TO_SPACE": NnapiOp(27, Q8(27)),
    "SLICE": NnapiOp(29, {**Q8(29), "int32": 29}),
    "TRANSPOSE_CONV": NnapiOp(29, Q8(29)),
    "MAXIMUM": NnapiOp(29, {**Q8(29), "int32": 29}),
    "MINIMUM": NnapiOp(29, {**Q8(29), "int32": 29}),
    "PRELU": NnapiOp(29, Q8(29)),
    "LEAKY_RELU": NnapiOp(29, Q8(29)),
    "EXPAND_DIMS": NnapiOp(29, {**Q8(29), "int32": 29}, _const_input(1, "the axis")),
    "SPLIT": NnapiOp(29, {"int32": 29, **Q8(29)}, _split),
    "SPLIT_V": NnapiOp(30, {**Q8(30), "int32": 30}),
    "GATHER": NnapiOp(29, {**Q8(29), "int32": 29}),
    "ARG_MAX": NnapiOp(29, {**Q8(29), "int32": 29}),
    "ARG_MIN": NnapiOp(29, {**Q8(29), "int32": 29}),
    "REDUCE_MAX": NnapiOp(29, Q8(29), _mean),
    "REDUCE_MIN": NnapiOp(29, Q8(29), _mean),
    "SUM": NnapiOp(29, _float(29), _mean),
    "REDUCE_PROD": NnapiOp(29, _float(29), _mean),
    "ABS": NnapiOp(29, _float(29)),
    "EXP": NnapiOp(29, _float(29)),
    "LOG": NnapiOp(29, _float(29)),
    "RSQRT": NnapiOp(29, _float(29)),
    "SQRT": NnapiOp(29, _float(29)),
    "SIN": NnapiOp(29, _float(29)),
    "POW": NnapiOp(29, _float(29)),
    "LOG_SOFTMAX": NnapiOp(29, _float(29)),
    "CAST": NnapiOp(29, {"float32": 29, "int32": 29, "uint8": 29, "int8": 30}),
    "TILE": NnapiOp(29, {**Q8(29), "int32": 29}),
    "ELU": NnapiOp(30, _float(30)),
    "PACK": NnapiOp(30, {"float32": 30, "int8": 30, "int32": 30}, _pack),
    "SQUARED_DIFFERENCE": NnapiOp(28, {"float32": 28, "uint8": 29, "int8": 30, "int32": 30}),
}


def op_issues(model: TFLiteModel, op: Operator, api_level: int) -> list[str]:
    """Why the NNAPI delegate would leave ``op`` on the CPU at ``api_level`` (empty: delegated)."""
    spec = OPS.get(op.name)
    if spec is None:
        return [("custom op" if op.custom else "op") + " has no NNAPI mapping in the TFLite delegate"]
    issues = []
    if api_level < spec.min_api:
        issues.append(f"needs API {spec.min_api} ({NNAPI_VERSIONS[spec.min_api]})")
    dtype = _in(model, op, 0).dtype if op.inputs and op.inputs[0] >= 0 else "float32"
    if op.name == "SPLIT":
        dtype = "int32"  # SPLIT's input 0 is the axis; _split checks the data type
    first = spec.types.get(dtype)
    if first is None:
        issues.append(f"{dtype} input is not supported")
    elif api_level < first and first > spec.min_api:
        issues.append(f"{dtype} input needs API {first}")
    if spec.check is not None:
        issues.extend(spec.check(model, op, api_level))
    return issues


def check(model: str | Path | TFLiteModel, api_level: int = 30) -> TargetReport:
    """NNAPI coverage of a ``.tflite`` (path or parsed) on a device of ``api_level`` (27-34)."""
    if not MIN_API <= api_level <= MAX_API:
        raise PipelineError(f"--api-level must be between {MIN_API} and {MAX_API}, got {api_level}")
    if not isinstance(model, TFLiteModel):
        model = read_model(model)
    placements = []
    ops = []
    for op in model.operators:
        issues = op_issues(model, op, api_level)
        placements.append(OpPlacement(op.index, op.name, CPU if issues else TARGET, "; ".join(issues)))
        ops.append({"index": op.index, "name": op.name, "delegated": not issues, "reasons": issues})
    notes = [DEPRECATION_NOTE]
    int8 = any(t.dtype == "int8" and not t.constant for t in model.tensors)
    if int8 and api_level == 29:
        notes.append("signed int8 tensors: API 29 runs them re-expressed as uint8; native int8 needs API 30 "
                     "(or convert with uint8 inference input/output types for older devices)")
    coverage = {level: sum(not op_issues(model, op, level) for op in model.operators) for level in range(MIN_API, MAX_API + 1)}
    version = NNAPI_VERSIONS.get(min(api_level, 30)) + ("" if api_level <= 30 else f" (feature level of API {api_level})")
    return TargetReport(TARGET, str(model.path), placements, notes=notes, details={
        "api_level": api_level, "nnapi_version": version, "delegated_ops": sum(e["delegated"] for e in ops),
        "partitions": _partitions(ops), "delegated_by_api_level": coverage, "ops": ops})


def _partitions(ops: list[dict]) -> int:
    """Runs of consecutive delegated ops: each is one NNAPI partition with a CPU hand-off around it."""
    runs, previous = 0, False
    for entry in ops:
        if entry["delegated"] and not previous:
            runs += 1
        previous = entry["delegated"]
    return runs


def format_report(data: dict) -> str:
    lines = [f"NNAPI check: {data['model']} at API {data['api_level']} ({data['nnapi_version']})",
             f"  {data['delegated_ops']}/{data['total_ops']} ops delegated in {data['partitions']} partition(s)"
             + ("" if not data["cpu_ops"] else "; CPU: " + ", ".join(f"{k} x{v}" for k, v in data["cpu_ops"].items()))]
    lines += [f"  cpu  {r}" for r in data["reasons"]]
    lines.append("  delegated ops by API level: " + ", ".join(f"{k}: {v}" for k, v in data["delegated_by_api_level"].items()))
    lines += [f"  note: {n}" for n in data["notes"]]
    return "\n".join(lines)
