"""Read a .tflite flatbuffer without an interpreter: ops, tensors, quantization and metadata.

The inspector, the Edge TPU and NNAPI checkers and the evaluators all need the same facts about a
file, and reading the flatbuffer directly is fast (no TensorFlow import) and works on files no
interpreter can run (Edge TPU custom ops).

Every file is verified before anything uses it. The Python flatbuffers runtime has no verifier: it
follows whatever offsets a file holds, so a damaged file used to surface as IndexError,
UnicodeDecodeError or silently wrong values in every consumer, and could crash the native LiteRT
interpreter. Here each offset, vector and string is bounds-checked as it is read, then every index
(opcodes, tensors, buffers, subgraphs) and every tensor's shape, data size and quantization is
checked the way LiteRT's interpreter builder checks them; a file with defects raises one
PipelineError line that names them.
"""
from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from flatbuffers.table import Table

from pipeline.core.errors import PipelineError, first_line
from pipeline.core.labels import parse_labels

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
_TFLITE_IDENTIFIER = b"TFL3"
_METADATA_IDENTIFIER = b"M001"
_SCHEMA_VERSION = 3
# Element types numpy holds natively; the remaining fixed-size ones only have a byte size.
_NUMPY_TYPES = {n: np.dtype(n) for n in ("float32", "float16", "float64", "int8", "int16", "int32", "int64", "uint8",
                                         "uint16", "uint32", "uint64", "bool", "complex64", "complex128")}
_ITEM_BYTES = {**{n: d.itemsize for n, d in _NUMPY_TYPES.items()}, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1}
_INT_TYPES = {schema.TensorType.INT32: np.dtype("<i4"), schema.TensorType.INT64: np.dtype("<i8")}
_MAX_TENSOR_BYTES = 2**63  # LiteRT's own overflow limit on a tensor's byte size
_MAX_ASSOCIATED_FILE = 16 * 2**20  # labels and vocabularies are kilobytes; more is a damaged or hostile zip
_MAX_ASSOCIATED_TOTAL = 64 * 2**20
_READ_BUDGET = 4  # elements read per byte of file: only overlapping (garbage) offsets read more
_DEFECTS_SHOWN = 3
# What a damaged flatbuffer raises from the generated accessors (builtin options, metadata).
_ACCESSOR_ERRORS = (IndexError, KeyError, AttributeError, struct.error, ValueError, TypeError, OverflowError,
                    RecursionError, MemoryError)

