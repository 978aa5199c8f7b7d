"""Stage 2: TF-MOT magnitude pruning to a target sparsity, then ``strip_pruning``.

Sparsity ramps from 0 to the target along a PolynomialDecay schedule over the fine-tuning steps
(Zhu & Gupta, 2017, "To prune, or not to prune"), so the net recovers as weights are removed.
Three patterns (``PATTERNS``): unstructured (any weight may go), m:n structured (m zeros in every n
consecutive input-channel weights, e.g. 2:4 for sparse tensor cores) and ``xnnpack``: only 1x1
convolutions, via TF-MOT's ``PruneForLatencyOnXNNPack`` policy, so that XNNPACK's sparse inference
(Elsen et al., 2019, "Fast Sparse ConvNets") can run the float model.

Unstructured pruning spreads the target over the layers in one of ``PRUNE_ALLOCATIONS``: ``uniform`` (every
layer at the target) or ``erk``, the Erdős–Rényi-kernel rule (Evci et al., 2020, "Rigging the Lottery",
after Mocanu et al., 2018): a layer keeps weights in proportion to (sum of its kernel dimensions) /
(number of its weights), so the big 1x1 convolutions near the head give up more and the small stem
layers stay (nearly) dense, at the same overall sparsity and hence the same compressed size.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow_model_optimization as tfmot

from pipeline.core.data import ImageSet
from pipeline.core.errors import PipelineError
from pipeline.core.tf_env import keras
from pipeline.stages.options import PRUNE_ALLOCATIONS, XNNPACK_MIN_SPARSITY, parse_pattern
from pipeline.stages.train import Distillation, FitSettings, fit


def _prunable(layer: keras.layers.Layer) -> bool:
    """Prune convolutions and the classifier; depthwise kernels are tiny, so pruning them costs accuracy for no size."""
    return isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and not isinstance(
        layer, keras.layers.DepthwiseConv2D
    )


def prune(model: keras.Model, train: ImageSet, val: ImageSet | None, target_sparsity: float, settings: FitSettings,
          pattern: str = "unstructured", distill: Distillation | None = None,
          allocation: str = "uniform", log_dir=None) -> keras.Model:
    """Fine-tune ``model`` while pruning it to ``target_sparsity`` in ``pattern``; returns the stripped model.

    An m:n pattern fixes the sparsity at m/n (``target_sparsity`` is ignored) and skips layers whose
    input channels are not a multiple of n (the RGB stem). With ``distill``, a teacher guides the
    fine-tuning. ``allocation`` spreads an unstructured target over the layers (see :func:`layer_sparsities`).
    """
    kind = parse_pattern(pattern)
    if allocation not in PRUNE_ALLOCATIONS:
        raise PipelineError(f"unknown prune allocation {allocation!r}; use {' or '.join(PRUNE_ALLOCATIONS)}")
    if allocation != "uniform" and kind != "unstructured":
        raise PipelineError(f"--prune-allocation {allocation} needs --prune-pattern unstructured: "
                            f"the {pattern} pattern fixes each layer's sparsity itself")
    if isinstance(kind, tuple):
        target_sparsity = kind[0] / kind[1]
    if not 0.0 < target_sparsity < 1.0:
        raise PipelineError(f"prune sparsity must be between 0 and 1 (exclusive), got {target_sparsity}")
    if kind == "xnnpack" and target_sparsity < XNNPACK_MIN_SPARSITY:
        raise PipelineError(f"XNNPACK's sparse inference needs at least 2/3 of the 1x1 weights zero; "
                            f"use --prune-sparsity 0.67 or more (got {target_sparsity:g})")
    steps = max(1, settings.epochs * math.ceil(len(train) / settings.batch_size))

    def schedule(final_sparsity: float) -> tfmot.sparsity.keras.PolynomialDecay:
        return tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=final_sparsity,
            begin_step=0,
            end_step=max(1, int(steps * 0.75)),  # reach the target early enough to recover at it
            frequency=max(1, steps // 50),
        )

    if kind == "xnnpack":
        wrapped = _wrap_for_xnnpack(model, schedule(target_sparsity))
    else:
        m_by_n = kind if isinstance(kind, tuple) else None
        targets = layer_sparsities(model, target_sparsity, allocation)

        def annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
            if targets.get(layer.name, 0.0) > 0 and (m_by_n is None or layer.get_weights()[0].shape[-2] % m_by_n[1] == 0):
                return tfmot.sparsity.keras.prune_low_magnitude(
                    layer, pruning_schedule=schedule(targets[layer.name]), sparsity_m_by_n=m_by_n)
            return layer

        # The clone reuses (wraps) the trained layers themselves, so their weights carry over.
        wrapped = keras.models.clone_model(model, clone_function=annotate)
    fit(wrapped, train, val, settings, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()], distill=distill, log_dir=log_dir)
    return tfmot.sparsity.keras.strip_pruning(wrapped)  # fit left BatchNorm recalibrated


def layer_sparsities(model: keras.Model, target: float, allocation: str = "uniform") -> dict[str, float]:
    """Each prunable layer's final sparsity such that the whole model's weights reach ``target``.

    ``erk`` gives a layer density ε·(sum of kernel dims)/(kernel size); layers the rule would make
    denser than dense are left dense and ε is solved again over the rest.
    """
    shapes = {layer.name: layer.get_weights()[0].shape for layer in model.layers if _prunable(layer)}
    if allocation == "uniform":
        return {name: target for name in shapes}
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    score = {name: sum(shape) / sizes[name] for name, shape in shapes.items()}
    kept_budget = (1.0 - target) * sum(sizes.values())
    dense: set[str] = set()
    while True:
        free = [name for name in sizes if name not in dense]
        eps = (kept_budget - sum(sizes[name] for name in dense)) / sum(score[name] * sizes[name] for name in free)
        saturated = [name for name in free if eps * score[name] >= 1.0]
        if not saturated:
            return {name: 0.0 if name in dense else 1.0 - eps * score[name] for name in sizes}
        dense.update(saturated)


def check_pattern(model: keras.Model, pattern: str) -> None:
    """Fail now, in one line, if ``pattern`` cannot prune ``model`` (before any epoch is spent on it)."""
    if parse_pattern(pattern) == "xnnpack":
        _wrap_for_xnnpack(model, tfmot.sparsity.keras.ConstantSparsity(0.75, 0))


def _wrap_for_xnnpack(model: keras.Model, schedule) -> keras.Model:
    """Whole-model pruning under ``PruneForLatencyOnXNNPack``, which checks the sparse-inference layout."""
    try:
        return tfmot.sparsity.keras.prune_low_magnitude(
            model, pruning_schedule=schedule, pruning_policy=tfmot.sparsity.keras.PruneForLatencyOnXNNPack())
    except ValueError as exc:
        raise PipelineError(
            f"{model.name} does not suit XNNPACK sparse inference ({str(exc).splitlines()[0]}); build it with "
            "model_args {explicit_padding: true} (MobileNet v1) or use --prune-pattern unstructured") from None


def measured_sparsity(model: keras.Model) -> dict:
    """Fraction of exactly-zero weights in prunable kernels, overall and per layer."""
    per_layer: dict[str, float] = {}
    zeros = total = 0
    for layer in model.layers:
        if _prunable(layer):
            kernel = layer.get_weights()[0]
            per_layer[layer.name] = float(np.mean(kernel == 0))
            zeros += int(np.sum(kernel == 0))
            total += kernel.size
    return {"sparsity": zeros / total if total else 0.0, "per_layer": per_layer}
