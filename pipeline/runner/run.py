"""``tflpipe run``: every stage in order, resumable, all artifacts in one output folder, then the report.

``state.json`` records each finished stage and its results. Each stage declares the settings it
reads (:data:`STAGES`); a re-run with changed settings redoes exactly the stages from the first one
that reads a changed setting, and removes the files the new settings no longer produce (see
:data:`pipeline.stages.artifacts.ARTIFACTS`). Every artifact is written atomically, so an
interrupted stage leaves nothing half-written behind.
"""
from __future__ import annotations

import fcntl
import gzip
import json
import logging
import os
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator

from pipeline.core.errors import PipelineError, StageFailed, first_line
from pipeline.core.fsutil import ensure_writable_dir, save_keras_model, write_bytes, write_json, write_text
from pipeline.runner.config import RunConfig
from pipeline.stages.artifacts import ARTIFACT, ARTIFACTS, KERAS_FILES, base_float, compressed_float
from pipeline.targets import TARGETS

log = logging.getLogger("tflpipe")

STATE_FILE = "state.json"
LOCK_FILE = ".lock"
TENSORBOARD_DIR = "tensorboard"


@dataclass
class RunContext:
    config: RunConfig
    out: Path
    state: dict = field(default_factory=dict)
    _read_only: dict = field(default_factory=dict, repr=False)

    @cached_property
    def datasets(self):
        from pipeline.core.data import load_dataset, split

        data = load_dataset(self.config.data, self.config.input_size, progress=True)
        if data.skipped:
            log.warning("skipped %d unreadable file(s) in %s", data.skipped, self.config.data)
        train, val = split(data, self.config.validation_split, self.config.seed)
        log.info("data: %d train / %d validation images, %d classes", len(train), len(val), len(data.class_names))
        return train, val

    def path(self, key: str) -> Path:
        """The path of artifact ``key`` in the run folder."""
        return self.out / ARTIFACT[key].file

    def log_dir(self, stage: str) -> Path | None:
        return self.out / TENSORBOARD_DIR / stage if self.config.tensorboard else None

    def save_keras(self, model, key: str) -> Path:
        return save_keras_model(model, self.path(key))

    def load_keras(self, key: str):
        """A fresh copy of Keras artifact ``key``, for a stage that trains or wraps it."""
        from pipeline.stages.convert import load_keras_model

        if key == "qat" and self.config.cluster:
            from pipeline.stages.qat import load_qat

            return load_qat(self.path(key), self.load_keras("clustered"), self.config.pruned, True)
        return load_keras_model(self.path(key))

    def read_keras(self, key: str):
        """Keras artifact ``key`` for stages that only read it (convert, quant-debug, evaluate): loaded once per
        file version and shared, since rebuilding a model from ``.h5`` costs seconds each time."""
        stat = self.path(key).stat()
        version = (stat.st_mtime_ns, stat.st_size)
        cached = self._read_only.get(key)
        if cached is None or cached[0] != version:
            cached = self._read_only[key] = (version, self.load_keras(key))
        return cached[1]

    @cached_property
    def distillation(self):
        """The teacher's guidance for every training stage, or None without --teacher."""
        from pipeline.stages.convert import load_keras_model
        from pipeline.stages.train import Distillation

        c = self.config
        if c.teacher is None:
            return None
        teacher = self.load_keras("teacher") if c.teacher_is_zoo_net else load_keras_model(c.teacher, c.trust_model_code)
        return Distillation(teacher, c.kd_temperature, c.kd_alpha)


def build_net(name: str, input_size: int, classes: int, weights: str | None = None, knobs: dict | None = None):
    """A zoo net by name, or the best net of a search study (``searched:DIR``) at its own resolution, from
    scratch or from ``weights`` (a zoo net's checkpoint; for a searched net, its subnet taken out of a supernet)."""
    from pipeline.search.study import SEARCHED, load_best

    if name.startswith(SEARCHED):
        from pipeline.search.space import build

        arch = load_best(name[len(SEARCHED):])
        if input_size != arch.resolution:
            raise PipelineError(f"{name} was searched at {arch.resolution} px; run it with --input-size "
                                f"{arch.resolution}")
        model = build(arch, classes)
        if weights is not None:  # e.g. the subnet `tflpipe supernet extract` took out of a supernet
            from keras_models._common import load_weights

            try:
                load_weights(model, weights)
            except (OSError, ValueError) as exc:
                raise PipelineError(f"--weights {weights} does not fit {name} ({first_line(exc)}); give the .h5 "
                                    "of the same architecture (`tflpipe supernet extract --arch STUDY`)") from None
        return model
    from keras_models import build_model

    return build_model(name, input_size, classes=classes, weights=weights, **(knobs or {}))


