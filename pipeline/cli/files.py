"""Verbs that work on any ``.tflite`` file, ours or third-party: inspect, evaluate, benchmark, predict."""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.common import emit, json_option, model_file
from pipeline.core.data import load_dataset, load_image
from pipeline.core.errors import PipelineError
from pipeline.core.labels import display_label


@click.command()
@click.argument("model_path", type=model_file)
@json_option
def inspect(model_path, as_json):
    """Op histogram, tensor types, I/O quantization and metadata of any .tflite file."""
    from pipeline.core.describe import inspect_model, inspect_text

    emit(inspect_model(model_path), as_json, inspect_text)


@click.command()
@click.argument("model_path", type=model_file)
@click.option("--data", required=True, help="Image folder (<class>/*.jpg; class names matched to the model's labels) or builtin:digits.")
@click.option("--threads", type=int, default=2, show_default=True, help="LiteRT threads.")
@json_option
def evaluate(model_path, data, threads, as_json):
    """Top-1 accuracy of a .tflite classifier on an image folder."""
    from pipeline.core.litert import Classifier
    from pipeline.core.litert import evaluate as evaluate_model

    size = Classifier.load(model_path).input_size[0]
    result = evaluate_model(model_path, load_dataset(data, size, progress=True), threads=threads, progress=True)
    emit(result, as_json, lambda d: f"accuracy {d['accuracy']:.2%} on {d['n']} images")


@click.command()
@click.argument("model_path", type=model_file)
@click.option("--threads", type=int, default=1, show_default=True, help="LiteRT (XNNPACK) threads.")
@click.option("--runs", type=int, default=50, show_default=True, help="Timed invocations.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed invocations first.")
@json_option
def benchmark(model_path, threads, runs, warmup, as_json):
    """Median LiteRT latency of any .tflite model."""
    from pipeline.core.litert import benchmark as bench
    from pipeline.core.tflite_file import read_model

    read_model(model_path)  # one-line errors for missing or damaged files
    if runs < 1:
        raise click.BadParameter("must be at least 1", param_hint="--runs")
    emit(bench(model_path, threads, runs, warmup), as_json,
         lambda d: f"median {d['latency_ms_median']:.2f} ms, p90 {d['latency_ms_p90']:.2f} ms ({d['threads']} thread(s), {d['runs']} runs)")


@click.command()
@click.argument("model_path", type=model_file)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", type=int, default=5, show_default=True, help="How many classes to print per image.")
@click.option("--threads", type=int, default=1, show_default=True, help="LiteRT threads.")
@json_option
def predict(model_path, images, top_k, threads, as_json):
    """Top-k classes of images, with labels from the model's metadata."""
    from pipeline.core.litert import Classifier

    clf = Classifier.load(model_path, threads)
    h, w = clf.input_size
    if h != w:
        raise PipelineError(f"only square inputs are supported, {model_path.name} takes {h}x{w}")
    results = [{"image": str(p), "top_k": clf.top_k(load_image(p, h), top_k)} for p in images]

    def text(d: dict) -> str:
        lines = []
        for r in d["predictions"]:
            lines.append(r["image"])
            lines += [f"  {t['score']:.3f}  {display_label(t['label'])}" for t in r["top_k"]]
        return "\n".join(lines)

    emit({"predictions": results}, as_json, text)



COMMANDS = [inspect, evaluate, benchmark, predict]
