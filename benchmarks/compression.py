"""The compression toolbox on CIFAR-10 (issue 6): every method and combination against float32.

All variants start from the float model of the CIFAR-10 benchmark run (``benchmarks/cifar10.py``,
MobileNet v1 α=0.5 at 64 px): each is a ``tflpipe run`` folder under ``runs/compression/`` seeded
with that run's finished train (and, where the settings match, prune) stage, so only the
compression stages run. Distillation trains a smaller student (α=0.25) from scratch twice, with
and without the benchmark's float model as teacher. Latency is measured at the end for every file
in one pass, alternating between files, as the median of per-round medians at 1 thread.

    python benchmarks/compression.py [--only NAME[,NAME]] [--latency-rounds 5]
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import write_section  # noqa: E402
from benchmarks.cifar10 import extract  # noqa: E402

BASE = ROOT / "runs" / "cifar10-bench"
OUT = ROOT / "runs" / "compression"
CONFIG = ROOT / "benchmarks" / "configs" / "cifar10.yaml"
GOAL_RATIO, GOAL_POINTS = 10.0, 2.0


@dataclass
class Variant:
    name: str
    overrides: dict
    rows: dict  # table title -> TFLite file key in the run (see pipeline.runner.run.TFLITE_FILES)
    seed_stages: tuple = ("train",)  # finished stages copied from the base run
    explicit_padding: bool = False  # re-lay the base float model out for XNNPACK sparse inference
    keras_rows: dict = field(default_factory=dict)  # table title -> Keras stage key (accuracy only)
    seed_from: str | None = None  # another variant whose finished stages to start from (default: the base run)


COMMON = {"qat_epochs": 1, "cluster_epochs": 1, "benchmark_runs": 10}
STUDENT = {"alpha": 0.25, "epochs": 8, "prune_sparsity": 0.0, "qat": False}
VARIANTS = [
    Variant("ptq_modes", {"prune_sparsity": 0.0, "qat": False, "ptq_modes": ["dynamic", "float16", "int16x8"],
                          "selective_float": 3},
            {"PTQ dynamic range (int8 weights, float activations)": "dynamic", "PTQ float16": "float16",
             "PTQ 16x8 (int16 activations)": "int16x8", "PTQ selective int8 (3 worst layers float)": "selective_int8"}),
    Variant("prune75_cluster8_pcqat", {"prune_sparsity": 0.75, "cluster": 8},
            {"prune 75% + cluster 8 + PCQAT (int8)": "int8"}, keras_rows={"  (its pruned float Keras model)": "keras_pruned"}),
    Variant("kd_student", {**STUDENT, "teacher": str(BASE / "float.h5")}, {"KD student α=0.25 (float32, teacher: base model)": "float32"},
            seed_stages=()),
    Variant("plain_student", STUDENT, {"same student without a teacher (float32)": "float32"}, seed_stages=()),
    Variant("cluster16_cqat", {"prune_sparsity": 0.0, "cluster": 16}, {"cluster 16 + CQAT (int8)": "int8"},
            keras_rows={"  (its clustered float Keras model)": "keras_clustered"}),
    Variant("prune50_cluster8_pcqat", {"cluster": 8}, {"prune 50% + cluster 8 + PCQAT (int8)": "int8"},
            seed_stages=("train", "prune")),
    Variant("prune24", {"prune_pattern": "2:4", "prune_epochs": 1, "qat": False}, {"2:4 structured prune + PTQ int8": "int8"}),
    # The explicit-padding layout shifts the stride-2 sampling grid by a pixel: the re-laid-out base
    # weights score ~30% until pruning's fine-tuning (3 epochs here) adapts them.
    Variant("xnnpack75", {"prune_sparsity": 0.75, "prune_pattern": "xnnpack", "prune_epochs": 3, "qat": False,
                          "model_args": {"explicit_padding": True}},
            {"XNNPACK-layout prune 75% (1x1 convs), float32 sparse storage": "sparse_float32"},
            explicit_padding=True, keras_rows={"  (its pruned float Keras model, explicit padding)": "keras_pruned"}),
    Variant("prune75_cluster8_pcqat_kd", {"prune_sparsity": 0.75, "prune_epochs": 8, "cluster": 8, "teacher": str(BASE / "float.h5")},
            {"prune 75% (8 epochs) + cluster 8 + PCQAT, distilled from the float model (int8)": "int8"},
            keras_rows={"  (its pruned float Keras model, distilled)": "keras_pruned"}),
    # The same, with the 75% spread by the Erdős–Rényi-kernel rule instead of uniformly: the stem stays
    # dense and the 512x512 head convolution goes to 86%, at the same overall sparsity.
    Variant("prune75erk_cluster8_pcqat_kd", {"prune_sparsity": 0.75, "prune_allocation": "erk", "prune_epochs": 8,
                                              "cluster": 8, "teacher": str(BASE / "float.h5")},
            {"prune 75% ERK-allocated (8 epochs) + cluster 8 + PCQAT, distilled (int8)": "int8"},
            keras_rows={"  (its pruned float Keras model, ERK, distilled)": "keras_pruned"}),
    # Its pruned model clustered again, leaving the kernels under 10,000 weights (stem, first 1x1
    # convolutions, classifier: 2.6% of the weights, which ERK keeps dense) unclustered, then PTQ int8
    # (PCQAT does not accept unclustered kernels beside clustered ones: see RunConfig.validate).
    Variant("prune75erk_cluster8min10k_ptq_kd", {"prune_sparsity": 0.75, "prune_allocation": "erk", "prune_epochs": 8,
                                                  "cluster": 8, "cluster_min_weights": 10_000, "qat": False,
                                                  "teacher": str(BASE / "float.h5")},
            {"prune 75% ERK + cluster 8 (kernels ≥ 10k weights) + PTQ int8, distilled": "int8"},
            keras_rows={"  (its clustered float Keras model, small kernels unclustered)": "keras_clustered"},
            seed_stages=("train", "prune"), seed_from="prune75erk_cluster8_pcqat_kd"),
]


def base_config(overrides: dict):
    from pipeline.api import load_config

    return load_config(CONFIG, {"data": str(extract()), **COMMON, **overrides})


def seed(variant: Variant, config, out: Path, base_state: dict) -> None:
    """Start ``out`` with finished stages of the base run (or of ``seed_from``) so the variant trains only what differs."""
    if (out / "state.json").exists() or not variant.seed_stages:
        return
    from pipeline.api import seed_run

    source = OUT / variant.seed_from if variant.seed_from else BASE
    state = json.loads((source / "state.json").read_text()) if variant.seed_from else base_state
    artifacts = {"labels": source / "labels.txt", "float": source / "float.h5"}
    if variant.explicit_padding:
        out.mkdir(parents=True, exist_ok=True)
        artifacts["float"] = out / "float_relayout.h5"
        _relayout(source / "float.h5", artifacts["float"], config)
    if "prune" in variant.seed_stages:
        artifacts["pruned"] = source / "pruned.h5"
    seed_run(out, config, artifacts, {stage: state["results"][stage] for stage in variant.seed_stages})
    (out / "float_relayout.h5").unlink(missing_ok=True)


def _relayout(source: Path, target: Path, config) -> None:
    """The base float weights in the explicit-padding layout (same layers and weights, padding layers added)."""
    from keras_models import build_model
    from pipeline.api import load_keras_model

    trained = load_keras_model(source)
    model = build_model(config.model, config.input_size, classes=trained.output_shape[-1], **config.model_knobs())
    model.set_weights(trained.get_weights())
    model.save(target, include_optimizer=False)


def run_variant(variant: Variant, base_state: dict) -> dict:
    from pipeline.api import run_pipeline

    config = base_config(variant.overrides)
    out = OUT / variant.name
    seed(variant, config, out, base_state)
    return run_pipeline(config, out)


BINARY = {"filters": (64, 128, 256), "input_size": 32, "epochs": 6}


def run_binary() -> dict:
    """The larq BinaryNet on the same split at CIFAR's native 32 px (no seeding: it is its own net)."""
    from pipeline.api import BINARY_FIT, FitSettings, binarize, load_dataset, split

    out = OUT / "binary"
    if (out / "binarize.json").exists():
        return json.loads((out / "binarize.json").read_text())
    config = base_config({})
    train, val = split(load_dataset(config.data, BINARY["input_size"], progress=True), config.validation_split, config.seed)
    settings = FitSettings(BINARY["epochs"], BINARY_FIT.learning_rate, config.batch_size, 0.0, 0.0, seed=config.seed)
    return binarize(train, val, out, BINARY["filters"], settings=settings)


