"""Pieces every builder of the zoo shares: argument checks, the classifier head, weight loading."""
from __future__ import annotations

import os

from pipeline.core.tf_env import keras

layers = keras.layers


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10%.

    Hardware (and XNNPACK's vector kernels) is fastest with channel counts that are multiples of 8;
    this is the rounding the MobileNet v2/v3 and MnasNet papers use for their width multipliers.
    """
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def check_common_args(
    weights: str | None, include_top: bool, classes: int, imagenet_for: int | None = 1000, family: str = ""
) -> None:
    """Validate the arguments all Keras-applications-style builders take, with actionable messages.

    ``imagenet_for`` is the class count of the family's published ImageNet checkpoint, None where the
    zoo has none to offer (``family`` names the net in that error).
    """
    if weights == "imagenet" and imagenet_for is None:
        raise ValueError(f"ImageNet weights are not packaged for {family} in this zoo; pass a weights file")
    if not (weights in (None, "imagenet") or os.path.exists(str(weights))):
        raise ValueError(
            "`weights` must be None (random init), 'imagenet' or the path of a weights file; "
            f"got {weights!r}"
        )
    if weights == "imagenet" and include_top and classes != imagenet_for:
        raise ValueError(
            f"With weights='imagenet' and include_top=True, `classes` must be {imagenet_for}; "
            "use include_top=False to put a new classifier on the ImageNet features."
        )
    if classes < 1:
        raise ValueError(f"`classes` must be at least 1, got {classes}")


def model_input(input_shape: tuple[int, int, int] | None, default_size: int) -> keras.Input:
    """A fixed-shape image input: static shapes are what TFLite, NNAPI and the Edge TPU want."""
    if input_shape is None:
        input_shape = (default_size, default_size, 3)
    if len(input_shape) != 3 or input_shape[-1] != 3 or None in input_shape:
        raise ValueError(f"`input_shape` must be a static (height, width, 3) tuple, got {input_shape}")
    return keras.Input(shape=tuple(input_shape), name="input")


def classifier_head(
    x,
    include_top: bool,
    pooling: str | None,
    classes: int,
    classifier_activation: str | None,
    dropout: float = 0.0,
):
    """Global pooling, optional dropout and the dense classifier, as Keras applications lay them out.

    A Dense layer (FULLY_CONNECTED) rather than the 1x1 conv + reshape of the original code keeps
    the converted graph free of RESHAPE ops.
    """
    if include_top:
        x = layers.GlobalAveragePooling2D(name="global_average_pooling")(x)
        if dropout:
            x = layers.Dropout(dropout, name="dropout")(x)
        return layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="global_average_pooling")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="global_max_pooling")(x)
    if pooling is not None:
        raise ValueError(f"`pooling` must be None, 'avg' or 'max', got {pooling!r}")
    return x


def load_weights(model: keras.Model, weights: str | None, imagenet_url: str | None = None) -> None:
    """Load a local weights file, or download the ImageNet checkpoint Keras applications publish.

    Layer names follow Keras applications, so published checkpoints load by name.
    """
    if weights is None:
        return
    if weights == "imagenet":
        if imagenet_url is None:
            raise ValueError(f"No ImageNet weights are published for {model.name} at this configuration")
        path = keras.utils.get_file(os.path.basename(imagenet_url), imagenet_url, cache_subdir="models")
        model.load_weights(path, by_name=True, skip_mismatch=False)
        return
    model.load_weights(weights)
