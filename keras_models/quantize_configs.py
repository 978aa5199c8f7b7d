"""TF-MOT quantization configs for the zoo layers TF-MOT's default 8-bit registry does not know.

TF-MOT refuses to quantize a layer it has no config for (``Layer ... is not supported``). The
builders therefore annotate such layers at build time (``annotate``), which is TF-MOT's documented
extension point: ``tfmot.quantization.keras.quantize_model`` keeps existing annotations and applies
their configs. Loading a saved zoo model, or quantizing one, needs the classes below in scope:

    with keras_models.quantize_scope():
        model = keras.models.load_model(path)
        qat_model = tfmot.quantization.keras.quantize_model(model)

Every config here leaves the TFLite int8 converter a range for every tensor it creates, so QAT
models convert with no float op left.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras.quantize_annotate import QuantizeAnnotate

from pipeline.core.tf_env import keras

_quant = tfmot.quantization.keras


def _activation_quantizer() -> _quant.quantizers.Quantizer:
    """The per-tensor asymmetric 8-bit quantizer TF-MOT's default scheme uses for activations."""
    return _quant.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)


class _NoWeightsConfig(_quant.QuantizeConfig):
    """Base for layers without weights; subclasses say which activations/outputs get fake-quants."""

    def get_weights_and_quantizers(self, layer: keras.layers.Layer) -> list:
        return []

    def get_activations_and_quantizers(self, layer: keras.layers.Layer) -> list:
        return []

    def set_quantize_weights(self, layer: keras.layers.Layer, quantize_weights: list) -> None:
        pass

    def set_quantize_activations(self, layer: keras.layers.Layer, quantize_activations: list) -> None:
        pass

    def get_output_quantizers(self, layer: keras.layers.Layer) -> list:
        return []

    def get_config(self) -> dict:
        return {}


class OutputQuantizeConfig(_NoWeightsConfig):
    """Fake-quantize the layer's output: for ops that make new values in one int8 kernel
    (SE's ``MUL``, a standalone batch norm)."""

    def get_output_quantizers(self, layer: keras.layers.Layer) -> list:
        return [_activation_quantizer()]


class HardSigmoidQuantizeConfig(OutputQuantizeConfig):
    """Ranges for both int8 ops of ``HardSigmoid``: the ReLU6'd ``x + 3`` and the output ``/ 6``."""

    def get_activations_and_quantizers(self, layer: keras.layers.Layer) -> list:
        return [(layer.activation, _activation_quantizer())]

    def set_quantize_activations(self, layer: keras.layers.Layer, quantize_activations: list) -> None:
        layer.activation = quantize_activations[0]


class HardSwishQuantizeConfig(OutputQuantizeConfig):
    """Ranges for all three int8 ops of ``HardSwish``: ReLU6'd ``x + 3``, the gate ``/ 6``, the product."""

    def get_activations_and_quantizers(self, layer: keras.layers.Layer) -> list:
        return [(layer.activation, _activation_quantizer()), (layer.gate_activation, _activation_quantizer())]

    def set_quantize_activations(self, layer: keras.layers.Layer, quantize_activations: list) -> None:
        layer.activation, layer.gate_activation = quantize_activations


class PassThroughQuantizeConfig(_NoWeightsConfig):
    """No fake-quant: the layer only moves data (split, reshape, concatenate of one tensor's parts),
    so int8 outputs share the input's scale and zero point exactly."""


def annotate(layer: keras.layers.Layer, config: _quant.QuantizeConfig) -> keras.layers.Layer:
    """Wrap ``layer`` with its quantize config, keeping its name so graphs stay readable.

    This is ``tfmot.quantization.keras.quantize_annotate_layer``, which has no ``name`` argument and
    would call every wrapper ``quantize_annotate_N``.
    """
    return QuantizeAnnotate(layer, quantize_config=config, name=layer.name)


def custom_objects() -> dict:
    """Everything ``load_model``/``quantize_apply`` must resolve by name in a zoo model."""
    from keras_models.layers import ChannelShuffle, ChannelSplit, HardSigmoid, HardSwish

    classes = (HardSwish, HardSigmoid, ChannelShuffle, ChannelSplit,
               OutputQuantizeConfig, HardSigmoidQuantizeConfig, HardSwishQuantizeConfig, PassThroughQuantizeConfig)
    return {cls.__name__: cls for cls in classes}


@contextmanager
def quantize_scope() -> Iterator[None]:
    """TF-MOT's ``quantize_scope`` with the zoo's layers and configs: load or quantize zoo models in it."""
    with _quant.quantize_scope(custom_objects()):
        yield
