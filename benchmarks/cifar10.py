"""CIFAR-10 accuracy, sparsity and size benchmark of the whole pipeline (issue 2's goals).

Runs ``tflpipe run`` with benchmarks/configs/cifar10.yaml on the CIFAR-10 training split from
../shared (a stratified 10% of it held out for validation), then writes the per-stage table and the
goal checks to BENCHMARKS.md. Resumable: re-running continues an interrupted run.

    python benchmarks/cifar10.py [--out runs/cifar10-bench] [--epochs N]
"""
from __future__ import annotations

import argparse
import json
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import write_section  # noqa: E402

TARBALL = ROOT.parent / "shared" / "data" / "cifar10-train.tar.gz"
CACHE = Path.home() / ".cache" / "tflpipe" / "cifar10"


def extract() -> Path:
    """Unpack the shared tarball once into the user cache; returns the class-folder root."""
    root = CACHE / "train"
    done = CACHE / ".complete"
    if not done.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tarfile.open(TARBALL) as tar:
            tar.extractall(CACHE, filter="data")
        done.touch()
    return root


def goals(results: dict) -> list[tuple[str, str, bool | None]]:
    """Issue 2's goals. Pruning and QAT are charged separately, each against the float model it
    starts from; the deployable model's total drop against the dense float model is shown too."""
    stages = results["evaluate"]["stages"]
    dense_float = stages["keras_float"]["accuracy"]
    pruned_float = stages["keras_pruned"]["accuracy"]
    deploy = stages["tflite_int8"]
    dense_int8 = stages["tflite_ptq_int8"]
    sparsity_cost = dense_float - pruned_float
    qat_cost = pruned_float - deploy["accuracy"]
    gzip_ratio = dense_int8["gzip_bytes"] / deploy["gzip_bytes"]
    return [
        ("float accuracy ≥ 80%", f"{dense_float:.2%}", dense_float >= 0.80),
        ("QAT-int8 within 1.0 point of its float model (deployable int8 vs pruned Keras float)",
         f"{-qat_cost * 100:+.2f} points", qat_cost <= 0.010),
        ("50% sparsity costs ≤ 1.5 points (pruned vs dense Keras float)", f"{-sparsity_cost * 100:+.2f} points",
         sparsity_cost <= 0.015),
        ("pruned int8 gzip ≥ 1.6x smaller than dense int8 (deployable vs dense PTQ-int8)", f"{gzip_ratio:.2f}x",
         gzip_ratio >= 1.6),
        ("(total: deployable int8 vs dense float, for information)", f"{(deploy['accuracy'] - dense_float) * 100:+.2f} points",
         None),
    ]


def byte_entropy_bytes(data: bytes) -> float:
    """Order-0 entropy of a file's bytes, in bytes: what an ideal per-byte entropy coder would need."""
    import numpy as np

    counts = np.bincount(np.frombuffer(data, np.uint8), minlength=256)
    p = counts[counts > 0] / len(data)
    return float(-(p * np.log2(p)).sum() * len(data) / 8)


def compressibility(run_dir: Path) -> list[tuple[str, str, None]]:
    """How much smaller the pruned int8 file is than the dense one under xz and an ideal byte coder.

    Shows whether a gzip ratio goal is a question of the model or of the coder.
    """
    import lzma

    dense = (run_dir / "model_ptq_int8.tflite").read_bytes()
    sparse = (run_dir / "model_int8.tflite").read_bytes()
    coders = {"xz -9": lambda b: len(lzma.compress(b, preset=9)), "an ideal order-0 byte coder": byte_entropy_bytes}
    return [(f"(same ratio under {name}, for information)", f"{coder(dense) / coder(sparse):.2f}x", None)
            for name, coder in coders.items()]


