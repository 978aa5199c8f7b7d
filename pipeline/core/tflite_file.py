"""Read a .tflite flatbuffer without an interpreter: ops, tensors, quantization and metadata.

The inspector, the Edge TPU and NNAPI checkers and the evaluators all need the same facts about a
file, and reading the flatbuffer directly is fast (no TensorFlow import) and works on files no
interpreter can run (Edge TPU custom ops).
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from pipeline.core.errors import PipelineError
from pipeline.core.labels import parse_labels

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
_TFLITE_IDENTIFIER = b"TFL3"


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

    def op_histogram(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.operators:
            counts[op.name] = counts.get(op.name, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def tensor(self, index: int) -> Tensor:
        return self.tensors[index]

    def tensor_data(self, index: int) -> np.ndarray:
        """The constant values of tensor ``index`` (weights, biases), shaped and typed."""
        t = self.tensors[index]
        if index not in self.constant_buffers:
            raise ValueError(f"tensor {t.name!r} has no constant data")
        return np.frombuffer(self.constant_buffers[index], dtype=np.dtype(t.dtype)).reshape(t.shape)

    @property
    def input_tensors(self) -> list[Tensor]:
        return [self.tensors[i] for i in self.inputs]

    @property
    def output_tensors(self) -> list[Tensor]:
        return [self.tensors[i] for i in self.outputs]

    @cached_property
    def metadata(self) -> dict:
        """TFLite metadata as a plain dict: name, description, labels, mean/std, files (empty if none)."""
        return _parse_metadata(self.metadata_buffers.get("TFLITE_METADATA"), self.associated_files)


def read_model(path: str | Path) -> TFLiteModel:
    """Parse ``path``; a missing, truncated or non-TFLite file raises a one-line PipelineError."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"model file not found: {path}")
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != _TFLITE_IDENTIFIER:
        raise PipelineError(f"{path} is not a TFLite model (no 'TFL3' flatbuffer identifier)")
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:  # flatbuffers raises assorted errors on a damaged buffer
        raise PipelineError(f"{path} is truncated or corrupt ({type(exc).__name__})") from None
    if not model.subgraphs:
        raise PipelineError(f"{path} has no subgraph")
    buffers = model.buffers or []

    def buffer_bytes(index: int) -> bytes:
        if index >= len(buffers):
            raise PipelineError(f"{path} is truncated or corrupt (buffer {index} missing)")
        buf = buffers[index]
        if buf.data is not None and len(buf.data):
            return bytes(np.asarray(buf.data, dtype=np.uint8))
        if buf.offset and buf.size:  # large models keep buffers after the flatbuffer
            if buf.offset + buf.size > len(data):
                raise PipelineError(f"{path} is truncated (buffer {index} runs past the end of the file)")
            return data[buf.offset : buf.offset + buf.size]
        return b""

    graph = model.subgraphs[0]
    tensors = []
    constant_buffers = {}
    for i, t in enumerate(graph.tensors or []):
        q = t.quantization
        raw = buffer_bytes(t.buffer) if t.buffer else b""
        size = len(raw)
        if raw:
            constant_buffers[i] = raw
        tensors.append(
            Tensor(
                index=i,
                name=t.name.decode() if isinstance(t.name, bytes) else str(t.name),
                shape=tuple(int(d) for d in (t.shape if t.shape is not None else ())),
                dtype=_TYPE_NAMES.get(t.type, str(t.type)),
                scale=tuple(float(s) for s in (q.scale if q is not None and q.scale is not None else ())),
                zero_point=tuple(int(z) for z in (q.zeroPoint if q is not None and q.zeroPoint is not None else ())),
                quantized_dimension=int(q.quantizedDimension) if q is not None else 0,
                constant=size > 0,
                data_bytes=size,
                shape_signature=tuple(int(d) for d in (t.shapeSignature if t.shapeSignature is not None else ())),
            )
        )
    codes = model.operatorCodes or []
    operators = []
    for i, op in enumerate(graph.operators or []):
        code = codes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        custom = builtin == schema.BuiltinOperator.CUSTOM
        name = (code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode) if custom else _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")
        operators.append(
            Operator(
                index=i,
                name=name or "CUSTOM",
                inputs=tuple(int(x) for x in (op.inputs if op.inputs is not None else ())),
                outputs=tuple(int(x) for x in (op.outputs if op.outputs is not None else ())),
                custom=custom,
                version=int(code.version),
                options=op.builtinOptions,
            )
        )
    metadata_buffers = {}
    for m in model.metadata or []:
        key = m.name.decode() if isinstance(m.name, bytes) else str(m.name)
        metadata_buffers[key] = buffer_bytes(m.buffer)
    return TFLiteModel(
        path=path,
        size_bytes=len(data),
        tensors=tensors,
        operators=operators,
        inputs=[int(i) for i in graph.inputs],
        outputs=[int(i) for i in graph.outputs],
        subgraph_count=len(model.subgraphs),
        metadata_buffers=metadata_buffers,
        associated_files=_zip_members(data),
        constant_buffers=constant_buffers,
    )


def _zip_members(data: bytes) -> dict[str, bytes]:
    """Files the metadata writer packed after the flatbuffer as a zip (labels.txt, ...)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        return {}


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
    return value.decode() if isinstance(value, bytes) else (value or "")
