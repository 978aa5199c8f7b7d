"""``tflpipe run``: every stage in order, resumable, all artifacts in one output folder, then the report.

``state.json`` records each finished stage and its results; a re-run with the same configuration
skips them and continues at the first unfinished stage. Every artifact is written atomically, so
an interrupted stage leaves nothing half-written behind.
"""
from __future__ import annotations

import gzip
import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.runner.config import CONVERSION_SETTINGS, TARGET_SETTINGS, RunConfig
from pipeline.core.errors import PipelineError
from pipeline.core.fsutil import atomic_path, ensure_writable_dir, write_bytes, write_json, write_text

log = logging.getLogger("tflpipe")

STATE_FILE = "state.json"
LABELS_FILE = "labels.txt"
KERAS_FILES = {"teacher": "teacher.h5", "float": "float.h5", "pruned": "pruned.h5", "clustered": "clustered.h5",
               "qat": "qat.h5"}
TFLITE_FILES = {
    "float32": "model_float32.tflite",
    "ptq_int8": "model_ptq_int8.tflite",
    "pruned_ptq_int8": "model_pruned_ptq_int8.tflite",
    "sparse_float32": "model_sparse_float32.tflite",  # pruned float32 stored sparse (--prune-pattern xnnpack)
    "dynamic": "model_dynamic.tflite",
    "float16": "model_float16.tflite",
    "int16x8": "model_int16x8.tflite",
    "selective_int8": "model_selective_int8.tflite",  # int8 with the worst layers in float (--selective-float)
    "int8": "model_int8.tflite",  # the deployable file: int8 from QAT (or PTQ when QAT is off)
}
QUANT_DEBUG_FILE = "quant_debug.json"
ANDROID_DIR = "android"


@dataclass
class RunContext:
    config: RunConfig
    out: Path
    state: dict = field(default_factory=dict)

    @cached_property
    def datasets(self):
        from pipeline.core.data import load_dataset, split

        data = load_dataset(self.config.data, self.config.input_size, progress=True)
        if data.skipped:
            log.warning("skipped %d unreadable file(s) in %s", data.skipped, self.config.data)
        train, val = split(data, self.config.validation_split, self.config.seed)
        log.info("data: %d train / %d validation images, %d classes", len(train), len(val), len(data.class_names))
        return train, val

    @property
    def flip(self) -> bool:
        from pipeline.core.data import mirror_safe

        return self.config.flip and mirror_safe(self.config.data)

    def path(self, name: str) -> Path:
        return self.out / name

    def save_keras(self, model, key: str) -> Path:
        target = self.path(KERAS_FILES[key])
        with atomic_path(target) as tmp:
            model.save(tmp, include_optimizer=False)
        return target

    def load_keras(self, key: str):
        from pipeline.stages.convert import load_keras_model

        if key == "qat" and self.config.cluster:
            from pipeline.stages.qat import load_qat

            return load_qat(self.path(KERAS_FILES[key]), self.load_keras("clustered"), self.pruned, True)
        return load_keras_model(self.path(KERAS_FILES[key]))

    @property
    def pruned(self) -> bool:
        return self.config.pruned

    @property
    def compressed_float_key(self) -> str:
        """The last float Keras model: clustered, else pruned, else the trained one."""
        return "clustered" if self.config.cluster else "pruned" if self.pruned else "float"

    @cached_property
    def distillation(self):
        """The teacher's guidance for every training stage, or None without --teacher."""
        from pipeline.stages.convert import load_keras_model
        from pipeline.stages.train import Distillation

        c = self.config
        if c.teacher is None:
            return None
        teacher = self.load_keras("teacher") if c.teacher_is_zoo_net else load_keras_model(c.teacher)
        return Distillation(teacher, c.kd_temperature, c.kd_alpha)


def _fit_settings(ctx: RunContext, epochs: int, lr: float, weight_decay: float, warmup: float = 0.0):
    from pipeline.stages.train import FitSettings

    c = ctx.config
    return FitSettings(epochs=epochs, learning_rate=lr, batch_size=c.batch_size, weight_decay=weight_decay,
                       label_smoothing=c.label_smoothing, augment=c.augment, flip=ctx.flip, warmup_epochs=warmup,
                       seed=c.seed)


def _train_float(ctx: RunContext, name: str, knobs: dict, epochs: int, key: str, weights: str | None = None,
                 distill=None) -> dict:
    from keras_models import build_model
    from pipeline.stages.train import fit, keras_accuracy, recalibrate_batchnorm

    c = ctx.config
    train, val = ctx.datasets
    model = build_model(name, c.input_size, classes=len(train.class_names), weights=weights, **knobs)
    settings = _fit_settings(ctx, epochs, c.learning_rate, c.weight_decay, warmup=min(1.0, epochs / 5))
    history = fit(model, train, val, settings, distill=distill)
    recalibrate_batchnorm(model, train, settings)
    ctx.save_keras(model, key)
    return {"params": int(model.count_params()), "history": history, "keras_accuracy": keras_accuracy(model, val)}


