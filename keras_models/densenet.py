"""DenseNet-121 (Huang et al., 2017, "Densely Connected Convolutional Networks", arXiv:1608.06993).

The dense-connectivity baseline: each layer (BN-ReLU-1x1 conv to 4k, BN-ReLU-3x3 conv to k) sees
the concatenation of all earlier maps of its block; transitions halve channels and resolution.
Growth rate k = 32, blocks of 6, 12, 24, 16 layers (DenseNet-BC, compression 0.5).

The pre-activation batch norms follow a concatenation or pooling, not a conv, so TF-MOT has no
conv to fold them into; they are annotated to quantize their output (int8 MUL + ADD in TFLite).
"""
from __future__ import annotations

from keras_models._blocks import BN
from keras_models._common import check_common_args, classifier_head, layers, load_weights, model_input
from keras_models.quantize_configs import OutputQuantizeConfig, PassThroughQuantizeConfig, annotate
from pipeline.core.tf_env import keras

_BLOCKS = (6, 12, 24, 16)
_GROWTH = 32


def _bn_relu(x, name: str):
    x = annotate(layers.BatchNormalization(**BN, name=f"{name}_bn"), OutputQuantizeConfig())(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _dense_layer(x, name: str):
    y = _bn_relu(x, f"{name}_0")
    y = layers.Conv2D(4 * _GROWTH, 1, use_bias=False, name=f"{name}_1_conv")(y)
    y = layers.BatchNormalization(**BN, name=f"{name}_1_bn")(y)
    y = layers.ReLU(name=f"{name}_1_relu")(y)
    y = layers.Conv2D(_GROWTH, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    return layers.Concatenate(name=f"{name}_concat")([x, y])


def _transition(x, name: str):
    x = _bn_relu(x, name)
    x = layers.Conv2D(x.shape[-1] // 2, 1, use_bias=False, name=f"{name}_conv")(x)
    # TFLite's int8 AVERAGE_POOL_2D needs the input's scale on its output; no separate fake-quant.
    return annotate(layers.AveragePooling2D(2, strides=2, name=f"{name}_pool"), PassThroughQuantizeConfig())(x)


def DenseNet121(
    input_shape: tuple[int, int, int] | None = None,
    include_top: bool = True,
    weights: str | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    name: str | None = None,
) -> keras.Model:
    """Build DenseNet-121 for inputs in [-1, 1] (no width multiplier: the paper has none).

    Args:
        input_shape: static (height, width, 3); at least 32 px (five halvings). Default 224.
        include_top, weights, pooling, classes, classifier_activation, name: as in Keras
            applications; weights is None or a local weights file.
    """
    check_common_args(weights, include_top, classes, imagenet_for=None, family="DenseNet-121")
    img_input = model_input(input_shape, 224)

    x = layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False, name="conv1_conv")(img_input)
    x = layers.BatchNormalization(**BN, name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    for block, layers_in_block in enumerate(_BLOCKS, start=2):
        for i in range(layers_in_block):
            x = _dense_layer(x, f"conv{block}_block{i + 1}")
        if block < len(_BLOCKS) + 1:
            x = _transition(x, f"pool{block}")
    x = _bn_relu(x, "final")
    x = classifier_head(x, include_top, pooling, classes, classifier_activation)

    model = keras.Model(img_input, x, name=name or f"densenet121_{img_input.shape[1]}")
    load_weights(model, weights)
    return model