def _train_float(ctx: RunContext, phase: str, name: str, knobs: dict, key: str, weights: str | None = None,
                 distill=None) -> dict:
    from pipeline.stages.train import fit, keras_accuracy

    c = ctx.config
    train, val = ctx.datasets
    model = build_net(name, c.input_size, len(train.class_names), weights, knobs)
    history = fit(model, train, val, c.fit_settings(phase), distill=distill, log_dir=ctx.log_dir(phase))
    ctx.save_keras(model, key)
    return {"params": int(model.count_params()), "history": history, "keras_accuracy": keras_accuracy(model, val)}


def stage_teacher(ctx: RunContext) -> dict:
    """Train the zoo net named by --teacher on the run's data, to distill from."""
    c = ctx.config
    knobs = {"alpha": c.teacher_alpha} if c.teacher_alpha is not None else {}
    return {"model": c.teacher, **_train_float(ctx, "teacher", c.teacher, knobs, "teacher")}


def stage_train(ctx: RunContext) -> dict:
    c = ctx.config
    write_text(ctx.path("labels"), "\n".join(ctx.datasets[0].class_names) + "\n")
    result = _train_float(ctx, "train", c.model, c.model_knobs(), "float", c.weights, ctx.distillation)
    return {**result, "distilled_from": c.teacher}


def stage_adapt(ctx: RunContext) -> dict:
    """NetAdapt/AMC: prune the trained net's channels to the latency (and memory) budget on the target."""
    from pipeline.core.data import split
    from pipeline.latency.table import load_table
    from pipeline.stages.adapt import adapt
    from pipeline.stages.train import keras_accuracy

    c = ctx.config
    train, val = ctx.datasets
    fit_part, holdout = split(train, c.validation_split, c.seed + 1)  # proposals ranked apart from the report's val
    model, report = adapt(ctx.load_keras("float"), fit_part, holdout, load_table(c.latency_table), c.adapt_settings(),
                          ctx.out / "adapt", progress=True, log=log.info)
    ctx.save_keras(model, "adapted")
    return {**{k: v for k, v in report.items() if k not in ("trajectory", "episodes")},
            "steps": len(report["trajectory"]) - 1, "keras_accuracy": keras_accuracy(model, val)}


def stage_prune(ctx: RunContext) -> dict:
    from pipeline.stages.prune import measured_sparsity, prune
    from pipeline.stages.train import keras_accuracy

    c = ctx.config
    train, val = ctx.datasets
    model = prune(ctx.load_keras(base_float(c)), train, val, c.prune_sparsity, c.fit_settings("prune"), c.prune_pattern,
                  ctx.distillation, c.prune_allocation, log_dir=ctx.log_dir("prune"))
    ctx.save_keras(model, "pruned")
    return {"keras_accuracy": keras_accuracy(model, val), "pattern": c.prune_pattern, "allocation": c.prune_allocation,
            **measured_sparsity(model)}


def stage_cluster(ctx: RunContext) -> dict:
    from pipeline.stages.cluster import cluster, keras_unique_values
    from pipeline.stages.prune import measured_sparsity
    from pipeline.stages.train import keras_accuracy

    c = ctx.config
    train, val = ctx.datasets
    model = cluster(ctx.load_keras("pruned" if c.pruned else base_float(c)), train, val, c.cluster, c.fit_settings("cluster"),
                    c.cluster_init, preserve_sparsity=c.pruned, distill=ctx.distillation,
                    min_weights=c.cluster_min_weights, log_dir=ctx.log_dir("cluster"))
    ctx.save_keras(model, "clustered")
    return {"keras_accuracy": keras_accuracy(model, val), "clusters": c.cluster, "init": c.cluster_init,
            "unique_values": keras_unique_values(model), "sparsity": measured_sparsity(model)["sparsity"]}