def stage_teacher(ctx: RunContext) -> dict:
    """Train the zoo net named by --teacher on the run's data, to distill from."""
    c = ctx.config
    knobs = {"alpha": c.teacher_alpha} if c.teacher_alpha is not None else {}
    return {"model": c.teacher, **_train_float(ctx, c.teacher, knobs, c.teacher_epochs or c.epochs, "teacher")}


def stage_train(ctx: RunContext) -> dict:
    c = ctx.config
    weights = c.weights
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise PipelineError(f"weights file not found: {weights}")
    write_text(ctx.path(LABELS_FILE), "\n".join(ctx.datasets[0].class_names) + "\n")
    result = _train_float(ctx, c.model, c.model_knobs(), c.epochs, "float", weights, ctx.distillation)
    return {**result, "distilled_from": c.teacher}


def stage_prune(ctx: RunContext) -> dict:
    from pipeline.stages.prune import measured_sparsity, prune
    from pipeline.stages.train import keras_accuracy

    c = ctx.config
    train, val = ctx.datasets
    model = prune(ctx.load_keras("float"), train, val, c.prune_sparsity,
                  _fit_settings(ctx, c.prune_epochs, c.prune_learning_rate, 0.0), c.prune_pattern, ctx.distillation,
                  c.prune_allocation)
    ctx.save_keras(model, "pruned")
    return {"keras_accuracy": keras_accuracy(model, val), "pattern": c.prune_pattern, "allocation": c.prune_allocation,
            **measured_sparsity(model)}


def stage_cluster(ctx: RunContext) -> dict:
    from pipeline.stages.cluster import cluster, keras_unique_values
    from pipeline.stages.prune import measured_sparsity
    from pipeline.stages.train import keras_accuracy

    c = ctx.config
    train, val = ctx.datasets
    model = cluster(ctx.load_keras("pruned" if ctx.pruned else "float"), train, val, c.cluster,
                    _fit_settings(ctx, c.cluster_epochs, c.cluster_learning_rate, 0.0), c.cluster_init,
                    preserve_sparsity=ctx.pruned, distill=ctx.distillation, min_weights=c.cluster_min_weights)
    ctx.save_keras(model, "clustered")
    return {"keras_accuracy": keras_accuracy(model, val), "clusters": c.cluster, "init": c.cluster_init,
            "unique_values": keras_unique_values(model), "sparsity": measured_sparsity(model)["sparsity"]}


def stage_qat(ctx: RunContext) -> dict:
    from pipeline.stages.qat import SCHEMES, qat
    from pipeline.stages.train import keras_accuracy

    c = ctx.config
    train, val = ctx.datasets
    clustered = bool(c.cluster)
    model = qat(ctx.load_keras(ctx.compressed_float_key), train, val, _fit_settings(ctx, c.qat_epochs, c.qat_learning_rate, 0.0),
                preserve_sparsity=ctx.pruned, preserve_clusters=clustered, distill=ctx.distillation)
    ctx.save_keras(model, "qat")
    return {"keras_accuracy": keras_accuracy(model, val), "scheme": SCHEMES[ctx.pruned, clustered],
            "preserve_sparsity": ctx.pruned, "distilled_from": c.teacher}


def stage_convert(ctx: RunContext) -> dict:
    from pipeline.stages.convert import FULL_INT8_MODES, convert, float_ops

    c = ctx.config
    train, _ = ctx.datasets
    jobs = [("float32", "float", "float32"), ("ptq_int8", "float", "ptq_int8")]
    if ctx.pruned:
        jobs.append(("pruned_ptq_int8", "pruned", "ptq_int8"))
    if ctx.pruned and c.prune_pattern == "xnnpack":
        jobs.append(("sparse_float32", "pruned", "sparse_float32"))
    jobs += [(mode, ctx.compressed_float_key, mode) for mode in c.ptq_modes]
    jobs.append(("int8", "qat", "qat_int8") if c.qat else ("int8", ctx.compressed_float_key, "ptq_int8"))
    results = {}
    for key, source, mode in jobs:
        start = time.perf_counter()
        data = convert(ctx.load_keras(source), mode, train.images, c.io_dtype)
        target = write_bytes(ctx.path(TFLITE_FILES[key]), data)
        results[key] = {"file": target.name, "mode": mode, "from": KERAS_FILES[source],
                        "seconds": round(time.perf_counter() - start, 1)}
        if mode in FULL_INT8_MODES:
            results[key]["float_ops"] = float_ops(target)
            if results[key]["float_ops"]:
                log.warning("%s still has float ops: %s", target.name, ", ".join(results[key]["float_ops"]))
    return results


