"""Where the time of a ``.tflite`` goes: every kernel cut out of the model (its real weights and
quantization kept) and timed alone on the target, beside the whole model's median.

LiteRT's Python interpreter has no per-op profiler, so each operator (or each run of ops the runtime fuses)
becomes a model of its own; its time above the fixed invoke overhead is its share. The sum, overhead
counted once, is reported beside the whole model timed before and after, so the breakdown is checked,
not assumed.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.tflite_file import parse_model, read_file
from pipeline.latency.kernels import Kernel, submodel, synthesize, unpack
from pipeline.latency.measure import LocalMeasurer, Measurer
from pipeline.latency.predict import KernelRow, model_kernels
from pipeline.latency.table import FUSION_CANDIDATES, NULL_KERNEL


def _detect_fusions(model, rows: list[KernelRow], measurer: Measurer, overhead: float) -> set[tuple[str, str]]:
    """Candidate pairs (see the table builder) that this model has, timed together and apart."""
    found = set()
    by_pair: dict[tuple[str, str], tuple[int, int]] = {}
    for first, second in zip(rows, rows[1:]):
        pair = (first.kernel.op, second.kernel.op)
        if pair in FUSION_CANDIDATES and pair not in by_pair:
            by_pair[pair] = (first.ops[0], second.ops[0])
    for pair, (a, b) in by_pair.items():
        ta, tb = measurer.time(submodel(model, [a])), measurer.time(submodel(model, [b]))
        tab = measurer.time(submodel(model, [a, b]))
        if (ta + tb - overhead - tab) > 2 / 3 * max(tb - overhead, 1e-6):
            found.add(pair)
    return found


def profile(path: str | Path, threads: int = 1, measurer: Measurer | None = None, progress: bool = False) -> dict:
    """Per-kernel milliseconds of ``path`` on ``measurer`` (this machine's LiteRT by default)."""
    from tqdm import tqdm

    data = read_file(path)
    parse_model(data, path)  # verified before anything parses it further
    model = unpack(data)
    measurer = measurer or LocalMeasurer(threads=threads)
    if not model.subgraphs or not model.subgraphs[0].operators:
        raise PipelineError(f"{Path(path).name} has no operators to profile")
    rows = model_kernels(model)
    custom = sorted({r.kernel.op for r in rows if not r.kernel.op.isupper()})
    if custom:
        raise PipelineError(f"{Path(path).name} has custom ops ({', '.join(custom)}) that LiteRT on this CPU cannot "
                            "run; profile the source model, or run an Edge TPU model on its board")
    overhead = measurer.time(synthesize(NULL_KERNEL))
    whole_before = measurer.time(data)
    fusions = _detect_fusions(model, rows, measurer, overhead)
    rows = model_kernels(model, fusions)
    for row in tqdm(rows, disable=not progress, unit="kernel", desc="profiling", leave=False):
        row.ms = max(measurer.time(submodel(model, row.ops)) - overhead, 0.0)
    whole_after = measurer.time(data)
    whole = statistics.median([whole_before, whole_after])
    summed = overhead + sum(r.ms for r in rows)
    by_op: dict[str, float] = {}
    for row in rows:
        key = _label(row.kernel)
        by_op[key] = by_op.get(key, 0.0) + row.ms
    from pipeline.latency.memory import memory_report

    memory = memory_report(path, threads, measure=isinstance(measurer, LocalMeasurer))
    return {
        "model": Path(path).name, **measurer.describe(), "whole_ms": round(whole, 4), "memory": memory,
        "whole_ms_before_after": [round(whole_before, 4), round(whole_after, 4)],
        "sum_ms": round(summed, 4), "sum_over_whole": round(summed / whole, 4) if whole else None,
        "overhead_ms": round(overhead, 5), "fusions": sorted("+".join(p) for p in fusions),
        "by_op": {k: round(v, 4) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
        "kernels": [{"ops": list(r.ops), "op": _label(r.kernel), "name": r.name,
                     "input": list(r.kernel.activations[0].shape) if r.kernel.activations else [],
                     "output": list(r.kernel.outputs[0].shape), "ms": round(r.ms, 4),
                     "share": round(r.ms / summed, 4) if summed else 0.0} for r in rows],
    }


def _label(kernel: Kernel) -> str:
    return "+".join([kernel.op, *(k.op for k in kernel.fused)])
