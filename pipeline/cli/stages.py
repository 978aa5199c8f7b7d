"""The stage verbs: each runs one stage alone on files (train, prune, cluster, qat, convert, quant-debug,
metadata, binarize). Their defaults are ``RunConfig``'s, so a verb does what the same stage of ``run`` does."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from pipeline.cli.common import emit, existing_file, existing_path, json_option, setup_logging
from pipeline.cli.options import distill_options, model_options, stage_setting
from pipeline.core.data import load_dataset, mirror_safe, split
from pipeline.core.errors import PipelineError
from pipeline.core.fsutil import ensure_writable_file, save_keras_model
from pipeline.stages.options import CENTROID_INITS, CONVERSION_MODES, IO_DTYPES, PRUNE_ALLOCATIONS, QAT_SCHEMES


def _out_file(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    """``--out`` as a Path whose folder exists and is writable, checked before any work starts.

    An empty value is refused here: ``Path("")`` is the current folder, found out only when saving.
    """
    if value is None:
        return None
    if not value.strip():
        raise click.BadParameter("must not be empty", ctx=ctx, param=param)
    return ensure_writable_file(value)


def _out_option(help: str, required: bool = True) -> Callable:
    return click.option("--out", callback=_out_file, required=required, help=help)


_trust_option = click.option(
    "--trust-model-code", "trust_code", is_flag=True,
    help="Load Keras models even when they hold Lambda layers or classes that are not Keras, TF-MOT or zoo ones: "
         "loading runs the Python code stored in the file. Only for files you trust.")


def _load_split(data: str, size: int, validation_split: float, seed: int):
    return split(load_dataset(data, size, progress=True), validation_split, seed)


@click.command()
@model_options
@distill_options
@_out_option("Where to save the Keras model (.h5 or .keras).")
@_trust_option
@json_option
def train(out, as_json, trust_code, **flags):
    """Train the float Keras model alone (from a teacher with --teacher) and save it."""
    from keras_models import build_model
    from pipeline.runner.config import load_config
    from pipeline.stages.train import fit, keras_accuracy

    setup_logging()
    c = load_config(None, flags)
    distill = _load_teacher(c, trust_code)
    tr, val = _load_split(c.data, c.input_size, c.validation_split, c.seed)
    model = build_model(c.model, c.input_size, classes=len(tr.class_names), weights=c.weights, **c.model_knobs())
    fit(model, tr, val, c.fit_settings("train"), distill=distill)
    save_keras_model(model, out)
    emit({"model": str(out), "accuracy": keras_accuracy(model, val), "n": len(val)}, as_json, lambda d: f"saved {d['model']} (validation accuracy {d['accuracy']:.2%})")


def _load_teacher(c, trust_code: bool):
    """The saved teacher model of ``--teacher`` as a Distillation, or None."""
    from pipeline.stages.convert import load_keras_model
    from pipeline.stages.train import Distillation

    if c.teacher is None:
        return None
    if c.teacher_is_zoo_net:
        raise PipelineError(f"--teacher {c.teacher}: give a saved Keras model here (train it with `tflpipe train`); "
                            "zoo-net teachers are trained by `tflpipe run`")
    return Distillation(load_keras_model(c.teacher, trust_code), c.kd_temperature, c.kd_alpha)


def _fine_tuning(model_path: Path, data: str, phase: str, epochs: int, learning_rate: float, trust_code: bool):
    """What a verb that fine-tunes a saved model needs: the model, its data split and the phase's fit settings."""
    from pipeline.runner.config import RunConfig
    from pipeline.stages.convert import load_keras_model

    setup_logging()
    config = RunConfig(data=data, **{f"{phase}_epochs": epochs, f"{phase}_learning_rate": learning_rate}).validate()
    model = load_keras_model(model_path, trust_code)
    train_set, val = _load_split(data, model.input_shape[1], config.validation_split, config.seed)
    return model, train_set, val, config.fit_settings(phase)


_data_option = stage_setting("data", "Image folder (<class>/*.jpg) or builtin:digits.")


@click.command()
@click.argument("model_path", type=existing_path)
@_data_option
@stage_setting("prune_sparsity", "Target weight sparsity.", "--sparsity", type=float)
@stage_setting("prune_pattern", "unstructured, m:n structured such as 2:4, or xnnpack (1x1 convs, sparse-inference "
                                "layout).", "--pattern")
@stage_setting("prune_allocation", "Spread of unstructured sparsity over layers: uniform, or erk (big layers pruned "
                                   "more).", "--allocation", type=click.Choice(PRUNE_ALLOCATIONS))
