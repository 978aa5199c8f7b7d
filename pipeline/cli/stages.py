"""Commands for the whole pipeline (``run``) and for each stage alone on files."""
from __future__ import annotations

import logging
from pathlib import Path

import click

from pipeline.cli.common import emit, json_option
from pipeline.runner.config import CENTROID_INITS, CONVERT_MODES, PRUNE_ALLOCATIONS, PTQ_MODES, TARGETS
from pipeline.core.data import load_dataset, load_image, mirror_safe, split
from pipeline.core.errors import PipelineError

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


def _distill_options(func):
    for option in reversed([
        click.option("--teacher", help="Distill from this teacher: a saved Keras model (.h5/.keras)"
                                       " or, in `run`, a zoo net name trained first on the same data."),
        click.option("--kd-temperature", type=float, help="Softmax temperature of the distilled targets [default: 4]."),
        click.option("--kd-alpha", type=float, help="Weight of the teacher's targets against the labels [default: 0.9]."),
    ]):
        func = option(func)
    return func


@click.command()
@click.option("--config", "config_path", type=_existing, help="YAML file of settings; flags override it.")
@_model_options
@_distill_options
@click.option("--teacher-alpha", type=float, help="Width multiplier of a zoo-net teacher.")
@click.option("--teacher-epochs", type=int, help="Training epochs of a zoo-net teacher [default: --epochs].")
@click.option("--prune-sparsity", type=float, help="Target weight sparsity of magnitude pruning; 0 skips pruning.")
@click.option("--prune-epochs", type=int, help="Fine-tuning epochs while pruning.")
@click.option("--prune-pattern", help="unstructured (default), m:n structured such as 2:4, or xnnpack "
                                      "(1x1 convs only, for XNNPACK sparse inference; needs sparsity >= 0.67).")
@click.option("--prune-allocation", type=click.Choice(PRUNE_ALLOCATIONS),
              help="Spread of unstructured sparsity over layers: uniform (default) or erk (big layers pruned more).")
@click.option("--cluster", type=int, help="Weight clusters per layer (weight sharing); 0 skips clustering.")
@click.option("--cluster-init", type=click.Choice(CENTROID_INITS), help="Centroid initialization [default: kmeans++].")
@click.option("--cluster-epochs", type=int, help="Fine-tuning epochs while clustering [default: 1].")
@click.option("--cluster-min-weights", type=int, help="Leave kernels with fewer weights unclustered [default: 0].")
@click.option("--qat/--no-qat", default=None, help="Quantization-aware training before int8 conversion "
                                                    "(PQAT/CQAT/PCQAT keep pruning and clustering).")
@click.option("--qat-epochs", type=int, help="QAT fine-tuning epochs.")
@click.option("--io-dtype", type=click.Choice(["uint8", "int8"]), help="Input/output type of the int8 models.")
@click.option("--ptq-mode", "ptq_modes", multiple=True, type=click.Choice(PTQ_MODES),
              help="Extra post-training conversion for CPU/GPU targets; repeatable.")
@click.option("--quant-debug", is_flag=True, default=None, help="Per-layer int8 error report (quant_debug.json).")
@click.option("--selective-float", type=int, help="Keep this many worst layers in float (model_selective_int8.tflite).")
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
    from pipeline.runner.config import load_config
    from pipeline.runner.run import run_pipeline

    _setup_logging(quiet)
    if targets:
        flags["targets"] = list(targets)
    flags["ptq_modes"] = list(flags["ptq_modes"]) or None
    config = load_config(config_path, flags)
    state = run_pipeline(config, out, restart=restart)
    from pipeline.runner.report import summary_rows, target_lines

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
    from pipeline.core.fsutil import atomic_path

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        model.save(tmp, include_optimizer=False)


@click.command()
@_model_options
@_distill_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to save the Keras model (.h5 or .keras).")
@json_option
def train(out, as_json, **flags):
    """Train the float Keras model alone (from a teacher with --teacher) and save it."""
    from keras_models import build_model
    from pipeline.runner.config import load_config
    from pipeline.stages.train import FitSettings, fit, keras_accuracy, recalibrate_batchnorm

    _setup_logging()
    c = load_config(None, flags)
    distill = _load_teacher(c)
    tr, val = _load_split(c.data, c.input_size, c.validation_split, c.seed)
    model = build_model(c.model, c.input_size, classes=len(tr.class_names), weights=c.weights, **c.model_knobs())
    settings = FitSettings(c.epochs, c.learning_rate, c.batch_size, c.weight_decay, c.label_smoothing, c.augment,
                           flip=c.flip and mirror_safe(c.data), seed=c.seed)
    fit(model, tr, val, settings, distill=distill)
    recalibrate_batchnorm(model, tr, settings)
    _save(model, out)
    emit({"model": str(out), "accuracy": keras_accuracy(model, val), "n": len(val)}, as_json, lambda d: f"saved {d['model']} (validation accuracy {d['accuracy']:.2%})")


