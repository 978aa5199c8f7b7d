"""Stage 3: quantization-aware training with TF-MOT.

When the model was pruned, the pruning-preserving scheme (PQAT,
``Default8BitPrunePreserveQuantizeScheme``) keeps zeroed weights at zero through QAT, so the int8
file keeps the sparsity (and its gzip savings).
"""
from __future__ import annotations

import tensorflow_model_optimization as tfmot

from pipeline.data import ImageSet
from pipeline.errors import PipelineError
from pipeline.tf_env import keras
from pipeline.train import FitSettings, fit


def custom_objects() -> dict:
    """Custom layers and quantize configs of the zoo, needed to rebuild or quantize its models."""
    import keras_models

    getter = getattr(keras_models, "custom_objects", None)
    return dict(getter()) if getter else {}


def quantize(model: keras.Model, preserve_sparsity: bool = False) -> keras.Model:
    """Wrap ``model`` for QAT; unsupported layers raise an error naming the layer."""
    quant = tfmot.quantization.keras
    try:
        with quant.quantize_scope(custom_objects()):
            annotated = quant.quantize_annotate_model(model)
            if preserve_sparsity:
                scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
                return quant.quantize_apply(annotated, scheme)
            return quant.quantize_apply(annotated)
    except (RuntimeError, ValueError) as exc:
        raise PipelineError(f"TF-MOT cannot quantize this model: {exc}".splitlines()[0]) from None


def qat(model: keras.Model, train: ImageSet, val: ImageSet | None, settings: FitSettings, preserve_sparsity: bool) -> keras.Model:
    """Quantization-aware fine-tuning; returns the QAT-wrapped model (the converter reads its ranges)."""
    wrapped = quantize(model, preserve_sparsity)
    if settings.epochs > 0:
        fit(wrapped, train, val, settings)
    return wrapped
