"""Runtime memory of a .tflite file in LiteRT: the planned activation arena, the weights, and what XNNPACK adds.

Boards and phones run out of RAM before they run out of time, so the pipeline predicts the memory an
interpreter needs from the file alone and checks the prediction against a measured interpreter.

Two pictures:

- ``plan_arena``: LiteRT's own planner on the whole graph, as it runs without a delegate. Tensors live
  from the op that writes them (graph inputs: from the start) to the last op that reads them (graph
  outputs: to the end); offsets go as LiteRT's ``ArenaPlanner`` + ``SimpleMemoryArena`` place them
  (whole-run tensors first, then largest first, each in the smallest gap among the tensors alive at
  the same time, 64-byte aligned).
- ``predict_runtime``: what the interpreter really allocates with XNNPACK on, LiteRT's default. The
  delegate takes the ops it supports (partitioned as LiteRT partitions them); the TFLite arena then
  holds only the tensors at partition boundaries and those of the ops left to LiteRT. XNNPACK repacks
  conv, depthwise and fully-connected weights into its own buffers (output channels tiled, input
  channels rounded up, an int32 bias and a float scale per channel), keeps an indirection buffer of
  input-row pointers per spatial convolution, and plans its internal activations with its own
  greedy-by-size planner (tensor sizes rounded to 16 then 64 bytes, elementwise ops in place).
  A fixed runtime cost (interpreter and delegate objects), a cost per LiteRT operator and one per
  XNNPACK operator (a split or concatenation is one copy operator per output or input), measured on
  this machine, complete it. The flatbuffer itself is not counted in the growth: the caller holds
  its bytes before the interpreter exists (``total_bytes`` adds it).

``measure_peak`` measures the growth of a fresh child process's resident anonymous memory (RssAnon) from
just before the interpreter is created to after a few invokes.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError, first_line
from pipeline.core.tflite_file import Operator, TFLiteModel, parse_model, read_file

ARENA_ALIGNMENT = 64  # LiteRT's kDefaultTensorAlignment
XNN_EXTRA_BYTES = 16  # XNNPACK may read this far past a tensor; its planner rounds sizes up to it
XNN_ALIGNMENT = 64  # XNNPACK's allocation alignment on x86-64
POINTER_BYTES = 8
# XNNPACK microkernel tiling on x86-64 with AVX-512 VNNI (this machine): int8 GEMM 7x16c8, depthwise 32
# channels per tile, float GEMM 16 columns. Other CPUs tile differently; the error is a few % of weights.
GEMM_MR, GEMM_NR, GEMM_KR = 7, 16, 8
FLOAT_GEMM_NR = 16
DWCONV_CHANNEL_TILE, FLOAT_DWCONV_CHANNEL_TILE = 32, 16
DWCONV_PRIMARY_TILES = (9, 25)  # unipass kernels; float ones larger run multipass with 25-tap steps
# Fitted on this machine (benchmarks/memory.py: first all 34 zoo files within 10 %, then all 41 files, then
# minimax relative error on the zoo) against the anonymous memory the interpreter allocates: LiteRT's and
# XNNPACK's fixed objects, per LiteRT operator its node, and per XNNPACK operator its operator object, setup
# and subgraph records. XNNPACK runs a split as one copy operator per output and a concatenation as one per
# input (a malloc trace of ShuffleNet v1 counted 486 XNNPACK operator objects for its 282 delegated ops, of
# which 46 three-way splits and 49 concatenations), so those ops cost several. Code pages are not counted
# (see _measure_child). Each extra thread adds a stack of which little is touched (0-70 KB measured).
RUNTIME_FIXED_BYTES = 2_500
PER_OPERATOR_BYTES = 750
PER_XNNPACK_OPERATOR_BYTES = 2_250
PER_THREAD_BYTES = 30_000
MEASURE_INVOKES = 3
MEASURE_TIMEOUT_S = 300
_REPO_ROOT = Path(__file__).resolve().parents[2]

# Ops XNNPACK's LiteRT delegate takes, by the element type of their first input. Quantized: int8/uint8.
_XNNPACK_FLOAT = frozenset((
    "ABS", "ADD", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CEIL", "CONCATENATION", "CONV_2D", "DEPTH_TO_SPACE",
    "DEPTHWISE_CONV_2D", "DIV", "ELU", "EXP", "FLOOR", "FULLY_CONNECTED", "GELU", "HARD_SWISH", "LEAKY_RELU", "LOG",
    "LOGISTIC", "MAX_POOL_2D", "MAXIMUM", "MEAN", "MINIMUM", "MUL", "NEG", "PAD", "PRELU", "QUANTIZE", "RELU",
    "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "ROUND", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH",
    "SPLIT", "SQRT", "SQUARE", "SQUARED_DIFFERENCE", "STRIDED_SLICE", "SUB", "TANH", "TRANSPOSE", "TRANSPOSE_CONV"))
# Checked against the interpreter's delegate nodes on the zoo: int8 HARD_SWISH, AVERAGE_POOL_2D and RELU stay on
# LiteRT's kernels, and a quantized CONCATENATION only goes to XNNPACK when all its inputs share its quantization.
_XNNPACK_QUANTIZED = frozenset((
    "ADD", "CONCATENATION", "CONV_2D", "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "ELU",
    "FULLY_CONNECTED", "LEAKY_RELU", "LOGISTIC", "MAX_POOL_2D", "MEAN", "MUL", "PAD", "QUANTIZE",
    "RESHAPE", "RESIZE_BILINEAR", "SLICE", "SPACE_TO_DEPTH", "SPLIT", "STRIDED_SLICE", "SUB", "TANH", "TRANSPOSE",
    "TRANSPOSE_CONV"))
_SPLIT_MAX_OUTPUTS = 4  # XNNPACK's even split has 2-, 3- and 4-way variants
# XNNPACK computes these in place when the input dies there and the output has one reader.
_XNNPACK_IN_PLACE = frozenset((
    "ABS", "ADD", "CEIL", "DEQUANTIZE", "DIV", "ELU", "EXP", "FLOOR", "GELU", "HARD_SWISH", "LEAKY_RELU", "LOG",
    "LOGISTIC", "MAXIMUM", "MINIMUM", "MUL", "NEG", "QUANTIZE", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "ROUND",
    "RSQRT", "SOFTMAX", "SQRT", "SQUARE", "SQUARED_DIFFERENCE", "SUB", "TANH"))
_ITEM_BYTES = {"bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1, "int4": 1, "string": 1, "resource": 0,
               "variant": 0}


@dataclass(frozen=True)
class TensorPlan:
    """One planned tensor: its bytes, the ops between which it lives, and its arena offset."""

    index: int
    name: str
    bytes: int
    first_op: int
    last_op: int
    offset: int


@dataclass
class ArenaPlan:
    """LiteRT's arena plan for a graph without a delegate, and the other memory the interpreter holds."""

    arena_bytes: int  # max offset + size over the planned tensors, temporaries included
    weights_bytes: int  # constant buffers (the flatbuffer's weights, read in place)
    scratch_bytes: int  # largest kernel temporary (im2col), planned inside the arena
    persistent_bytes: int  # variable tensors (LSTM state), allocated for the interpreter's lifetime
    tensors: list[TensorPlan] = field(default_factory=list)

    @property
    def peak_bytes(self) -> int:
        return self.arena_bytes + self.persistent_bytes + self.weights_bytes


