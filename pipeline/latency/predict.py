"""Predicted latency of a model from a latency table: the invoke overhead once plus each kernel's time.

A model's operators become kernels (ops the table found fused are merged into the op before them); each
kernel is predicted by the table's per-op forest. Ops the table never measured are listed, not guessed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.core.errors import PipelineError
from pipeline.latency.kernels import Kernel, kernel_of, op_name, unpack
from pipeline.latency.table import TARGETS, LatencyTable


@dataclass
class KernelRow:
    """One kernel of a model: the operator indices it covers, a readable name and its description."""

    ops: tuple[int, ...]
    name: str
    kernel: Kernel
    ms: float | None = None


@dataclass
class Prediction:
    target: str
    threads: int
    overhead_ms: float
    rows: list[KernelRow]
    unmodelled: dict[str, int] = field(default_factory=dict)

    @property
    def latency_ms(self) -> float:
        return self.overhead_ms + sum(r.ms or 0.0 for r in self.rows)

    def to_json(self, top: int | None = None) -> dict:
        total = self.latency_ms
        rows = sorted(self.rows, key=lambda r: -(r.ms or 0.0)) if top else self.rows
        return {"target": self.target, "threads": self.threads, "predicted_ms": round(total, 4),
                "overhead_ms": round(self.overhead_ms, 4), "kernels": len(self.rows),
                "unmodelled_ops": self.unmodelled,
                "layers": [{"ops": list(r.ops), "op": "+".join([r.kernel.op, *(k.op for k in r.kernel.fused)]),
                            "name": r.name, "input": list(r.kernel.activations[0].shape) if r.kernel.activations
                            else [], "output": list(r.kernel.outputs[0].shape),
                            "ms": None if r.ms is None else round(r.ms, 4),
                            "share": None if r.ms is None or total <= 0 else round(r.ms / total, 4)}
                           for r in rows[:top]]}


def _readable(model, index: int) -> str:
    """The layer name the converter put into the op's output tensor (``net/layer/Op;...`` -> ``layer``)."""
    graph = model.subgraphs[0]
    op = graph.operators[index]
    if op.outputs is None or not len(op.outputs):
        return ""
    raw = graph.tensors[op.outputs[0]].name
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
    parts = [p for p in text.split(";")[0].split("/") if p]
    return parts[1] if len(parts) >= 3 else (parts[0] if parts else "")


def model_kernels(model, fusions: set[tuple[str, str]] = frozenset()) -> list[KernelRow]:
    """The main subgraph's operators as kernels, each op fused into its only producer when the pair is in
    ``fusions`` and nothing else reads the producer's output."""
    graph = model.subgraphs[0]
    readers: dict[int, list[int]] = {}
    for i, op in enumerate(graph.operators):
        for t in op.inputs if op.inputs is not None else ():
            readers.setdefault(int(t), []).append(i)
    outputs = set(graph.outputs if graph.outputs is not None else ())
    rows: list[KernelRow] = []
    row_of: dict[int, int] = {}
    for i, op in enumerate(graph.operators):
        kernel = kernel_of(model, i)
        producer = _single_producer(graph, op, i)
        if producer is not None and producer in row_of:
            row = rows[row_of[producer]]
            last = row.kernel.fused[-1].op if row.kernel.fused else row.kernel.op
            produced = graph.operators[producer].outputs[0]
            if (last, kernel.op) in fusions and readers.get(int(produced)) == [i] and produced not in outputs \
                    and row.ops[-1] == producer:
                row.kernel = Kernel(row.kernel.op, row.kernel.inputs, row.kernel.outputs, row.kernel.options,
                                    (*row.kernel.fused, kernel))
                row.ops = (*row.ops, i)
                row_of[i] = row_of[producer]
                continue
        row_of[i] = len(rows)
        rows.append(KernelRow((i,), _readable(model, i), kernel))
    return rows


def _single_producer(graph, op, index: int) -> int | None:
    first = op.inputs[0] if op.inputs is not None and len(op.inputs) else -1
    for j in range(index - 1, -1, -1):
        if first in (graph.operators[j].outputs if graph.operators[j].outputs is not None else ()):
            return j
    return None


def kernel_dtype(model) -> str:
    """The activation type of the model's compute ops ("int8", "uint8", "float32", ...)."""
    graph = model.subgraphs[0]
    for i, op in enumerate(graph.operators):
        if op_name(model, op) in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            return kernel_of(model, i).outputs[0].dtype
    return kernel_of(model, 0).outputs[0].dtype if graph.operators else "float32"


def check_table(table: LatencyTable, model, threads: int | None) -> None:
    """One line when the table cannot speak for this model: another thread count or activation type."""
    if threads is not None and threads != table.threads:
        raise PipelineError(f"the latency table was measured at {table.threads} thread(s), not {threads}; "
                            f"build one with `tflpipe latency build --threads {threads}`")
    dtype = kernel_dtype(model)
    wanted = TARGETS.get(table.target, "int8")
    if {dtype, wanted} != {"int8"} and not ({dtype, wanted} <= {"int8", "uint8"}) and dtype != wanted:
        raise PipelineError(f"the model computes in {dtype} but the table was built for {table.target}; "
                            f"build a {'cpu-float32' if dtype == 'float32' else 'cpu-int8'} table")


def predict_flatbuffer(data: bytes, table: LatencyTable, threads: int | None = None) -> Prediction:
    """Predicted latency of a (verified) flatbuffer with a per-kernel breakdown."""
    model = unpack(data)
    if not model.subgraphs or not model.subgraphs[0].operators:
        raise PipelineError("the model has no operators to predict")
    check_table(table, model, threads)
    rows = model_kernels(model, table.fusions)
    for row, ms in zip(rows, table.predict_kernels([r.kernel for r in rows])):
        row.ms = ms
    unmodelled: dict[str, int] = {}
    for row in rows:
        if row.ms is None:
            unmodelled[row.kernel.op] = unmodelled.get(row.kernel.op, 0) + 1
    return Prediction(table.target, table.threads, table.overhead_ms, rows, unmodelled)