def stage_qat(ctx: RunContext) -> dict:
    from pipeline.stages.options import QAT_SCHEMES
    from pipeline.stages.qat import qat
    from pipeline.stages.train import keras_accuracy

    c = ctx.config
    train, val = ctx.datasets
    clustered = bool(c.cluster)
    model = qat(ctx.load_keras(compressed_float(c)), train, val, c.fit_settings("qat"), preserve_sparsity=c.pruned,
                preserve_clusters=clustered, distill=ctx.distillation, log_dir=ctx.log_dir("qat"))
    ctx.save_keras(model, "qat")
    return {"keras_accuracy": keras_accuracy(model, val), "scheme": QAT_SCHEMES[c.pruned, clustered],
            "preserve_sparsity": c.pruned, "distilled_from": c.teacher}


def stage_convert(ctx: RunContext) -> dict:
    """Every ``.tflite`` of the convert stage that this configuration asks for (see ARTIFACTS)."""
    from pipeline.stages.convert import convert, float_ops
    from pipeline.stages.options import CONVERSION_MODES

    c = ctx.config
    train, _ = ctx.datasets
    results = {}
    for artifact in _produced(c, "convert", "tflite"):
        mode, source = artifact.mode(c), artifact.source(c)
        start = time.perf_counter()
        target = write_bytes(ctx.path(artifact.key), convert(ctx.read_keras(source), mode, train.images, c.io_dtype))
        results[artifact.key] = {"file": target.name, "mode": mode, "from": KERAS_FILES[source],
                                 "seconds": round(time.perf_counter() - start, 1)}
        if CONVERSION_MODES[mode].full_int8:
            results[artifact.key]["float_ops"] = float_ops(target)
            if results[artifact.key]["float_ops"]:
                log.warning("%s still has float ops: %s", target.name, ", ".join(results[artifact.key]["float_ops"]))
    return results


def stage_quant_debug(ctx: RunContext) -> dict:
    """Per-layer int8 error of the final float model; with --selective-float, an int8 file keeping the worst in float."""
    from pipeline.stages.convert import float_ops
    from pipeline.stages.quant_debug import (
        EDGETPU_NOTE,
        layer_errors,
        selective_quantize,
    )

    c = ctx.config
    train, _ = ctx.datasets
    source = compressed_float(c)
    model = ctx.read_keras(source)
    rows = layer_errors(model, train.images)
    report_file = write_json(ctx.path("quant_debug"), {"model": KERAS_FILES[source], "layers": rows})
    result: dict = {"file": report_file.name, "from": KERAS_FILES[source],
                    "worst": [{k: r[k] for k in ("layer", "op", "rmse_over_scale")} for r in rows[:5]]}
    if c.selective_float:
        kept = rows[: c.selective_float]
        target = write_bytes(ctx.path("selective_int8"), selective_quantize(model, train.images, [r["tensor"] for r in kept]))
        result["selective"] = {"file": target.name, "float_layers": [r["layer"] for r in kept],
                               "float_ops": float_ops(target), "edgetpu": EDGETPU_NOTE}
    return result


def stage_metadata(ctx: RunContext) -> dict:
    from pipeline.core.labels import read_labels
    from pipeline.stages.metadata import write_metadata

    labels = read_labels(ctx.path("labels"))
    written = []
    for artifact in _produced(ctx.config, kind="tflite"):
        write_metadata(ctx.path(artifact.key), labels, name=f"{ctx.config.model} ({artifact.key})",
                       description=f"{ctx.config.model} classifier produced by tflpipe ({artifact.key}).")
        written.append(artifact.file)
    return {"files": written, "labels": len(labels)}