@dataclass
class RuntimePrediction:
    """What LiteRT with XNNPACK allocates for one file, part by part (bytes)."""

    tflite_arena_bytes: int  # tensors at delegate boundaries and of the ops LiteRT runs itself
    xnnpack_workspace_bytes: int  # XNNPACK's planned internal activations
    packed_weights_bytes: int  # conv/depthwise/FC weights repacked by XNNPACK, with bias and scales
    indirection_bytes: int  # per spatial convolution: pointers to input rows
    overhead_bytes: int  # fixed runtime cost, per-operator objects, threads
    file_bytes: int  # the flatbuffer, held by the caller (not part of the growth)
    delegated_ops: int
    cpu_ops: list[str]  # ops LiteRT runs without XNNPACK
    partitions: int

    @property
    def growth_bytes(self) -> int:
        """Memory the interpreter adds to a process already holding the file's bytes."""
        return (self.tflite_arena_bytes + self.xnnpack_workspace_bytes + self.packed_weights_bytes
                + self.indirection_bytes + self.overhead_bytes)

    @property
    def total_bytes(self) -> int:
        return self.growth_bytes + self.file_bytes


def tensor_bytes(model: TFLiteModel, index: int) -> int:
    """Bytes of tensor ``index`` as the interpreter allocates it (static shape, batch as in the file)."""
    t = model.tensors[index]
    size = _ITEM_BYTES.get(t.dtype)
    if size is None:
        size = np.dtype(t.dtype).itemsize
    return size * int(np.prod(t.shape, dtype=np.int64))


