"""``tflpipe inspect``: what is inside any .tflite file, for people and scripts."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.labels import display_label
from pipeline.core.tflite_file import Tensor, read_model


def _io(t: Tensor | None) -> dict | None:
    if t is None:  # a graph without inputs or outputs is odd but valid
        return None
    return {
        "name": t.name,
        "dtype": t.dtype,
        "shape": list(t.shape),
        "scale": t.scale[0] if len(t.scale) == 1 else list(t.scale) or None,
        "zero_point": t.zero_point[0] if len(t.zero_point) == 1 else list(t.zero_point) or None,
    }


def inspect_model(path: str | Path) -> dict:
    model = read_model(path)
    dtypes: dict[str, int] = {}
    for t in model.tensors:
        dtypes[t.dtype] = dtypes.get(t.dtype, 0) + 1
    meta = model.metadata
    return {
        "file": str(path),
        "size_bytes": model.size_bytes,
        "ops": model.op_histogram(),
        "total_ops": len(model.operators),
        "subgraphs": model.subgraph_count,
        "tensor_dtypes": dtypes,
        "input": _io((model.input_tensors or [None])[0]),
        "output": _io((model.output_tensors or [None])[0]),
        "inputs": [_io(t) for t in model.input_tensors],
        "outputs": [_io(t) for t in model.output_tensors],
        "metadata": {
            "name": meta.get("name"),
            "description": meta.get("description"),
            "labels": meta.get("labels", []),
            "mean": meta.get("mean"),
            "std": meta.get("std"),
            "associated_files": meta.get("files", sorted(model.associated_files)),
        },
    }


def inspect_text(d: dict) -> str:
    lines = [f"{d['file']}: {d['size_bytes']:,} bytes, {d['total_ops']} ops in {d['subgraphs']} subgraph(s)", "ops:"]
    lines += [f"  {name:28} {count}" for name, count in d["ops"].items()]
    for key in ("input", "output"):
        t = d[key]
        if t is None:
            lines.append(f"{key}: none")
            continue
        lines.append(f"{key}: {display_label(t['name'])} {t['dtype']} {t['shape']} scale={t['scale']} zero_point={t['zero_point']}")
    m = d["metadata"]
    if m["labels"] or m["mean"]:
        labels = m["labels"]
        preview = ", ".join(display_label(label) for label in labels[:5]) + (", ..." if len(labels) > 5 else "")
        lines.append(f"metadata: {display_label(m['name'])!r}, mean={m['mean']} std={m['std']}, {len(labels)} labels ({preview})")
    else:
        lines.append("metadata: none")
    return "\n".join(lines)


def weight_sparsity(path: str | Path) -> float:
    """Fraction of conv/FC kernel values in a .tflite file that encode exactly zero."""
    model = read_model(path)
    kernel_ids = {op.inputs[1] for op in model.operators if op.name in ("CONV_2D", "FULLY_CONNECTED") and len(op.inputs) > 1}
    zeros = total = 0
    for i in kernel_ids:
        t = model.tensors[i]
        if t.constant:
            values = model.tensor_data(i)
            zeros += int(np.sum(values == (t.zero_point[0] if t.zero_point else 0)))
            total += values.size
    return zeros / total if total else 0.0
