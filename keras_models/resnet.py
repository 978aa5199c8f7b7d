"""ResNet-50 (He et al., 2016, "Deep Residual Learning for Image Recognition", arXiv:1512.03385).

The heavyweight baseline of the zoo: bottleneck blocks (1x1 reduce, 3x3, 1x1 expand x4) with
projection shortcuts where the shape changes. As in the paper (and Keras applications), the
stride sits on the first 1x1 conv of each downsampling block, which gives the paper's 3.8 G
multiply-adds; convs carry no bias because batch norm follows each of them.
"""
from __future__ import annotations

from keras_models._blocks import conv_bn
from keras_models._common import check_common_args, classifier_head, layers, load_weights, model_input
from pipeline.core.tf_env import keras

# (bottleneck width, blocks, first stride) of conv2_x..conv5_x (Table 1, 50-layer column).
_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))


def _bottleneck(x, width: int, stride: int, name: str):
    out = 4 * width
    shortcut = x
    if stride != 1 or x.shape[-1] != out:
        shortcut = conv_bn(x, out, 1, f"{name}_0_conv", strides=stride, act=None)
    x = conv_bn(x, width, 1, f"{name}_1_conv", strides=stride)
    x = conv_bn(x, width, 3, f"{name}_2_conv")
    x = conv_bn(x, out, 1, f"{name}_3_conv", act=None)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.ReLU(name=f"{name}_out")(x)


def ResNet50(
    input_shape: tuple[int, int, int] | None = None,
    include_top: bool = True,
    weights: str | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    name: str | None = None,
) -> keras.Model:
    """Build ResNet-50 for inputs in [-1, 1] (no width multiplier: the paper has none).

    Args:
        input_shape: static (height, width, 3). Default (224, 224, 3).
        include_top, weights, pooling, classes, classifier_activation, name: as in Keras
            applications; weights is None or a local weights file.
    """
    check_common_args(weights, include_top, classes, imagenet_for=None, family="ResNet-50")
    img_input = model_input(input_shape, 224)

    x = conv_bn(img_input, 64, 7, "conv1", strides=2)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    for stage, (width, blocks, stride) in enumerate(_STAGES, start=2):
        for i in range(blocks):
            x = _bottleneck(x, width, stride if i == 0 else 1, f"conv{stage}_block{i + 1}")
    x = classifier_head(x, include_top, pooling, classes, classifier_activation)

    model = keras.Model(img_input, x, name=name or f"resnet50_{img_input.shape[1]}")
    load_weights(model, weights)
    return model


