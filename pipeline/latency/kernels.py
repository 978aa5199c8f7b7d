"""Kernels: one TFLite operator with its tensor shapes, cut out of a model or synthesized from a description.

Latency is measured on kernels, the way nn-Meter (Zhang et al., MobiSys 2021) does it: a model is the sum
of its kernels (ops, or runs of ops the runtime fuses into one). Two ways to get a kernel's flatbuffer:

- ``submodel``: the operators of a real model, weights and quantization kept, their free inputs made graph
  inputs (what ``tflpipe latency profile`` times);
- ``synthesize``: a :class:`Kernel` description (op, options, tensor shapes) turned into a one-op int8 or
  float32 model with random weights, no converter needed (what the table builder samples, thousands of them).

Both go through the schema's object API of ``ai_edge_litert`` (no TensorFlow import).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from pipeline.core.errors import PipelineError

OP_CODES = {k: v for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
OP_NAMES = {v: k for k, v in OP_CODES.items()}
_TYPE_CODES = {k.lower(): v for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in _TYPE_CODES.items()}
_NUMPY = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
          "float32": np.float32, "float16": np.float16, "bool": np.bool_}
# Options class per builtin op (the union member the schema expects), for the ops kernels describe.
_OPTIONS = {
    "CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "FULLY_CONNECTED": "FullyConnectedOptions", "AVERAGE_POOL_2D": "Pool2DOptions", "MAX_POOL_2D": "Pool2DOptions",
    "ADD": "AddOptions", "MUL": "MulOptions", "SUB": "SubOptions", "CONCATENATION": "ConcatenationOptions",
    "MEAN": "ReducerOptions", "SPLIT": "SplitOptions", "RESHAPE": "ReshapeOptions", "SOFTMAX": "SoftmaxOptions",
    "PAD": "PadOptions", "TRANSPOSE": "TransposeOptions", "HARD_SWISH": "HardSwishOptions",
    "STRIDED_SLICE": "StridedSliceOptions", "RESIZE_BILINEAR": "ResizeBilinearOptions",
    "RESIZE_NEAREST_NEIGHBOR": "ResizeNearestNeighborOptions", "QUANTIZE": "QuantizeOptions",
    "DEQUANTIZE": "DequantizeOptions", "LEAKY_RELU": "LeakyReluOptions",
}
# Ops whose input 1 carries per-output-channel weights, and on which axis the scales run.
_WEIGHT_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}
ACTIVATION_SCALE = 0.05  # synthesized int8 activations: one scale everywhere (concat and split need equal ones)
_FIXED_OUTPUT_QUANT = {"LOGISTIC": (1 / 256, -128), "SOFTMAX": (1 / 256, -128)}  # what LiteRT requires
# Clamp ops and the real range they clamp to. Quantized, LiteRT runs them as their own kernel whose time
# follows how many inputs land on each branch (clamped, saturated, passed requantized): 0.29 to 0.78 ms for one
# (1, 14, 14, 480) int8 RELU as the input's zero point moves, so a kernel carries its quantization relation.
CLAMP_RANGES = {"RELU": (0.0, math.inf), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}
QUANT = "quant"  # option (zp_in, zp_out, scale_in / scale_out, scale_out) of a quantized clamp kernel


@dataclass(frozen=True)
class TensorSpec:
    """A tensor of a kernel: its shape and type; constants carry ``values`` when they are small integers
    the op reads as arguments (shapes, axes, paddings), and random data otherwise (weights, biases)."""

    shape: tuple[int, ...]
    dtype: str = "int8"
    constant: bool = False
    values: tuple[int, ...] | None = None

    def to_json(self) -> list:
        return [list(self.shape), self.dtype, self.constant, None if self.values is None else list(self.values)]

    @classmethod
    def from_json(cls, row: list) -> "TensorSpec":
        shape, dtype, constant, values = row
        return cls(tuple(shape), dtype, constant, None if values is None else tuple(values))


@dataclass(frozen=True)
class Kernel:
    """One operator: its builtin name, its options (as the schema names them) and its tensors."""

    op: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    options: tuple[tuple[str, Any], ...] = ()
    fused: tuple["Kernel", ...] = field(default=(), compare=True)  # ops the runtime runs inside this one

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)

    @property
    def quant(self) -> tuple[int, int, float, float]:
        """(zp_in, zp_out, scale_in / scale_out, scale_out) of a quantized clamp kernel: its ``quant`` option,
        or what the synthesizer gives a kernel without one."""
        return tuple(self.option(QUANT) or default_quant(self.outputs[0].dtype))

    @property
    def activations(self) -> list[TensorSpec]:
        return [t for t in self.inputs if not t.constant]

    def to_json(self) -> dict:
        row = {"op": self.op, "options": [list(kv) for kv in self.options],
               "inputs": [t.to_json() for t in self.inputs], "outputs": [t.to_json() for t in self.outputs]}
        if self.fused:
            row["fused"] = [k.to_json() for k in self.fused]
        return row

    @classmethod
    def from_json(cls, row: dict) -> "Kernel":
        return cls(row["op"], tuple(TensorSpec.from_json(t) for t in row["inputs"]),
                   tuple(TensorSpec.from_json(t) for t in row["outputs"]),
                   tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in row.get("options", [])),
                   tuple(cls.from_json(k) for k in row.get("fused", [])))

    @property
    def key(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))


# --- reading kernels out of a model -------------------------------------------------------------------------

def unpack(data: bytes) -> "schema.ModelT":
    """The object tree of a (verified) flatbuffer."""
    return schema.ModelT.InitFromPackedBuf(bytearray(data), 0)


def pack(model: "schema.ModelT") -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def op_name(model: "schema.ModelT", op: "schema.OperatorT") -> str:
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == schema.BuiltinOperator.CUSTOM:
        return (code.customCode or b"custom").decode("utf-8", "replace")
    return OP_NAMES.get(builtin, f"BUILTIN_{builtin}")


def is_constant(model: "schema.ModelT", tensor: "schema.TensorT") -> bool:
    data = model.buffers[tensor.buffer].data if 0 <= tensor.buffer < len(model.buffers) else None
    return data is not None and len(data) > 0


def _spec(model: "schema.ModelT", index: int) -> TensorSpec:
    tensor = model.subgraphs[0].tensors[index]
    dtype = _TYPE_NAMES.get(tensor.type, "unknown")
    shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else ()))
    constant = is_constant(model, tensor)
    values = None
    if constant and dtype in ("int32", "int64") and int(np.prod(shape, dtype=np.int64)) <= 8:
        raw = bytes(bytearray(model.buffers[tensor.buffer].data))
        values = tuple(int(v) for v in np.frombuffer(raw, dtype=_NUMPY[dtype]))
    return TensorSpec(shape, dtype, constant, values)


def _options(op: "schema.OperatorT") -> tuple[tuple[str, Any], ...]:
    if op.builtinOptions is None:
        return ()
    return tuple(sorted((k, v) for k, v in vars(op.builtinOptions).items()
                        if isinstance(v, (int, float, bool)) and not isinstance(v, np.ndarray)))


def kernel_of(model: "schema.ModelT", index: int) -> Kernel:
    """The kernel description of operator ``index`` of the main subgraph (a quantized clamp op's with its
    :data:`QUANT` option)."""
    op = model.subgraphs[0].operators[index]
    name = op_name(model, op)
    inputs = tuple(_spec(model, i) for i in (op.inputs if op.inputs is not None else ()) if i >= 0)
    outputs = tuple(_spec(model, i) for i in (op.outputs if op.outputs is not None else ()))
    options = _options(op)
    quant = _clamp_quant(model, op) if name in CLAMP_RANGES else None
    if quant is not None and quant != default_quant(outputs[0].dtype):
        options = (*options, (QUANT, quant))
    return Kernel(name, inputs, outputs, options)


def default_quant(dtype: str) -> tuple[int, int, float, float]:
    """The quantization the synthesizer gives a clamp kernel without a :data:`QUANT` option (one scale, zero
    point 0, or 128 for uint8): kernels read from a model leave the option out when theirs is this."""
    zero = 128 if dtype == "uint8" else 0
    return (zero, zero, 1.0, ACTIVATION_SCALE)


def _clamp_quant(model: "schema.ModelT", op: "schema.OperatorT") -> tuple[int, int, float, float] | None:
    """(zp_in, zp_out, scale ratio to 3 decimals, output scale to 4 significant digits) of a per-tensor
    quantized int8/uint8 clamp op; None for float ones."""
    if op.inputs is None or op.outputs is None or not len(op.inputs) or not len(op.outputs):
        return None
    tensors = model.subgraphs[0].tensors
    pair = [tensors[op.inputs[0]], tensors[op.outputs[0]]]
    if any(_TYPE_NAMES.get(t.type) not in ("int8", "uint8") or t.quantization is None
           or t.quantization.scale is None or not len(t.quantization.scale) for t in pair):
        return None
    (scale_in, scale_out), (zp_in, zp_out) = ([float(t.quantization.scale[0]) for t in pair],
                                              [int(t.quantization.zeroPoint[0]) if t.quantization.zeroPoint
                                               is not None and len(t.quantization.zeroPoint) else 0 for t in pair])
    if scale_out <= 0:
        return None
    return quant_option(zp_in, zp_out, scale_in / scale_out, scale_out)


def quant_option(zp_in: int, zp_out: int, ratio: float, scale_out: float) -> tuple[int, int, float, float]:
    """The :data:`QUANT` option's value, rounded (ratio to 3 decimals, scale to 4 significant digits) so that
    kernels read from models and sampled ones share keys."""
    return (int(zp_in), int(zp_out), round(float(ratio), 3), float(f"{scale_out:.4g}"))


def submodel(model: "schema.ModelT", indices: Iterable[int]) -> bytes:
    """A model running only operators ``indices`` of the main subgraph, with their real weights.

    Tensors the chosen ops read but neither compute nor hold as constants become graph inputs; those they
    compute and the rest of the model (or the caller) reads become graph outputs. Other subgraphs are kept,
    so control-flow ops still find their bodies.
    """
    graph = model.subgraphs[0]
    chosen = sorted(set(indices))
    ops = [graph.operators[i] for i in chosen]
    produced = {t for op in ops for t in (op.outputs if op.outputs is not None else ())}
    inputs, outputs = [], []
    for op in ops:
        for t in (op.inputs if op.inputs is not None else ()):
            if t >= 0 and t not in produced and t not in inputs and not is_constant(model, graph.tensors[t]):
                inputs.append(t)
    rest = [graph.operators[i] for i in range(len(graph.operators)) if i not in set(chosen)]
    read_elsewhere = {t for op in rest for t in (op.inputs if op.inputs is not None else ())}
    read_elsewhere.update(graph.outputs if graph.outputs is not None else ())
    read_inside = {t for op in ops for t in (op.inputs if op.inputs is not None else ())}
    for op in ops:
        for t in (op.outputs if op.outputs is not None else ()):
            if t in read_elsewhere or t not in read_inside:
                outputs.append(t)
    saved = (graph.operators, graph.inputs, graph.outputs, model.signatureDefs, model.metadata)
    graph.operators, graph.inputs, graph.outputs = ops, inputs, outputs
    model.signatureDefs, model.metadata = None, None
    try:
        return pack(model)
    finally:
        graph.operators, graph.inputs, graph.outputs, model.signatureDefs, model.metadata = saved


# --- synthesizing kernels -------------------------------------------------------------------------------------

def _quantization(spec: TensorSpec, op: str, role: str, position: int, kernel: Kernel,
                  rng: np.random.Generator) -> "schema.QuantizationParametersT | None":
    q = schema.QuantizationParametersT()
    if op in CLAMP_RANGES and spec.dtype in ("int8", "uint8") and not spec.constant:
        zp_in, zp_out, ratio, scale_out = kernel.quant
        q.scale, q.zeroPoint = ([scale_out * ratio], [zp_in]) if role == "in" else ([scale_out], [zp_out])
        return q
    if spec.dtype in ("int8", "uint8") and not spec.constant:
        scale, zero = _FIXED_OUTPUT_QUANT.get(op, (ACTIVATION_SCALE, 0)) if role == "out" else (ACTIVATION_SCALE, 0)
        if spec.dtype == "uint8":
            zero += 128
        q.scale, q.zeroPoint = [scale], [zero]
        return q
    if spec.dtype == "uint8" and spec.constant:  # TF1-style uint8 models: per-tensor asymmetric weights
        q.scale, q.zeroPoint = [0.01], [128]
        return q
    if spec.dtype == "int8" and spec.constant and op in _WEIGHT_AXIS and position == 1:
        channels = spec.shape[_WEIGHT_AXIS[op]]
        q.scale = list(rng.uniform(0.002, 0.02, channels).astype(float))
        q.zeroPoint = [0] * channels
        q.quantizedDimension = _WEIGHT_AXIS[op]
        return q
    if spec.dtype == "int32" and spec.constant and op in _WEIGHT_AXIS and position == 2:
        weights = kernel.inputs[1]
        channels = weights.shape[_WEIGHT_AXIS[op]] if weights.dtype == "int8" else 1
        q.scale = [ACTIVATION_SCALE * 0.01] * channels
        q.zeroPoint = [0] * channels
        return q
    if spec.dtype == "int8" and spec.constant:
        q.scale, q.zeroPoint = [ACTIVATION_SCALE], [0]
        return q
    return None


def _constant_data(spec: TensorSpec, rng: np.random.Generator) -> bytes:
    dtype = _NUMPY.get(spec.dtype)
    if dtype is None:
        raise PipelineError(f"cannot synthesize a constant of type {spec.dtype}")
    if spec.values is not None:
        return np.asarray(spec.values, dtype=dtype).tobytes()
    count = int(np.prod(spec.shape, dtype=np.int64))
    if np.issubdtype(dtype, np.integer):
        high = 127 if spec.dtype in ("int8", "uint8") else 1000
        return rng.integers(-high if spec.dtype != "uint8" else 0, high, count).astype(dtype).tobytes()
    return rng.uniform(-0.5, 0.5, count).astype(dtype).tobytes()


def _options_object(kernel: Kernel):
    name = _OPTIONS.get(kernel.op)
    if name is None:
        return 0, None
    options = getattr(schema, f"{name}T")()
    for key, value in kernel.options:
        if hasattr(options, key):
            setattr(options, key, value)
    return getattr(schema.BuiltinOptions, name), options


def _opcode(name: str, version: int) -> "schema.OperatorCodeT":
    if name not in OP_CODES:
        raise PipelineError(f"cannot synthesize operator {name!r}: not a TFLite builtin")
    code = schema.OperatorCodeT()
    code.builtinCode = OP_CODES[name]
    code.deprecatedBuiltinCode = min(OP_CODES[name], schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = version
    return code


# Versions the converter writes for int8 kernels (LiteRT accepts lower ones for float).
_INT8_VERSIONS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4, "ADD": 2, "MUL": 2, "MEAN": 2,
                  "SOFTMAX": 2, "LOGISTIC": 2, "MAX_POOL_2D": 2, "AVERAGE_POOL_2D": 2, "CONCATENATION": 2,
                  "SPLIT": 2, "RELU": 2, "PAD": 2, "TRANSPOSE": 2, "STRIDED_SLICE": 2, "SUB": 2,
                  "RESIZE_BILINEAR": 2, "RESIZE_NEAREST_NEIGHBOR": 2, "QUANTIZE": 2, "DEQUANTIZE": 2}


def synthesize(kernel: Kernel, seed: int = 0) -> bytes:
    """A flatbuffer running ``kernel`` (and the ops fused into it, in order) with random weights."""
    return synthesize_bundle([kernel], seed)


def synthesize_bundle(kernels: list[Kernel], seed: int = 0) -> bytes:
    """One flatbuffer running several kernels side by side, each on its own inputs: their weights compete
    for the caches as a real net's layers do (what a kernel timed alone never sees)."""
    rng = np.random.default_rng(seed)
    model = schema.ModelT()
    model.version = 3
    model.description = b"tflpipe latency kernel"
    model.buffers = [schema.BufferT()]
    graph = schema.SubGraphT()
    graph.tensors, graph.operators, graph.inputs, graph.outputs = [], [], [], []
    model.operatorCodes = []
    codes: dict[str, int] = {}

    def add_tensor(spec: TensorSpec, quant) -> int:
        tensor = schema.TensorT()
        tensor.shape = list(spec.shape)
        tensor.type = _TYPE_CODES[spec.dtype]
        tensor.name = f"t{len(graph.tensors)}".encode()
        tensor.quantization = quant
        if spec.constant:
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(_constant_data(spec, rng), dtype=np.uint8)
            model.buffers.append(buffer)
            tensor.buffer = len(model.buffers) - 1
        graph.tensors.append(tensor)
        return len(graph.tensors) - 1

    for kernel in kernels:
        previous_output: int | None = None
        for step, part in enumerate((kernel, *kernel.fused)):
            op = schema.OperatorT()
            op.inputs, op.outputs = [], []
            for position, spec in enumerate(part.inputs):
                if step and previous_output is not None and not spec.constant and position == 0:
                    op.inputs.append(previous_output)
                    continue
                index = add_tensor(spec, _quantization(spec, part.op, "in", position, part, rng))
                op.inputs.append(index)
                if not spec.constant:
                    graph.inputs.append(index)
            for spec in part.outputs:
                op.outputs.append(add_tensor(spec, _quantization(spec, part.op, "out", 0, part, rng)))
            previous_output = op.outputs[0]
            int8 = any(t.dtype in ("int8", "uint8") for t in part.inputs + part.outputs)
            if part.op not in codes:
                codes[part.op] = len(model.operatorCodes)
                model.operatorCodes.append(_opcode(part.op, _INT8_VERSIONS.get(part.op, 1) if int8 else 1))
            op.opcodeIndex = codes[part.op]
            op.builtinOptionsType, op.builtinOptions = _options_object(part)
            graph.operators.append(op)
    consumed = {t for op in graph.operators for t in op.inputs}
    graph.outputs = [t for op in graph.operators for t in op.outputs if t not in consumed]
    model.subgraphs = [graph]
    return pack(model)