def stage_evaluate(ctx: RunContext) -> dict:
    from pipeline.core.describe import weight_sparsity
    from pipeline.core.litert import benchmark, evaluate
    from pipeline.core.tflite_file import read_model
    from pipeline.latency.memory import measure_peak, predict_runtime
    from pipeline.stages.train import keras_accuracy

    c = ctx.config
    _, val = ctx.datasets
    rows: dict[str, dict] = {}
    for artifact in _produced(c, kind="keras"):
        rows[artifact.row] = {"kind": "keras", "file": artifact.file,
                              "accuracy": keras_accuracy(ctx.read_keras(artifact.key), val)}
    for artifact in _produced(c, kind="tflite"):
        path = ctx.path(artifact.key)
        data = path.read_bytes()
        entry = {"kind": "tflite", "file": artifact.file, **evaluate(path, val, threads=2, progress=True),
                 "size_bytes": len(data), "gzip_bytes": len(gzip.compress(data, 9)),
                 "weight_sparsity": weight_sparsity(path)}
        if artifact.key == "int8" and c.cluster:
            from pipeline.stages.cluster import tflite_unique_values

            clustered = [u for u in tflite_unique_values(path).values() if u["weights"] >= c.cluster_min_weights]
            entry["max_unique_per_channel"] = max(u["max_unique_per_channel"] for u in clustered)
        for threads in (1, 2):
            entry[f"latency_ms_{threads}t"] = benchmark(path, threads, runs=c.benchmark_runs)["latency_ms_median"]
        entry["peak_memory_bytes"] = measure_peak(path, 1)["peak_growth_bytes"]
        entry["predicted_peak_memory_bytes"] = predict_runtime(read_model(path), 1).growth_bytes
        rows[artifact.row] = entry
    return {"stages": rows, "validation_images": len(val)}




def _target_stage(name: str) -> Callable[[RunContext], dict]:
    target = TARGETS[name]

    def run(ctx: RunContext) -> dict:
        return target.run(ctx.path("int8"), ctx.out, **{s: getattr(ctx.config, s) for s in target.settings})

    run.__doc__ = target.title
    return run


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[RunContext], dict]
    enabled: Callable[[RunConfig], bool]
    reads: tuple[str, ...]  # the settings its result depends on: changing one re-runs it and every later stage


_FIT = ("data", "input_size", "validation_split", "seed", "batch_size", "label_smoothing", "augment", "flip")
_KD = ("teacher", "kd_temperature", "kd_alpha")

STAGES: tuple[Stage, ...] = (
    Stage("teacher", stage_teacher, lambda c: c.teacher_is_zoo_net,
          (*_FIT, "teacher", "teacher_alpha", "teacher_epochs", "epochs", "learning_rate", "weight_decay")),
    Stage("train", stage_train, lambda c: True,
          (*_FIT, *_KD, "model", "alpha", "model_args", "weights", "epochs", "learning_rate", "weight_decay")),
    Stage("adapt", stage_adapt, lambda c: c.adapted,
          (*_FIT, "latency_budget", "latency_table", "adapt_strategy", "adapt_first_step", "adapt_final_epochs",
           "memory_budget")),
    Stage("prune", stage_prune, lambda c: c.pruned,
          (*_FIT, *_KD, "prune_sparsity", "prune_epochs", "prune_learning_rate", "prune_pattern", "prune_allocation")),
    Stage("cluster", stage_cluster, lambda c: c.cluster > 0,
          (*_FIT, *_KD, "cluster", "cluster_init", "cluster_epochs", "cluster_min_weights", "cluster_learning_rate")),
    Stage("qat", stage_qat, lambda c: c.qat, (*_FIT, *_KD, "qat", "qat_epochs", "qat_learning_rate")),
    Stage("convert", stage_convert, lambda c: True, ("io_dtype", "ptq_modes")),
    Stage("quant_debug", stage_quant_debug, lambda c: c.debug_quantization, ("quant_debug", "selective_float")),
    Stage("metadata", stage_metadata, lambda c: True, ()),
    Stage("evaluate", stage_evaluate, lambda c: True, ("benchmark_runs",)),
    *(Stage(name, _target_stage(name), lambda c, n=name: n in c.targets, target.settings)
      for name, target in TARGETS.items()),
)
STAGE = {s.name: s for s in STAGES}
STAGE_INDEX = {s.name: i for i, s in enumerate(STAGES)}
# Settings no stage's result depends on: which target stages run, whether training logs are kept, and the
# permission to load Keras files that carry code.
NOT_READ_BY_STAGES = ("targets", "tensorboard", "trust_model_code")


