"""ShuffleNet v1 (Zhang et al., 2017, "ShuffleNet: An Extremely Efficient Convolutional Neural Network
for Mobile Devices", arXiv:1707.01083).

Bottleneck units whose 1x1 convolutions are group convolutions; a channel shuffle after the first
lets information cross groups. Stride-2 units concatenate a 3x3 average-pooled shortcut instead
of adding it. ``groups`` is the paper's g (1, 2, 3, 4, 8); ``alpha`` is its scale factor s
("ShuffleNet s x"), which multiplies every stage width (rounded so groups divide the bottlenecks).
"""
from __future__ import annotations

from keras_models._blocks import BN, grouped_conv_bn
from keras_models._common import check_common_args, classifier_head, layers, load_weights, make_divisible, model_input
from keras_models.layers import ChannelShuffle
from keras_models.quantize_configs import PassThroughQuantizeConfig, annotate
from pipeline.core.tf_env import keras

# Output widths of stages 2-4 for each g at scale 1x (Table 1).
_STAGE_WIDTHS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088), 8: (384, 768, 1536)}
_REPEATS = (4, 8, 4)
_STEM = 24



def _unit(x, out: int, groups: int, stride: int, group_first: bool, name: str):
    in_channels = x.shape[-1]
    bottleneck = out // 4
    y = grouped_conv_bn(x, bottleneck, groups if group_first else 1, f"{name}_gconv1", act="relu")
    if group_first and groups > 1:  # after an ungrouped conv a shuffle would only relabel its filters
        y = annotate(ChannelShuffle(groups, name=f"{name}_shuffle"), PassThroughQuantizeConfig())(y)
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dwconv")(y)
    y = layers.BatchNormalization(**BN, name=f"{name}_dwconv_bn")(y)
    y = grouped_conv_bn(y, out - in_channels if stride == 2 else out, groups, f"{name}_gconv2", act=None)
    if stride == 2:
        # TFLite's int8 AVERAGE_POOL_2D needs the input's scale on its output; no separate fake-quant.
        shortcut = annotate(layers.AveragePooling2D(3, strides=2, padding="same", name=f"{name}_avgpool"),
                            PassThroughQuantizeConfig())(x)
        y = layers.Concatenate(name=f"{name}_concat")([shortcut, y])
    else:
        y = layers.Add(name=f"{name}_add")([x, y])
    return layers.ReLU(name=f"{name}_relu")(y)


def ShuffleNetV1(
    input_shape: tuple[int, int, int] | None = None,
    groups: int = 3,
    alpha: float = 1.0,
    include_top: bool = True,
    weights: str | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    name: str | None = None,
) -> keras.Model:
    """Build ShuffleNet v1 for inputs in [-1, 1].

    Args:
        input_shape: static (height, width, 3). Default (224, 224, 3).
        groups: group count g of the pointwise convolutions: 1, 2, 3, 4 or 8.
        alpha: the paper's scale factor s (0.25, 0.5, 1.0, ...); widths round to multiples of 4g.
        include_top, weights, pooling, classes, classifier_activation, name: as in Keras
            applications; weights is None or a local weights file.
    """
    check_common_args(weights, include_top, classes, imagenet_for=None, family="ShuffleNet v1")
    if groups not in _STAGE_WIDTHS:
        raise ValueError(f"`groups` must be one of {', '.join(map(str, _STAGE_WIDTHS))}, got {groups}")
    if alpha <= 0:
        raise ValueError(f"`alpha` must be positive, got {alpha}")
    img_input = model_input(input_shape, 224)

    # The stem scales with s too (the paper's 0.5x and 0.25x counts need it), kept a multiple of g
    # so that every stride-2 unit's grouped conv (out - in channels) still splits evenly.
    x = layers.Conv2D(make_divisible(_STEM * alpha, groups), 3, strides=2, padding="same", use_bias=False, name="conv1")(img_input)
    x = layers.BatchNormalization(**BN, name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    for stage, (width, repeats) in enumerate(zip(_STAGE_WIDTHS[groups], _REPEATS), start=2):
        # Bottlenecks (width / 4) must split into g groups, hence multiples of 4g.
        out = make_divisible(width * alpha, 4 * groups)
        for i in range(repeats):
            x = _unit(x, out, groups, 2 if i == 0 else 1, group_first=not (stage == 2 and i == 0),
                      name=f"stage{stage}_unit{i + 1}")
    x = classifier_head(x, include_top, pooling, classes, classifier_activation)

    rows = img_input.shape[1]
    model = keras.Model(img_input, x, name=name or f"shufflenet_g{groups}_{alpha:g}_{rows}")
    load_weights(model, weights)
    return model
