"""Training throughput (images/s) of the fit loop on this machine: plain vs XLA vs a cached tf.data pipeline.

How much search fits on 2 cores is decided by how many images per second the training loop gets through.
``pipeline.stages.train.fit``'s path (``make_dataset`` + ``compile_for_training`` + ``model.fit``) is timed
as it is ("plain") against two things the stack offers:

- ``jit``: the same model compiled with XLA (tf_keras ``jit_compile=True``);
- ``cache``: a tf.data pipeline that caches the decoded, normalized float images (``Dataset.cache()``) before
  the augmentation, so each epoch only shuffles, pads/crops and flips.

Each net gets one model per variant; after a warm-up epoch each (tracing and XLA compilation, excluded),
every round times one epoch of each variant, the order rotating from round to round, and the ratio to plain
is taken within the round: the machine is shared (another benchmark may train on both cores), so the ratios,
medians over rounds, are what to read, not the absolute images/s. The input pipelines alone (no model) are
timed the same way, to show whether the data side can be the bottleneck at all. Random uint8 images: the
cost of a training step does not depend on pixel values.

    python benchmarks/throughput.py [--images 1024] [--rounds 5] [--batch-size 64] [--no-write]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import write_section  # noqa: E402

VARIANTS = ("plain", "jit", "cache")


@dataclass(frozen=True)
class Net:
    name: str
    title: str
    size: int


NETS = (Net("mobilenet_v2", "MobileNet v2 α=0.35", 32), Net("mobilenet_v2", "MobileNet v2 α=0.35", 64),
        Net("searched", "search-space net (mid-size)", 32))


def mid_size_arch(resolution: int):
    """A net from the middle of the search space: every stage 0.75x wide, 2 blocks of 5x5 kernels, expansion 4."""
    from pipeline.search.space import Arch, Block, Stage

    return Arch(resolution, tuple(Stage(0.75, False, "relu6", (Block(5, 4),) * 2) for _ in range(6)))


def build_net(net: Net, classes: int):
    from keras_models import build_model
    from pipeline.search.space import build

    if net.name == "searched":
        return build(mid_size_arch(net.size), classes)
    return build_model(net.name, net.size, classes=classes, alpha=0.35)


def cached_dataset(data, batch_size: int, seed: int, flip: bool = True):
    """``make_dataset``'s training pipeline with the normalized float images cached before augmentation.

    Same augmentation: the pad is -1 (pixel 0 normalized), as ``make_dataset`` pads uint8 zeros. The cache
    holds float32 images (4x the uint8 array) and the shuffle a buffer of whole images, not indices."""
    from pipeline.core.tf_env import tf

    classes = len(data.class_names)
    size = data.images.shape[1]
    pad = max(1, size // 8)

    def normalize(image, label):
        return (tf.cast(image, tf.float32) - 127.5) / 127.5, tf.one_hot(label, classes)

    def augment(image, label):
        image = tf.image.resize_with_crop_or_pad(image + 1.0, size + 2 * pad, size + 2 * pad) - 1.0
        image = tf.image.random_crop(image, (size, size, 3))
        if flip:
            image = tf.image.random_flip_left_right(image)
        return image, label

    ds = tf.data.Dataset.from_tensor_slices((data.images, data.labels)).map(normalize).cache()
    ds = ds.shuffle(len(data), seed=seed, reshuffle_each_iteration=True)
    return ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _random_images(count: int, size: int, classes: int = 10):
    from pipeline.core.data import ImageSet

    rng = np.random.default_rng(0)
    return ImageSet(rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8),
                    rng.integers(0, classes, count).astype(np.int64), [f"c{i}" for i in range(classes)])


def _dataset(variant: str, data, settings):
    from pipeline.stages.train import make_dataset

    if variant == "cache":
        return cached_dataset(data, settings.batch_size, settings.seed, settings.flip)
    return make_dataset(data, settings.batch_size, True, settings.augment, settings.flip, settings.seed)


def _alternating(timers: dict, rounds: int) -> dict:
    """Each timer once per round after one warm-up call each, order rotating; per-round seconds per variant."""
    names = list(timers)
    failed = {}
    for name in names:
        try:
            timers[name]()
        except Exception as exc:  # noqa: BLE001 (XLA may refuse a model: reported, not fatal)
            failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    alive = [n for n in names if n not in failed]
    seconds: dict[str, list[float]] = {n: [] for n in alive}
    for r in range(rounds):
        for name in alive[r % len(alive):] + alive[:r % len(alive)]:
            started = time.perf_counter()
            timers[name]()
            seconds[name].append(time.perf_counter() - started)
    return {"seconds": seconds, "failed": failed}


def _summary(seconds: dict[str, list[float]], images: int, failed: dict) -> dict:
    plain = np.asarray(seconds["plain"])
    out = {}
    for name, values in seconds.items():
        values = np.asarray(values)
        out[name] = {"images_per_s": float(np.median(images / values)),
                     "ratio_to_plain": float(np.median(plain / values)),
                     "ratio_min": float(np.min(plain / values)), "ratio_max": float(np.max(plain / values))}
    for name, reason in failed.items():
        out[name] = {"failed": reason}
    return out


def measure_net(net: Net, images: int, rounds: int, batch_size: int) -> dict:
    """Training images/s of each variant on one net, paired by round."""
    from pipeline.core.tf_env import keras
    from pipeline.stages.train import FitSettings, compile_for_training

    keras.backend.clear_session()
    data = _random_images(images, net.size)
    settings = FitSettings(epochs=rounds + 1, batch_size=batch_size)
    steps = -(-images // batch_size)
    timers, started = {}, time.perf_counter()
    for variant in VARIANTS:
        model = build_net(net, len(data.class_names))
        compile_for_training(model, settings, steps)
        if variant == "jit":
            model.jit_compile = True
        dataset = _dataset(variant, data, settings)
        timers[variant] = lambda m=model, d=dataset: m.fit(d, epochs=1, verbose=0)
    measured = _alternating(timers, rounds)
    result = {"net": net.title, "size": net.size, "images": images, "batch_size": batch_size, "rounds": rounds,
              "variants": _summary(measured["seconds"], images, measured["failed"]),
              "seconds_total": time.perf_counter() - started}
    print(json.dumps(result), flush=True)
    return result


def measure_input_pipeline(size: int, images: int, rounds: int, batch_size: int) -> dict:
    """Images/s of the input pipelines alone (one epoch iterated, no model): can they starve training?"""
    from pipeline.stages.train import FitSettings

    data = _random_images(images, size)
    settings = FitSettings(epochs=1, batch_size=batch_size)
    timers = {}
    for variant in ("plain", "cache"):
        dataset = _dataset(variant, data, settings)
        timers[variant] = lambda d=dataset: sum(1 for _ in d)
    measured = _alternating(timers, rounds)
    return {"size": size, "images": images, "variants": _summary(measured["seconds"], images, measured["failed"])}


def render(nets: list[dict], pipelines: list[dict], elapsed_s: float) -> str:
    def cell(v: dict) -> str:
        if "failed" in v:
            return f"failed ({v['failed']})"
        return f"{v['images_per_s']:.0f} img/s, **{v['ratio_to_plain']:.2f}x** ({v['ratio_min']:.2f}-{v['ratio_max']:.2f})"

    first = nets[0]
    lines = ["## Training throughput on 2 CPU cores (`benchmarks/throughput.py`)", "",
             "Images per second through `pipeline.stages.train.fit`'s loop (`make_dataset` + `compile_for_training` "
             "+ `model.fit`, SGD, augmentation on) for: **plain** (as `fit` runs today), **jit** (the same with "
             "tf_keras `jit_compile=True`, XLA) and **cache** (the normalized float images `Dataset.cache()`d "
             "before the augmentation). One model per variant; a warm-up epoch each (tracing, XLA compilation) is "
             f"excluded; then {first['rounds']} rounds of one epoch of {first['images']} images (batch "
             f"{first['batch_size']}) per variant, the order rotating, ratio to plain taken within each round. "
             "Cells: median images/s, **median ratio to plain** (range over rounds). The machine is shared (another "
             "benchmark trains in the background on both cores): absolute images/s move with its load, read the "
             f"paired ratios. Run time {elapsed_s / 60:.1f} min.", "",
             "| net | input | " + " | ".join(VARIANTS) + " |", "|---|---:|" + "---|" * len(VARIANTS)]
    for r in nets:
        lines.append(f"| {r['net']} | {r['size']} px | " + " | ".join(cell(r["variants"][v]) for v in VARIANTS) + " |")
    lines += ["", "Input pipeline alone (one epoch iterated, no model): can the data side starve the training step?",
              "", "| input | plain | cache |", "|---:|---|---|"]
    for p in pipelines:
        lines.append(f"| {p['size']} px | " + " | ".join(cell(p["variants"][v]) for v in ("plain", "cache")) + " |")
    lines += ["", _verdict(nets, pipelines)]
    return "\n".join(lines)


def _verdict(nets: list[dict], pipelines: list[dict]) -> str:
    """What the ratios say, from the numbers of this run."""
    def ratios(variant: str) -> list[float]:
        return [r["variants"][variant]["ratio_to_plain"] for r in nets if "ratio_to_plain" in r["variants"][variant]]

    parts = []
    for variant, what in (("jit", "XLA (`jit_compile=True`)"), ("cache", "The cached pipeline")):
        found = ratios(variant)
        if not found:
            parts.append(f"{what} failed on every net.")
            continue
        if min(found) >= 1.10:
            judged = "a clear win on every net"
        elif max(found) < 0.90:
            judged = "slower on every net: not worth turning on"
        else:
            judged = "no clear win (under 1.10x on at least one net)"
        parts.append(f"{what}: {min(found):.2f}x-{max(found):.2f}x plain, {judged}.")
    slowest_pipeline = min(p["variants"]["plain"]["images_per_s"] for p in pipelines)
    fastest_training = max(r["variants"]["plain"]["images_per_s"] for r in nets)
    parts.append(f"The plain input pipeline alone delivers ≥ {slowest_pipeline:.0f} img/s, "
                 f"{slowest_pipeline / fastest_training:.1f}x the fastest training loop here ({fastest_training:.0f} "
                 "img/s, sharing the same cores).")
    return "Verdict: " + " ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="images per timed epoch (32 px; half at 64 px)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per variant after the warm-up")
    parser.add_argument("--batch-size", type=int, default=64, help="the search's proxy-training batch size")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_throughput.json", help="raw results")
    parser.add_argument("--no-write", action="store_true", help="print without updating BENCHMARKS.md")
    args = parser.parse_args()
    if args.images < args.batch_size or args.rounds < 1:
        raise SystemExit("--images must be at least --batch-size and --rounds at least 1")
    started = time.perf_counter()
    nets = [measure_net(net, args.images if net.size <= 32 else args.images // 2, args.rounds, args.batch_size)
            for net in NETS]
    pipelines = [measure_input_pipeline(size, args.images, args.rounds, args.batch_size) for size in (32, 64)]
    from pipeline.core.fsutil import write_json

    write_json(args.out, {"nets": nets, "input_pipeline": pipelines})
    markdown = render(nets, pipelines, time.perf_counter() - started)
    if not args.no_write:
        write_section("throughput", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
