"""Stage 3: quantization-aware training with TF-MOT.

The collaborative-optimization schemes keep earlier compression through QAT, so the int8 file
keeps it (and its gzip savings): a pruned model gets PQAT (zeroed weights stay zero), a clustered
one CQAT (weights stay on their shared centroids), a pruned and clustered one PCQAT (both).
"""
from __future__ import annotations

import tensorflow_model_optimization as tfmot

from pipeline.core.data import ImageSet
from pipeline.core.errors import PipelineError
from pipeline.core.tf_env import keras
from pipeline.stages.options import QAT_SCHEMES
from pipeline.stages.train import Distillation, FitSettings, fit


def custom_objects() -> dict:
    """Custom layers and quantize configs of the zoo, needed to rebuild or quantize its models."""
    import keras_models

    getter = getattr(keras_models, "custom_objects", None)
    return dict(getter()) if getter else {}


def _scheme(preserve_sparsity: bool, preserve_clusters: bool):
    combine = tfmot.experimental.combine
    if preserve_clusters:
        return combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=preserve_sparsity)
    if preserve_sparsity:
        return combine.Default8BitPrunePreserveQuantizeScheme()
    return tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()


def quantize(model: keras.Model, preserve_sparsity: bool = False, preserve_clusters: bool = False) -> keras.Model:
    """Wrap ``model`` for QAT (see ``SCHEMES``); unsupported layers raise an error naming the layer."""
    quant = tfmot.quantization.keras
    try:
        with quant.quantize_scope(custom_objects()):
            annotated = quant.quantize_annotate_model(model)
            return quant.quantize_apply(annotated, _scheme(preserve_sparsity, preserve_clusters))
    except (RuntimeError, ValueError) as exc:
        raise PipelineError(f"TF-MOT cannot quantize this model: {exc}".splitlines()[0]) from None


def qat(model: keras.Model, train: ImageSet, val: ImageSet | None, settings: FitSettings, preserve_sparsity: bool,
        preserve_clusters: bool = False, distill: Distillation | None = None, log_dir=None) -> keras.Model:
    """Quantization-aware fine-tuning (with a teacher's targets as the loss, given ``distill``).

    Returns the QAT-wrapped model; the converter reads its ranges.
    """
    wrapped = quantize(model, preserve_sparsity, preserve_clusters)
    if settings.epochs > 0:
        # Training mode would move the quantizers' ranges, so BatchNorm statistics stay as trained.
        fit(wrapped, train, val, settings, distill=distill, log_dir=log_dir, recalibrate=False)
    return wrapped


def load_qat(path, base: keras.Model, preserve_sparsity: bool, preserve_clusters: bool) -> keras.Model:
    """Rebuild a QAT model saved by ``qat`` from its float ``base`` and load its weights.

    TF-MOT serializes cluster-preserving (CQAT/PCQAT) layers as plain QAT layers, so ``load_model``
    cannot rebuild them; wrapping the base again with the same scheme restores every variable.
    """
    wrapped = quantize(base, preserve_sparsity, preserve_clusters)
    try:
        wrapped.load_weights(path)
    except ValueError as exc:
        raise PipelineError(f"{path} does not hold the weights of {QAT_SCHEMES[preserve_sparsity, preserve_clusters]} "
                            f"on this base model: {str(exc).splitlines()[0]}") from None
    return wrapped
