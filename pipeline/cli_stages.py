"""Commands for the whole pipeline (``run``) and for each stage alone on files."""
from __future__ import annotations

import logging
from pathlib import Path

import click

from pipeline.cli import emit, json_option
from pipeline.config import TARGETS
from pipeline.data import load_dataset, load_image, mirror_safe, split
from pipeline.errors import PipelineError

_existing = click.Path(exists=True, dir_okay=False, path_type=Path)
_existing_any = click.Path(exists=True, path_type=Path)


class _EchoHandler(logging.Handler):
    """Stage progress on stderr via click, which finds the current stderr at each message."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"tflpipe: {record.getMessage()}", err=True)


def _setup_logging(quiet: bool = False) -> None:
    logger = logging.getLogger("tflpipe")
    if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
        logger.addHandler(_EchoHandler())
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def _model_options(func):
    for option in reversed([
        click.option("--model", help="Zoo net name (see `tflpipe models list`)."),
        click.option("--alpha", type=float, help="Width multiplier α."),
        click.option("--input-size", type=int, help="Square input resolution in pixels (the ρ multiplier)."),
        click.option("--data", help="Image folder (<class>/*.jpg) or builtin:digits (the default)."),
        click.option("--epochs", type=int, help="Float training epochs."),
        click.option("--batch-size", type=int, help="Training batch size."),
        click.option("--learning-rate", type=float, help="Peak learning rate of float training (SGD, cosine decay)."),
        click.option("--weights", help="Local weights file to fine-tune from, or 'imagenet' (downloads)."),
        click.option("--seed", type=int, help="Random seed for the split, initialization and augmentation."),
    ]):
        func = option(func)
    return func


@click.command()
@click.option("--config", "config_path", type=_existing, help="YAML file of settings; flags override it.")
@_model_options
@click.option("--prune-sparsity", type=float, help="Target weight sparsity of magnitude pruning; 0 skips pruning.")
@click.option("--prune-epochs", type=int, help="Fine-tuning epochs while pruning.")
@click.option("--qat/--no-qat", default=None, help="Quantization-aware training before int8 conversion.")
@click.option("--qat-epochs", type=int, help="QAT fine-tuning epochs.")
@click.option("--io-dtype", type=click.Choice(["uint8", "int8"]), help="Input/output type of the int8 models.")
@click.option("--target", "targets", multiple=True, type=click.Choice(TARGETS),
              help="Deployment target(s) to check/prepare for; repeatable.")
@click.option("--allow-cpu-ops", is_flag=True, default=None, help="Let the edgetpu target pass with ops left on the CPU.")
@click.option("--nnapi-api-level", type=int, help="Android API level (27-34) the nnapi target checks against [default: 30].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/default"), show_default=True,
              help="Output folder for every artifact of the run.")
@click.option("--restart", is_flag=True, help="Ignore finished stages in --out and start over.")
@click.option("--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@json_option
def run(config_path, out, restart, quiet, as_json, targets, **flags):
    """Run the whole pipeline: train, prune, QAT, convert, metadata, evaluate, report.

    Re-running with the same settings resumes at the first unfinished stage.
    """
    from pipeline.config import load_config
    from pipeline.run import run_pipeline

    _setup_logging(quiet)
    if targets:
        flags["targets"] = list(targets)
    config = load_config(config_path, flags)
    state = run_pipeline(config, out, restart=restart)
    from pipeline.report import summary_rows, target_lines

    targets = {name: state["results"][name] for name in TARGETS if name in state["results"]}
    emit({"out": str(out), "stages_done": state["done"], "summary": summary_rows(state), "targets": targets},
         as_json, lambda d: _summary_text(d, out, target_lines(state)))


def _summary_text(data: dict, out: Path, targets: list[str]) -> str:
    lines = [f"{'stage':28} {'accuracy':>9} {'gzip KiB':>9} {'1t ms':>7} {'2t ms':>7}"]
    for r in data["summary"]:
        gz = f"{r['gzip_bytes'] / 1024:.1f}" if "gzip_bytes" in r else "—"
        l1 = f"{r['latency_ms_1t']:.2f}" if "latency_ms_1t" in r else "—"
        l2 = f"{r['latency_ms_2t']:.2f}" if "latency_ms_2t" in r else "—"
        lines.append(f"{r['title']:28} {r['accuracy']:>9.2%} {gz:>9} {l1:>7} {l2:>7}")
    lines += targets
    lines.append(f"report: {out / 'report.md'}  deployable model: {out / 'model_int8.tflite'}")
    return "\n".join(lines)


def _load_split(data: str, size: int, validation_split: float, seed: int):

    return split(load_dataset(data, size, progress=True), validation_split, seed)


def _save(model, out: Path) -> None:
    from pipeline.fsutil import atomic_path

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        model.save(tmp, include_optimizer=False)


@click.command()
@_model_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to save the Keras model (.h5 or .keras).")
@json_option
def train(out, as_json, **flags):
    """Train the float Keras model alone and save it."""
    from keras_models import build_model
    from pipeline.config import load_config
    from pipeline.train import FitSettings, fit, keras_accuracy, recalibrate_batchnorm

    _setup_logging()
    c = load_config(None, flags)
    tr, val = _load_split(c.data, c.input_size, c.validation_split, c.seed)
    model = build_model(c.model, c.input_size, classes=len(tr.class_names), weights=c.weights, **c.model_knobs())
    fit(model, tr, val, FitSettings(c.epochs, c.learning_rate, c.batch_size, c.weight_decay, c.label_smoothing,
                                    flip=c.flip and mirror_safe(c.data), seed=c.seed))
    recalibrate_batchnorm(model, tr)
    _save(model, out)
    emit({"model": str(out), "accuracy": keras_accuracy(model, val), "n": len(val)}, as_json, lambda d: f"saved {d['model']} (validation accuracy {d['accuracy']:.2%})")


def _data_option(func):
    return click.option("--data", default="builtin:digits", show_default=True, help="Image folder (<class>/*.jpg) or builtin:digits.")(func)


@click.command()
@click.argument("model_path", type=_existing_any)
@_data_option
@click.option("--sparsity", type=float, default=0.5, show_default=True, help="Target weight sparsity.")
@click.option("--epochs", type=int, default=2, show_default=True, help="Fine-tuning epochs while pruning.")
@click.option("--learning-rate", type=float, default=0.01, show_default=True, help="Fine-tuning learning rate.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to save the pruned model.")
@json_option
def prune(model_path, data, sparsity, epochs, learning_rate, out, as_json):
    """Magnitude-prune a Keras model to a target sparsity (PolynomialDecay), then strip the wrappers."""
    from pipeline.convert import load_keras_model
    from pipeline.prune import measured_sparsity, prune as prune_model
    from pipeline.train import FitSettings, keras_accuracy

    _setup_logging()
    model = load_keras_model(model_path)
    tr, val = _load_split(data, model.input_shape[1], 0.1, 0)
    pruned = prune_model(model, tr, val, sparsity, FitSettings(epochs, learning_rate, weight_decay=0.0, flip=mirror_safe(data)))
    _save(pruned, out)
    emit({"model": str(out), "accuracy": keras_accuracy(pruned, val), **measured_sparsity(pruned)}, as_json,
         lambda d: f"saved {d['model']} (sparsity {d['sparsity']:.1%}, validation accuracy {d['accuracy']:.2%})")


@click.command()
@click.argument("model_path", type=_existing_any)
@_data_option
@click.option("--epochs", type=int, default=1, show_default=True, help="QAT fine-tuning epochs.")
@click.option("--learning-rate", type=float, default=0.002, show_default=True, help="QAT learning rate.")
@click.option("--preserve-sparsity/--no-preserve-sparsity", default=None,
              help="Pruning-preserving QAT; default: on when the model has zeroed weights.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to save the QAT model.")
@json_option
def qat(model_path, data, epochs, learning_rate, preserve_sparsity, out, as_json):
    """Quantization-aware training of a Keras model (PQAT when it is pruned)."""
    from pipeline.convert import load_keras_model
    from pipeline.prune import measured_sparsity
    from pipeline.qat import qat as qat_model
    from pipeline.train import FitSettings, keras_accuracy

    _setup_logging()
    model = load_keras_model(model_path)
    if preserve_sparsity is None:
        preserve_sparsity = measured_sparsity(model)["sparsity"] > 0.05
    tr, val = _load_split(data, model.input_shape[1], 0.1, 0)
    wrapped = qat_model(model, tr, val, FitSettings(epochs, learning_rate, weight_decay=0.0, flip=mirror_safe(data)), preserve_sparsity)
    _save(wrapped, out)
    emit({"model": str(out), "accuracy": keras_accuracy(wrapped, val), "preserve_sparsity": preserve_sparsity}, as_json,
         lambda d: f"saved {d['model']} (validation accuracy {d['accuracy']:.2%})")


@click.command()
@click.argument("model_path", type=_existing_any)
@click.option("--mode", type=click.Choice(["float32", "ptq_int8", "qat_int8"]), default="ptq_int8", show_default=True,
              help="float32, post-training int8, or int8 from a QAT model.")
@click.option("--representative-data", help="Image folder (or builtin:digits) for int8 calibration.")
@click.option("--io-dtype", type=click.Choice(["uint8", "int8"]), default="uint8", show_default=True, help="Integer input/output type.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .tflite path.")
@json_option
def convert(model_path, mode, representative_data, io_dtype, out, as_json):
    """Convert a .keras/.h5/SavedModel to TFLite (float32, PTQ int8 or QAT int8)."""
    from pipeline.convert import convert as convert_model, float_ops, load_keras_model
    from pipeline.fsutil import write_bytes

    model = load_keras_model(model_path)
    images = None
    if mode != "float32":
        if not representative_data:
            raise click.UsageError(f"--mode {mode} needs --representative-data")
        images = load_dataset(representative_data, model.input_shape[1]).images
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(out, convert_model(model, mode, images, io_dtype))
    result = {"model": str(out), "mode": mode, "size_bytes": out.stat().st_size,
              "float_ops": float_ops(out) if mode != "float32" else []}
    emit(result, as_json, lambda d: f"wrote {d['model']} ({d['size_bytes']:,} bytes, {d['mode']})")


@click.command()
@click.argument("model_path", type=_existing)
@click.option("--labels", "labels_path", type=_existing, required=True, help="Labels file, one label per line.")
@click.option("--mean", type=float, default=127.5, show_default=True, help="Input normalization mean (on 0-255 pixels).")
@click.option("--std", type=float, default=127.5, show_default=True, help="Input normalization std (on 0-255 pixels).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write a copy here instead of in place.")
@json_option
def metadata(model_path, labels_path, mean, std, out, as_json):
    """Write labels and normalization metadata into any image-classifier .tflite."""
    from pipeline.metadata import write_metadata
    from pipeline.tflite_file import parse_labels, read_model

    target = write_metadata(model_path, parse_labels(labels_path.read_text()), out, mean, std)
    emit({"model": str(target), "metadata": read_model(target).metadata}, as_json, lambda d: f"wrote metadata into {d['model']}")


@click.command()
@click.argument("model_path", type=click.Path(path_type=Path))
@json_option
def inspect(model_path, as_json):
    """Op histogram, tensor types, I/O quantization and metadata of any .tflite file."""
    from pipeline.inspect import inspect_model, inspect_text

    emit(inspect_model(model_path), as_json, inspect_text)


@click.command()
@click.argument("model_path", type=click.Path(path_type=Path))
@click.option("--data", required=True, help="Image folder (<class>/*.jpg; class names matched to the model's labels) or builtin:digits.")
@click.option("--threads", type=int, default=2, show_default=True, help="LiteRT threads.")
@json_option
def evaluate(model_path, data, threads, as_json):
    """Top-1 accuracy of a .tflite classifier on an image folder."""
    from pipeline.litert import Classifier, evaluate as evaluate_model

    size = Classifier.load(model_path).input_size[0]
    result = evaluate_model(model_path, load_dataset(data, size, progress=True), threads=threads, progress=True)
    emit(result, as_json, lambda d: f"accuracy {d['accuracy']:.2%} on {d['n']} images")


@click.command()
@click.argument("model_path", type=click.Path(path_type=Path))
@click.option("--threads", type=int, default=1, show_default=True, help="LiteRT (XNNPACK) threads.")
@click.option("--runs", type=int, default=50, show_default=True, help="Timed invocations.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed invocations first.")
@json_option
def benchmark(model_path, threads, runs, warmup, as_json):
    """Median LiteRT latency of any .tflite model."""
    from pipeline.litert import benchmark as bench
    from pipeline.tflite_file import read_model

    read_model(model_path)  # one-line errors for missing or damaged files
    if runs < 1:
        raise click.BadParameter("must be at least 1", param_hint="--runs")
    emit(bench(model_path, threads, runs, warmup), as_json,
         lambda d: f"median {d['latency_ms_median']:.2f} ms, p90 {d['latency_ms_p90']:.2f} ms ({d['threads']} thread(s), {d['runs']} runs)")


@click.command()
@click.argument("model_path", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", type=int, default=5, show_default=True, help="How many classes to print per image.")
@click.option("--threads", type=int, default=1, show_default=True, help="LiteRT threads.")
@json_option
def predict(model_path, images, top_k, threads, as_json):
    """Top-k classes of images, with labels from the model's metadata."""
    from pipeline.litert import Classifier

    clf = Classifier.load(model_path, threads)
    h, w = clf.input_size
    if h != w:
        raise PipelineError(f"only square inputs are supported, {model_path.name} takes {h}x{w}")
    results = [{"image": str(p), "top_k": clf.top_k(load_image(p, h), top_k)} for p in images]

    def text(d: dict) -> str:
        lines = []
        for r in d["predictions"]:
            lines.append(r["image"])
            lines += [f"  {t['score']:.3f}  {t['label']}" for t in r["top_k"]]
        return "\n".join(lines)

    emit({"predictions": results}, as_json, text)


COMMANDS = [run, train, prune, qat, convert, metadata, inspect, evaluate, benchmark, predict]