@stage_setting("prune_epochs", "Fine-tuning epochs while pruning.", "--epochs", type=int)
@stage_setting("prune_learning_rate", "Fine-tuning learning rate.", "--learning-rate", type=float)
@_out_option("Where to save the pruned model.")
@_trust_option
@json_option
def prune(model_path, data, sparsity, pattern, allocation, epochs, learning_rate, out, trust_code, as_json):
    """Magnitude-prune a Keras model to a target sparsity (PolynomialDecay), then strip the wrappers."""
    from pipeline.stages.prune import measured_sparsity
    from pipeline.stages.prune import prune as prune_model
    from pipeline.stages.train import keras_accuracy

    model, tr, val, settings = _fine_tuning(model_path, data, "prune", epochs, learning_rate, trust_code)
    pruned = prune_model(model, tr, val, sparsity, settings, pattern, allocation=allocation)
    save_keras_model(pruned, out)
    emit({"model": str(out), "accuracy": keras_accuracy(pruned, val), **measured_sparsity(pruned)}, as_json,
         lambda d: f"saved {d['model']} (sparsity {d['sparsity']:.1%}, validation accuracy {d['accuracy']:.2%})")


@click.command()
@click.argument("model_path", type=existing_path)
@_data_option
@stage_setting("qat_epochs", "QAT fine-tuning epochs.", "--epochs", type=int)
@stage_setting("qat_learning_rate", "QAT learning rate.", "--learning-rate", type=float)
@click.option("--preserve-sparsity/--no-preserve-sparsity", default=None,
              help="Pruning-preserving QAT; default: on when the model has zeroed weights.")
@click.option("--preserve-clusters/--no-preserve-clusters", default=None,
              help="Cluster-preserving QAT; default: on when every kernel has at most 256 distinct values.")
@_out_option("Where to save the QAT model.")
@_trust_option
@json_option
def qat(model_path, data, epochs, learning_rate, preserve_sparsity, preserve_clusters, out, trust_code, as_json):
    """Quantization-aware training of a Keras model (PQAT, CQAT or PCQAT when it is pruned and/or clustered)."""
    from pipeline.stages.cluster import keras_unique_values
    from pipeline.stages.prune import measured_sparsity
    from pipeline.stages.qat import qat as qat_model
    from pipeline.stages.train import keras_accuracy

    model, tr, val, settings = _fine_tuning(model_path, data, "qat", epochs, learning_rate, trust_code)
    if preserve_sparsity is None:
        preserve_sparsity = measured_sparsity(model)["sparsity"] > 0.05
    if preserve_clusters is None:
        preserve_clusters = max(keras_unique_values(model).values(), default=257) <= 256
    wrapped = qat_model(model, tr, val, settings, preserve_sparsity, preserve_clusters)
    save_keras_model(wrapped, out)
    emit({"model": str(out), "accuracy": keras_accuracy(wrapped, val), "scheme": QAT_SCHEMES[preserve_sparsity, preserve_clusters],
          "preserve_sparsity": preserve_sparsity, "preserve_clusters": preserve_clusters},
         as_json, lambda d: f"saved {d['model']} ({d['scheme']}, validation accuracy {d['accuracy']:.2%})")


@click.command()
@click.argument("model_path", type=existing_path)
@_data_option
@click.option("--clusters", type=int, default=16, show_default=True, help="Distinct weight values per layer.")
@stage_setting("cluster_init", "Centroid initialization.", "--init", "centroid_init", type=click.Choice(list(CENTROID_INITS)))
@stage_setting("cluster_epochs", "Fine-tuning epochs while clustering.", "--epochs", type=int)
@stage_setting("cluster_learning_rate", "Fine-tuning learning rate.", "--learning-rate", type=float)
@_out_option("Where to save the clustered model.")
@_trust_option
@json_option
def cluster(model_path, data, clusters, centroid_init, epochs, learning_rate, out, trust_code, as_json):
    """Cluster a Keras model's weights (weight sharing), fine-tune, strip; keeps the zeros of a pruned model."""
    from pipeline.stages.cluster import cluster as cluster_model
    from pipeline.stages.cluster import keras_unique_values
    from pipeline.stages.prune import measured_sparsity
    from pipeline.stages.train import keras_accuracy

    model, tr, val, settings = _fine_tuning(model_path, data, "cluster", epochs, learning_rate, trust_code)
    sparse = measured_sparsity(model)["sparsity"] > 0.05
    clustered = cluster_model(model, tr, val, clusters, settings, centroid_init, preserve_sparsity=sparse)
    save_keras_model(clustered, out)
    emit({"model": str(out), "accuracy": keras_accuracy(clustered, val), "preserve_sparsity": sparse,
          "unique_values": keras_unique_values(clustered)}, as_json,
         lambda d: f"saved {d['model']} (at most {max(d['unique_values'].values())} distinct weights per layer, "
                   f"validation accuracy {d['accuracy']:.2%})")


@click.command()
@click.argument("model_path", type=existing_path)
@click.option("--mode", type=click.Choice(list(CONVERSION_MODES)), default="ptq_int8", show_default=True,
              help="; ".join(f"{m.name}: {m.help}" for m in CONVERSION_MODES.values()) + ".")
@click.option("--representative-data", help="Image folder (or builtin:digits) for int8 calibration.")
@stage_setting("io_dtype", "Integer input/output type.", type=click.Choice(IO_DTYPES))
@click.option("--qat-base", type=existing_path,
              help="For a CQAT/PCQAT model: the clustered float model it was trained from (TF-MOT cannot reload it alone).")
