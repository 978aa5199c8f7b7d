"""The run configuration: one dataclass, loadable from YAML and overridable by command-line flags.

``RunConfig`` is the one source of training settings: the CLI's defaults are its field defaults,
and :meth:`RunConfig.fit_settings` is the one mapping from it to a training phase's ``FitSettings``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.core.data import DEFAULT_DATA
from pipeline.core.errors import PipelineError
from pipeline.stages.options import (
    CENTROID_INITS,
    EXTRA_MODES,
    IO_DTYPES,
    PRUNE_ALLOCATIONS,
    XNNPACK_MIN_SPARSITY,
    parse_pattern,
)
from pipeline.targets import TARGETS
from pipeline.targets.nnapi import MAX_API, MIN_API

if TYPE_CHECKING:
    from pipeline.stages.train import FitSettings


@dataclass
class RunConfig:
    """Everything ``tflpipe run`` needs; stage code reads only this."""

    model: str = "mobilenet_v2"
    alpha: float | None = 0.35
    model_args: dict[str, Any] = field(default_factory=dict)  # other zoo knobs, e.g. {"groups": 3}
    input_size: int = 64
    data: str = DEFAULT_DATA
    validation_split: float = 0.1
    weights: str | None = None  # local weights file to fine-tune from, or "imagenet"
    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 0.05
    weight_decay: float = 5e-5
    label_smoothing: float = 0.1
    augment: bool = True
    flip: bool = True  # horizontal flips (turned off for data where mirroring changes the class)
    latency_budget: str | None = None  # adapt the trained net to this int8 latency (0.5x or 4.0ms); None skips it
    latency_table: str | None = None  # the target's latency table (`tflpipe latency build`), needed with the budget
    adapt_strategy: str = "netadapt"  # or "amc"
    adapt_first_step: float = 0.025  # NetAdapt's first latency drop, as a share of the original latency
    adapt_final_epochs: int = 2  # fine-tuning epochs after the adaptation
    memory_budget: float | None = None  # predicted LiteRT peak memory (MB) the adapted net must fit in
    prune_sparsity: float = 0.5  # 0 skips pruning
    prune_epochs: int = 2
    prune_learning_rate: float = 0.01
    prune_pattern: str = "unstructured"  # or "m:n" (e.g. "2:4") or "xnnpack" (1x1 convs, sparse-inference layout)
    prune_allocation: str = "uniform"  # or "erk": big layers pruned more, small ones kept (unstructured only)
    cluster: int = 0  # weight clusters per layer (Deep Compression weight sharing); 0 skips clustering
    cluster_init: str = "kmeans++"  # centroid initialization: kmeans++, linear, density, random
    cluster_epochs: int = 1
    cluster_min_weights: int = 0  # kernels with fewer weights stay unclustered (the stem: tiny in the file, costly in accuracy)
    cluster_learning_rate: float = 0.002
    teacher: str | None = None  # distillation teacher: a zoo net name (trained first) or a saved Keras model
    teacher_alpha: float | None = None  # width of a zoo teacher (None: the net's default)
    teacher_epochs: int | None = None  # training epochs of a zoo teacher (None: same as --epochs)
    kd_temperature: float = 4.0
    kd_alpha: float = 0.9  # weight of the teacher's softened targets against the labels
    qat: bool = True
    qat_epochs: int = 1
    qat_learning_rate: float = 0.002
    io_dtype: str = "uint8"
    ptq_modes: list[str] = field(default_factory=list)  # extra post-training conversions: dynamic, float16, int16x8
    quant_debug: bool = False  # per-layer int8 error report (QuantizationDebugger)
    selective_float: int = 0  # keep this many of the worst layers in float (CPU/GPU model; implies quant_debug)
    targets: list[str] = field(default_factory=list)
    allow_cpu_ops: bool = False  # let the edgetpu target pass with ops left on the CPU
    nnapi_api_level: int = 30  # Android API level the nnapi target checks against (27-34)
    benchmark_runs: int = 30
    tensorboard: bool = True  # TensorBoard logs of every training stage under RUN/tensorboard/<stage>
    trust_model_code: bool = False  # load --weights/--teacher Keras files even if they carry code (Lambda layers)
    seed: int = 0

    def validate(self) -> "RunConfig":
        checks = [
            (self.input_size >= 16, f"--input-size must be at least 16, got {self.input_size}"),
            (self.alpha is None or self.alpha > 0, f"--alpha must be positive, got {self.alpha}"),
            (min(self.epochs, self.prune_epochs, self.qat_epochs, self.cluster_epochs, self.teacher_epochs or 0) >= 0,
             "epochs cannot be negative"),
            (min(self.learning_rate, self.prune_learning_rate, self.qat_learning_rate, self.cluster_learning_rate) > 0,
             "learning rates must be positive"),
            (self.latency_budget is None or self.latency_table is not None,
             "--latency-budget needs --latency-table (build one with `tflpipe latency build`)"),
            (self.latency_table is None or Path(self.latency_table).is_file(),
             f"latency table not found: {self.latency_table}"),
            (self.adapt_strategy in ("netadapt", "amc"), f"--adapt-strategy must be netadapt or amc, got "
                                                         f"{self.adapt_strategy}"),
            (self.adapt_final_epochs >= 0, "--adapt-final-epochs cannot be negative"),
            (self.benchmark_runs >= 1, f"benchmark_runs must be at least 1, got {self.benchmark_runs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (0.0 <= self.prune_sparsity < 1.0, f"--prune-sparsity must be in [0, 1), got {self.prune_sparsity}"),
            (0.0 < self.validation_split < 1.0, f"validation_split must be in (0, 1), got {self.validation_split}"),
            (self.io_dtype in IO_DTYPES, f"--io-dtype must be one of {', '.join(IO_DTYPES)}, got {self.io_dtype}"),
            (self.prune_pattern != "xnnpack" or self.prune_sparsity >= XNNPACK_MIN_SPARSITY,
             f"--prune-pattern xnnpack: XNNPACK's sparse inference needs at least 2/3 of the 1x1 weights zero; "
             f"use --prune-sparsity 0.67 or more (got {self.prune_sparsity:g})"),
            (self.prune_sparsity == 0 or self.prune_epochs > 0, "pruning needs --prune-epochs > 0"),
            (self.prune_allocation in PRUNE_ALLOCATIONS,
             f"--prune-allocation must be one of {', '.join(PRUNE_ALLOCATIONS)}, got {self.prune_allocation}"),
            (self.prune_allocation == "uniform" or self.prune_pattern == "unstructured",
             f"--prune-allocation {self.prune_allocation} needs --prune-pattern unstructured"),
            (2 <= self.cluster <= 256 or self.cluster == 0, f"--cluster must be 0 (off) or 2-256, got {self.cluster}"),
            (self.cluster_init in CENTROID_INITS,
             f"--cluster-init must be one of {', '.join(CENTROID_INITS)}, got {self.cluster_init}"),
            (self.cluster_min_weights >= 0, f"--cluster-min-weights cannot be negative, got {self.cluster_min_weights}"),
            # Measured: PCQAT over a 75%-pruned MobileNet v1 with its small kernels unclustered fell to
            # chance (12% on CIFAR-10), so partial clustering goes to int8 by post-training quantization.
            (self.cluster_min_weights == 0 or not self.qat,
             "--cluster-min-weights needs --no-qat: cluster-preserving QAT expects every kernel clustered"),
            (self.kd_temperature > 0, f"--kd-temperature must be positive, got {self.kd_temperature}"),
            (0.0 <= self.kd_alpha <= 1.0, f"--kd-alpha must be in [0, 1], got {self.kd_alpha}"),
            (self.selective_float >= 0, f"--selective-float cannot be negative, got {self.selective_float}"),
            (MIN_API <= self.nnapi_api_level <= MAX_API,
             f"--nnapi-api-level must be between {MIN_API} and {MAX_API}, got {self.nnapi_api_level}"),
        ]
        for ok, message in checks:
            if not ok:
                raise PipelineError(message)
        unknown = sorted(set(self.targets) - set(TARGETS))
        if unknown:
            raise PipelineError(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
        unknown = sorted(set(self.ptq_modes) - set(EXTRA_MODES))
        if unknown:
            raise PipelineError(f"unknown PTQ mode(s) {', '.join(unknown)}; choose from {', '.join(EXTRA_MODES)}")
        parse_pattern(self.prune_pattern)
        if self.adapted:
            self.adapt_settings().check()
        for kind, path in (("--weights", self.weights), ("--teacher", None if self.teacher_is_zoo_net else self.teacher)):
            if path not in (None, "imagenet") and not Path(path).exists():
                raise PipelineError(f"{kind} file not found: {path}")
        return self

    def fit_settings(self, phase: str, flip: bool | None = None) -> FitSettings:
        """How training phase ``phase`` (train, teacher, prune, cluster, qat) runs under this configuration.

        ``flip`` defaults to the data's own rule (no mirroring of digits)."""
        from pipeline.core.data import mirror_safe
        from pipeline.stages.train import FitSettings

        epochs, lr, weight_decay = {
            "train": (self.epochs, self.learning_rate, self.weight_decay),
            "teacher": (self.teacher_epochs or self.epochs, self.learning_rate, self.weight_decay),
            "prune": (self.prune_epochs, self.prune_learning_rate, 0.0),
            "cluster": (self.cluster_epochs, self.cluster_learning_rate, 0.0),
            "qat": (self.qat_epochs, self.qat_learning_rate, 0.0),
        }[phase]
        warmup = min(1.0, epochs / 5) if phase in ("train", "teacher") else 0.0
        return FitSettings(epochs=epochs, learning_rate=lr, batch_size=self.batch_size, weight_decay=weight_decay,
                           label_smoothing=self.label_smoothing, augment=self.augment,
                           flip=self.flip and mirror_safe(self.data) if flip is None else flip,
                           warmup_epochs=warmup, seed=self.seed)

    def adapt_settings(self):
        """The adaptation stage's settings (NetAdapt/AMC), checked with the rest of the configuration."""
        from pipeline.stages.adapt import AdaptSettings

        return AdaptSettings(budget=self.latency_budget or "", strategy=self.adapt_strategy,
                             first_step=self.adapt_first_step, final_epochs=self.adapt_final_epochs,
                             batch_size=self.batch_size, memory_budget_mb=self.memory_budget, seed=self.seed)

    @property
    def adapted(self) -> bool:
        return self.latency_budget is not None

    @property
    def pruned(self) -> bool:
        return self.prune_sparsity > 0

    @property
    def debug_quantization(self) -> bool:
        return self.quant_debug or self.selective_float > 0

    @property
    def teacher_is_zoo_net(self) -> bool:
        """A teacher named by zoo net (trained in the run) rather than by a saved model file."""
        return self.teacher is not None and not Path(self.teacher).suffix and not Path(self.teacher).is_dir()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_knobs(self) -> dict[str, Any]:
        return {"alpha": self.alpha, **self.model_args}