def stage_quant_debug(ctx: RunContext) -> dict:
    """Per-layer int8 error of the final float model; with --selective-float, an int8 file keeping the worst in float."""
    from pipeline.stages.convert import float_ops
    from pipeline.stages.quant_debug import EDGETPU_NOTE, layer_errors, selective_quantize

    c = ctx.config
    train, _ = ctx.datasets
    model = ctx.load_keras(ctx.compressed_float_key)
    rows = layer_errors(model, train.images)
    write_json(ctx.path(QUANT_DEBUG_FILE), {"model": KERAS_FILES[ctx.compressed_float_key], "layers": rows})
    result: dict = {"file": QUANT_DEBUG_FILE, "from": KERAS_FILES[ctx.compressed_float_key],
                    "worst": [{k: r[k] for k in ("layer", "op", "rmse_over_scale")} for r in rows[:5]]}
    if c.selective_float:
        kept = rows[: c.selective_float]
        target = write_bytes(ctx.path(TFLITE_FILES["selective_int8"]), selective_quantize(model, train.images, [r["tensor"] for r in kept]))
        result["selective"] = {"file": target.name, "float_layers": [r["layer"] for r in kept],
                               "float_ops": float_ops(target), "edgetpu": EDGETPU_NOTE}
    return result


def stage_metadata(ctx: RunContext) -> dict:
    from pipeline.stages.metadata import write_metadata
    from pipeline.core.labels import read_labels

    labels = read_labels(ctx.path(LABELS_FILE))
    written = []
    for key, name in TFLITE_FILES.items():
        if ctx.path(name).exists():
            write_metadata(ctx.path(name), labels, name=f"{ctx.config.model} ({key})",
                           description=f"{ctx.config.model} classifier produced by tflpipe ({key}).")
            written.append(name)
    return {"files": written, "labels": len(labels)}


def stage_evaluate(ctx: RunContext) -> dict:
    from pipeline.core.litert import benchmark, evaluate
    from pipeline.stages.train import keras_accuracy

    _, val = ctx.datasets
    stages: dict[str, dict] = {}
    for key, name in KERAS_FILES.items():
        if ctx.path(name).exists():
            stages[f"keras_{key}"] = {"kind": "keras", "file": name, "accuracy": keras_accuracy(ctx.load_keras(key), val)}
    for key, name in TFLITE_FILES.items():
        path = ctx.path(name)
        if not path.exists():
            continue
        data = path.read_bytes()
        entry = {"kind": "tflite", "file": name, **evaluate(path, val, threads=2, progress=True),
                 "size_bytes": len(data), "gzip_bytes": len(gzip.compress(data, 9)),
                 "weight_sparsity": tflite_weight_sparsity(path)}
        if key == "int8" and ctx.config.cluster:
            from pipeline.stages.cluster import tflite_unique_values

            clustered = [u for u in tflite_unique_values(path).values() if u["weights"] >= ctx.config.cluster_min_weights]
            entry["max_unique_per_channel"] = max(u["max_unique_per_channel"] for u in clustered)
        for threads in (1, 2):
            entry[f"latency_ms_{threads}t"] = benchmark(path, threads, runs=ctx.config.benchmark_runs)["latency_ms_median"]
        stages[f"tflite_{key}"] = entry
    return {"stages": stages, "validation_images": len(val)}


class StageFailed(PipelineError):
    """A stage that ran to the end but whose verdict stops the run; its result still goes into the report."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


def stage_edgetpu(ctx: RunContext) -> dict:
    """Static Edge TPU check of the deployable model, and the real compiler's verdict when it is installed."""
    from edgetpu.check import check_model
    from edgetpu.compiler import INSTALL_HINT, compile_model, find_compiler

    model = ctx.path(TFLITE_FILES["int8"])
    check = check_model(model)
    result: dict = {"check": check.to_dict()}
    cpu_ops = dict(check.cpu_ops)
    if find_compiler():
        compiled = compile_model(model, ctx.path("edgetpu")).to_dict()
        result["compile"] = compiled
        cpu_ops = {name: n for m in compiled["models"] for name, n in m["cpu_ops"].items()}
    else:
        result["compile"] = {"skipped": INSTALL_HINT}
        log.warning("edgetpu: static check only; %s", INSTALL_HINT)
    mapped = not check.model_errors and not cpu_ops
    result["fully_mapped"] = mapped
    if not mapped and not ctx.config.allow_cpu_ops:
        problems = check.model_errors or [f"{name} x{n}" for name, n in cpu_ops.items()]
        raise StageFailed(f"edgetpu: the model does not map fully to the Edge TPU ({'; '.join(problems)}); "
                          "see report.md for the reasons, or pass --allow-cpu-ops to accept CPU ops", result)
    return result