@_out_option("Output .tflite path.")
@_trust_option
@json_option
def convert(model_path, mode, representative_data, io_dtype, qat_base, out, trust_code, as_json):
    """Convert a .keras/.h5/SavedModel to TFLite (float32, PTQ/QAT int8, or another post-training mode)."""
    from pipeline.core.fsutil import write_bytes
    from pipeline.stages.convert import convert as convert_model
    from pipeline.stages.convert import float_ops, load_keras_model

    if qat_base is not None:
        from pipeline.stages.prune import measured_sparsity
        from pipeline.stages.qat import load_qat

        base = load_keras_model(qat_base, trust_code)
        model = load_qat(model_path, base, measured_sparsity(base)["sparsity"] > 0.05, True)
    else:
        model = load_keras_model(model_path, trust_code)
    images = None
    if CONVERSION_MODES[mode].calibrated:
        if not representative_data:
            raise click.UsageError(f"--mode {mode} needs --representative-data")
        images = load_dataset(representative_data, model.input_shape[1]).images
    write_bytes(out, convert_model(model, mode, images, io_dtype))
    result = {"model": str(out), "mode": mode, "size_bytes": out.stat().st_size,
              "float_ops": float_ops(out) if CONVERSION_MODES[mode].full_int8 else []}
    emit(result, as_json, lambda d: f"wrote {d['model']} ({d['size_bytes']:,} bytes, {d['mode']})")


@click.command("quant-debug")
@click.argument("model_path", type=existing_path)
@click.option("--representative-data", required=True, help="Image folder (or builtin:digits) to calibrate and compare on.")
@click.option("--top", type=int, default=10, show_default=True, help="How many of the worst layers to print.")
@click.option("--selective-float", type=int, default=0, show_default=True,
              help="Write an int8 model keeping this many worst layers in float (needs --out).")
@_out_option("Where to write the selective int8 .tflite.", required=False)
@_trust_option
@json_option
def quant_debug(model_path, representative_data, top, selective_float, out, trust_code, as_json):
    """Per-layer int8 error of a Keras model (QuantizationDebugger), worst first; optionally selective int8."""
    from pipeline.core.fsutil import write_bytes
    from pipeline.stages.convert import float_ops, load_keras_model
    from pipeline.stages.quant_debug import (
        EDGETPU_NOTE,
        layer_errors,
        selective_quantize,
    )

    if selective_float and out is None:
        raise click.UsageError("--selective-float needs --out for the selective int8 model")
    model = load_keras_model(model_path, trust_code)
    images = load_dataset(representative_data, model.input_shape[1]).images
    rows = layer_errors(model, images)
    result: dict = {"layers": rows}
    if selective_float:
        kept = rows[:selective_float]
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
@click.argument("model_path", type=existing_file)
@click.option("--labels", "labels_path", type=existing_file, required=True, help="Labels file, one label per line.")
@click.option("--mean", type=float, default=127.5, show_default=True, help="Input normalization mean (on 0-255 pixels).")
@click.option("--std", type=float, default=127.5, show_default=True, help="Input normalization std (on 0-255 pixels).")
@_out_option("Write a copy here instead of in place.", required=False)
@json_option
def metadata(model_path, labels_path, mean, std, out, as_json):
    """Write labels and normalization metadata into any image-classifier .tflite."""
    from pipeline.core.labels import read_labels
    from pipeline.core.tflite_file import read_model
    from pipeline.stages.metadata import write_metadata

    target = write_metadata(model_path, read_labels(labels_path), out, mean, std)
    emit({"model": str(target), "metadata": read_model(target).metadata}, as_json, lambda d: f"wrote metadata into {d['model']}")


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
    from pipeline.core.fsutil import ensure_writable_dir
    from pipeline.stages.binarize import BINARY_FIT, binarize
    from pipeline.stages.train import FitSettings

    try:
        widths = tuple(int(f) for f in filters.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {filters!r}", param_hint="--filters") from None
    if epochs < 1 or min(widths) < 1:
        raise click.UsageError("--epochs and every --filters entry must be at least 1")
    setup_logging()
    ensure_writable_dir(out)
    tr, val = _load_split(data, input_size, validation_split, seed)
    settings = FitSettings(epochs, learning_rate, batch_size, BINARY_FIT.weight_decay, BINARY_FIT.label_smoothing,
                           flip=mirror_safe(data), seed=seed)
    report = binarize(tr, val, out, widths, binary_first_layer=not float_stem, settings=settings)
    emit(report, as_json, lambda d: f"saved {out / 'model_lce.tflite'} ({d['lce_file_bytes']:,} bytes, "
                                    f"{d['binary_weights']:,} binary weights), validation accuracy {d['accuracy']:.2%} "
                                    f"(Keras); runs on the LCE runtime, not stock LiteRT")


COMMANDS = [train, prune, cluster, qat, binarize_verb, convert, quant_debug, metadata]