def _load_teacher(c):
    """The saved teacher model of ``--teacher`` as a Distillation, or None."""
    from pipeline.stages.convert import load_keras_model
    from pipeline.stages.train import Distillation

    if c.teacher is None:
        return None
    if c.teacher_is_zoo_net:
        raise PipelineError(f"--teacher {c.teacher}: give a saved Keras model here (train it with `tflpipe train`); "
                            "zoo-net teachers are trained by `tflpipe run`")
    return Distillation(load_keras_model(c.teacher), c.kd_temperature, c.kd_alpha)


def _fine_tuning(model_path: Path, data: str, epochs: int, learning_rate: float):
    """What a verb that fine-tunes a saved model needs: the model, its data split and the fit settings."""
    from pipeline.stages.convert import load_keras_model
    from pipeline.stages.train import FitSettings

    _setup_logging()
    model = load_keras_model(model_path)
    train_set, val = _load_split(data, model.input_shape[1], 0.1, 0)
    return model, train_set, val, FitSettings(epochs, learning_rate, weight_decay=0.0, flip=mirror_safe(data))


def _data_option(func):
    return click.option("--data", default="builtin:digits", show_default=True, help="Image folder (<class>/*.jpg) or builtin:digits.")(func)


@click.command()
@click.argument("model_path", type=_existing_any)
@_data_option
@click.option("--sparsity", type=float, default=0.5, show_default=True, help="Target weight sparsity.")
@click.option("--pattern", default="unstructured", show_default=True,
              help="unstructured, m:n structured such as 2:4, or xnnpack (1x1 convs, sparse-inference layout).")
@click.option("--allocation", type=click.Choice(PRUNE_ALLOCATIONS), default="uniform", show_default=True,
              help="Spread of unstructured sparsity over layers: uniform, or erk (big layers pruned more).")
@click.option("--epochs", type=int, default=2, show_default=True, help="Fine-tuning epochs while pruning.")
@click.option("--learning-rate", type=float, default=0.01, show_default=True, help="Fine-tuning learning rate.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to save the pruned model.")
@json_option
def prune(model_path, data, sparsity, pattern, allocation, epochs, learning_rate, out, as_json):
    """Magnitude-prune a Keras model to a target sparsity (PolynomialDecay), then strip the wrappers."""
    from pipeline.stages.prune import measured_sparsity, prune as prune_model
    from pipeline.stages.train import keras_accuracy

    model, tr, val, settings = _fine_tuning(model_path, data, epochs, learning_rate)
    pruned = prune_model(model, tr, val, sparsity, settings, pattern, allocation=allocation)
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
@click.option("--preserve-clusters/--no-preserve-clusters", default=None,
              help="Cluster-preserving QAT; default: on when every kernel has at most 256 distinct values.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to save the QAT model.")
@json_option
def qat(model_path, data, epochs, learning_rate, preserve_sparsity, preserve_clusters, out, as_json):
    """Quantization-aware training of a Keras model (PQAT, CQAT or PCQAT when it is pruned and/or clustered)."""
    from pipeline.stages.cluster import keras_unique_values
    from pipeline.stages.prune import measured_sparsity
    from pipeline.stages.qat import SCHEMES, qat as qat_model
    from pipeline.stages.train import keras_accuracy

    model, tr, val, settings = _fine_tuning(model_path, data, epochs, learning_rate)
    if preserve_sparsity is None:
        preserve_sparsity = measured_sparsity(model)["sparsity"] > 0.05
    if preserve_clusters is None:
        preserve_clusters = max(keras_unique_values(model).values(), default=257) <= 256
    wrapped = qat_model(model, tr, val, settings, preserve_sparsity, preserve_clusters)
    _save(wrapped, out)
    emit({"model": str(out), "accuracy": keras_accuracy(wrapped, val), "scheme": SCHEMES[preserve_sparsity, preserve_clusters],
          "preserve_sparsity": preserve_sparsity, "preserve_clusters": preserve_clusters},
         as_json, lambda d: f"saved {d['model']} ({d['scheme']}, validation accuracy {d['accuracy']:.2%})")


@click.command()
@click.argument("model_path", type=_existing_any)
@_data_option
@click.option("--clusters", type=int, default=16, show_default=True, help="Distinct weight values per layer.")
@click.option("--init", "centroid_init", type=click.Choice(CENTROID_INITS), default="kmeans++", show_default=True,
              help="Centroid initialization.")