def stage_nnapi(ctx: RunContext) -> dict:
    """Which ops of the deployable model Android's NNAPI delegate takes, by API level."""
    from pipeline.targets.nnapi import check_model

    result = check_model(ctx.path(TFLITE_FILES["int8"]), api_level=ctx.config.nnapi_api_level)
    if result["cpu_ops"]:
        log.warning("nnapi: %d of %d ops fall back to the CPU at API %d", result["total_ops"] - result["delegated_ops"],
                    result["total_ops"], result["api_level"])
    return result


def stage_android(ctx: RunContext) -> dict:
    """The Android demo's assets (model, labels, model_config.json) in the run folder, ready to copy."""
    from pipeline.targets.android.export import export_android

    return export_android(ctx.out, ctx.path(ANDROID_DIR))


def tflite_weight_sparsity(path: Path) -> float:
    """Fraction of conv/FC kernel values in a .tflite file that encode exactly zero."""
    from pipeline.core.tflite_file import read_model

    model = read_model(path)
    kernel_ids = {op.inputs[1] for op in model.operators if op.name in ("CONV_2D", "FULLY_CONNECTED") and len(op.inputs) > 1}
    zeros = total = 0
    for i in kernel_ids:
        t = model.tensors[i]
        if t.constant:
            values = model.tensor_data(i)
            zeros += int(np.sum(values == (t.zero_point[0] if t.zero_point else 0)))
            total += values.size
    return zeros / total if total else 0.0


STAGES: list[tuple[str, Callable[[RunContext], dict], Callable[[RunConfig], bool]]] = [
    ("teacher", stage_teacher, lambda c: c.teacher_is_zoo_net),
    ("train", stage_train, lambda c: True),
    ("prune", stage_prune, lambda c: c.pruned),
    ("cluster", stage_cluster, lambda c: c.cluster > 0),
    ("qat", stage_qat, lambda c: c.qat),
    ("convert", stage_convert, lambda c: True),
    ("quant_debug", stage_quant_debug, lambda c: c.debug_quantization),
    ("metadata", stage_metadata, lambda c: True),
    ("evaluate", stage_evaluate, lambda c: True),
    ("edgetpu", stage_edgetpu, lambda c: "edgetpu" in c.targets),
    ("nnapi", stage_nnapi, lambda c: "nnapi" in c.targets),
    ("android", stage_android, lambda c: "android" in c.targets),
]


def run_pipeline(config: RunConfig, out: str | Path, restart: bool = False) -> dict:
    """Run (or resume) every stage for ``config`` in ``out``; returns the final state."""
    out = ensure_writable_dir(out)
    state_path = out / STATE_FILE
    state = {"config": config.to_dict(), "done": [], "results": {}}
    if state_path.exists() and not restart:
        import json

        try:
            previous = json.loads(state_path.read_text())
        except ValueError:
            raise PipelineError(f"{state_path} is corrupt; re-run with --restart to start over") from None
        changed = _model_changes(previous.get("config", {}), config)
        if set(changed) - set(CONVERSION_SETTINGS):
            raise PipelineError(f"{out} holds a run with other settings ({', '.join(changed)}); "
                                "use another --out or --restart")
        state = {**previous, "config": config.to_dict()}
        if changed:  # only conversion settings: keep the trained models, redo conversion onwards
            later = [name for name, _, _ in STAGES[[n for n, _, _ in STAGES].index("convert"):]]
            state["done"] = [name for name in state["done"] if name not in later]
    from pipeline.runner.report import write_report

    ctx = RunContext(config, out, state)
    for name, stage, enabled in STAGES:
        if not enabled(config):
            continue
        if name in state["done"]:
            log.info("stage %s: done earlier, skipped", name)
            continue
        log.info("stage %s ...", name)
        start = time.perf_counter()
        try:
            result = stage(ctx)
        except StageFailed as failure:
            state["results"][name] = {**failure.result, "failed": str(failure)}
            write_json(state_path, state)
            write_report(out, config, state)
            raise
        result["seconds"] = round(time.perf_counter() - start, 1)
        state["results"][name] = result
        if name not in state["done"]:
            state["done"].append(name)
        write_json(state_path, state)
        log.info("stage %s finished in %.1f s", name, result["seconds"])
    write_report(out, config, state)  # a view of the state, refreshed on every run
    return state


def _model_changes(previous: dict, config: RunConfig) -> list[str]:
    """Settings that differ from a finished run's and would change its models.

    Deployment targets only add stages after the models exist, and settings the earlier run did not
    know yet count as their defaults, so neither forces a retrain; conversion settings are returned
    (the caller redoes conversion) but need no retraining either.
    """
    before = {**RunConfig().to_dict(), **previous}
    now = config.to_dict()
    return sorted(key for key in now if key not in TARGET_SETTINGS and before.get(key) != now[key])
