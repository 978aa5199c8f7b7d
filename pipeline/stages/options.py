"""The vocabularies the stages accept, as declarative tables: conversion modes, prune patterns and
allocations, clustering initializations.

Validation, CLI choices, ``run``'s files and report rows and the docs all derive from these tables,
and this module loads no TensorFlow, so the CLI and the configuration read it cheaply. Adding a
conversion mode is one :class:`ConversionMode` entry plus its ``configure`` function.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from pipeline.core.errors import PipelineError

CHANNEL_CRITERIA = ("l1", "l2", "bn")  # filter importance for structured pruning: L1/L2 norm, BatchNorm scale
PRUNE_ALLOCATIONS = ("uniform", "erk")  # how an unstructured sparsity target spreads over the layers
XNNPACK_MIN_SPARSITY = 2 / 3  # XNNPACK runs a subgraph sparse only when 2/3 of its 1x1 weights are zero
# TF-MOT's clustering centroid initializations, by the name the CLI uses.
CENTROID_INITS = {"kmeans++": "KMEANS_PLUS_PLUS", "linear": "LINEAR", "density": "DENSITY_BASED", "random": "RANDOM"}
QAT_SCHEMES = {(False, False): "QAT", (True, False): "PQAT", (False, True): "CQAT", (True, True): "PCQAT"}


def parse_pattern(pattern: str) -> tuple[int, int] | str:
    """``"unstructured"``/``"xnnpack"`` as they are, ``"2:4"`` as the tuple (2, 4); anything else is an error."""
    if pattern in ("unstructured", "xnnpack"):
        return pattern
    m, sep, n = pattern.partition(":")
    if sep and m.isdigit() and n.isdigit() and 0 < int(m) < int(n):
        return int(m), int(n)
    raise PipelineError(f"unknown prune pattern {pattern!r}; use unstructured, xnnpack or m:n such as 2:4")



IO_DTYPES = ("uint8", "int8")


def _optimize(converter, tf, io_dtype: str) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]


def _full_int8(converter, tf, io_dtype: str) -> None:
    _optimize(converter, tf, io_dtype)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.uint8 if io_dtype == "uint8" else tf.int8


def _float16(converter, tf, io_dtype: str) -> None:
    _optimize(converter, tf, io_dtype)
    converter.target_spec.supported_types = [tf.float16]


def _int16x8(converter, tf, io_dtype: str) -> None:
    _optimize(converter, tf, io_dtype)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]


def _sparse(converter, tf, io_dtype: str) -> None:
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]


@dataclass(frozen=True)
class ConversionMode:
    """One way to turn a Keras model into a ``.tflite``; the CLI choices, ``run --ptq-mode``, file names
    and report titles all derive from :data:`CONVERSION_MODES`."""

    name: str
    title: str  # the report's row title for a file converted in this mode
    calibrated: bool  # needs representative images
    full_int8: bool  # integer-only kernels and I/O: what the Edge TPU and NNAPI's int8 paths run
    runs_on: tuple[str, ...]  # runtimes it suits
    configure: Callable[[Any, Any, str], None] | None  # (converter, tf, io_dtype) -> None
    extra: bool = False  # offered by ``run --ptq-mode`` as an additional post-training conversion
    help: str = ""


CONVERSION_MODES: dict[str, ConversionMode] = {m.name: m for m in (
    ConversionMode("float32", "TFLite float32", False, False, ("cpu", "gpu", "nnapi"), None, help="plain float32"),
    ConversionMode("ptq_int8", "TFLite PTQ int8", True, True, ("cpu", "edgetpu", "nnapi"), _full_int8,
                   help="post-training full-integer int8"),
    ConversionMode("qat_int8", "TFLite QAT int8", True, True, ("cpu", "edgetpu", "nnapi"), _full_int8,
                   help="full-integer int8 from a QAT model's trained ranges"),
    ConversionMode("dynamic", "TFLite dynamic-range int8", False, False, ("cpu",), _optimize, extra=True,
                   help="int8 weights, float activations"),
    ConversionMode("float16", "TFLite float16", False, False, ("cpu", "gpu"), _float16, extra=True,
                   help="half-size float16 weights (GPU-friendly)"),
    ConversionMode("int16x8", "TFLite 16x8 (int16 act.)", True, False, ("cpu",), _int16x8, extra=True,
                   help="int16 activations with int8 weights, for accuracy-sensitive nets"),
    ConversionMode("sparse_float32", "TFLite float32 (sparse)", False, False, ("cpu",), _sparse,
                   help="float32 with pruned weights stored sparse, for XNNPACK's sparse inference"),
)}
EXTRA_MODES = tuple(name for name, m in CONVERSION_MODES.items() if m.extra)


ADAPT_STRATEGIES = ("netadapt", "amc", "amc-ddpg")
# AdaptSettings fields read by the final fine-tune only: changing them keeps the search's cached iterations.
ADAPT_FINAL_FIELDS = ("final_epochs", "final_learning_rate", "distill", "distill_temperature", "distill_weight")
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(x|ms)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class AdaptSettings:
    """How an adaptation (``pipeline.stages.adapt``) runs; every field is a CLI option of ``tflpipe adapt``.
    Here, with no TensorFlow, so that the CLI reads its defaults without loading it."""

    budget: str  # "0.5x" (of the model's predicted latency) or "4.0ms"
    strategy: str = "netadapt"
    first_step: float = 0.025  # NetAdapt: first iteration's latency drop, as a share of the original latency
    decay: float = 0.96  # NetAdapt: the drop shrinks by this factor each iteration
    short_steps: int = 50  # fine-tune steps of each proposal (NetAdapt) before it is measured
    finalists: int = 4  # NetAdapt: fine-tune only the proposals best before fine-tuning (0: all, as in the paper)
    final_epochs: int = 2  # the long fine-tune at the end
    final_learning_rate: float | None = None  # the long fine-tune's peak learning rate (None: learning_rate's)
    distill: bool = True  # the final fine-tune also learns from the unadapted net's outputs (knowledge distillation)
    distill_temperature: float = 4.0  # softens both nets' class distributions (Hinton et al., 2015)
    distill_weight: float = 0.9  # share of the loss from the teacher; the rest from the labels
    learning_rate: float = 0.01
    batch_size: int = 64
    criterion: str = "l1"  # filter importance: l1/l2 norm (NetAdapt) or bn (|gamma|, network slimming)
    divisor: int = 4  # channel counts move in steps of this many
    episodes: int = 60  # AMC: agent evaluations
    memory_budget_mb: float | None = None  # predicted LiteRT peak memory the result must fit in
    workers: int = 1  # NetAdapt: processes scoring proposals in parallel (each TensorFlow on one thread)
    seed: int = 0

    def check(self) -> None:
        if self.strategy not in ADAPT_STRATEGIES:
            raise PipelineError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(ADAPT_STRATEGIES)}")
        parse_budget(self.budget)
        if not 0 < self.first_step < 1 or not 0 < self.decay <= 1:
            raise PipelineError("--first-step must be in (0, 1) and --decay in (0, 1]")
        if self.memory_budget_mb is not None and self.memory_budget_mb <= 0:
            raise PipelineError("--memory-budget must be a positive number of MB")
        if self.workers < 1:
            raise PipelineError("--workers must be at least 1")
        if self.distill_temperature <= 0 or not 0 <= self.distill_weight <= 1:
            raise PipelineError("--distill-temperature must be positive and --distill-weight in [0, 1]")
        if self.final_learning_rate is not None and self.final_learning_rate <= 0:
            raise PipelineError("--final-learning-rate must be positive")
        if self.divisor < 1 or min(self.short_steps, self.final_epochs, self.finalists) < 0 or self.episodes < 1:
            raise PipelineError("--divisor and --episodes must be at least 1, step and epoch counts not negative")

    def final_key(self) -> str:
        """Names the final fine-tune's result by its settings, so that each one is cached apart."""
        if not self.final_epochs:
            return "0ep"
        key = f"{self.final_epochs}ep"
        if self.distill:
            key += f"_kd_t{self.distill_temperature:g}_w{self.distill_weight:g}"
        if self.final_learning_rate is not None:  # absent, the key stays that of runs made before the option
            key += f"_lr{self.final_learning_rate:g}"
        return key


def parse_budget(text: str) -> tuple[str, float]:
    """``"0.5x"`` -> ("x", 0.5); ``"4ms"`` -> ("ms", 4.0); anything else is a one-line error."""
    match = _BUDGET.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise PipelineError(f"latency budget {text!r} is neither a share like 0.5x nor a time like 4.0ms")
    return match.group(2).lower(), float(match.group(1))