@click.option("--epochs", type=int, default=1, show_default=True, help="Fine-tuning epochs while clustering.")
@click.option("--learning-rate", type=float, default=0.002, show_default=True, help="Fine-tuning learning rate.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to save the clustered model.")
@json_option
def cluster(model_path, data, clusters, centroid_init, epochs, learning_rate, out, as_json):
    """Cluster a Keras model's weights (weight sharing), fine-tune, strip; keeps the zeros of a pruned model."""
    from pipeline.stages.cluster import cluster as cluster_model, keras_unique_values
    from pipeline.stages.prune import measured_sparsity
    from pipeline.stages.train import keras_accuracy

    model, tr, val, settings = _fine_tuning(model_path, data, epochs, learning_rate)
    sparse = measured_sparsity(model)["sparsity"] > 0.05
    clustered = cluster_model(model, tr, val, clusters, settings, centroid_init, preserve_sparsity=sparse)
    _save(clustered, out)
    emit({"model": str(out), "accuracy": keras_accuracy(clustered, val), "preserve_sparsity": sparse,
          "unique_values": keras_unique_values(clustered)}, as_json,
         lambda d: f"saved {d['model']} (at most {max(d['unique_values'].values())} distinct weights per layer, "
                   f"validation accuracy {d['accuracy']:.2%})")


@click.command()
@click.argument("model_path", type=_existing_any)
@click.option("--mode", type=click.Choice(CONVERT_MODES), default="ptq_int8", show_default=True,
              help="float32, post-training int8, int8 from a QAT model, or a CPU/GPU mode: dynamic-range int8, "
                   "float16, int16x8 (int16 activations), sparse_float32 (pruned weights stored sparse).")
@click.option("--representative-data", help="Image folder (or builtin:digits) for int8 calibration.")
@click.option("--io-dtype", type=click.Choice(["uint8", "int8"]), default="uint8", show_default=True, help="Integer input/output type.")
@click.option("--qat-base", type=_existing_any,
              help="For a CQAT/PCQAT model: the clustered float model it was trained from (TF-MOT cannot reload it alone).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .tflite path.")
@json_option
def convert(model_path, mode, representative_data, io_dtype, qat_base, out, as_json):
    """Convert a .keras/.h5/SavedModel to TFLite (float32, PTQ/QAT int8, or another post-training mode)."""
    from pipeline.stages.convert import CALIBRATED_MODES, FULL_INT8_MODES, convert as convert_model, float_ops, load_keras_model
    from pipeline.core.fsutil import write_bytes

    if qat_base is not None:
        from pipeline.stages.prune import measured_sparsity
        from pipeline.stages.qat import load_qat

        base = load_keras_model(qat_base)
        model = load_qat(model_path, base, measured_sparsity(base)["sparsity"] > 0.05, True)
    else:
        model = load_keras_model(model_path)
    images = None
    if mode in CALIBRATED_MODES:
        if not representative_data:
            raise click.UsageError(f"--mode {mode} needs --representative-data")
        images = load_dataset(representative_data, model.input_shape[1]).images
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(out, convert_model(model, mode, images, io_dtype))
    result = {"model": str(out), "mode": mode, "size_bytes": out.stat().st_size,
              "float_ops": float_ops(out) if mode in FULL_INT8_MODES else []}
    emit(result, as_json, lambda d: f"wrote {d['model']} ({d['size_bytes']:,} bytes, {d['mode']})")


@click.command("quant-debug")
@click.argument("model_path", type=_existing_any)
@click.option("--representative-data", required=True, help="Image folder (or builtin:digits) to calibrate and compare on.")
@click.option("--top", type=int, default=10, show_default=True, help="How many of the worst layers to print.")
@click.option("--selective-float", type=int, default=0, show_default=True,
              help="Write an int8 model keeping this many worst layers in float (needs --out).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Where to write the selective int8 .tflite.")
@json_option
def quant_debug(model_path, representative_data, top, selective_float, out, as_json):
    """Per-layer int8 error of a Keras model (QuantizationDebugger), worst first; optionally selective int8."""
    from pipeline.stages.convert import float_ops, load_keras_model
    from pipeline.core.fsutil import write_bytes
    from pipeline.stages.quant_debug import EDGETPU_NOTE, layer_errors, selective_quantize

    if selective_float and out is None:
        raise click.UsageError("--selective-float needs --out for the selective int8 model")
    model = load_keras_model(model_path)
    images = load_dataset(representative_data, model.input_shape[1]).images
    rows = layer_errors(model, images)
    result: dict = {"layers": rows}
    if selective_float:
        kept = rows[:selective_float]
        out.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(out, selective_quantize(model, images, [r["tensor"] for r in kept]))
        result["selective"] = {"model": str(out), "float_layers": [r["layer"] for r in kept], "float_ops": float_ops(out),
                               "edgetpu": EDGETPU_NOTE}

    def text(d: dict) -> str:
        lines = [f"{'layer':32} {'op':18} {'RMSE/scale':>10}"]
        lines += [f"{r['layer'][:32]:32} {r['op'][:18]:18} {r['rmse_over_scale']:>10.3f}" for r in d["layers"][:top]]
        if "selective" in d:
            lines.append(f"wrote {d['selective']['model']}: {', '.join(d['selective']['float_layers'])} kept in float; "
                         f"it {d['selective']['edgetpu']}")
        return "\n".join(lines)

    emit(result, as_json, text)


