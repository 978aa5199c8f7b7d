"""Predict what ``edgetpu_compiler`` will map to the Edge TPU, before a compiler or board is at hand.

Partitioning follows Coral's compiler docs ("TensorFlow models on the Edge TPU", section
"Compiling"): the compiler "cannot partition the model more than once", so it builds one Edge TPU
subgraph, and an unsupported op and what comes after it run on the CPU even if supported. The
subgraphs are TensorFlow Lite's delegate partition (``PartitionGraphIntoIndependentNodeSubsets``,
tensorflow/lite/graph_info.cc): starting from the first op, it greedily gathers every op of the same
kind (mappable or not) whose inputs are ready, then switches kind. The compiler maps only the first
mappable subset; later ones are "More than one subgraph is not supported" in its log. So unsupported
ops at the very start (a float-input QUANTIZE, say) stay on the CPU alone, and mappable ops that do
not depend on the first CPU op after the segment (MoveNet's other heads) still join it. The
parameter-cache estimate compares the constant data of mapped ops with the ~8 MiB on-chip SRAM; the
rest is streamed from host memory.
"""
from __future__ import annotations

from pathlib import Path

from edgetpu.rules import LATEST_RUNTIME, ON_CHIP_CACHE_BYTES, check_op, dynamic_tensors
from pipeline.core.errors import PipelineError
from pipeline.core.target_report import CPU, Issue, OpPlacement, TargetReport
from pipeline.core.tflite_file import TFLiteModel, read_model

TARGET = "edgetpu"
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
AFTER_PARTITION = Issue(
    "follows an unsupported op: the compiler maps only one contiguous segment",
    "fix the first CPU op above, or split the model there (edgetpu_compiler -i / --num_segments)",
)