def kd_paired_test() -> dict | None:
    """McNemar's test on the validation images: does the distilled student beat the plain one beyond chance?

    Two accuracies on 5,000 images that differ by a few tenths of a point can be noise; the images that
    exactly one of the two students gets right decide it (normal approximation, two-sided).
    """
    import math

    from pipeline.api import TFLITE_FILES, correct_mask, load_dataset, split

    files = [OUT / name / TFLITE_FILES["float32"] for name in ("kd_student", "plain_student")]
    if not all(f.exists() for f in files):
        return None
    config = base_config({})
    val = split(load_dataset(config.data, config.input_size), config.validation_split, config.seed)[1]
    kd, plain = (correct_mask(f, val) for f in files)
    only_kd, only_plain = int((kd & ~plain).sum()), int((~kd & plain).sum())
    z = (only_kd - only_plain) / math.sqrt(max(1, only_kd + only_plain))
    return {"only_kd": only_kd, "only_plain": only_plain, "p": math.erfc(abs(z) / math.sqrt(2)), "kd_better": only_kd > only_plain}


def measure_latency(files: list[Path], rounds: int, runs: int = 30) -> dict[Path, float]:
    """Median over rounds of each file's median latency, files alternating within every round."""
    import statistics

    from pipeline.api import benchmark

    samples: dict[Path, list[float]] = {f: [] for f in files}
    for _ in range(rounds):
        for f in files:
            samples[f].append(benchmark(f, threads=1, runs=runs, warmup=3)["latency_ms_median"])
    return {f: statistics.median(v) for f, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated variant names to run (default: all)")
    parser.add_argument("--latency-rounds", type=int, default=5)
    parser.add_argument("--skip-latency", action="store_true", help="write the table without the latency pass")
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.INFO, format="compression: %(message)s")
    wanted = {n for n in args.only.split(",") if n}
    if wanted == {"binary"} and not (BASE / "state.json").exists():
        # The binarized net trains alone; its row joins the published table, whose float32 row it is compared with.
        run_binary()
        add_binary_row()
        return
    if not (BASE / "state.json").exists():
        raise SystemExit(f"run benchmarks/cifar10.py first: {BASE} holds no finished run")
    base_state = json.loads((BASE / "state.json").read_text())
    for variant in VARIANTS:
        if not wanted or variant.name in wanted:
            run_variant(variant, base_state)
    if not wanted or "binary" in wanted:
        run_binary()
    write_table(base_state, args)


