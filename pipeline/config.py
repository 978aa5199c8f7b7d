"""The run configuration: one dataclass, loadable from YAML and overridable by command-line flags."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from pipeline.data import DEFAULT_DATA
from pipeline.errors import PipelineError
from pipeline.nnapi import MAX_API, MIN_API

TARGETS = ("edgetpu", "nnapi", "android")
# Settings of the deployment-target stages, which run after the models exist: changing them resumes a run.
TARGET_SETTINGS = ("targets", "allow_cpu_ops", "nnapi_api_level")


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
    prune_sparsity: float = 0.5  # 0 skips pruning
    prune_epochs: int = 2
    prune_learning_rate: float = 0.01
    qat: bool = True
    qat_epochs: int = 1
    qat_learning_rate: float = 0.002
    io_dtype: str = "uint8"
    targets: list[str] = field(default_factory=list)
    allow_cpu_ops: bool = False  # let the edgetpu target pass with ops left on the CPU
    nnapi_api_level: int = 30  # Android API level the nnapi target checks against (27-34)
    benchmark_runs: int = 30
    seed: int = 0

    def validate(self) -> "RunConfig":
        checks = [
            (self.input_size >= 16, f"--input-size must be at least 16, got {self.input_size}"),
            (self.alpha is None or self.alpha > 0, f"--alpha must be positive, got {self.alpha}"),
            (self.epochs >= 0 and self.prune_epochs >= 0 and self.qat_epochs >= 0, "epochs cannot be negative"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (0.0 <= self.prune_sparsity < 1.0, f"--prune-sparsity must be in [0, 1), got {self.prune_sparsity}"),
            (0.0 < self.validation_split < 1.0, f"validation_split must be in (0, 1), got {self.validation_split}"),
            (self.io_dtype in ("uint8", "int8"), f"--io-dtype must be uint8 or int8, got {self.io_dtype}"),
            (self.prune_sparsity == 0 or self.prune_epochs > 0, "pruning needs --prune-epochs > 0"),
            (MIN_API <= self.nnapi_api_level <= MAX_API,
             f"--nnapi-api-level must be between {MIN_API} and {MAX_API}, got {self.nnapi_api_level}"),
        ]
        for ok, message in checks:
            if not ok:
                raise PipelineError(message)
        unknown = sorted(set(self.targets) - set(TARGETS))
        if unknown:
            raise PipelineError(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_knobs(self) -> dict[str, Any]:
        return {"alpha": self.alpha, **self.model_args}


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> RunConfig:
    """YAML file (optional) first, then the flags the user actually gave."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise PipelineError(f"config file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise PipelineError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise PipelineError(f"config file {path} must hold a mapping of settings")
        values.update({str(k).replace("-", "_"): v for k, v in loaded.items()})
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PipelineError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return RunConfig(**values).validate()
    except TypeError as exc:
        raise PipelineError(f"bad config: {exc}") from None
