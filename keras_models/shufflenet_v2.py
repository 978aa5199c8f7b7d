"""ShuffleNet v2 (Ma et al., 2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
Design", arXiv:1807.11164).

Each unit splits the channels in two, passes one half through unchanged and the other through
1x1 conv -> 3x3 depthwise -> 1x1 conv, concatenates, and shuffles with two groups. Downsampling
units process both halves (the left one with a stride-2 depthwise + 1x1). The width is one of the
paper's four settings (0.5x, 1.0x, 1.5x, 2.0x, as ``alpha``); its stage widths are not a linear
scaling of one another, so other values are rejected.
"""
from __future__ import annotations

from keras_models._blocks import channel_split, conv_bn, depthwise_bn
from keras_models._common import check_common_args, classifier_head, layers, load_weights, model_input
from keras_models.layers import ChannelShuffle
from keras_models.quantize_configs import PassThroughQuantizeConfig, annotate
from pipeline.core.tf_env import keras

# alpha -> output widths of stages 2, 3, 4 and conv5 (Table 5).
_WIDTHS = {0.5: (48, 96, 192, 1024), 1.0: (116, 232, 464, 1024), 1.5: (176, 352, 704, 1024), 2.0: (244, 488, 976, 2048)}
_REPEATS = (4, 8, 4)


def _unit(x, out: int, stride: int, name: str):
    half = out // 2
    if stride == 1:
        left, right = channel_split(x, 2, f"{name}_split")
    else:
        left = depthwise_bn(x, 3, f"{name}_left_dwconv", strides=2, act=None)
        left = conv_bn(left, half, 1, f"{name}_left_conv", act="relu")
        right = x
    right = conv_bn(right, half, 1, f"{name}_conv1", act="relu")
    right = depthwise_bn(right, 3, f"{name}_dwconv", strides=stride, act=None)
    right = conv_bn(right, half, 1, f"{name}_conv2", act="relu")
    x = layers.Concatenate(name=f"{name}_concat")([left, right])
    return annotate(ChannelShuffle(2, name=f"{name}_shuffle"), PassThroughQuantizeConfig())(x)


def ShuffleNetV2(
    input_shape: tuple[int, int, int] | None = None,
    alpha: float = 1.0,
    include_top: bool = True,
    weights: str | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    dropout: float = 0.0,
    name: str | None = None,
) -> keras.Model:
    """Build ShuffleNet v2 for inputs in [-1, 1].

    Args:
        input_shape: static (height, width, 3). Default (224, 224, 3).
        alpha: the paper's width setting: 0.5, 1.0, 1.5 or 2.0.
        include_top, weights, pooling, classes, classifier_activation, dropout, name: as in Keras
            applications; weights is None or a local weights file.
    """
    check_common_args(weights, include_top, classes, imagenet_for=None, family="ShuffleNet v2")
    if alpha not in _WIDTHS:
        raise ValueError(f"`alpha` must be one of {', '.join(map(str, _WIDTHS))} (the paper's widths), got {alpha}")
    img_input = model_input(input_shape, 224)
    *stage_widths, last = _WIDTHS[alpha]

    x = conv_bn(img_input, 24, 3, "conv1", strides=2, act="relu")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    for stage, (width, repeats) in enumerate(zip(stage_widths, _REPEATS), start=2):
        for i in range(repeats):
            x = _unit(x, width, 2 if i == 0 else 1, f"stage{stage}_unit{i + 1}")
    x = conv_bn(x, last, 1, "conv5", act="relu")
    x = classifier_head(x, include_top, pooling, classes, classifier_activation, dropout)

    rows = img_input.shape[1]
    model = keras.Model(img_input, x, name=name or f"shufflenetv2_{alpha:g}_{rows}")
    load_weights(model, weights)
    return model