def sparsity_sweep(run_dir: Path, config, levels: list[float]) -> list[dict]:
    """Prune the run's float model to other sparsities with the same schedule; PTQ-int8 size and accuracy.

    gzip can only squeeze the zeros: the surviving int8 weights stay near 7-8 bits of entropy, so the
    file ratio grows with sparsity roughly as 8 / (H(s) + 8 (1 - s)). The sweep measures it.
    """
    import gzip

    from pipeline.api import (
        FitSettings,
        convert,
        evaluate,
        load_dataset,
        load_keras_model,
        prune,
        split,
        weight_sparsity,
    )
    from pipeline.core.fsutil import write_bytes

    train, val = split(load_dataset(config.data, config.input_size), config.validation_split, config.seed)
    dense = (run_dir / "model_ptq_int8.tflite").read_bytes()
    rows = []
    for level in levels:
        target = run_dir / f"sweep_pruned_{int(level * 100)}_ptq_int8.tflite"
        if not target.exists():
            settings = FitSettings(config.prune_epochs, config.prune_learning_rate, config.batch_size, 0.0,
                                   config.label_smoothing, config.augment, config.flip, seed=config.seed)
            model = prune(load_keras_model(run_dir / "float.h5"), train, val, level, settings)
            write_bytes(target, convert(model, "ptq_int8", train.images, config.io_dtype))
        data = target.read_bytes()
        rows.append({"target": level, "sparsity": weight_sparsity(target),
                     "accuracy": evaluate(target, val)["accuracy"],
                     "gzip_ratio": len(gzip.compress(dense, 9)) / len(gzip.compress(data, 9))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "cifar10-bench")
    parser.add_argument("--epochs", type=int, help="override the config's float epochs (for a quick look)")
    parser.add_argument("--sweep", default="", help="extra pruning sparsities to measure, e.g. 0.6,0.75")
    args = parser.parse_args()

    import logging

    from pipeline.api import load_config, run_pipeline, summary_rows

    logging.basicConfig(level=logging.INFO, format="cifar10: %(message)s")
    overrides = {"data": str(extract())}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    config = load_config(ROOT / "benchmarks" / "configs" / "cifar10.yaml", overrides)
    start = time.perf_counter()
    state = run_pipeline(config, args.out)
    wall = time.perf_counter() - start
    results = state["results"]
    stage_seconds = sum(results[s]["seconds"] for s in state["done"] if s in results)

    lines = [
        "## CIFAR-10: accuracy, sparsity and size through the pipeline (`benchmarks/cifar10.py`)",
        "",
        f"Config `benchmarks/configs/cifar10.yaml`: {config.model} α={config.alpha} at {config.input_size} px, "
        f"{config.epochs} float epochs, {config.prune_sparsity:.0%} pruning over {config.prune_epochs} epochs, "
        f"{config.qat_epochs} epoch(s) of pruning-preserving QAT, {config.io_dtype} I/O. "
        f"Validation: {results['evaluate']['validation_images']} images held out of the CIFAR-10 training split. "
        f"Sum of stage times: {stage_seconds / 60:.1f} min on this machine (this invocation: {wall / 60:.1f} min).",
        "",
        "| stage | accuracy | size (bytes) | gzip (bytes) | kernel sparsity | latency 1t (ms) | latency 2t (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary_rows(state):
        def cell(key: str, fmt: str) -> str:
            return fmt.format(r[key]) if key in r else "—"

        lines.append(f"| {r['title']} | {r['accuracy']:.2%} | {cell('size_bytes', '{:,}')} | {cell('gzip_bytes', '{:,}')} | "
                     f"{cell('weight_sparsity', '{:.1%}')} | {cell('latency_ms_1t', '{:.3f}')} | {cell('latency_ms_2t', '{:.3f}')} |")
    lines += ["", "| goal | measured | met |", "|---|---:|:---:|"]
    lines += [f"| {name} | {value} | {'—' if ok is None else 'yes' if ok else 'NO'} |"
              for name, value, ok in goals(results) + compressibility(args.out)]
    levels = [float(v) for v in args.sweep.split(",") if v.strip()]
    if levels:
        lines += ["", "Sparsity sweep (same float model and pruning schedule, PTQ-int8; gzip ratio against the dense PTQ-int8 file):",
                  "", "| target sparsity | measured kernel sparsity | accuracy | gzip ratio |", "|---:|---:|---:|---:|"]
        for row in sparsity_sweep(args.out, config, levels):
            lines.append(f"| {row['target']:.0%} | {row['sparsity']:.1%} | {row['accuracy']:.2%} | {row['gzip_ratio']:.2f}x |")
    write_section("cifar10", "\n".join(lines))
    print(json.dumps({name: {"measured": value, "met": ok} for name, value, ok in goals(results)}, indent=2))


if __name__ == "__main__":
    main()
