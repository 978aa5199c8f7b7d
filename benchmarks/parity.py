"""Our int8 MobileNet v2 1.0-224 against the official TF2 PTQ reference: op list and LiteRT latency.

Both files run in the same process, measured paired and alternating (blocks of invokes on one, then
the other, repeated), so machine noise hits both alike; the figure of merit is the ratio of medians.

    python benchmarks/parity.py [--rounds 30] [--block 10]
"""
from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import int_options, write_section  # noqa: E402

REFERENCE = ROOT.parent / "shared" / "reference_models" / "tf2_mobilenet_v2_1.0_224_ptq.tflite"
CLEAN_OPS = {"CONV_2D": 35, "DEPTHWISE_CONV_2D": 17, "ADD": 10, "MEAN": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1, "QUANTIZE": 2}


def build_ours(out: Path) -> Path:
    """MobileNet v2 1.0-224 from our zoo, 1001 classes like the reference, full-int8 with uint8 I/O."""
    from keras_models import build_model
    from pipeline.api import convert, load_image

    model = build_model("mobilenet_v2", 224, classes=1001, alpha=1.0)
    refs = REFERENCE.parent
    photos = [load_image(refs / name, 224) for name in ("cat.bmp", "grace_hopper.bmp", "parrot.jpg")]
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(29, 224, 224, 3), dtype=np.uint8)
    calibration = np.concatenate([np.stack(photos), noise])
    path = out / "ours_mobilenet_v2_1.0_224_int8.tflite"
    path.write_bytes(convert(model, "ptq_int8", calibration, "uint8"))
    return path


def paired_latency(a: Path, b: Path, threads: int, rounds: int, block: int) -> tuple[float, float, list[float]]:
    """Median ms of ``a`` and ``b`` and the per-round ratios a/b, alternating which goes first."""
    from pipeline.core.litert import latency_samples, make_interpreter, random_input

    interps = [make_interpreter(p, threads) for p in (a, b)]
    for it in interps:
        random_input(it)
        latency_samples(it, 5)
    samples: list[list[float]] = [[], []]
    ratios = []
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        medians = {}
        for i in order:
            block_samples = latency_samples(interps[i], block)
            samples[i] += block_samples
            medians[i] = statistics.median(block_samples)
        ratios.append(medians[0] / medians[1])
    return statistics.median(samples[0]), statistics.median(samples[1]), ratios


def main() -> None:
    from pipeline.api import read_model

    args = int_options(__doc__, rounds=(30, "alternating rounds per thread count"),
                       block=(10, "invokes per model in each round"))
    with tempfile.TemporaryDirectory() as tmp:
        ours = build_ours(Path(tmp))
        ours_ops, ref_ops = read_model(ours).op_histogram(), read_model(REFERENCE).op_histogram()
        rows = []
        for threads in (1, 2):
            ours_ms, ref_ms, ratios = paired_latency(ours, REFERENCE, threads, args.rounds, args.block)
            rows.append((threads, ours_ms, ref_ms, statistics.median(ratios), min(ratios), max(ratios)))
        size_ours, size_ref = ours.stat().st_size, REFERENCE.stat().st_size

    def ops(hist: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in hist.items())

    lines = [
        "## MobileNet v2 1.0-224 int8: our conversion vs the official reference (`benchmarks/parity.py`)",
        "",
        f"Ours: zoo `mobilenet_v2` α=1.0, 224 px, 1001 classes, full-int8 PTQ with uint8 I/O. Reference: "
        f"`{REFERENCE.name}`. LiteRT (XNNPACK), paired and alternating: {args.rounds} rounds of {args.block} invokes each.",
        "",
        f"- ours: {ops(ours_ops)} ({size_ours:,} bytes)",
        f"- reference: {ops(ref_ops)} ({size_ref:,} bytes)",
        f"- clean-conversion op list expected: {'matched' if ours_ops == CLEAN_OPS else 'NOT matched'}",
        "",
        "| threads | ours median (ms) | reference median (ms) | ratio ours/ref (median of rounds) | round ratios min–max | within 5% |",
        "|---:|---:|---:|---:|---:|:---:|",
    ]
    for threads, o, r, ratio, lo, hi in rows:
        lines.append(f"| {threads} | {o:.2f} | {r:.2f} | {ratio:.3f} | {lo:.3f}–{hi:.3f} | {'yes' if ratio <= 1.05 else 'NO'} |")
    write_section("parity", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
