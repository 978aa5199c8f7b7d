"""Predicted latency as a function of channel counts: what NetAdapt and AMC ask the latency model.

The model's int8 flatbuffer is read once; every activation tensor is tied to the channel groups of the
Keras layer that made it (the converter names each output tensor ``net/layer/Op;net/other_layer/...``),
so a proposal "group g keeps c channels" re-predicts only the kernels whose tensors hold group g, with
their channel dimensions (and weight shapes) changed. Tensors no layer claims keep their channel count.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.latency.kernels import Kernel, TensorSpec, is_constant, unpack
from pipeline.latency.predict import check_table, model_kernels
from pipeline.latency.table import LatencyTable, packed_bytes

_PASS_THROUGH = {"ADD", "MUL", "SUB", "HARD_SWISH", "LOGISTIC", "RELU", "RELU6", "QUANTIZE", "DEQUANTIZE",
                 "MEAN", "AVERAGE_POOL_2D", "MAX_POOL_2D", "PAD", "DEPTHWISE_CONV_2D", "SOFTMAX", "TANH"}


def _layer_names(raw) -> list[str]:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
    names = []
    for part in text.split(";"):
        pieces = [p for p in part.split("/") if p]
        if len(pieces) >= 2:
            names.append(pieces[1])
    return names


@dataclass
class _Slot:
    """One kernel: its description, and the channel groups of its input and output tensors (None: fixed)."""

    kernel: Kernel
    inputs: tuple[tuple[int, ...] | None, ...]
    output: tuple[int, ...] | None


class ChannelLatency:
    """Predicted milliseconds of a model for any channel counts of its groups."""

    def __init__(self, table: LatencyTable, flatbuffer: bytes, compositions: dict[str, tuple[int, ...]],
                 sizes: dict[int, int], threads: int | None = None) -> None:
        model = unpack(flatbuffer)
        check_table(table, model, threads)
        self.table, self.sizes = table, dict(sizes)
        graph = model.subgraphs[0]
        tensor_groups: dict[int, tuple[int, ...] | None] = {}
        for op in graph.operators:
            for t in op.outputs if op.outputs is not None else ():
                tensor_groups[int(t)] = self._claim(graph, op, int(t), compositions, tensor_groups)
        self.slots: list[_Slot] = []
        for row in model_kernels(model, table.fusions):
            op = graph.operators[row.ops[0]]
            ins = tuple(tensor_groups.get(int(t)) for t in op.inputs if t >= 0 and not is_constant(model, graph.tensors[int(t)]))
            last = graph.operators[row.ops[-1]]
            self.slots.append(_Slot(row.kernel, ins, tensor_groups.get(int(last.outputs[0]))))
        # The whole net's packed weights decide how cold its large depthwise kernels run; a proposal's
        # changed kernels are predicted at the same working set (pruning moves it by a few %).
        self.working_set = float(sum(packed_bytes(s.kernel) for s in self.slots))
        self.base = table.predict_kernels([s.kernel for s in self.slots], self.working_set)
        self.unmodelled = sum(1 for ms in self.base if ms is None)

    def _claim(self, graph, op, tensor: int, compositions, known) -> tuple[int, ...] | None:
        channels = graph.tensors[tensor].shape[-1] if graph.tensors[tensor].shape is not None \
            and len(graph.tensors[tensor].shape) else None
        for name in _layer_names(graph.tensors[tensor].name):
            groups = compositions.get(name)
            if groups is not None and sum(self.sizes[g] for g in groups) == channels:
                return groups
        first = int(op.inputs[0]) if op.inputs is not None and len(op.inputs) else -1
        inherited = known.get(first)
        if inherited is not None and sum(self.sizes[g] for g in inherited) == channels:
            return inherited
        return None

    def _resized(self, slot: _Slot, sizes: dict[int, int]) -> Kernel:
        def count(groups):
            return None if groups is None else sum(sizes[g] for g in groups)

        new_in = [count(g) for g in slot.inputs]
        new_out = count(slot.output)
        kernel = slot.kernel
        acts, position = [], 0
        for spec in kernel.inputs:
            if spec.constant:
                acts.append(spec)
                continue
            value = new_in[position] if position < len(new_in) else None
            position += 1
            acts.append(_with_channels(spec, value))
        inputs = list(acts)
        if kernel.op in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D") and len(inputs) >= 2:
            w = list(inputs[1].shape)
            cin = new_in[0] if new_in and new_in[0] is not None else None
            cout = new_out
            if kernel.op == "CONV_2D":
                w = [cout or w[0], w[1], w[2], cin or w[3]]
            elif kernel.op == "FULLY_CONNECTED":
                w = [cout or w[0], cin or w[1]]
            else:
                w = [w[0], w[1], w[2], cout or cin or w[3]]
            inputs[1] = TensorSpec(tuple(w), inputs[1].dtype, True)
            if len(inputs) > 2 and inputs[2].constant:
                inputs[2] = TensorSpec((w[0] if kernel.op != "DEPTHWISE_CONV_2D" else w[3],), inputs[2].dtype, True)
        outputs = tuple(_with_channels(o, new_out) for o in kernel.outputs) if len(kernel.outputs) == 1 \
            else kernel.outputs
        return Kernel(kernel.op, tuple(inputs), outputs, kernel.options, kernel.fused)

    def _touches(self, slot: _Slot, groups: set[int]) -> bool:
        return any(g in groups for gs in (*slot.inputs, slot.output) if gs for g in gs)

    def predict(self, sizes: dict[int, int] | None = None) -> float:
        """Predicted milliseconds with ``sizes`` (group -> channels; missing groups keep their size)."""
        return self.predict_many([sizes or {}])[0]

    def predict_many(self, proposals: list[dict[int, int]]) -> list[float]:
        """Predicted milliseconds of several proposals, the changed kernels predicted in one batch."""
        changed: list[Kernel] = []
        where: list[tuple[int, int]] = []
        totals = []
        for number, proposal in enumerate(proposals):
            sizes = {**self.sizes, **proposal}
            groups = {g for g, c in proposal.items() if c != self.sizes.get(g)}
            total = self.table.overhead_ms
            for index, slot in enumerate(self.slots):
                if groups and self._touches(slot, groups):
                    changed.append(self._resized(slot, sizes))
                    where.append((number, index))
                else:
                    total += self.base[index] or 0.0
            totals.append(total)
        for (number, _), ms in zip(where, self.table.predict_kernels(changed, self.working_set)):
            totals[number] += ms or 0.0
        return totals


def _with_channels(spec: TensorSpec, channels: int | None) -> TensorSpec:
    if channels is None or spec.constant or not spec.shape:
        return spec
    return TensorSpec((*spec.shape[:-1], channels), spec.dtype, spec.constant, spec.values)