def _align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def _lifetimes(model: TFLiteModel, ops: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> dict[int, list[int]]:
    """tensor -> [first op, last op] over ``ops`` ((inputs, outputs) in execution order), as ArenaPlanner sees it."""
    end = max(len(ops) - 1, 0)
    live: dict[int, list[int]] = {}
    for i in model.inputs:
        live[i] = [0, end]
    for k, (inputs, outputs) in enumerate(ops):
        for i in outputs:
            live.setdefault(i, [k, k])
        for i in inputs:
            if i >= 0 and not model.tensors[i].constant and i in live:
                live[i][1] = max(live[i][1], k)
    for i in model.outputs:
        if i in live:
            live[i][1] = end
    return live


def greedy_offsets(records: list[tuple[int, int, int, int]], alignment: int, whole_run: set[int] | None = None,
                   ) -> tuple[dict[int, int], int]:
    """Offsets of (key, bytes, first, last) records as SimpleMemoryArena places them; (offsets, arena size).

    Whole-run records go first (by key), the rest largest first, ties by first use; each takes the
    smallest aligned gap among the records placed so far whose lifetimes overlap its own.
    """
    whole_run = whole_run or set()
    order = sorted(records, key=lambda r: (r[0] not in whole_run, r[0] if r[0] in whole_run else 0, -r[1], r[2]))
    placed: list[tuple[int, int, int, int]] = []  # (offset, bytes, first, last), kept sorted by offset
    offsets: dict[int, int] = {}
    arena = 0
    for key, size, first, last in order:
        if size == 0:
            offsets[key] = 0
            continue
        best, best_gap, cursor = None, None, 0
        for offset, other, o_first, o_last in placed:
            if o_last < first or o_first > last:
                continue
            start = _align(cursor, alignment)
            if start + size <= offset and (best_gap is None or offset - start < best_gap):
                best, best_gap = start, offset - start
            cursor = max(cursor, offset + other)
        if best is None:
            best = _align(cursor, alignment)
        offsets[key] = best
        placed.append((best, size, first, last))
        placed.sort()
        arena = max(arena, best + size)
    return offsets, arena


def _im2col_bytes(model: TFLiteModel, op: Operator) -> int:
    """LiteRT's optimized CONV_2D temporary: one row of kernel-sized patches per output pixel (not for 1x1)."""
    if op.name != "CONV_2D" or len(op.inputs) < 2:
        return 0
    data, weights, out = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    if weights.rank != 4 or out.rank != 4:
        return 0
    _, kh, kw, cin = weights.shape
    strides = (getattr(op.options, "strideH", 1), getattr(op.options, "strideW", 1))
    if kh == kw == 1 and strides == (1, 1):
        return 0
    return int(np.prod(out.shape[:3])) * kh * kw * cin * tensor_bytes(model, data.index) // max(
        int(np.prod(data.shape)), 1)