def _produced(config: RunConfig, stage: str | None = None, kind: str | None = None):
    """The artifacts this configuration's stages write (optionally of one stage or kind), in table order."""
    return [a for a in ARTIFACTS if STAGE[a.stage].enabled(config) and a.when(config)
            and stage in (None, a.stage) and kind in (None, a.kind)]


def stages_to_keep(previous_config: dict, config: RunConfig, done: list[str]) -> list[str]:
    """Of the ``done`` stages of a run made with ``previous_config``, those still valid under ``config``.

    Settings the earlier run did not know yet count as their defaults. A changed setting
    invalidates the first stage that reads it and every stage after that one.
    """
    before = {**RunConfig().to_dict(), **previous_config}
    now = config.to_dict()
    changed = {key for key in now if before.get(key) != now[key]}
    first = next((i for i, s in enumerate(STAGES) if changed & set(s.reads)), len(STAGES))
    valid = {s.name for s in STAGES[:first] if s.enabled(config)}
    return [name for name in done if name in valid]


def remove_stale_artifacts(out: Path, config: RunConfig) -> list[str]:
    """Delete the run files that ``config`` no longer produces (a mode dropped, pruning turned off...)."""
    wanted = {a.file for a in _produced(config)}
    removed = []
    for artifact in ARTIFACTS:
        path = out / artifact.file
        if artifact.file in wanted or not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(artifact.file)
    return removed


def preflight(config: RunConfig) -> None:
    """What would otherwise fail after training has started: the nets and knobs, and the prune pattern.

    Builds the student (and a zoo teacher) without weights, which takes seconds, not epochs.
    """
    from keras_models import build_model
    from pipeline.stages.prune import check_pattern

    student = build_net(config.model, config.input_size, 2, None, config.model_knobs())
    if config.pruned:
        check_pattern(student, config.prune_pattern)
    if config.teacher_is_zoo_net:
        knobs = {"alpha": config.teacher_alpha} if config.teacher_alpha is not None else {}
        build_model(config.teacher, config.input_size, classes=2, **knobs)


def _artifact_problem(path: Path, kind: str) -> str | None:
    """Why a finished stage's file cannot be used as it is (missing, or not what it claims to be)."""
    if not path.exists():
        return "missing"
    if kind == "tflite":
        from pipeline.core.tflite_file import read_model

        try:
            read_model(path)
        except PipelineError as exc:
            return str(exc)
    elif kind == "keras":
        import h5py

        try:
            with h5py.File(path, "r") as h5:
                if "model_weights" not in h5:
                    return "no Keras model in it"
        except OSError as exc:
            return f"not a readable HDF5 file ({str(exc).splitlines()[0]})"
    return None