def _stage(out: Path, key: str) -> dict | None:
    state_path = out / "state.json"
    if not state_path.exists():
        return None
    state = json.loads(state_path.read_text())
    return state.get("results", {}).get("evaluate", {}).get("stages", {}).get(key)


def write_table(base_state: dict, args) -> None:
    from pipeline.api import TFLITE_FILES, RunConfig

    base_stages = base_state["results"]["evaluate"]["stages"]
    float32 = base_stages["tflite_float32"]
    rows = [("float32 baseline (MobileNet v1 α=0.5, 64 px)", BASE, "float32"),
            ("PTQ int8 (dense)", BASE, "ptq_int8"),
            ("prune 50% + PQAT (int8; `benchmarks/cifar10.py` run)", BASE, "int8")]
    keras_rows = []
    missing = []
    for v in VARIANTS:
        out = OUT / v.name
        for title, key in v.rows.items():
            (rows if _stage(out, f"tflite_{key}") else missing).append((title, out, key))
        keras_rows += [(title, out, key) for title, key in v.keras_rows.items() if _stage(out, key)]
    files = [out / TFLITE_FILES[key] for _, out, key in rows]
    latency = {} if args.skip_latency else measure_latency(files, args.latency_rounds)
    base_latency = latency.get(BASE / TFLITE_FILES["float32"])
    lines = [
        "## Compression toolbox on CIFAR-10 (`benchmarks/compression.py`)",
        "",
        "Every variant starts from a float model trained by `benchmarks/cifar10.py` (config of the `cifar10` section: "
        f"MobileNet v1 α=0.5, 64 px; this run: {float32['accuracy']:.2%}) and fine-tunes 1 epoch per compression stage (2 for pruning unless said); the "
        f"distillation pair trains a α={STUDENT['alpha']} student from scratch for {STUDENT['epochs']} epochs each (T={RunConfig.kd_temperature:g}, α={RunConfig.kd_alpha:g}). Validation: the same 5,000 held-out images. "
        "Latency: LiteRT (XNNPACK), 1 thread, median of per-round medians with the files alternating in every round.",
        "",
        "| method | accuracy | Δ vs float32 (pt) | size (bytes) | gzip (bytes) | gzip ratio vs float32 | latency (ms) | vs float32 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    measured = []  # (title, gzip ratio, Δ points) of every TFLite row
    for title, out, key in rows:
        stage = _stage(out, f"tflite_{key}")
        path = out / TFLITE_FILES[key]
        data = path.read_bytes()
        size, gz = len(data), len(gzip.compress(data, 9))
        ratio = float32["gzip_bytes"] / gz
        delta = (stage["accuracy"] - float32["accuracy"]) * 100
        lat = latency.get(path)
        lat_cells = f"{lat:.3f} | {lat / base_latency:.2f}x" if lat and base_latency else "— | —"
        lines.append(f"| {title} | {stage['accuracy']:.2%} | {delta:+.2f} | {size:,} | {gz:,} | {ratio:.1f}x | {lat_cells} |")
        measured.append((title, ratio, delta))
    binary_path = OUT / "binary" / "binarize.json"
    if binary_path.exists():
        lines.append(_binary_row(json.loads(binary_path.read_text()), float32["accuracy"], float32["gzip_bytes"]))
    else:
        missing.append(("binarized BinaryNet", None, None))
    for title, out, key in keras_rows:
        lines.append(f"| {title} | {_stage(out, key)['accuracy']:.2%} | — | — | — | — | — | — |")
    lines += ["", "| goal | measured | met |", "|---|---|:---:|"]
    lines.append(f"| a combination ≥ {GOAL_RATIO:.0f}x smaller (gzip) than float32 within {GOAL_POINTS:.0f} points | "
                 f"{_goal_text(measured)} |")
    kd, plain = _stage(OUT / "kd_student", "tflite_float32"), _stage(OUT / "plain_student", "tflite_float32")
    test = kd_paired_test() if kd and plain else None
    if test:
        met = test["kd_better"] and test["p"] < 0.05
        lines.append(f"| distillation beats the same student without a teacher (McNemar's test on the validation images, "
                     f"p < 0.05) | {kd['accuracy']:.2%} vs {plain['accuracy']:.2%}; right only with KD: {test['only_kd']}, "
                     f"only without: {test['only_plain']}; p = {test['p']:.1g} | {'yes' if met else 'NO'} |")
    lines += _notes()
    if missing:
        lines += ["", "Not measured yet (run the script again to continue): " + ", ".join(t for t, _, _ in missing) + "."]
    write_section("compression", "\n".join(lines))


def _goal_text(measured: list[tuple[str, float, float]]) -> str:
    """The best row meeting the size/accuracy goal, else the nearest misses on either side, and the verdict cell."""
    small = [m for m in measured if m[1] >= GOAL_RATIO]
    close = [m for m in measured if -m[2] <= GOAL_POINTS]
    hits = [m for m in small if m in close]

    def describe(row: tuple[str, float, float]) -> str:
        return f"{row[0]}: {row[1]:.1f}x at {row[2]:+.2f} points"

    if hits:
        return f"{describe(max(hits, key=lambda m: m[1]))} | yes"
    misses = []
    if small:
        misses.append(f"most accurate at ≥ {GOAL_RATIO:.0f}x: " + describe(max(small, key=lambda m: m[2])))
    if close:
        misses.append(f"smallest within {GOAL_POINTS:.0f} points: " + describe(max(close, key=lambda m: m[1])))
    return "; ".join(misses) + " | NO"


def _notes() -> list[str]:
    """What the runs' own reports say about clustering, the debugger and sparse inference."""
    notes = []
    for v in (v for v in VARIANTS if v.overrides.get("cluster")):
        int8 = _stage(OUT / v.name, "tflite_int8")
        if int8 and "max_unique_per_channel" in int8:
            kernels = "clustered kernels" if v.overrides.get("cluster_min_weights") else "kernels"
            survived = "conversion" if v.overrides.get("qat") is False else "QAT and conversion"
            notes.append(f"- `{v.name}`: the int8 file's {kernels} have at most {int8['max_unique_per_channel']} distinct "
                         f"weight codes per output channel: clustering survived {survived}.")
    state_path = OUT / "ptq_modes" / "state.json"
    if state_path.exists():
        debug = json.loads(state_path.read_text())["results"].get("quant_debug")
        if debug:
            worst = ", ".join(f"{w['layer']} ({w['rmse_over_scale']:.2f})" for w in debug["worst"][:3])
            notes.append(f"- Quantization debugger, worst layers (output RMSE in int8 steps): {worst}. The selective "
                         f"file {debug['selective']['edgetpu']}.")
    binary_path = OUT / "binary" / "binarize.json"
    if binary_path.exists():
        notes.append(_binary_note(json.loads(binary_path.read_text())))
    return ["", *notes] if notes else []


def _binary_row(b: dict, float_accuracy: float, float_gzip: int) -> str:
    gz = b["lce_gzip_bytes"]
    return (f"| binarized BinaryNet {'/'.join(map(str, b['filters']))}, {BINARY['input_size']} px, "
            f"{b['epochs']} epochs (larq; LCE file, Keras accuracy) | {b['accuracy']:.2%} | "
            f"{(b['accuracy'] - float_accuracy) * 100:+.2f} | {b['lce_file_bytes']:,} | {gz:,} | "
            f"{float_gzip / gz:.1f}x | LCE runtime only | — |")


def _binary_note(b: dict) -> str:
    ops = ", ".join(f"{name} {count}" for name, count in b["lce_ops"].items())
    return (f"- Binarized net: {b['binary_weights']:,} of {b['binary_weights'] + b['float_weights']:,} weights are 1-bit "
            f"(weights {b['compression']:.1f}x smaller than float32 when packed). Its LCE file ({ops}) runs only on "
            "Larq Compute Engine's runtime: stock LiteRT rejects the custom op LceQuantize, and LCE 0.16's Python "
            "interpreter reads NumPy 2 arrays as empty here, so the accuracy shown is the larq Keras model's.")


def add_binary_row() -> None:
    """Put the binarized net's row and note into the published compression table, beside its float32 row."""
    import re

    from benchmarks._report import BENCHMARKS_MD

    b = json.loads((OUT / "binary" / "binarize.json").read_text())
    text = BENCHMARKS_MD.read_text()
    section = text[text.index("<!-- BEGIN compression -->"):text.index("<!-- END compression -->")]
    base = re.search(r"^\| float32 baseline [^|]*\| ([\d.]+)% \| [^|]* \| [\d,]+ \| ([\d,]+) \|", section, re.M)
    if base is None:
        raise SystemExit("BENCHMARKS.md has no compression table with a float32 baseline row; run the whole benchmark")
    row = _binary_row(b, float(base.group(1)) / 100, int(base.group(2).replace(",", "")))
    lines = [line for line in section.splitlines() if not line.startswith("| binarized BinaryNet")
             and not line.startswith("- Binarized net:")]
    last_model_row = max(i for i, line in enumerate(lines) if line.startswith("| ") and not line.startswith("|   (")
                         and "%" in line and not line.startswith("| a combination") and not line.startswith("| distillation"))
    lines.insert(last_model_row + 1, row)
    note_at = max(i for i, line in enumerate(lines) if line.startswith("- "))
    lines.insert(note_at + 1, _binary_note(b))
    lines = [line for line in lines if not (line.startswith("Not measured yet") and "BinaryNet" in line)]
    lines = [line.replace("_Measured ", "_Rows other than the binarized net measured ", 1) if line.startswith("_Measured ")
             else line for line in lines]
    write_section("compression", "\n".join(lines[1:]))


if __name__ == "__main__":
    main()