def plan_arena(model: TFLiteModel) -> ArenaPlan:
    """LiteRT's arena plan for the main subgraph run without a delegate (the CPU kernels' own memory)."""
    ops = [(op.inputs, op.outputs) for op in model.operators]
    live = _lifetimes(model, ops)
    # Read but written by no op and not a graph input: variable tensors (LSTM state), kept for the interpreter's life.
    variables = {i for op in model.operators for i in op.inputs
                 if i >= 0 and not model.tensors[i].constant and i not in live}
    records = [(i, tensor_bytes(model, i), first, last) for i, (first, last) in live.items()
               if not model.tensors[i].constant]
    scratch = {len(model.tensors) + k: _im2col_bytes(model, op) for k, op in enumerate(model.operators)}
    records += [(key, size, key - len(model.tensors), key - len(model.tensors)) for key, size in scratch.items() if size]
    end = max(len(ops) - 1, 0)
    whole = {i for i, (first, last) in live.items() if first == 0 and last == end and i in model.inputs}
    offsets, arena = greedy_offsets(records, ARENA_ALIGNMENT, whole)
    plans = [TensorPlan(i, model.tensors[i].name, size, first, last, offsets[i])
             for i, size, first, last in records if i < len(model.tensors)]
    return ArenaPlan(
        arena_bytes=arena,
        weights_bytes=sum(t.data_bytes for t in model.tensors if t.constant),
        scratch_bytes=max(scratch.values(), default=0),
        persistent_bytes=sum(tensor_bytes(model, i) for i in variables),
        tensors=sorted(plans, key=lambda p: p.offset),
    )


def xnnpack_takes(model: TFLiteModel, op: Operator) -> bool:
    """Whether LiteRT's XNNPACK delegate runs ``op``, by op and element types (a -1 batch in the signature is
    fixed to the file's shape when tensors are allocated, so XNNPACK takes those ops too)."""
    data = [i for i in op.inputs if i >= 0 and not model.tensors[i].constant]  # SPLIT's axis comes first
    if op.custom or not data or not op.outputs:
        return False
    source, result = model.tensors[data[0]], model.tensors[op.outputs[0]]
    quantized = ("int8", "uint8")
    if op.name == "SPLIT" and len(op.outputs) > _SPLIT_MAX_OUTPUTS:
        return False
    if op.name == "CONCATENATION" and source.dtype in quantized and any(
            (model.tensors[i].scale, model.tensors[i].zero_point) != (result.scale, result.zero_point) for i in data):
        return False
    if op.name == "QUANTIZE":  # float to integer, or a requantization within one integer type
        return source.dtype == "float32" or source.dtype == result.dtype
    if op.name == "DEQUANTIZE":
        return source.dtype in quantized + ("float16",) and result.dtype == "float32"
    if source.dtype == "float32":
        return op.name in _XNNPACK_FLOAT
    return source.dtype in quantized and op.name in _XNNPACK_QUANTIZED


def partitions(model: TFLiteModel, delegated: list[bool]) -> list[list[int]]:
    """Group ops into alternating delegated / CPU subsets as LiteRT does: each takes every op of its kind
    whose inputs are ready, repeatedly, before the other kind gets a turn."""
    producers = {i: k for k, op in enumerate(model.operators) for i in op.outputs}
    remaining = list(range(len(model.operators)))
    done: set[int] = set()
    groups: list[list[int]] = []
    kind = delegated[0] if delegated else False
    while remaining:
        group: list[int] = []
        progress = True
        while progress:
            progress = False
            for k in list(remaining):
                ready = all(i < 0 or i not in producers or producers[i] in done for i in model.operators[k].inputs)
                if delegated[k] == kind and ready:
                    group.append(k)
                    done.add(k)
                    remaining.remove(k)
                    progress = True
        if group:
            groups.append(group)
        kind = not kind
    return groups


