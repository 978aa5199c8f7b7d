"""Analytical parameter and multiply-accumulate (MAC) counts of a Keras model, from its graph.

The counting convention is the one the lightweight-CNN papers use for "mult-adds"/"MAdds":

* MACs are those of convolutions (grouped ones included), depthwise convolutions and dense layers:
  one MAC per weight per output position. Bias adds, batch norm, activations, pooling,
  element-wise adds/multiplies (residuals, squeeze-excite scaling) and data movement are not
  counted; together they are a few percent of the total for every net of the zoo.
* Parameters are trainable weights: kernels, biases and batch-norm gamma/beta. Batch-norm moving
  statistics are state, not parameters (they fold into the conv at inference).

Papers that report FLOPs as 2 x MACs, or leave the classifier out, are noted in the zoo README.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipeline.core.tf_env import keras


@dataclass(frozen=True)
class LayerCount:
    name: str
    kind: str  # the Keras class of the counted layer
    params: int
    macs: int


@dataclass
class ModelCount:
    params: int  # trainable parameters (the papers' convention)
    non_trainable_params: int  # batch-norm moving statistics and frozen weights
    norm_params: int  # batch-norm gamma/beta, which some papers leave out of their totals
    macs: int
    layers: list[LayerCount] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"params": self.params, "non_trainable_params": self.non_trainable_params,
                "norm_params": self.norm_params, "macs": self.macs}


def _unwrap(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The layer inside TF-MOT's annotate/quantize/prune wrappers (all ``keras.layers.Wrapper``)."""
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return layer


def _spatial(shape: tuple) -> int:
    """Number of output positions: every dimension between batch and channels."""
    return math.prod(int(d) for d in shape[1:-1])


def layer_macs(layer: keras.layers.Layer, input_shape: tuple, output_shape: tuple) -> int:
    """MACs of one call of ``layer`` (0 for layers the convention does not count)."""
    inner = _unwrap(layer)
    if isinstance(inner, keras.layers.DepthwiseConv2D):
        kh, kw = inner.kernel_size
        return _spatial(output_shape) * kh * kw * int(output_shape[-1])
    if isinstance(inner, keras.layers.Conv2D):
        kh, kw = inner.kernel_size
        return _spatial(output_shape) * kh * kw * (int(input_shape[-1]) // inner.groups) * int(output_shape[-1])
    if isinstance(inner, keras.layers.Dense):
        return _spatial(output_shape) * int(input_shape[-1]) * int(output_shape[-1])
    return 0


def count(model: keras.Model) -> ModelCount:
    """Count ``model``'s trainable parameters and conv/dense MACs for a batch of one image."""
    per_layer = []
    for layer in model.layers:
        params = sum(math.prod(w.shape) for w in layer.trainable_weights)
        macs = 0
        for node in layer.inbound_nodes:  # one per call; a shared layer costs MACs at each
            if node.keras_inputs:
                macs += layer_macs(layer, tuple(node.input_shapes), tuple(node.output_shapes))
        per_layer.append(LayerCount(layer.name, type(_unwrap(layer)).__name__, int(params), int(macs)))
    trainable = sum(int(math.prod(w.shape)) for w in model.trainable_weights)
    non_trainable = sum(int(math.prod(w.shape)) for w in model.non_trainable_weights)
    norm = sum(c.params for c in per_layer if c.kind == "BatchNormalization")
    return ModelCount(trainable, non_trainable, norm, sum(c.macs for c in per_layer), per_layer)
