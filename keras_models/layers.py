"""Custom Keras layers of the zoo, each a real serializable layer (no Lambda) with an int8 story.

* ``HardSwish`` is ``x * relu6(x + 3) / 6`` with a fake-quantizable step per int8 op, so a QAT model
  converts to ``ADD``/``MUL`` ops the Edge TPU maps (a float model still fuses into ``HARD_SWISH``).
* ``HardSigmoid`` applies its ReLU6 through an ``activation`` attribute, which TF-MOT can fake-quantize,
  so both of the int8 ops it becomes (``ADD`` with fused ReLU6, then ``MUL`` by 1/6) get QAT ranges.
* ``ChannelShuffle`` is the ShuffleNet permutation written with split, reshape and concatenate on
  tensors of rank <= 4 with at most 3 non-unit dimensions, which the Edge TPU maps; the textbook
  reshape-transpose-reshape goes through a 5-D tensor, which it does not.
* ``ChannelSplit`` splits channels into equal parts (one ``SPLIT`` op).

Their quantization configs live in :mod:`keras_models.quantize_configs`.
"""
from __future__ import annotations

from typing import Any

from pipeline.core.tf_env import keras, tf


def relu(x: tf.Tensor) -> tf.Tensor:
    """ReLU6 under the name TF-MOT knows: it fake-quantizes the output of activations named ``relu``
    (fused into the op before them in TFLite), and has no entry for ``relu6``."""
    return tf.nn.relu6(x)


class HardSwish(keras.layers.Layer):
    """hard-swish(x) = x * ReLU6(x + 3) / 6 (Howard et al. 2019, MobileNet v3).

    Computed as ``x * linear(relu(x + 3) / 6)`` through two activation attributes that TF-MOT can
    fake-quantize, so QAT gives every one of its three int8 ops (``ADD`` with fused ReLU6, ``MUL``
    by 1/6, ``MUL`` by x) a range and the converter keeps them: all three map to the Edge TPU,
    which has no ``HARD_SWISH``. Without fake-quants (float or post-training quantization) the
    converter fuses the same pattern into one ``HARD_SWISH`` kernel, the fastest form on CPUs.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.activation = relu
        self.gate_activation = keras.activations.linear

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs * self.gate_activation(self.activation(inputs + 3.0) * (1.0 / 6.0))


class HardSigmoid(keras.layers.Layer):
    """hard-sigmoid(x) = ReLU6(x + 3) / 6, the gate of MobileNet v3's squeeze-excite.

    ``activation`` is an attribute (always ReLU6) only so that TF-MOT can wrap it with a fake-quant:
    the int8 graph computes ``ADD(x, 3)`` with fused ReLU6 and then ``MUL`` by 1/6, and the tensor
    between them needs its own range.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.activation = relu

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return self.activation(inputs + 3.0) * (1.0 / 6.0)


class ChannelShuffle(keras.layers.Layer):
    """Channel shuffle with ``groups`` groups (Zhang et al. 2017, ShuffleNet), Edge TPU-mappable.

    Output channel ``j * groups + i`` is input channel ``i * (C / groups) + j``. The textbook form
    reshapes to (N, H, W, g, C/g), transposes the last two axes and flattens back; the 5-D tensor has
    four non-unit dimensions, which the Edge TPU rejects. Here each group is reshaped to
    (N, H*W, C/g, 1) and the groups are concatenated on the last axis, giving (N, H*W, C/g, g), whose
    row-major flattening is exactly the shuffled order. Only data moves, so it is exact in int8 too.
    """

    def __init__(self, groups: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if groups < 1:
            raise ValueError(f"channel shuffle needs groups >= 1, got {groups}")
        self.groups = int(groups)

    def build(self, input_shape: tf.TensorShape) -> None:
        channels = input_shape[-1]
        if channels % self.groups:
            raise ValueError(f"channel shuffle: {channels} channels do not split into {self.groups} groups")
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        _, height, width, channels = inputs.shape
        per_group = channels // self.groups
        parts = tf.split(inputs, self.groups, axis=-1)
        columns = [tf.reshape(p, (-1, height * width, per_group, 1)) for p in parts]
        return tf.reshape(tf.concat(columns, axis=-1), (-1, height, width, channels))

    def get_config(self) -> dict:
        return {**super().get_config(), "groups": self.groups}


class ChannelSplit(keras.layers.Layer):
    """Split the channels into ``parts`` equal slices (ShuffleNet v2's channel split, group convs)."""

    def __init__(self, parts: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if parts < 1:
            raise ValueError(f"channel split needs parts >= 1, got {parts}")
        self.parts = int(parts)

    def build(self, input_shape: tf.TensorShape) -> None:
        if input_shape[-1] % self.parts:
            raise ValueError(f"channel split: {input_shape[-1]} channels do not split into {self.parts} parts")
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> list[tf.Tensor]:
        return tf.split(inputs, self.parts, axis=-1)

    def compute_output_shape(self, input_shape: tf.TensorShape) -> list[tf.TensorShape]:
        shape = tf.TensorShape(input_shape).as_list()
        shape[-1] //= self.parts
        return [tf.TensorShape(shape)] * self.parts

    def get_config(self) -> dict:
        return {**super().get_config(), "parts": self.parts}