MAX_CONFIG_BYTES = 1 << 20  # a settings file is a few hundred bytes; more is not a config
_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "list[str]": (list,),
          "dict[str, Any]": (dict,)}


def _read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``: bounded in size, without aliases (an alias bomb expands exponentially)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise PipelineError(f"config file not found: {path}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise PipelineError(f"config file {path} is {len(data):,} bytes; a settings file is at most {MAX_CONFIG_BYTES:,}")
    try:
        text = data.decode("utf-8")
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise PipelineError(f"config file {path} uses YAML aliases (*name); write each setting out instead")
        loaded = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise PipelineError(f"config file {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise PipelineError(f"config file {path} must hold a mapping of settings")
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}


def _check_types(values: dict[str, Any]) -> None:
    """Each setting of the type its RunConfig field declares (YAML can give any), in one line."""
    for f in fields(RunConfig):
        if f.name not in values:
            continue
        value, kind = values[f.name], str(f.type)
        optional = kind.endswith(" | None")
        allowed = _TYPES[kind.removesuffix(" | None")]
        ok = (value is None and optional) or (isinstance(value, allowed)
                                              and (bool not in allowed) == (not isinstance(value, bool)))
        if ok and isinstance(value, list):
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            raise PipelineError(f"setting {f.name} must be {kind.replace('list[str]', 'a list of names')}, "
                                f"got {value!r:.60}")


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> RunConfig:
    """YAML file (optional) first, then the flags the user actually gave."""
    values: dict[str, Any] = _read_yaml(path) if path is not None else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PipelineError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    _check_types(values)
    return RunConfig(**values).validate()


def setting_default(name: str) -> Any:
    """A RunConfig field's default: the single source of every CLI default."""
    f = next(f for f in fields(RunConfig) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
