"""Latency model: predicted vs measured int8 latency on over 100 models not used to build the table.

The table (``tflpipe latency build``, synthesized single kernels only) is built first, once per thread
count, then the models are predicted from their files and timed whole on this CPU:

- every zoo net at two sizes (the files ``benchmarks/memory.py`` converts, shared cache);
- zoo nets with random per-layer widths: MobileNet v1/v2/v3, MnasNet, EfficientNet-Lite0 and SqueezeNet
  at a random input size and width, every prunable channel group cut by a random share (structured
  channel pruning), converted to full int8;
- the official int8/uint8 classification models in shared/reference_models.

Each model is timed in two passes over the whole set (drift on a shared CPU hits every model alike) and
the median kept. Reported: share within ±10%, RMSE, RMS relative error, Spearman rank correlation, at 1
and 2 threads. Everything is cached under ``--work`` (tables, models, timings), so a rerun resumes.

    python benchmarks/latency_model.py [--work runs/bench_latency] [--random 75] [--threads 1 2] [--table-minutes 40]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import write_section  # noqa: E402
from benchmarks.memory import REFERENCE_DIR, configurations, zoo_file  # noqa: E402

TOLERANCE = 0.10
RANDOM_FAMILIES = (("mobilenet_v1", True), ("mobilenet_v2", True), ("mobilenet_v3_small", True),
                   ("mobilenet_v3_large", True), ("mnasnet_a1", True), ("mnasnet_b1", True),
                   ("efficientnet_lite0", False), ("squeezenet_1_1", False))
SIZES = (96, 128, 160, 192, 224)
REFERENCE_MODELS = ("mobilenet_v1_0.25_128_quant", "mobilenet_v1_0.5_160_quant", "mobilenet_v1_0.75_192_quant",
                    "mobilenet_v2_1.0_224_quant", "tf2_mobilenet_v2_1.0_224_ptq")


def table_file(work: Path, threads: int, minutes: float) -> Path:
    from dataclasses import replace

    from pipeline.latency.measure import LocalMeasurer
    from pipeline.latency.table import BuildPlan, build_table

    path = work / f"table_cpu-int8_t{threads}.json"
    if not path.is_file():
        print(f"building the {threads}-thread table (resumable)", flush=True)
        build_table(LocalMeasurer(threads=threads), "cpu-int8", path, replace(BuildPlan(), minutes=minutes),
                    log=lambda line: print(line, flush=True))
    return path


def random_width_file(number: int, work: Path) -> tuple[str, Path]:
    """Model ``number`` of the random-width set: deterministic from its number, converted once."""
    rng = np.random.default_rng([7, number])
    name, has_alpha = RANDOM_FAMILIES[number % len(RANDOM_FAMILIES)]
    size = int(rng.choice(SIZES))
    alpha = float(rng.choice([0.5, 0.75, 1.0])) if has_alpha else None
    label = f"{name} {size}" + (f" α={alpha:g}" if alpha else "") + f" random widths #{number}"
    path = work / "random" / f"{number:03d}.tflite"
    if path.is_file():
        return label, path
    from keras_models import build_model
    from pipeline.core.fsutil import atomic_path
    from pipeline.core.keras_convert import full_int8_flatbuffer
    from pipeline.core.tf_env import keras
    from pipeline.stages.channel_prune import channel_groups, prune_channels

    keras.backend.clear_session()
    model = build_model(name, size, **({"alpha": alpha} if alpha else {}))
    keep = {g.id: max(8, int(g.size * (1 - rng.uniform(0.0, 0.6)) // 8 * 8))
            for g in channel_groups(model) if g.prunable and g.size > 8}
    data = full_int8_flatbuffer(prune_channels(model, keep))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return label, path


def model_set(work: Path, random_count: int) -> list[tuple[str, Path]]:
    from keras_models import REGISTRY

    models = []
    for name in sorted(REGISTRY):
        for alpha, size in configurations(name):
            label = f"{name} {size}" + (f" α={alpha:g}" if alpha is not None else "")
            models.append((label, zoo_file(name, alpha, size, work.parent / "bench_memory")))
    for number in range(random_count):
        models.append(random_width_file(number, work))
        print(f"random-width model {number + 1}/{random_count}", flush=True)
    models += [(f"official {name}", REFERENCE_DIR / f"{name}.tflite") for name in REFERENCE_MODELS
               if (REFERENCE_DIR / f"{name}.tflite").is_file()]
    return models


def timings(models: list[tuple[str, Path]], threads: int, work: Path, passes: int = 2) -> dict[str, float]:
    """Median whole-model latency per file over ``passes`` round-robin passes, cached per pass."""
    from pipeline.latency.measure import LocalMeasurer

    cache = work / f"measured_t{threads}.json"
    done: dict[str, list[float]] = json.loads(cache.read_text()) if cache.is_file() else {}
    timer = LocalMeasurer(threads=threads, min_seconds=0.4)
    for number in range(passes):
        for label, path in models:
            if len(done.get(str(path), [])) > number:
                continue
            done.setdefault(str(path), []).append(timer.time(path.read_bytes()))
        cache.write_text(json.dumps(done))
    return {str(path): float(np.median(done[str(path)])) for _, path in models}


def evaluate(models: list[tuple[str, Path]], table_path: Path, measured: dict[str, float]) -> list[dict]:
    from pipeline.core.tflite_file import read_file
    from pipeline.latency.predict import predict_flatbuffer
    from pipeline.latency.table import load_table

    table = load_table(table_path)
    rows = []
    for label, path in models:
        prediction = predict_flatbuffer(read_file(path), table)
        real = measured[str(path)]
        rows.append({"label": label, "predicted": prediction.latency_ms, "measured": real,
                     "error": prediction.latency_ms / real - 1, "unmodelled": prediction.unmodelled})
    return rows


def summary(rows: list[dict]) -> dict:
    from scipy.stats import spearmanr

    predicted = np.array([r["predicted"] for r in rows])
    measured = np.array([r["measured"] for r in rows])
    errors = predicted / measured - 1
    return {"n": len(rows), "within": float(np.mean(np.abs(errors) <= TOLERANCE)),
            "rmse_ms": float(np.sqrt(np.mean((predicted - measured) ** 2))),
            "rmspe": float(np.sqrt(np.mean(errors ** 2))), "spearman": float(spearmanr(predicted, measured)[0]),
            "worst": max(rows, key=lambda r: abs(r["error"]))}


def render(results: dict[int, list[dict]], tables: dict[int, dict], elapsed_s: float) -> str:
    lines = ["## Latency model: predicted vs measured int8 latency (`benchmarks/latency_model.py`)", "",
             "Tables built from synthesized single kernels only (`tflpipe latency build`, nn-Meter-style sampling and "
             "adaptive resampling); the models below were never part of them. Measured: LiteRT + XNNPACK on this "
             "CPU, median of two round-robin passes. Goal (issue 15): ≥ 95% within ±10% and Spearman ≥ 0.98 at "
             f"1 thread. Run time {elapsed_s / 60:.1f} min (cached parts not counted).", "",
             "| threads | models | within ±10% | RMSE (ms) | RMS rel. error | Spearman | worst | table kernels | "
             "table build (min) |", "|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for threads, rows in results.items():
        s = summary(rows)
        w = s["worst"]
        lines.append(f"| {threads} | {s['n']} | {s['within']:.1%} | {s['rmse_ms']:.3f} | {s['rmspe']:.1%} | "
                     f"{s['spearman']:.4f} | {w['label']} {w['error']:+.1%} | {tables[threads]['kernels']} | "
                     f"{tables[threads]['minutes']} |")
    first = next(iter(results.values()))
    lines += ["", "Per model (first thread count): predicted / measured ms.", "",
              "| model | predicted | measured | error |", "|---|---:|---:|---:|"]
    for r in sorted(first, key=lambda r: -abs(r["error"])):
        flag = "" if abs(r["error"]) <= TOLERANCE else " ✗"
        lines.append(f"| {r['label']} | {r['predicted']:.3f} | {r['measured']:.3f} | {r['error']:+.1%}{flag} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_latency", help="cache folder")
    parser.add_argument("--random", type=int, default=75, help="random-width models")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts")
    parser.add_argument("--table-minutes", type=float, default=40.0, help="time budget of each table build")
    parser.add_argument("--no-write", action="store_true", help="print without updating BENCHMARKS.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    tables = {}
    for threads in args.threads:
        path = table_file(args.work, threads, args.table_minutes)
        meta = json.loads(path.read_text())
        tables[threads] = {"path": path, "kernels": meta["kernel_count"], "minutes": meta.get("build_minutes", "-")}
    models = model_set(args.work, args.random)
    results = {}
    for threads in args.threads:
        results[threads] = evaluate(models, tables[threads]["path"], timings(models, threads, args.work))
        s = summary(results[threads])
        print(f"{threads} thread(s): {s['within']:.1%} of {s['n']} within ±10%, Spearman {s['spearman']:.4f}, "
              f"RMSE {s['rmse_ms']:.3f} ms", flush=True)
    markdown = render(results, tables, time.time() - start)
    print(markdown)
    if not args.no_write:
        write_section("latency_model", markdown)


if __name__ == "__main__":
    main()