def _packed_weights(model: TFLiteModel, op: Operator) -> int:
    """Bytes XNNPACK packs ``op``'s weights into: tiled output channels, padded inputs, bias and scales."""
    if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"):
        return 0
    weight_slot = 1
    if len(op.inputs) <= weight_slot or op.inputs[weight_slot] < 0:
        return 0
    weights = model.tensors[op.inputs[weight_slot]]
    source = model.tensors[op.inputs[0]]
    if source.dtype == "float32":
        item, extra = 4, 4  # float weights and bias
        nr, kr, channel_tile = FLOAT_GEMM_NR, 1, FLOAT_DWCONV_CHANNEL_TILE
    else:
        per_channel_scale = 4 if source.dtype == "int8" else 0  # qc8w packs a float scale per channel
        item, extra = 1, 4 + per_channel_scale
        nr, kr, channel_tile = GEMM_NR, GEMM_KR, DWCONV_CHANNEL_TILE
    shape = weights.shape
    if op.name == "DEPTHWISE_CONV_2D" and len(shape) == 4:
        taps, channels = shape[1] * shape[2], shape[3]
        if taps > DWCONV_PRIMARY_TILES[-1] and source.dtype != "float32":
            # Past the depthwise microkernels XNNPACK packs each channel as a GEMM tile of 16 outputs by 8
            # inputs (measured: 6.2 MB for one 7x7 int8 layer of 960 channels, 48 MB for MobileNet v2's shape
            # with every kernel 7x7 at 32 px, against 2.9 MB predicted by the multipass layout; issue 15).
            return channels * GEMM_NR * (GEMM_KR * taps * item + extra)
        tile = next((t for t in DWCONV_PRIMARY_TILES if t >= taps), _align(taps, DWCONV_PRIMARY_TILES[-1]))
        return _align(channels, channel_tile) * (tile * item + extra)
    if op.name == "FULLY_CONNECTED" and len(shape) == 2:
        cout, cin = shape
        return _align(cout, nr) * (_align(cin, kr) * item + extra)
    if len(shape) == 4:  # CONV_2D / TRANSPOSE_CONV: (cout, kh, kw, cin)
        cout, kh, kw, cin = shape
        return _align(cout, nr) * (kh * kw * _align(cin, kr) * item + extra)
    return 0


def _indirection(model: TFLiteModel, op: Operator) -> int:
    """Bytes of XNNPACK's indirection buffer for a spatial convolution (1x1 stride-1 convs run as plain GEMM)."""
    if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D") or len(op.inputs) < 2:
        return 0
    weights, out = model.tensors[op.inputs[1]], model.tensors[op.outputs[0]]
    if weights.rank != 4 or out.rank != 4:
        return 0
    kh, kw = weights.shape[1], weights.shape[2]
    sh, sw = getattr(op.options, "strideH", 1), getattr(op.options, "strideW", 1)
    dilation_w = getattr(op.options, "dilationWFactor", 1)
    oh, ow = out.shape[1], out.shape[2]
    if op.name == "CONV_2D":
        if kh == kw == 1 and sh == sw == 1:
            return 0
        return POINTER_BYTES * kh * kw * _align(oh * ow, GEMM_MR)
    taps = kh * kw
    tile = next((t for t in DWCONV_PRIMARY_TILES if t >= taps), taps)
    step_width = min(sw, kw) if dilation_w == 1 else kw
    step_height = taps + (ow - 1) * step_width * kh
    return _align(POINTER_BYTES * (oh * step_height + tile - taps), XNN_ALIGNMENT)


def xnnpack_operators(model: TFLiteModel, op: Operator) -> int:
    """XNNPACK operators a delegated op becomes: a copy per split output and per concatenated input."""
    if op.name == "SPLIT":
        return len(op.outputs)
    if op.name == "CONCATENATION":
        return sum(1 for i in op.inputs if i >= 0)
    return 1


def _xnnpack_workspace(model: TFLiteModel, group: list[int], internal: set[int]) -> int:
    """XNNPACK's plan for one partition's internal values: rounded sizes, in-place elementwise ops, greedy by size."""
    ops = [model.operators[k] for k in group]
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    readers: dict[int, int] = {}
    for n, op in enumerate(ops):
        for i in (*op.inputs, *op.outputs):
            if i in internal:
                first.setdefault(i, n)
                last[i] = n
        for i in op.inputs:
            readers[i] = readers.get(i, 0) + 1
    sizes = {i: _align(_align(tensor_bytes(model, i), XNN_EXTRA_BYTES), XNN_ALIGNMENT) for i in first}
    for n, op in enumerate(ops):
        if op.name not in _XNNPACK_IN_PLACE or op.outputs[0] not in internal or readers.get(op.outputs[0], 0) != 1:
            continue
        source = next((i for i in op.inputs if i in internal and last.get(i) == n and sizes.get(i)), None)
        if source is not None and tensor_bytes(model, source) == tensor_bytes(model, op.outputs[0]):
            out = op.outputs[0]
            last[source] = last[out]
            sizes[out] = 0
    records = [(i, size, first[i], last[i]) for i, size in sizes.items() if size]
    _, arena = greedy_offsets(records, 1)
    return arena + 2 * XNN_EXTRA_BYTES if records else 0