@click.command()
@click.argument("model_path", type=_existing)
@click.option("--labels", "labels_path", type=_existing, required=True, help="Labels file, one label per line.")
@click.option("--mean", type=float, default=127.5, show_default=True, help="Input normalization mean (on 0-255 pixels).")
@click.option("--std", type=float, default=127.5, show_default=True, help="Input normalization std (on 0-255 pixels).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write a copy here instead of in place.")
@json_option
def metadata(model_path, labels_path, mean, std, out, as_json):
    """Write labels and normalization metadata into any image-classifier .tflite."""
    from pipeline.stages.metadata import write_metadata
    from pipeline.core.labels import read_labels
    from pipeline.core.tflite_file import read_model

    target = write_metadata(model_path, read_labels(labels_path), out, mean, std)
    emit({"model": str(target), "metadata": read_model(target).metadata}, as_json, lambda d: f"wrote metadata into {d['model']}")


@click.command()
@click.argument("model_path", type=click.Path(path_type=Path))
@json_option
def inspect(model_path, as_json):
    """Op histogram, tensor types, I/O quantization and metadata of any .tflite file."""
    from pipeline.core.describe import inspect_model, inspect_text

    emit(inspect_model(model_path), as_json, inspect_text)


@click.command()
@click.argument("model_path", type=click.Path(path_type=Path))
@click.option("--data", required=True, help="Image folder (<class>/*.jpg; class names matched to the model's labels) or builtin:digits.")
@click.option("--threads", type=int, default=2, show_default=True, help="LiteRT threads.")
@json_option
def evaluate(model_path, data, threads, as_json):
    """Top-1 accuracy of a .tflite classifier on an image folder."""
    from pipeline.core.litert import Classifier, evaluate as evaluate_model

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
    from pipeline.core.litert import benchmark as bench
    from pipeline.core.tflite_file import read_model

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
            lines += [f"  {t['score']:.3f}  {t['label']}" for t in r["top_k"]]
        return "\n".join(lines)

    emit({"predictions": results}, as_json, text)


@click.command("binarize")
@_data_option
@click.option("--input-size", type=int, default=32, show_default=True, help="Square input resolution in pixels.")
@click.option("--filters", default="64,128,256", show_default=True,
              help="Channels of the binary conv blocks, comma-separated (each block halves the resolution).")
@click.option("--float-stem", is_flag=True, help="Keep the first conv's weights float (XNOR-Net) instead of binary (BinaryNet).")
@click.option("--epochs", type=int, default=10, show_default=True, help="Training epochs.")
@click.option("--learning-rate", type=float, default=0.05, show_default=True, help="Peak learning rate (SGD, cosine decay).")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Training batch size.")
@click.option("--validation-split", type=float, default=0.1, show_default=True, help="Fraction held out for validation.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed for the split and training.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for binary.h5, model_lce.tflite, labels.txt and binarize.json.")
@json_option
def binarize_verb(data, input_size, filters, float_stem, epochs, learning_rate, batch_size, validation_split, seed, out, as_json):
    """Train a binarized net (1-bit weights and activations, larq) and convert it for Larq Compute Engine."""
    from pipeline.stages.binarize import BINARY_FIT, binarize
    from pipeline.core.fsutil import ensure_writable_dir
    from pipeline.stages.train import FitSettings

    try:
        widths = tuple(int(f) for f in filters.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {filters!r}", param_hint="--filters") from None
    if epochs < 1 or min(widths) < 1:
        raise click.UsageError("--epochs and every --filters entry must be at least 1")
    _setup_logging()
    ensure_writable_dir(out)
    tr, val = _load_split(data, input_size, validation_split, seed)
    settings = FitSettings(epochs, learning_rate, batch_size, BINARY_FIT.weight_decay, BINARY_FIT.label_smoothing,
                           flip=mirror_safe(data), seed=seed)
    report = binarize(tr, val, out, widths, binary_first_layer=not float_stem, settings=settings)
    emit(report, as_json, lambda d: f"saved {out / 'model_lce.tflite'} ({d['lce_file_bytes']:,} bytes, "
                                    f"{d['binary_weights']:,} binary weights), validation accuracy {d['accuracy']:.2%} "
                                    f"(Keras); runs on the LCE runtime, not stock LiteRT")


COMMANDS = [run, train, prune, cluster, qat, binarize_verb, convert, quant_debug, metadata, inspect, evaluate, benchmark, predict]
