"""Every zoo net, full-int8: parameters, MACs, file size and LiteRT latency, to pick one per frame budget.

Each net is built at its paper configuration (random weights: latency does not depend on them),
converted with post-training full-integer quantization (uint8 I/O, a few calibration images) and
timed in LiteRT (XNNPACK) at 1 and 2 threads. "GMAC/s" is the counted MACs over the 1-thread
median, i.e. how well the net's layers use the CPU; "33 ms" says whether the 2-thread median fits a
30 fps frame budget on this machine.

    python benchmarks/zoo.py [--sizes 224 128] [--runs 15] [--models mobilenet_v2 resnet50 ...]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import BENCHMARKS_MD, write_section  # noqa: E402

FRAME_BUDGET_MS = 33.0
CALIBRATION_IMAGES = 4


def measure(name: str, size: int, runs: int, out: Path) -> dict:
    """Build, count, convert and time one net at one input size."""
    from keras_models import build_model
    from keras_models.macs import count
    from pipeline.api import benchmark, convert
    from pipeline.core.tf_env import keras

    keras.backend.clear_session()
    model = build_model(name, size)
    counted = count(model)
    images = np.random.default_rng(0).integers(0, 256, (CALIBRATION_IMAGES, size, size, 3), dtype=np.uint8)
    path = out / f"{name}_{size}_int8.tflite"
    path.write_bytes(convert(model, "ptq_int8", images, io_dtype="uint8"))
    one = benchmark(path, threads=1, runs=runs, warmup=3)["latency_ms_median"]
    two = benchmark(path, threads=2, runs=runs, warmup=3)["latency_ms_median"]
    return {"name": name, "size": size, "params": counted.params, "macs": counted.macs,
            "bytes": path.stat().st_size, "ms1": one, "ms2": two}


def render(rows: list[dict], runs: int, elapsed_s: float, trained: list[str]) -> str:
    lines = [
        "## Model zoo: size, MACs and int8 LiteRT latency (`benchmarks/zoo.py`)",
        "",
        f"Post-training full-int8 (uint8 I/O), random weights, 1000 classes; LiteRT XNNPACK median of {runs} invokes "
        f"after 3 warm-ups. MACs: conv + dense multiply-accumulates, classifier included (see "
        f"`keras_models/README.md`). GMAC/s = MACs / 1-thread median. \"{FRAME_BUDGET_MS:g} ms\": the 2-thread "
        f"median fits a 30 fps frame budget here. Run time {elapsed_s / 60:.1f} min.",
        "",
        "| net | input | params (M) | MACs (M) | int8 file (KB) | 1 thread (ms) | 2 threads (ms) | GMAC/s | 33 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in sorted(rows, key=lambda r: (-r["size"], r["ms2"])):
        fits = "yes" if r["ms2"] <= FRAME_BUDGET_MS else "no"
        lines.append(f"| {r['name']} | {r['size']} | {r['params'] / 1e6:.2f} | {r['macs'] / 1e6:,.0f} | "
                     f"{r['bytes'] / 1024:,.0f} | {r['ms1']:.1f} | {r['ms2']:.1f} | "
                     f"{r['macs'] / r['ms1'] / 1e6:.1f} | {fits} |")
    lines += ["", "MobileNet v3 here uses PTQ, where the converter fuses hard-swish into one `HARD_SWISH` kernel; "
              "its QAT int8 model (the Edge TPU-mappable one) computes it with `ADD`/`MUL` ops instead."]
    return "\n".join(lines + trained)


def cifar_lines(run_dirs: list[Path]) -> list[str]:
    """Accuracy of the zoo nets trained in a CIFAR-10 benchmark run (``tflpipe run`` folders)."""
    import json

    rows = []
    for run_dir in run_dirs:
        report = run_dir / "report.json"
        if not report.is_file():
            continue
        data = json.loads(report.read_text())
        c, stages = data["config"], {r["stage"]: r for r in data["summary"]}
        rows.append(f"| {c['model']} | {c['alpha']} | {c['input_size']} | {c['epochs']} | "
                    f"{stages['keras_float']['accuracy']:.2%} | {stages['tflite_int8']['accuracy']:.2%} | "
                    f"{stages['tflite_int8']['gzip_bytes'] / 1024:,.0f} | `{run_dir.name}` |")
    if not rows:
        return _published_cifar_lines()
    return ["", "Trained on CIFAR-10 (5,000 held-out validation images; `benchmarks/cifar10.py` and its config):", "",
            "| net | α | input | float epochs | float accuracy | deployable int8 accuracy | int8 gzip (KB) | run |",
            "|---|---:|---:|---:|---:|---:|---:|---|", *rows]


def _published_cifar_lines() -> list[str]:
    """The CIFAR-10 table already in BENCHMARKS.md, kept when this machine holds none of its run folders."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else ""
    start = text.find("Trained on CIFAR-10", text.find("<!-- BEGIN zoo -->"))
    if start < 0:
        return []
    block = text[start:text.find("\n\n_Measured", start)]
    return ["", *block.splitlines()]


def main() -> None:
    from keras_models import list_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 128], help="square input sizes to measure")
    parser.add_argument("--runs", type=int, default=15, help="timed invokes per thread count")
    parser.add_argument("--models", nargs="+", default=[s.name for s in list_models()], help="zoo nets to measure")
    parser.add_argument("--cifar-runs", type=Path, nargs="*", default=[ROOT / "runs" / "cifar10-bench"],
                        help="tflpipe run folders of CIFAR-10 trainings whose accuracy joins the table")
    args = parser.parse_args()
    trained = cifar_lines(args.cifar_runs)

    start = time.time()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for name in args.models:
                rows.append(measure(name, size, args.runs, Path(tmp)))
                r = rows[-1]
                print(f"{name}@{size}: {r['macs'] / 1e6:.0f}M MACs, {r['bytes'] / 1024:.0f} KB, "
                      f"{r['ms1']:.1f}/{r['ms2']:.1f} ms", flush=True)
                write_section("zoo", render(rows, args.runs, time.time() - start, trained))


if __name__ == "__main__":
    main()
