"""Deployability of a candidate, decided before any training or evaluation is spent on it.

A candidate is converted to full int8 with random calibration (the ops and shapes of the deployed model)
and checked with the project's own static predictors: the Edge TPU mapping (every op on the chip, the
parameters in its cache) and the NNAPI delegate's coverage at the Android API level asked for. The CPU
target accepts any net that converts. Verdicts are cached by architecture, and conversions (about 5 s each,
most of a candidate's cost before training) are shared by every check in the process: the studies of one
benchmark or session see the same nets again and again.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from pipeline.core.errors import PipelineError
from pipeline.search.space import Arch, build

TARGETS = ("cpu-int8", "edgetpu", "nnapi")
_CONVERTED: OrderedDict[tuple[str, int], bytes | PipelineError] = OrderedDict()  # (arch, classes) -> int8 file
_CONVERTED_MAX = 256  # the most recent conversions kept (a few hundred KB each at search sizes)


@dataclass
class Verdict:
    deployable: bool
    reasons: list[str] = field(default_factory=list)
    flatbuffer: bytes = field(default=b"", repr=False)


@dataclass
class DeployabilityCheck:
    """Converts and checks candidates for ``target``; ``verdict(arch)`` is cached per architecture."""

    target: str
    classes: int
    nnapi_api_level: int = 30
    cache: dict[str, Verdict] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise PipelineError(f"unknown search target {self.target!r}; choose one of {', '.join(TARGETS)}")

    def verdict(self, arch: Arch) -> Verdict:
        if arch.key not in self.cache:
            self.cache[arch.key] = self._check(arch)
        return self.cache[arch.key]

    def _check(self, arch: Arch) -> Verdict:
        from pipeline.core.keras_convert import full_int8_flatbuffer
        from pipeline.core.tf_env import keras
        from pipeline.core.tflite_file import parse_model

        key = (arch.key, self.classes)
        if key not in _CONVERTED:
            keras.backend.clear_session()
            try:
                _CONVERTED[key] = full_int8_flatbuffer(build(arch, self.classes))
            except PipelineError as exc:
                _CONVERTED[key] = exc
            while len(_CONVERTED) > _CONVERTED_MAX:
                _CONVERTED.popitem(last=False)
        _CONVERTED.move_to_end(key)
        flatbuffer = _CONVERTED[key]
        if isinstance(flatbuffer, PipelineError):
            return Verdict(False, [f"does not convert to full int8: {flatbuffer}"])
        model = parse_model(flatbuffer, "candidate.tflite")
        if self.target == "edgetpu":
            from edgetpu.check import check

            report = check(model)
        elif self.target == "nnapi":
            from pipeline.targets.nnapi import check

            report = check(model, self.nnapi_api_level)
        else:
            return Verdict(True, [], flatbuffer)
        return Verdict(report.fully_mapped, list(report.reasons) + list(report.model_errors), flatbuffer)