def predict_runtime(model: TFLiteModel, threads: int = 1) -> RuntimePrediction:
    """Predicted memory of LiteRT with the XNNPACK delegate (its default) for ``model``, part by part."""
    if threads < 1:
        raise PipelineError(f"--threads must be at least 1, got {threads}")
    delegated = [xnnpack_takes(model, op) for op in model.operators]
    groups = partitions(model, delegated)
    readers: dict[int, set[int]] = {}
    for k, op in enumerate(model.operators):
        for i in op.inputs:
            readers.setdefault(i, set()).add(k)
    graph_io = set(model.inputs) | set(model.outputs)
    nodes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []  # the execution plan LiteRT's arena sees
    workspace = 0
    for group in groups:
        if not delegated[group[0]]:
            nodes += [(model.operators[k].inputs, model.operators[k].outputs) for k in group]
            continue
        members = set(group)
        produced = {i for k in group for i in model.operators[k].outputs}
        consumed = {i for k in group for i in model.operators[k].inputs if i >= 0 and not model.tensors[i].constant}
        outputs = {i for i in produced if i in graph_io or readers.get(i, set()) - members}
        inputs = consumed - produced
        nodes.append((tuple(sorted(inputs)), tuple(sorted(outputs))))
        workspace = max(workspace, _xnnpack_workspace(model, group, produced - outputs))
    live = _lifetimes(model, nodes)
    records = [(i, tensor_bytes(model, i), first, last) for i, (first, last) in live.items()]
    cpu = [op for op, on in zip(model.operators, delegated) if not on]
    scratch_key = len(model.tensors)
    for n, (inputs, outputs) in enumerate(nodes):
        for op in cpu:
            if op.outputs == outputs and op.inputs == inputs and _im2col_bytes(model, op):
                records.append((scratch_key, _im2col_bytes(model, op), n, n))
                scratch_key += 1
    whole = {i for i in model.inputs if i in live}
    _, arena = greedy_offsets(records, ARENA_ALIGNMENT, whole)
    taken = [op for op, on in zip(model.operators, delegated) if on]
    return RuntimePrediction(
        tflite_arena_bytes=arena + ARENA_ALIGNMENT if records else 0,
        xnnpack_workspace_bytes=workspace,
        packed_weights_bytes=sum(_packed_weights(model, op) for op in taken),
        indirection_bytes=sum(_indirection(model, op) for op in taken),
        overhead_bytes=RUNTIME_FIXED_BYTES + PER_OPERATOR_BYTES * len(model.operators)
        + PER_XNNPACK_OPERATOR_BYTES * sum(xnnpack_operators(model, op) for op in taken)
        + PER_THREAD_BYTES * (threads - 1),
        file_bytes=model.size_bytes,
        delegated_ops=len(taken),
        cpu_ops=[op.name for op in cpu],
        partitions=sum(1 for g in groups if delegated[g[0]]),
    )