def check(model: str | Path | TFLiteModel, min_runtime_version: int = LATEST_RUNTIME) -> TargetReport:
    """Predict the Edge TPU mapping of a ``.tflite`` (path or parsed); ``details`` holds the parameter-cache fit."""
    if not isinstance(model, TFLiteModel):
        path = model
        model = read_model(path)
        if any(op.name == EDGETPU_CUSTOM_OP for op in model.operators):
            raise PipelineError(f"{path} is already compiled for the Edge TPU; check the model you compiled it from")
    placements = _partition(model, min_runtime_version)
    errors = []
    dynamic = dynamic_tensors(model)
    if dynamic:
        errors.append(f"{len(dynamic)} tensors have sizes known only at run time (e.g. {dynamic[0]!r}); the compiler "
                      "rejects dynamic-sized tensors: fix the input shape (e.g. batch 1, fixed height/width) before converting")
        placements = [OpPlacement(p.index, p.name, CPU, "graph has dynamic-sized tensors", "give every input a fixed shape")
                      for p in placements]
    if model.subgraph_count > 1:
        errors.append(f"the model has {model.subgraph_count} subgraphs (control flow); only the main one can map")
    mapped = {p.index for p in placements if p.accelerated}
    param_bytes = _parameter_bytes(model, mapped)
    off_chip = max(0, param_bytes - ON_CHIP_CACHE_BYTES)
    report = TargetReport(TARGET, str(model.path), placements, model_errors=errors, details={
        "min_runtime_version": min_runtime_version, "mapped_ops": len(mapped), "parameter_bytes": param_bytes,
        "on_chip_cache_bytes": ON_CHIP_CACHE_BYTES, "off_chip_bytes_estimate": off_chip})
    if off_chip:
        segments = -(-param_bytes // ON_CHIP_CACHE_BYTES)
        report.warnings.append(
            f"parameters ({_mib(param_bytes)}) exceed the ~{_mib(ON_CHIP_CACHE_BYTES)} on-chip cache: about "
            f"{_mib(off_chip)} will stream from host memory each inference (slower); use a smaller "
            f"width multiplier or pipeline across {segments} Edge TPUs (--num-segments {segments})")
    if report.cpu_ops and mapped:
        report.warnings.append("CPU ops exchange tensors with the Edge TPU at each boundary (extra latency)")
    return report


def _partition(model: TFLiteModel, runtime: int) -> list[OpPlacement]:
    issues = [check_op(model, op, runtime) for op in model.operators]
    mappable = [not found for found in issues]
    subset_of = _node_subsets(model, mappable)
    segment = min((subset_of[op.index] for op in model.operators if mappable[op.index]), default=None)
    placements = []
    for op in model.operators:
        if subset_of[op.index] == segment:
            placements.append(OpPlacement(op.index, op.name, TARGET))
        else:
            first = issues[op.index][0] if issues[op.index] else AFTER_PARTITION
            placements.append(OpPlacement(op.index, op.name, CPU, first.reason, first.fix))
    return placements


def _node_subsets(model: TFLiteModel, mappable: list[bool]) -> dict[int, int]:
    """Op index -> subset number under TFLite's greedy delegate partition (see the module docstring).

    Each subset takes the kind of its first ready op, then, sweeping in execution order until nothing
    changes, every op of that kind whose inputs are graph inputs, constants or outputs of placed ops.
    """
    produced = {t for op in model.operators for t in op.outputs}
    ready = {t for op in model.operators for t in op.inputs if t not in produced}
    subset_of: dict[int, int] = {}
    subset = 0
    while len(subset_of) < len(model.operators):
        kind = None
        changed = True
        while changed:
            changed = False
            for op in model.operators:
                if op.index in subset_of or any(t >= 0 and t not in ready for t in op.inputs):
                    continue
                if kind is None:
                    kind = mappable[op.index]
                if mappable[op.index] == kind:
                    subset_of[op.index] = subset
                    ready.update(op.outputs)
                    changed = True
        if kind is None:  # the ops left wait on each other: without this the loop would never end
            raise PipelineError(f"{model.path} has a cycle in its operator graph; the file is corrupt")
        subset += 1
    return subset_of


def _parameter_bytes(model: TFLiteModel, mapped: set[int]) -> int:
    seen: set[int] = set()
    for op in model.operators:
        if op.index in mapped:
            seen.update(i for i in op.inputs if i >= 0 and model.tensor(i).constant)
    return sum(model.tensor(i).data_bytes for i in seen)


def compiled_cpu_ops(compiled_path: str | Path) -> dict[str, int]:
    """Ops the real compiler left outside its ``edgetpu-custom-op`` in a ``*_edgetpu.tflite`` file."""
    model = read_model(compiled_path)
    if not any(op.name == EDGETPU_CUSTOM_OP for op in model.operators):
        raise PipelineError(f"{compiled_path} has no {EDGETPU_CUSTOM_OP}; it is not an Edge TPU compiled model")
    counts: dict[str, int] = {}
    for op in model.operators:
        if op.name != EDGETPU_CUSTOM_OP:
            counts[op.name] = counts.get(op.name, 0) + 1
    return counts


def format_report(data: dict) -> str:
    """Human-readable summary of an Edge TPU ``TargetReport.to_dict()``."""
    lines = [f"Edge TPU check: {data['model']} (runtime {data['min_runtime_version']})",
             f"  {data['mapped_ops']}/{data['total_ops']} ops map to the Edge TPU"
             + ("" if data["fully_mapped"] else "; CPU: " + ", ".join(f"{k} x{v}" for k, v in data["cpu_ops"].items()))]
    lines += [f"  error: {e}" for e in data["model_errors"]]
    lines += [f"  cpu  {r}" for r in data["reasons"]]
    lines.append(f"  parameters on the TPU: {_mib(data['parameter_bytes'])} of ~{_mib(data['on_chip_cache_bytes'])} on-chip cache")
    lines += [f"  warning: {w}" for w in data["warnings"]]
    return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"
