"""Weight sharing (Han et al., 2016, "Deep Compression"): TF-MOT weight clustering, then ``strip_clustering``.

Each convolution and the classifier keep only ``clusters`` distinct weight values (the centroids),
fine-tuned with the net; gzip then stores each weight in about log2(clusters) bits. On a pruned
model, sparsity-preserving clustering keeps the zeros as their own cluster. CQAT/PCQAT in
``pipeline.stages.qat`` keep the sharing through QAT, and ``tflite_unique_values`` shows it survived int8.
"""
from __future__ import annotations

import numpy as np
import tensorflow_model_optimization as tfmot

from pipeline.core.data import ImageSet
from pipeline.core.errors import PipelineError
from pipeline.core.tf_env import keras
from pipeline.stages.options import CENTROID_INITS
from pipeline.stages.prune import _prunable
from pipeline.stages.train import Distillation, FitSettings, fit


def cluster(model: keras.Model, train: ImageSet, val: ImageSet | None, clusters: int, settings: FitSettings,
            init: str = "kmeans++", preserve_sparsity: bool = False, distill: Distillation | None = None,
            min_weights: int = 0, log_dir=None) -> keras.Model:
    """Cluster the conv/dense kernels of ``model`` to ``clusters`` values, fine-tune, strip; returns a plain model.

    Kernels under ``min_weights`` weights stay as they are: the stem and small early layers add little
    to the file but lose accuracy when a few values must stand for all of their weights.
    """
    if not 2 <= clusters <= 256:
        raise PipelineError(f"--cluster must be between 2 and 256 (an int8 kernel has 256 values), got {clusters}")
    if init not in CENTROID_INITS:
        raise PipelineError(f"unknown centroid initialization {init!r}; choose from {', '.join(CENTROID_INITS)}")
    centroid_init = getattr(tfmot.clustering.keras.CentroidInitialization, CENTROID_INITS[init])

    def annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
        # A kernel with fewer weights than clusters has nothing to share.
        size = layer.get_weights()[0].size if _prunable(layer) else 0
        if size > clusters and size >= min_weights:
            return tfmot.clustering.keras.cluster_weights(
                layer, number_of_clusters=clusters, cluster_centroids_init=centroid_init,
                preserve_sparsity=preserve_sparsity)
        return layer

    wrapped = keras.models.clone_model(model, clone_function=annotate)
    fit(wrapped, train, val, settings, distill=distill, log_dir=log_dir)
    return tfmot.clustering.keras.strip_clustering(wrapped)  # fit left BatchNorm recalibrated


def keras_unique_values(model: keras.Model) -> dict[str, int]:
    """Distinct kernel values per conv/dense layer of a Keras model."""
    return {layer.name: int(np.unique(layer.get_weights()[0]).size) for layer in model.layers if _prunable(layer)}


def tflite_unique_values(path) -> dict[str, dict]:
    """Per conv/FC kernel of a .tflite file: distinct stored values, in all and per output channel (max).

    Per-channel int8 quantization gives each output channel its own scale, so shared float
    centroids show as at most ``clusters`` codes within a channel, not within the whole tensor.
    """
    from pipeline.core.tflite_file import read_model

    model = read_model(path)
    result = {}
    for op in model.operators:
        if op.name not in ("CONV_2D", "FULLY_CONNECTED") or len(op.inputs) < 2:
            continue
        tensor = model.tensors[op.inputs[1]]
        if not tensor.constant:
            continue
        values = model.tensor_data(op.inputs[1])
        per_channel = values.reshape(values.shape[0], -1)
        result[tensor.name] = {
            "unique": int(np.unique(values).size),
            "max_unique_per_channel": int(max(np.unique(row).size for row in per_channel)),
            "weights": int(values.size),
        }
    return result