def verified_stages(out: Path, config: RunConfig, done: list[str]) -> list[str]:
    """The prefix of ``done`` whose artifacts all exist and load; a stage after a broken one redoes too."""
    for i, name in enumerate(done):
        for artifact in _produced(config, name):
            problem = _artifact_problem(out / artifact.file, artifact.kind)
            if problem:
                log.warning("%s from stage %s cannot be used (%s): redoing from that stage", artifact.file, name, problem)
                return done[:i]
    return done


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``out`` against a second writer; the kernel drops the lock when this process ends, however it ends."""
    path = out / LOCK_FILE
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown process"
            raise PipelineError(f"{out} is in use by another tflpipe run ({holder}); wait for it or use another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        yield
    finally:
        handle.close()


def _load_state(state_path: Path) -> dict:
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise PipelineError(f"{state_path} is corrupt; re-run with --restart to start over") from None
    if not (isinstance(state, dict) and isinstance(state.get("done"), list) and isinstance(state.get("results"), dict)
            and isinstance(state.get("config", {}), dict)):
        raise PipelineError(f"{state_path} is not a tflpipe run state; re-run with --restart to start over")
    return state


def run_pipeline(config: RunConfig, out: str | Path, restart: bool = False) -> dict:
    """Run (or resume) every stage for ``config`` in ``out``; returns the final state.

    The folder is locked for the run: a second run into it fails at once with one line.
    """
    out = ensure_writable_dir(out)
    with run_lock(out):
        return _run_locked(config, out, restart)


def _run_locked(config: RunConfig, out: Path, restart: bool) -> dict:
    from pipeline.runner.report import write_report

    state_path = out / STATE_FILE
    state = {"config": config.to_dict(), "done": [], "results": {}}
    if state_path.exists() and not restart:
        previous = _load_state(state_path)
        kept = stages_to_keep(previous.get("config", {}), config, previous["done"])
        kept = verified_stages(out, config, kept)
        redo = [name for name in previous["done"] if name not in kept]
        if redo:
            log.info("settings changed: redoing %s", ", ".join(redo))
        state = {"config": config.to_dict(), "done": kept,
                 "results": {name: r for name, r in previous["results"].items() if name in kept}}
    for name in remove_stale_artifacts(out, config):
        log.info("removed %s: these settings no longer produce it", name)
    write_json(state_path, state)
    if any(s.enabled(config) and s.name not in state["done"] for s in STAGES[:STAGE_INDEX["qat"] + 1]):
        preflight(config)
    ctx = RunContext(config, out, state)
    for stage in STAGES:
        if not stage.enabled(config):
            continue
        if stage.name in state["done"]:
            log.info("stage %s: done earlier, skipped", stage.name)
            continue
        log.info("stage %s ...", stage.name)
        start = time.perf_counter()
        try:
            result = stage.run(ctx)
        except StageFailed as failure:
            state["results"][stage.name] = {**failure.result, "failed": str(failure)}
            write_json(state_path, state)
            write_report(out, config, state)
            raise
        result["seconds"] = round(time.perf_counter() - start, 1)
        state["results"][stage.name] = result
        state["done"].append(stage.name)
        write_json(state_path, state)
        log.info("stage %s finished in %.1f s", stage.name, result["seconds"])
    write_report(out, config, state)  # a view of the state, refreshed on every run
    return state


def seed_run(out: str | Path, config: RunConfig, artifacts: dict[str, str | Path],
             results: dict[str, dict] | None = None) -> dict:
    """Start run folder ``out`` from existing artifacts, so ``run_pipeline`` trains only what follows.

    ``artifacts`` maps artifact keys (``float``, ``pruned``, ``labels``...) to files to copy in; the
    stages that write them count as done, with their ``results`` when given (e.g. from the run they
    came from). Every stage before a seeded one must be seeded too, so the state never claims work
    that is not there. An ``out`` that already holds a run is left as it is.
    """
    out = ensure_writable_dir(out)
    state_path = out / STATE_FILE
    if state_path.exists():
        return _load_state(state_path)
    with run_lock(out):
        return _seed_locked(out, config, artifacts, results or {})


def _seed_locked(out: Path, config: RunConfig, artifacts: dict[str, str | Path], results: dict[str, dict]) -> dict:
    unknown = sorted(set(artifacts) - set(ARTIFACT))
    if unknown:
        raise PipelineError(f"unknown artifact(s) {', '.join(unknown)}; known: {', '.join(ARTIFACT)}")
    seeded = {ARTIFACT[key].stage for key in artifacts}
    last = max(i for i, s in enumerate(STAGES) if s.name in seeded)
    done = [s.name for s in STAGES[: last + 1] if s.enabled(config)]
    for stage in done:
        needed = [a.key for a in _produced(config, stage) if a.kind != "dir"]
        missing = [key for key in needed if key not in artifacts]
        if missing:
            raise PipelineError(f"seeding stage {stage} needs artifact(s) {', '.join(missing)} too")
    for key, source in artifacts.items():
        if not Path(source).is_file():
            raise PipelineError(f"seed artifact {key} not found: {source}")
        write_bytes(out / ARTIFACT[key].file, Path(source).read_bytes())
    state = {"config": config.to_dict(), "done": done,
             "results": {stage: results.get(stage, {"seeded": True}) for stage in done}}
    write_json(out / STATE_FILE, state)
    return state
