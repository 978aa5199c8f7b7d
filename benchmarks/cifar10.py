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


def goals(results: dict) -> list[tuple[str, str, bool]]:
    stages = results["evaluate"]["stages"]
    float_acc = stages["keras_float"]["accuracy"]
    qat_int8 = stages["tflite_int8"]["accuracy"]
    pruned_int8 = stages["tflite_pruned_ptq_int8"]["accuracy"]
    dense_int8 = stages["tflite_ptq_int8"]
    deploy = stages["tflite_int8"]
    gzip_ratio = dense_int8["gzip_bytes"] / deploy["gzip_bytes"]
    return [
        ("float accuracy ≥ 80%", f"{float_acc:.2%}", float_acc >= 0.80),
        ("QAT-int8 within 1.0 point of float", f"{(float_acc - qat_int8) * 100:+.2f} points", float_acc - qat_int8 <= 0.010),
        ("50% sparsity costs ≤ 1.5 points (pruned PTQ-int8 vs dense PTQ-int8)",
         f"{(dense_int8['accuracy'] - pruned_int8) * 100:+.2f} points", dense_int8["accuracy"] - pruned_int8 <= 0.015),
        ("pruned int8 gzip ≥ 1.6x smaller than dense int8", f"{gzip_ratio:.2f}x", gzip_ratio >= 1.6),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "cifar10-bench")
    parser.add_argument("--epochs", type=int, help="override the config's float epochs (for a quick look)")
    args = parser.parse_args()

    import logging

    from pipeline.config import load_config
    from pipeline.report import summary_rows
    from pipeline.run import run_pipeline

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
    lines += [f"| {name} | {value} | {'yes' if ok else 'NO'} |" for name, value, ok in goals(results)]
    write_section("cifar10", "\n".join(lines))
    print(json.dumps({name: {"measured": value, "met": ok} for name, value, ok in goals(results)}, indent=2))


if __name__ == "__main__":
    main()
