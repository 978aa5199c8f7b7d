"""Predict what ``edgetpu_compiler`` will map to the Edge TPU, before a compiler or board is at hand.

Partitioning follows Coral's compiler docs ("TensorFlow models on the Edge TPU", section
"Compiling"): the compiler builds one Edge TPU segment; once the graph meets an op it cannot map,
that op and every op that depends on it run on the CPU even if they are supported. Unsupported ops
*before* the segment starts (a float-input QUANTIZE, say) only stay on the CPU themselves, which is
what the compiler's logs show for float-I/O models. The parameter-cache estimate compares the
constant data of mapped ops with the ~8 MiB on-chip SRAM; the rest is streamed from host memory.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgetpu.rules import LATEST_RUNTIME, ON_CHIP_CACHE_BYTES, Issue, check_op, dynamic_tensors
from pipeline.errors import PipelineError
from pipeline.tflite_file import TFLiteModel, read_model

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
AFTER_PARTITION = Issue(
    "follows an unsupported op: the compiler maps only one contiguous segment",
    "fix the first CPU op above, or split the model there (edgetpu_compiler -i / --num_segments)",
)


@dataclass(frozen=True)
class Placement:
    index: int
    name: str
    device: str  # "edgetpu" or "cpu"
    reason: str = ""
    fix: str = ""


@dataclass
class EdgeTpuReport:
    model: str
    min_runtime_version: int
    total_ops: int
    mapped_ops: int
    cpu_ops: dict[str, int]
    reasons: list[str]
    placements: list[Placement]
    parameter_bytes: int
    on_chip_cache_bytes: int = ON_CHIP_CACHE_BYTES
    model_errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def fully_mapped(self) -> bool:
        return not self.model_errors and self.mapped_ops == self.total_ops

    @property
    def off_chip_bytes(self) -> int:
        return max(0, self.parameter_bytes - self.on_chip_cache_bytes)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["placements"] = [asdict(p) for p in self.placements]
        data.update(fully_mapped=self.fully_mapped, off_chip_bytes_estimate=self.off_chip_bytes)
        return data


def check_model(path: str | Path, min_runtime_version: int = LATEST_RUNTIME) -> EdgeTpuReport:
    """Read ``path`` and predict its Edge TPU mapping (a missing or damaged file: PipelineError)."""
    model = read_model(path)
    if any(op.name == EDGETPU_CUSTOM_OP for op in model.operators):
        raise PipelineError(f"{path} is already compiled for the Edge TPU; check the model you compiled it from")
    return check_loaded(model, min_runtime_version)


def check_loaded(model: TFLiteModel, min_runtime_version: int = LATEST_RUNTIME) -> EdgeTpuReport:
    placements = _partition(model, min_runtime_version)
    errors = []
    dynamic = dynamic_tensors(model)
    if dynamic:
        errors.append(f"{len(dynamic)} tensors have sizes known only at run time (e.g. {dynamic[0]!r}); the compiler "
                      "rejects dynamic-sized tensors: fix the input shape (e.g. batch 1, fixed height/width) before converting")
        placements = [Placement(p.index, p.name, "cpu", "graph has dynamic-sized tensors", "give every input a fixed shape")
                      for p in placements]
    if model.subgraph_count > 1:
        errors.append(f"the model has {model.subgraph_count} subgraphs (control flow); only the main one can map")
    mapped = [p for p in placements if p.device == "edgetpu"]
    cpu: dict[str, int] = {}
    reasons: list[str] = []
    for p in placements:
        if p.device == "cpu":
            cpu[p.name] = cpu.get(p.name, 0) + 1
            line = f"{p.name}: {p.reason} -> {p.fix}"
            if line not in reasons:
                reasons.append(line)
    param_bytes = _parameter_bytes(model, {p.index for p in mapped})
    report = EdgeTpuReport(
        model=str(model.path), min_runtime_version=min_runtime_version, total_ops=len(placements),
        mapped_ops=len(mapped), cpu_ops=cpu, reasons=reasons, placements=placements,
        parameter_bytes=param_bytes, model_errors=errors,
    )
    if report.off_chip_bytes:
        segments = -(-param_bytes // ON_CHIP_CACHE_BYTES)
        report.warnings.append(
            f"parameters ({_mib(param_bytes)}) exceed the ~{_mib(ON_CHIP_CACHE_BYTES)} on-chip cache: about "
            f"{_mib(report.off_chip_bytes)} will stream from host memory each inference (slower); use a smaller "
            f"width multiplier or pipeline across {segments} Edge TPUs (--num-segments {segments})")
    if cpu and mapped:
        report.warnings.append("CPU ops exchange tensors with the Edge TPU at each boundary (extra latency)")
    return report


def _partition(model: TFLiteModel, runtime: int) -> list[Placement]:
    placements = []
    started = False
    tainted: set[int] = set()  # tensors produced (transitively) by a CPU op after the segment began
    for op in model.operators:
        issues = check_op(model, op, runtime)
        after_cpu = started and any(i in tainted for i in op.inputs)
        if issues or after_cpu:
            first = issues[0] if issues else AFTER_PARTITION
            placements.append(Placement(op.index, op.name, "cpu", first.reason, first.fix))
            if started:
                tainted.update(op.outputs)
        else:
            started = True
            placements.append(Placement(op.index, op.name, "edgetpu"))
    return placements


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
    """Human-readable summary of ``EdgeTpuReport.to_dict()``."""
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
