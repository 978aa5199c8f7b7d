"""Tiny TFLite models built with TF for the Edge TPU and NNAPI rule tests (each converts in about a second)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np


def convert(build: Callable, shape: tuple[int, ...], path: Path, int8: bool = True, batch: int | None = 1) -> Path:
    """Convert the Keras model ``build(inputs)`` (full int8 with uint8 I/O unless ``int8`` is False)."""
    from pipeline.core.tf_env import keras, tf

    inputs = keras.Input(shape=shape, batch_size=batch)
    model = keras.Model(inputs, build(inputs))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)

        def data():
            for _ in range(8):
                yield [rng.uniform(-1, 1, size=(1, *[d or 8 for d in shape])).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = data
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    path.write_bytes(converter.convert())
    return path


def conv_net(x):
    from pipeline.core.tf_env import keras

    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.layers.Dense(4, activation="softmax")(x)


def hard_swish_in_middle(x):
    """conv -> HARD_SWISH (not on the Edge TPU) -> conv -> pool -> dense: everything after it is CPU."""
    from pipeline.core.tf_env import keras, tf

    x = keras.layers.Conv2D(8, 3, padding="same")(x)
    x = keras.layers.Lambda(lambda t: t * tf.nn.relu6(t + 3.0) / 6.0)(x)
    return conv_net(x)


def five_d(x):
    """A reshape to 5-D with two outer dimensions above 1, a 5-D transpose and back."""
    from pipeline.core.tf_env import keras, tf

    x = keras.layers.Conv2D(8, 1)(x)
    x = keras.layers.Lambda(lambda t: tf.transpose(tf.reshape(t, (2, 2, 2, 2, 8)), (1, 0, 2, 3, 4)))(x)
    x = keras.layers.Lambda(lambda t: tf.reshape(t, (1, 4, 4, 8)))(x)
    return conv_net(x)


def big_dense(x):
    """About 9 MB of int8 weights: more than the Edge TPU's 8 MiB parameter cache."""
    from pipeline.core.tf_env import keras

    x = keras.layers.Flatten()(x)
    return keras.layers.Dense(3000)(keras.layers.Dense(3000)(x))