# Leading inputs (not omitted with -1) and outputs that LiteRT's kernels require, for the builtins the
# target checkers inspect: a file with fewer fails the interpreter's Prepare, and the checkers index them.
_REQUIRED_IO: dict[str, tuple[int, int]] = {
    **dict.fromkeys((
        "ABS", "AVERAGE_POOL_2D", "CAST", "CONCATENATION", "DEPTH_TO_SPACE", "DEQUANTIZE", "ELU", "EXP", "FLOOR",
        "GELU", "HARD_SWISH", "L2_NORMALIZATION", "L2_POOL_2D", "LEAKY_RELU", "LOCAL_RESPONSE_NORMALIZATION", "LOG",
        "LOGISTIC", "LOG_SOFTMAX", "LSTM", "MAX_POOL_2D", "PACK", "QUANTIZE", "RELU", "RELU6", "RELU_N1_TO_1",
        "RESHAPE", "RSQRT", "SIN", "SOFTMAX", "SPACE_TO_DEPTH", "SQRT", "SQUEEZE", "TANH",
        "UNIDIRECTIONAL_SEQUENCE_LSTM"), (1, 1)),
    **dict.fromkeys((
        "ADD", "ARG_MAX", "ARG_MIN", "CONV_2D", "DEPTHWISE_CONV_2D", "DIV", "EXPAND_DIMS", "FULLY_CONNECTED", "GATHER",
        "MAXIMUM", "MEAN", "MINIMUM", "MUL", "PAD", "PADV2", "POW", "PRELU", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD",
        "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "SPLIT", "SQUARED_DIFFERENCE", "SUB", "SUM", "TILE",
        "TRANSPOSE"), (2, 1)),
    **dict.fromkeys(("BATCH_TO_SPACE_ND", "SLICE", "SPACE_TO_BATCH_ND", "SPLIT_V", "TRANSPOSE_CONV"), (3, 1)),
    "STRIDED_SLICE": (4, 1),
}
# Inputs that hold axes, paddings or strides: LiteRT takes them as int32/int64 only.
_INDEX_INPUTS: dict[str, tuple[int, ...]] = {
    **dict.fromkeys(("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "PAD", "PADV2"), (1,)),
    "SPLIT": (0,),
    "STRIDED_SLICE": (1, 2, 3),
}
# (axis input, data input): a constant axis must lie in [-rank, rank) of the data, as LiteRT checks.
_AXIS_INPUTS: dict[str, tuple[int, int]] = {
    **dict.fromkeys(("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"), (1, 0)),
    "SPLIT": (0, 1),
}


@dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str  # "int8", "uint8", "float32", ... as the schema spells them, lower case
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    quantized_dimension: int = 0
    constant: bool = False  # backed by a non-empty buffer (weights, biases, constant inputs)
    data_bytes: int = 0
    shape_signature: tuple[int, ...] = ()

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def dynamic(self) -> bool:
        """True when a dimension is unknown until run time (-1 in the shape signature)."""
        return any(d < 0 for d in self.shape_signature)


@dataclass(frozen=True)
class Operator:
    index: int
    name: str  # builtin name as the schema spells it (CONV_2D), or the custom code (edgetpu-custom-op)
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    custom: bool
    version: int
    options: object | None = None  # the schema's builtin options object (e.g. Conv2DOptionsT)


@dataclass
class TFLiteModel:
    path: Path
    size_bytes: int
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    subgraph_count: int
    metadata_buffers: dict[str, bytes] = field(default_factory=dict)
    associated_files: dict[str, bytes] = field(default_factory=dict)
    constant_buffers: dict[int, bytes] = field(default_factory=dict, repr=False)  # tensor index -> raw data
    metadata: dict = field(default_factory=dict)  # TFLite metadata: name, description, labels, mean/std, files

    def op_histogram(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.operators:
            counts[op.name] = counts.get(op.name, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def tensor(self, index: int) -> Tensor:
        """Tensor ``index``; -1 (an omitted optional input) is an error, not Python's last element."""
        if not 0 <= index < len(self.tensors):
            raise PipelineError(f"{self.path}: an operator input refers to tensor {index}, which does not exist "
                                "(-1 marks an omitted optional input)")
        return self.tensors[index]

    def tensor_data(self, index: int) -> np.ndarray:
        """The constant values of tensor ``index`` (weights, biases), shaped and typed."""
        t = self.tensor(index)
        if index not in self.constant_buffers:
            raise ValueError(f"tensor {t.name!r} has no constant data")
        dtype = _NUMPY_TYPES.get(t.dtype)
        raw = self.constant_buffers[index]
        if dtype is None or len(raw) != dtype.itemsize * _element_count(t.shape):
            raise PipelineError(f"{self.path}: tensor {t.name!r} holds {t.dtype} data that is not a dense array "
                                "numpy can read (sparse, packed or exotic type)")
        return np.frombuffer(raw, dtype=dtype).reshape(t.shape)

    @property
    def input_tensors(self) -> list[Tensor]:
        return [self.tensors[i] for i in self.inputs]

    @property
    def output_tensors(self) -> list[Tensor]:
        return [self.tensors[i] for i in self.outputs]


def read_file(path: str | Path) -> bytes:
    """The bytes of a model file; a missing or unreadable one is a one-line PipelineError."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"model file not found: {path}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PipelineError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_model(path: str | Path) -> TFLiteModel:
    """Parse and verify ``path``; a missing, truncated, damaged or non-TFLite file raises a one-line PipelineError."""
    return parse_model(read_file(path), path)


def parse_model(data: bytes, path: str | Path) -> TFLiteModel:
    """Verify and parse the bytes of a .tflite file (``path`` names it in errors)."""
    path = Path(path)
    if len(data) < 8 or data[4:8] != _TFLITE_IDENTIFIER:
        raise PipelineError(f"{path} is not a TFLite model (no 'TFL3' flatbuffer identifier)")
    try:
        return _parse(data, path)
    except _ACCESSOR_ERRORS as exc:  # a check missed below must still end in one line, never a traceback
        raise PipelineError(f"{path} is damaged ({_name(exc)} while reading it)") from None


class _Flatbuffer:
    """Bounds-checked reads of a flatbuffer that record each defect instead of trusting the offsets."""

    def __init__(self, data: bytes):
        self.data = data
        self.defects: list[str] = []
        self.budget = _READ_BUDGET * len(data)  # bounds the work a file of overlapping offsets can cause

    def inside(self, pos: int, size: int, what: str) -> bool:
        if 0 <= pos and pos + size <= len(self.data):
            return True
        self.defects.append(f"{what} lies outside the file (byte {pos:,}, {size:,} bytes)")
        return False

    def spend(self, elements: int, what: str) -> bool:
        if elements <= self.budget:
            self.budget -= elements
            return True
        if self.budget >= 0:
            self.defects.append(f"{what}: the file's offsets overlap (it refers to far more data than it holds)")
            self.budget = -1
        return False

    def u32(self, pos: int) -> int:
        return struct.unpack_from("<I", self.data, pos)[0]

    def root(self) -> _Table:
        return _Table(self, self.u32(0), "")


class _Table:
    """One table whose vtable and fields lie inside the file; a damaged one reads as all defaults."""

    def __init__(self, fb: _Flatbuffer, pos: int, what: str):
        self.fb, self.pos, self.what = fb, pos, what
        self.slots: tuple[int, ...] = ()
        self.size = 0
        self.valid = False
        name = what or "root table"
        if not (fb.spend(1, name) and fb.inside(pos, 4, name)):
            return
        vtable = pos - struct.unpack_from("<i", fb.data, pos)[0]
        if not fb.inside(vtable, 4, f"{name} vtable"):
            return
        vsize, size = struct.unpack_from("<HH", fb.data, vtable)
        if vsize < 4 or vsize % 2 or size < 4:
            fb.defects.append(f"{name} has a malformed vtable ({vsize}-byte vtable, {size}-byte table)")
        elif fb.inside(vtable, vsize, f"{name} vtable") and fb.inside(pos, size, name):
            slots = struct.unpack_from(f"<{vsize // 2 - 2}H", fb.data, vtable + 4)
            if any(s >= size or 0 < s < 4 for s in slots):  # fields lie after the table's vtable offset
                fb.defects.append(f"{name} has a field outside its {size}-byte table")
            else:
                self.slots, self.size, self.valid = slots, size, True

    def child(self, name: str) -> str:
        return f"{self.what} {name}".strip()

    def _at(self, slot: int, width: int) -> int | None:
        """Position of field ``slot``'s inline value (None: absent, or damaged and recorded)."""
        offset = self.slots[slot] if slot < len(self.slots) else 0
        if not offset:
            return None
        if offset + width > self.size:
            self.fb.defects.append(f"{self.what or 'root table'} field {slot} runs past the end of its table")
            return None
        return self.pos + offset

    def scalar(self, slot: int, fmt: str, default: int | float = 0) -> int | float:
        at = self._at(slot, struct.calcsize(fmt))
        return default if at is None else struct.unpack_from("<" + fmt, self.fb.data, at)[0]

    def _vector(self, slot: int, width: int, what: str) -> tuple[int, int] | None:
        """(first element position, length) of the vector or string in ``slot``, checked to lie in the file."""
        at = self._at(slot, 4)
        if at is None:
            return None
        start = at + self.fb.u32(at)
        if not self.fb.inside(start, 4, what):
            return None
        count = self.fb.u32(start)
        if not (self.fb.inside(start + 4, count * width, what) and self.fb.spend(count, what)):
            return None
        return start + 4, count

    def numbers(self, slot: int, fmt: str, name: str) -> tuple:
        span = self._vector(slot, struct.calcsize(fmt), self.child(name))
        return () if span is None else struct.unpack_from(f"<{span[1]}{fmt}", self.fb.data, span[0])

    def raw(self, slot: int, name: str) -> bytes:
        span = self._vector(slot, 1, self.child(name))
        return b"" if span is None else self.fb.data[span[0] : span[0] + span[1]]

    def string(self, slot: int, name: str) -> str:
        what = self.child(name)
        span = self._vector(slot, 1, what)
        if span is None:
            return ""
        start, count = span
        if not self.fb.inside(start + count, 1, f"{what} terminator"):
            return ""
        if self.fb.data[start + count] != 0:
            self.fb.defects.append(f"{what} is not NUL-terminated")  # native code reads names up to a NUL
            return ""
        try:
            return self.fb.data[start : start + count].decode("utf-8")
        except UnicodeDecodeError:  # flatbuffer strings are UTF-8 by definition: these bytes are damaged
            self.fb.defects.append(f"{what} is not UTF-8 text")
            return ""

    def table(self, slot: int, name: str) -> _Table | None:
        at = self._at(slot, 4)
        return None if at is None else _Table(self.fb, at + self.fb.u32(at), self.child(name))

    def tables(self, slot: int, name: str) -> list[_Table]:
        span = self._vector(slot, 4, self.child(name))
        if span is None:
            return []
        start, count = span
        return [_Table(self.fb, start + 4 * i + self.fb.u32(start + 4 * i), self.child(f"{name} {i}"))
                for i in range(count)]


@dataclass
class _RawTensor:
    name: str
    shape: tuple[int, ...]
    type: int
    buffer: int
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    quantized_dimension: int
    sparse: bool
    shape_signature: tuple[int, ...]


@dataclass
class _RawOperator:
    opcode: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    intermediates: tuple[int, ...]
    options: object | None
    large_custom_options: tuple[int, int]  # (offset, size) of custom options stored after the flatbuffer


@dataclass
class _RawGraph:
    tensors: list[_RawTensor]
    operators: list[_RawOperator]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def _read_tensor(t: _Table) -> _RawTensor:
    q = t.table(4, "quantization")
    scale = zero_point = ()
    quantized_dimension = 0
    if q is not None:
        q.numbers(0, "f", "min")
        q.numbers(1, "f", "max")
        scale, zero_point = q.numbers(2, "f", "scale"), q.numbers(3, "q", "zero_point")
        details = q.table(5, "details")
        if details is not None:
            details.raw(0, "custom")
        quantized_dimension = int(q.scalar(6, "i"))
    sparsity = t.table(6, "sparsity")
    if sparsity is not None:
        sparsity.numbers(0, "i", "traversal_order")
        sparsity.numbers(1, "i", "block_map")
        for dim in sparsity.tables(2, "dim_metadata"):
            for type_slot in (2, 4):  # array_segments, array_indices: Int32/Uint16/Uint8Vector tables
                vector = dim.table(type_slot + 1, "index vector")
                if vector is not None:
                    vector.numbers(0, {1: "i", 2: "H"}.get(int(dim.scalar(type_slot, "B")), "B"), "values")
    for variant in t.tables(9, "variant_tensors"):
        variant.numbers(0, "i", "shape")
    return _RawTensor(
        name=t.string(3, "name"),
        shape=t.numbers(0, "i", "shape"),
        type=int(t.scalar(1, "b")),
        buffer=int(t.scalar(2, "I")),
        scale=scale,
        zero_point=zero_point,
        quantized_dimension=quantized_dimension,
        sparse=sparsity is not None,
        shape_signature=t.numbers(7, "i", "shape_signature"),
    )


def _read_operator(t: _Table, unpack_options: bool) -> _RawOperator:
    options = None
    table = t.table(4, "builtin_options")
    if table is not None and table.valid and unpack_options:
        try:
            options = schema.BuiltinOptionsCreator(int(t.scalar(3, "B")), Table(t.fb.data, table.pos))
        except _ACCESSOR_ERRORS as exc:
            t.fb.defects.append(f"{t.what} builtin options cannot be read ({_name(exc)})")
    t.table(12, "builtin_options_2")
    t.raw(5, "custom_options")
    t.raw(7, "mutating_variable_inputs")
    return _RawOperator(
        opcode=int(t.scalar(0, "I")),
        inputs=t.numbers(1, "i", "inputs"),
        outputs=t.numbers(2, "i", "outputs"),
        intermediates=t.numbers(8, "i", "intermediates"),
        options=options,
        large_custom_options=(int(t.scalar(9, "Q")), int(t.scalar(10, "Q"))),
    )


def _read_graph(t: _Table, main: bool) -> _RawGraph:
    t.string(4, "name")
    return _RawGraph(
        tensors=[_read_tensor(x) for x in t.tables(0, "tensor")],
        operators=[_read_operator(x, main) for x in t.tables(3, "operator")],
        inputs=t.numbers(1, "i", "inputs"),
        outputs=t.numbers(2, "i", "outputs"),
    )


def _read_opcode(t: _Table) -> tuple[str, bool, int]:
    """(name, custom, version) of one operator code."""
    builtin = max(int(t.scalar(0, "b")), int(t.scalar(3, "i")))
    custom_code = t.string(1, "custom_code")
    custom = builtin == schema.BuiltinOperator.CUSTOM
    name = (custom_code or "CUSTOM") if custom else _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")
    return name, custom, int(t.scalar(2, "i", 1))


def _read_signature(t: _Table) -> tuple[int, list[int]]:
    """(subgraph index, tensor indices) of one signature."""
    t.string(2, "signature_key")
    indices = []
    for m in t.tables(0, "inputs") + t.tables(1, "outputs"):
        m.string(0, "name")
        indices.append(int(m.scalar(1, "I")))
    return int(t.scalar(4, "I")), indices


def _parse(data: bytes, path: Path) -> TFLiteModel:
    """Read every table (reads whose value is dropped verify a field LiteRT reads), then check the indices."""
    fb = _Flatbuffer(data)
    root = fb.root()
    version = int(root.scalar(0, "I"))
    codes = [_read_opcode(t) for t in root.tables(1, "operator code")]
    graphs = [_read_graph(t, i == 0) for i, t in enumerate(root.tables(2, "subgraph"))]
    root.string(3, "description")
    buffers = [(t.raw(0, "data"), int(t.scalar(1, "Q")), int(t.scalar(2, "Q"))) for t in root.tables(4, "buffer")]
    root.numbers(5, "i", "metadata_buffer")
    metadata = [(t.string(0, "name"), int(t.scalar(1, "I"))) for t in root.tables(6, "metadata")]
    signatures = [_read_signature(t) for t in root.tables(7, "signature_def")]
    for t in root.tables(8, "external_buffer_group"):
        t.string(0, "name")
    for t in root.tables(9, "external_buffer"):
        t.string(4, "packing")
    if fb.defects:
        raise PipelineError(_summary(path, fb.defects))

    contents, defects = _buffer_contents(buffers, data)
    if version != _SCHEMA_VERSION:
        defects.append(f"schema version {version}, LiteRT reads version {_SCHEMA_VERSION}")
    if not graphs:
        defects.append("no subgraph")
    for index, graph in enumerate(graphs):
        defects += _graph_defects(graph, "" if index == 0 else f"subgraph {index} ", codes, contents, len(data))
    for key, (graph_index, tensor_indices) in enumerate(signatures):
        if graph_index >= len(graphs):
            defects.append(f"signature {key} names subgraph {graph_index} of {len(graphs)}")
        elif any(i >= len(graphs[graph_index].tensors) for i in tensor_indices):
            count = len(graphs[graph_index].tensors)
            defects.append(f"signature {key} names a tensor beyond subgraph {graph_index}'s {count}")
    for name, buffer in metadata:
        if buffer >= len(contents):
            defects.append(f"metadata {name!r} uses buffer {buffer} but the file has {len(contents)}")
    if defects:
        raise PipelineError(_summary(path, defects))

    metadata_buffers = {name: contents[buffer] for name, buffer in metadata}
    metadata_buffer = metadata_buffers.get("TFLITE_METADATA")
    if metadata_buffer and metadata_buffer[4:8] != _METADATA_IDENTIFIER:
        raise PipelineError(f"{path} is damaged: its TFLITE_METADATA buffer has no 'M001' metadata identifier")
    associated_files = _zip_members(data, path)
    try:
        parsed_metadata = _parse_metadata(metadata_buffer, associated_files)
    except _ACCESSOR_ERRORS as exc:
        raise PipelineError(f"{path} is damaged: its TFLITE_METADATA or labels cannot be read ({_name(exc)})") from None
    main = graphs[0]
    tensors, constant_buffers = [], {}
    for i, t in enumerate(main.tensors):
        raw = contents[t.buffer] if t.buffer else b""
        if raw:
            constant_buffers[i] = raw
        tensors.append(Tensor(
            index=i, name=t.name, shape=tuple(t.shape), dtype=_TYPE_NAMES[t.type], scale=tuple(t.scale),
            zero_point=tuple(t.zero_point), quantized_dimension=t.quantized_dimension, constant=bool(raw),
            data_bytes=len(raw), shape_signature=tuple(t.shape_signature)))
    operators = [
        Operator(index=k, name=codes[op.opcode][0], inputs=tuple(op.inputs), outputs=tuple(op.outputs),
                 custom=codes[op.opcode][1], version=codes[op.opcode][2], options=op.options)
        for k, op in enumerate(main.operators)
    ]
    return TFLiteModel(
        path=path,
        size_bytes=len(data),
        tensors=tensors,
        operators=operators,
        inputs=list(main.inputs),
        outputs=list(main.outputs),
        subgraph_count=len(graphs),
        metadata_buffers=metadata_buffers,
        associated_files=associated_files,
        constant_buffers=constant_buffers,
        metadata=parsed_metadata,
    )


def _summary(path: Path, defects: list[str]) -> str:
    """One line naming the first defects and counting the rest."""
    shown = "; ".join(defects[:_DEFECTS_SHOWN])
    more = f" (and {len(defects) - _DEFECTS_SHOWN} more)" if len(defects) > _DEFECTS_SHOWN else ""
    return f"{path} is damaged: {shown}{more}"


def _buffer_contents(buffers: list[tuple[bytes, int, int]], data: bytes) -> tuple[list[bytes], list[str]]:
    """Each buffer's bytes: inline, or at (offset, size) after the flatbuffer (models over 2 GB)."""
    contents, defects = [], []
    for i, (inline, offset, size) in enumerate(buffers):
        if not inline and offset > 1 and size:  # offset 1 is the converter's placeholder for "none"
            if offset + size > len(data):
                defects.append(f"buffer {i} ({size:,} bytes at byte {offset:,}) runs past the end of the file")
            else:
                inline = data[offset : offset + size]
        contents.append(inline)
    return contents, defects


def _graph_defects(graph: _RawGraph, prefix: str, codes: list[tuple[str, bool, int]], contents: list[bytes],
                   file_size: int) -> list[str]:
    """Index, shape, size and quantization defects of one subgraph, as LiteRT's interpreter builder finds them."""
    defects = []
    for i, t in enumerate(graph.tensors):
        defects += _tensor_defects(t, f"{prefix}tensor {i} ({t.name!r})", contents)
    count = len(graph.tensors)
    for name, indices in (("inputs", graph.inputs), ("outputs", graph.outputs)):
        bad = [i for i in indices if not 0 <= i < count]
        if bad:
            defects.append(f"{prefix}graph {name} name tensor {bad[0]} but the subgraph has {count}")
    for k, op in enumerate(graph.operators):
        defects += _operator_defects(op, f"{prefix}operator {k}", graph.tensors, codes, contents, file_size)
    return defects


def _tensor_defects(t: _RawTensor, where: str, contents: list[bytes]) -> list[str]:
    dtype = _TYPE_NAMES.get(t.type)
    if dtype is None:
        return [f"{where} has unknown element type {t.type}"]
    shape = list(t.shape)
    defects = []
    if any(d < 0 for d in shape):
        defects.append(f"{where} has a negative dimension in shape {shape}")
    if t.shape_signature and (len(t.shape_signature) != len(shape) or any(d < -1 for d in t.shape_signature)):
        defects.append(f"{where} has shape signature {list(t.shape_signature)} that does not fit shape {shape}")
    if t.buffer >= len(contents):
        defects.append(f"{where} uses buffer {t.buffer} but the file has {len(contents)}")
    elif dtype in _ITEM_BYTES and not defects:
        needed = _ITEM_BYTES[dtype] * _element_count(t.shape)
        held = len(contents[t.buffer]) if t.buffer else 0
        if needed >= _MAX_TENSOR_BYTES:
            defects.append(f"{where} has shape {shape}, over LiteRT's 2**63-byte tensor limit")
        elif held and not t.sparse and held != needed:
            defects.append(f"{where} holds {held:,} bytes of data but {dtype} {shape} takes {needed:,}")
    if t.scale:  # LiteRT's ParseQuantization rules, and zero points the element type can hold
        qdim = t.quantized_dimension
        if len(t.zero_point) != len(t.scale):
            defects.append(f"{where} has {len(t.scale)} scales but {len(t.zero_point)} zero points")
        if dtype in _NUMPY_TYPES and _NUMPY_TYPES[dtype].kind in "iu":
            info = np.iinfo(_NUMPY_TYPES[dtype])
            outside = [z for z in t.zero_point if not info.min <= z <= info.max]
            if outside:
                defects.append(f"{where} has zero point {outside[0]}, outside the {dtype} range")
        if qdim < 0 or (shape and qdim >= len(shape)):
            defects.append(f"{where} has quantized dimension {qdim} outside its shape {shape}")
        elif len(t.scale) != 1 and shape and len(t.scale) != shape[qdim]:
            defects.append(f"{where} has {len(t.scale)} scales for dimension {qdim} of shape {shape}")
    return defects


def _operator_defects(op: _RawOperator, where: str, tensors: list[_RawTensor], codes: list[tuple[str, bool, int]],
                      contents: list[bytes], file_size: int) -> list[str]:
    if op.opcode >= len(codes):
        return [f"{where} uses operator code {op.opcode} but the file has {len(codes)}"]
    name = codes[op.opcode][0]
    where = f"{where} ({name})"
    count = len(tensors)
    bad = [i for i in (*op.inputs, *op.intermediates) if not -1 <= i < count]
    bad += [i for i in op.outputs if not 0 <= i < count]  # only inputs may be omitted
    if bad:
        return [f"{where} refers to tensor {bad[0]} but the subgraph has {count}"]
    defects = []
    offset, size = op.large_custom_options
    if offset > 1 and size and offset + size > file_size:
        defects.append(f"{where} custom options ({size:,} bytes at byte {offset:,}) run past the end of the file")
    inputs_needed, outputs_needed = _REQUIRED_IO.get(name, (0, 0))
    if len(op.inputs) < inputs_needed or -1 in op.inputs[:inputs_needed] or len(op.outputs) < outputs_needed:
        return defects + [f"{where} has inputs {list(op.inputs)} and outputs {list(op.outputs)}; LiteRT needs "
                          f"{inputs_needed} inputs and {outputs_needed} output"]
    for k in _INDEX_INPUTS.get(name, ()):
        if k < len(op.inputs) and op.inputs[k] >= 0 and tensors[op.inputs[k]].type not in _INT_TYPES:
            dtype = _TYPE_NAMES.get(tensors[op.inputs[k]].type, "unknown")
            defects.append(f"{where} input {k} is {dtype}; LiteRT takes int32 or int64 there")
    if name in _AXIS_INPUTS and not defects:
        axis, data = (tensors[op.inputs[k]] for k in _AXIS_INPUTS[name])
        rank = len(data.shape)
        outside = [a for a in _int_values(axis, contents) if not -rank <= a < rank]
        if outside:
            defects.append(f"{where} axis {outside[0]} is outside the rank {rank} of its input")
    return defects


def _int_values(t: _RawTensor, contents: list[bytes]) -> list[int]:
    """The constant values of an int32/int64 tensor (empty when it is not a readable constant)."""
    raw = contents[t.buffer] if 0 < t.buffer < len(contents) else b""
    dtype = _INT_TYPES.get(t.type)
    if not raw or dtype is None or len(raw) % dtype.itemsize:
        return []
    return np.frombuffer(raw, dtype).tolist()


def _element_count(shape: tuple[int, ...]) -> int:
    """Product of ``shape``, capped at LiteRT's tensor byte limit (a damaged shape multiplies to huge numbers)."""
    count = 1
    for d in shape:
        count = min(count * d, _MAX_TENSOR_BYTES)
    return count


def _zip_members(data: bytes, path: Path) -> dict[str, bytes]:
    """Files the metadata writer packed after the flatbuffer as a zip (labels.txt, ...), each read with a cap.

    The zip's headers are as untrusted as the flatbuffer: a 2 MB model can hold a member that inflates
    to gigabytes, so declared sizes are checked and every read is bounded.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, EOFError, *_ACCESSOR_ERRORS):  # no zip, or one too damaged to list
        return {}
    members: dict[str, bytes] = {}
    total = 0
    with archive:
        for info in archive.infolist():
            what = f"{path}: associated file {info.filename!r} in the metadata zip"
            if info.file_size > _MAX_ASSOCIATED_FILE:
                raise PipelineError(f"{what} declares {info.file_size:,} bytes (limit {_MAX_ASSOCIATED_FILE:,}); "
                                    "the zip is damaged")
            try:
                with archive.open(info) as member:
                    content = member.read(_MAX_ASSOCIATED_FILE + 1)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError, zlib.error,
                    *_ACCESSOR_ERRORS) as exc:
                raise PipelineError(f"{what} cannot be read ({_name(exc)}: {first_line(exc)})") from None
            total += len(content)
            if len(content) > _MAX_ASSOCIATED_FILE or total > _MAX_ASSOCIATED_TOTAL:
                raise PipelineError(f"{what} inflates past the {_MAX_ASSOCIATED_FILE:,}-byte limit per file "
                                    f"({_MAX_ASSOCIATED_TOTAL:,} in all); the zip is damaged")
            members[info.filename] = content
    return members


def _parse_metadata(buffer: bytes | None, files: dict[str, bytes]) -> dict:
    if not buffer:
        return {}
    from tensorflow_lite_support.metadata import metadata_schema_py_generated as meta

    root = meta.ModelMetadataT.InitFromObj(meta.ModelMetadata.GetRootAsModelMetadata(buffer, 0))
    result: dict = {"name": _text(root.name), "description": _text(root.description), "files": sorted(files)}
    graph = (root.subgraphMetadata or [None])[0]
    if graph is None:
        return result
    for tensor_meta in graph.inputTensorMetadata or []:
        for unit in tensor_meta.processUnits or []:
            if unit.optionsType == meta.ProcessUnitOptions.NormalizationOptions:
                result["mean"] = [float(v) for v in unit.options.mean]
                result["std"] = [float(v) for v in unit.options.std]
    for tensor_meta in graph.outputTensorMetadata or []:
        for assoc in tensor_meta.associatedFiles or []:
            name = _text(assoc.name)
            if assoc.type == meta.AssociatedFileType.TENSOR_AXIS_LABELS and name in files:
                result["labels_file"] = name
                result["labels"] = parse_labels(files[name].decode("utf-8"))
    return result


def _text(value: bytes | str | None) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else (value or "")


def _name(exc: BaseException) -> str:
    return "struct.error" if isinstance(exc, struct.error) else type(exc).__name__
