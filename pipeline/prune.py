"""Stage 2: TF-MOT magnitude pruning to a target sparsity, then ``strip_pruning``.

Sparsity ramps from 0 to the target along a PolynomialDecay schedule over the fine-tuning steps
(Zhu & Gupta, 2017, "To prune, or not to prune"), so the net recovers as weights are removed.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow_model_optimization as tfmot

from pipeline.data import ImageSet
from pipeline.errors import PipelineError
from pipeline.tf_env import keras
from pipeline.train import FitSettings, fit, recalibrate_batchnorm



def _prunable(layer: keras.layers.Layer) -> bool:
    """Prune convolutions and the classifier; depthwise kernels are tiny, so pruning them costs accuracy for no size."""
    return isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and not isinstance(
        layer, keras.layers.DepthwiseConv2D
    )


def prune(model: keras.Model, train: ImageSet, val: ImageSet | None, target_sparsity: float, settings: FitSettings) -> keras.Model:
    """Fine-tune ``model`` while pruning it to ``target_sparsity``; returns the stripped (plain Keras) model."""
    if not 0.0 < target_sparsity < 1.0:
        raise PipelineError(f"prune sparsity must be between 0 and 1 (exclusive), got {target_sparsity}")
    steps = max(1, settings.epochs * math.ceil(len(train) / settings.batch_size))
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=target_sparsity,
        begin_step=0,
        end_step=max(1, int(steps * 0.75)),  # reach the target early enough to recover at it
        frequency=max(1, steps // 50),
    )

    def annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
        if _prunable(layer):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    # The clone reuses (wraps) the trained layers themselves, so their weights carry over.
    wrapped = keras.models.clone_model(model, clone_function=annotate)
    fit(wrapped, train, val, settings, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    recalibrate_batchnorm(stripped, train)
    return stripped


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
