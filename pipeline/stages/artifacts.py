"""Every file a run writes into its output folder, as one declarative table.

The runner derives from it which stage writes what, which files the convert stage produces for a
configuration (and in which mode, from which Keras model), which stale files to remove when the
settings change, and the report's row titles; the Android export and the demo find a run's model
and labels through it. Adding a conversion mode adds its row here by itself (see
:data:`pipeline.stages.options.CONVERSION_MODES`, ``extra=True``).

``when`` and ``source`` read the run configuration (``pipeline.runner.config.RunConfig``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pipeline.stages.options import CONVERSION_MODES, EXTRA_MODES

Config = Any  # a RunConfig; this layer sits below the runner and only reads its attributes


def _always(config: Config) -> bool:
    return True


def base_float(config: Config) -> str:
    """The dense float Keras model the compression stages start from: adapted to the latency budget, or trained."""
    return "adapted" if config.adapted else "float"


def compressed_float(config: Config) -> str:
    """The last float Keras model: clustered, else pruned, else the (adapted) trained one."""
    return "clustered" if config.cluster else "pruned" if config.pruned else base_float(config)


@dataclass(frozen=True)
class Artifact:
    key: str
    file: str
    stage: str  # the stage that writes it
    kind: str  # "keras", "tflite", "file" or "dir"
    title: str = ""  # the report row of a model
    when: Callable[[Config], bool] = _always  # beyond its stage running
    mode: Callable[[Config], str] | None = None  # tflite files: the conversion mode
    source: Callable[[Config], str] | None = None  # tflite files: the key of the Keras model converted

    @property
    def row(self) -> str:
        """The key of this model's row in the report (``keras_float``, ``tflite_int8``, ...)."""
        return f"{self.kind}_{self.key}"


def _keras(key: str, stage: str, title: str) -> Artifact:
    return Artifact(key, f"{key}.h5", stage, "keras", title)


def _tflite(key: str, title: str, mode: str | Callable, source: str | Callable, when=_always, stage: str = "convert") -> Artifact:
    return Artifact(key, f"model_{key}.tflite", stage, "tflite", title, when,
                    mode if callable(mode) else (lambda c, m=mode: m),
                    source if callable(source) else (lambda c, s=source: s))


ARTIFACTS: tuple[Artifact, ...] = (
    Artifact("labels", "labels.txt", "train", "file"),
    _keras("teacher", "teacher", "Keras teacher"),
    _keras("float", "train", "Keras float"),
    Artifact("adapted", "adapted.h5", "adapt", "keras", "Keras adapted", lambda c: c.adapted),
    _keras("pruned", "prune", "Keras pruned"),
    _keras("clustered", "cluster", "Keras clustered"),
    _keras("qat", "qat", "Keras QAT"),
    _tflite("float32", CONVERSION_MODES["float32"].title, "float32", base_float),
    _tflite("ptq_int8", "TFLite PTQ int8 (dense)", "ptq_int8", base_float),
    _tflite("pruned_ptq_int8", "TFLite PTQ int8 (pruned)", "ptq_int8", "pruned", lambda c: c.pruned),
    _tflite("sparse_float32", CONVERSION_MODES["sparse_float32"].title, "sparse_float32", "pruned",
            lambda c: c.pruned and c.prune_pattern == "xnnpack"),
    *(_tflite(mode, CONVERSION_MODES[mode].title, mode, compressed_float, lambda c, m=mode: m in c.ptq_modes)
      for mode in EXTRA_MODES),
    Artifact("quant_debug", "quant_debug.json", "quant_debug", "file"),
    Artifact("selective_int8", "model_selective_int8.tflite", "quant_debug", "tflite", "TFLite selective int8",
             lambda c: c.selective_float > 0),
    # The deployable file: int8 from QAT, or from post-training quantization when QAT is off.
    _tflite("int8", "TFLite int8 (deployable)", lambda c: "qat_int8" if c.qat else "ptq_int8",
            lambda c: "qat" if c.qat else compressed_float(c)),
    Artifact("edgetpu", "edgetpu", "edgetpu", "dir"),
    Artifact("android", "android", "android", "dir"),
)
ARTIFACT = {a.key: a for a in ARTIFACTS}
KERAS_FILES = {a.key: a.file for a in ARTIFACTS if a.kind == "keras"}
TFLITE_FILES = {a.key: a.file for a in ARTIFACTS if a.kind == "tflite"}
ROW_TITLES = {a.row: a.title for a in ARTIFACTS if a.title}
DEPLOYABLE = ARTIFACT["int8"].file
LABELS = ARTIFACT["labels"].file
