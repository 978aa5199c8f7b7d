"""MobileNet v3 Small and Large (Howard et al., 2019, "Searching for MobileNetV3", arXiv:1905.02244).

Inverted residuals (MobileNet v2) with squeeze-excite gated by hard-sigmoid, hard-swish in the
later layers, and an efficient last stage (pool first, then a 1x1 "conv" as a dense layer). The
``minimalistic`` variant drops SE, hard-swish and 5x5 kernels, for accelerators that lack them.
Width multiplier ``alpha`` rounds every width to a multiple of 8, as the paper does.
"""
from __future__ import annotations

from keras_models._blocks import activation, conv_bn, depthwise_bn, squeeze_excite
from keras_models._common import check_common_args, classifier_head, layers, load_weights, make_divisible, model_input
from pipeline.core.tf_env import keras

# (kernel, expanded width, output width, squeeze-excite, activation, stride): Tables 1 and 2.
_LARGE = (
    (3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2), (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2), (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hard_swish", 2), (3, 200, 80, False, "hard_swish", 1),
    (3, 184, 80, False, "hard_swish", 1), (3, 184, 80, False, "hard_swish", 1),
    (3, 480, 112, True, "hard_swish", 1), (3, 672, 112, True, "hard_swish", 1),
    (5, 672, 160, True, "hard_swish", 2), (5, 960, 160, True, "hard_swish", 1),
    (5, 960, 160, True, "hard_swish", 1),
)
_SMALL = (
    (3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hard_swish", 2), (5, 240, 40, True, "hard_swish", 1), (5, 240, 40, True, "hard_swish", 1),
    (5, 120, 48, True, "hard_swish", 1), (5, 144, 48, True, "hard_swish", 1),
    (5, 288, 96, True, "hard_swish", 2), (5, 576, 96, True, "hard_swish", 1), (5, 576, 96, True, "hard_swish", 1),
)
_LAST_POINT = {"large": 1280, "small": 1024}


def _block(x, kernel: int, expanded: int, out: int, se: bool, act: str, stride: int, block_id: int):
    prefix = f"expanded_conv_{block_id}"
    inputs, in_channels = x, x.shape[-1]
    if expanded != in_channels:
        x = conv_bn(x, expanded, 1, f"{prefix}_expand", act=act)
    x = depthwise_bn(x, kernel, f"{prefix}_depthwise", strides=stride, act=act)
    if se:
        x = squeeze_excite(x, make_divisible(expanded * 0.25), f"{prefix}_se", inner="relu", gate="hard_sigmoid")
    x = conv_bn(x, out, 1, f"{prefix}_project", act=None)
    if stride == 1 and in_channels == out:
        x = layers.Add(name=f"{prefix}_add")([inputs, x])
    return x


def _mobilenet_v3(
    size: str,
    input_shape: tuple[int, int, int] | None,
    alpha: float,
    minimalistic: bool,
    include_top: bool,
    weights: str | None,
    pooling: str | None,
    classes: int,
    classifier_activation: str | None,
    dropout: float,
    name: str | None,
) -> keras.Model:
    check_common_args(weights, include_top, classes, imagenet_for=None, family="MobileNet v3")
    if alpha <= 0:
        raise ValueError(f"`alpha` must be positive, got {alpha}")
    img_input = model_input(input_shape, 224)
    stem_act = "relu" if minimalistic else "hard_swish"

    x = conv_bn(img_input, 16, 3, "conv", strides=2, act=stem_act)
    paper_in = 16
    for block_id, (kernel, expanded, out, se, act, stride) in enumerate(_LARGE if size == "large" else _SMALL):
        if minimalistic:
            kernel, se, act = 3, False, "relu"
        # The paper's expansion is a ratio of the block's (already rounded) input width; at alpha < 1
        # rounding keeps early inputs wide, and their expansions scale from there.
        ratio, paper_in = expanded / paper_in, out
        x = _block(x, kernel, make_divisible(x.shape[-1] * ratio), make_divisible(out * alpha), se, act, stride, block_id)
    x = conv_bn(x, make_divisible(x.shape[-1] * 6), 1, "conv_1", act=stem_act)

    if include_top:
        # Pool first, then the paper's 1x1 conv without BN, which on a 1x1 map is a dense layer.
        last_point = make_divisible(_LAST_POINT[size] * alpha) if alpha > 1.0 else _LAST_POINT[size]
        x = layers.GlobalAveragePooling2D(name="global_average_pooling")(x)
        x = layers.Dense(last_point, name="conv_2")(x)
        x = activation(x, stem_act, f"conv_2_{stem_act}")
        if dropout:
            x = layers.Dropout(dropout, name="dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    else:
        x = classifier_head(x, False, pooling, classes, classifier_activation)

    rows = img_input.shape[1]
    suffix = "_minimalistic" if minimalistic else ""
    model = keras.Model(img_input, x, name=name or f"mobilenetv3{size}{suffix}_{alpha:g}_{rows}")
    load_weights(model, weights)
    return model


def MobileNetV3Large(
    input_shape: tuple[int, int, int] | None = None,
    alpha: float = 1.0,
    minimalistic: bool = False,
    include_top: bool = True,
    weights: str | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    dropout: float = 0.2,
    name: str | None = None,
) -> keras.Model:
    """Build MobileNet v3 Large for inputs in [-1, 1].

    Args:
        input_shape: static (height, width, 3). Default (224, 224, 3).
        alpha: width multiplier (0.75 and 1.0 in the paper).
        minimalistic: no SE, no hard-swish, 3x3 kernels only (the paper's "minimalistic" models).
        include_top, weights, pooling, classes, classifier_activation, dropout, name: as in
            Keras applications; weights is None or a local weights file.
    """
    return _mobilenet_v3("large", input_shape, alpha, minimalistic, include_top, weights, pooling, classes,
                         classifier_activation, dropout, name)


def MobileNetV3Small(
    input_shape: tuple[int, int, int] | None = None,
    alpha: float = 1.0,
    minimalistic: bool = False,
    include_top: bool = True,
    weights: str | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    dropout: float = 0.2,
    name: str | None = None,
) -> keras.Model:
    """Build MobileNet v3 Small for inputs in [-1, 1]; arguments as ``MobileNetV3Large``."""
    return _mobilenet_v3("small", input_shape, alpha, minimalistic, include_top, weights, pooling, classes,
                         classifier_activation, dropout, name)