def measure_peak(path: str | Path, threads: int = 1, xnnpack: bool = True) -> dict:
    """Measured growth of resident anonymous memory (RssAnon, its largest sample) when LiteRT loads, allocates
    and runs ``path``.

    Runs in a fresh child process so nothing else this process did counts: the child imports LiteRT
    and numpy and reads the file, resets its peak to the current resident size, then creates the
    interpreter, allocates tensors and invokes a few times, reading /proc/self/status at each step.
    """
    if threads < 1:
        raise PipelineError(f"--threads must be at least 1, got {threads}")
    path = Path(path)
    parse_model(read_file(path), path)  # a damaged file is one line here, never handed to native code
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-c", "from pipeline.latency.memory import _measure_child; _measure_child()",
               str(path), str(threads), "1" if xnnpack else "0"]
    try:
        child = subprocess.run(command, capture_output=True, timeout=MEASURE_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise PipelineError(f"measuring {path.name} took over {MEASURE_TIMEOUT_S} s; the model is far too large "
                            "for this machine") from None
    lines = child.stdout.decode(errors="replace").strip().splitlines()
    if child.returncode or not lines:
        reason = lines[-1] if lines else f"exit status {child.returncode}"
        raise PipelineError(f"LiteRT cannot load and run {path.name} to measure its memory: {reason}")
    return json.loads(lines[-1])


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {key: int(value) * 1024
            for key, value in re.findall(r"^(VmHWM|VmRSS|RssAnon|RssFile):\s+(\d+) kB", text, re.M)}


def _measure_child() -> None:
    """The child side of ``measure_peak``: argv is path, threads, xnnpack (1/0); one JSON line on stdout."""
    import gc

    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from pipeline.core.litert import random_input

    path, threads, xnnpack = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    data = Path(path).read_bytes()
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    np.random.default_rng(0).integers(0, 2, size=4)  # numpy loads its random module lazily: not the model's cost
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size (Linux >= 4.0)
    except OSError:
        pass
    before = _status()
    try:
        interpreter = Interpreter(model_content=data, num_threads=threads, experimental_op_resolver_type=resolver)
        created = _status()
        interpreter.allocate_tensors()
        allocated = _status()
        random_input(interpreter)
        for _ in range(MEASURE_INVOKES):
            interpreter.invoke()
    except Exception as exc:  # the parent turns whatever it was into its one-line error
        print(first_line(exc) or type(exc).__name__)
        sys.exit(1)
    invoked = _status()
    # Anonymous memory is what the interpreter allocates (arena, packed weights, workspace, objects). The
    # library code pages it touches (RssFile) vary by megabytes with the machine's page-cache state (two
    # identical venvs differed by 1.9 MB on the same model), so they are reported but not compared.
    anon = before["RssAnon"]
    print(json.dumps({
        "baseline_rss_bytes": before["VmRSS"],
        "created_bytes": created["RssAnon"] - anon,
        "allocated_bytes": allocated["RssAnon"] - anon,
        "peak_growth_bytes": max(s["RssAnon"] for s in (created, allocated, invoked)) - anon,
        "rss_growth_bytes": invoked["VmRSS"] - before["VmRSS"],
        "code_pages_bytes": invoked["RssFile"] - before["RssFile"],
        "threads": threads,
        "xnnpack": xnnpack,
        "invokes": MEASURE_INVOKES,
    }))


def memory_report(model: str | Path | TFLiteModel, threads: int = 1, measure: bool = False) -> dict:
    """Predicted runtime memory of a file (and, with ``measure``, the measured peak and the ratio) for the CLI."""
    if not isinstance(model, TFLiteModel):
        path = Path(model)
        model = parse_model(read_file(path), path)
    plan = plan_arena(model)
    runtime = predict_runtime(model, threads)
    report = {
        "model": str(model.path),
        "threads": threads,
        "predicted_peak_bytes": runtime.growth_bytes,
        "predicted_total_bytes": runtime.total_bytes,
        "xnnpack": {
            "tflite_arena_bytes": runtime.tflite_arena_bytes,
            "workspace_bytes": runtime.xnnpack_workspace_bytes,
            "packed_weights_bytes": runtime.packed_weights_bytes,
            "indirection_bytes": runtime.indirection_bytes,
            "overhead_bytes": runtime.overhead_bytes,
            "delegated_ops": runtime.delegated_ops,
            "partitions": runtime.partitions,
            "cpu_ops": runtime.cpu_ops,
        },
        "without_delegate": {
            "arena_bytes": plan.arena_bytes,
            "weights_bytes": plan.weights_bytes,
            "scratch_bytes": plan.scratch_bytes,
            "persistent_bytes": plan.persistent_bytes,
            "peak_bytes": plan.peak_bytes,
        },
        "file_bytes": model.size_bytes,
    }
    if measure:
        if not model.path.is_file():
            raise PipelineError(f"cannot measure {model.path}: no such file (measuring needs the .tflite on disk)")
        measured = measure_peak(model.path, threads)
        report["measured_peak_bytes"] = measured["peak_growth_bytes"]
        report["predicted_over_measured"] = runtime.growth_bytes / max(measured["peak_growth_bytes"], 1)
    return report
