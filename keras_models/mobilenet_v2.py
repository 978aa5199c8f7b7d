"""MobileNet v2 (Sandler et al., 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks").

Inverted residual blocks: a 1x1 expansion, a 3x3 depthwise convolution and a linear 1x1
projection, with a shortcut when shape allows. Width multiplier ``alpha`` scales every layer's
channels (rounded to multiples of 8); the resolution multiplier is the input size. Layer names
match ``keras.applications.MobileNetV2`` so its published ImageNet checkpoints load by name.
"""
from __future__ import annotations

from keras_models._common import check_common_args, classifier_head, layers, load_weights, make_divisible, model_input
from pipeline.core.tf_env import keras

_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
_IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
_IMAGENET_SIZES = (96, 128, 160, 192, 224)

# (expansion t, output channels c, repeats n, first stride s) — Table 2 of the paper.
_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

# Keras applications use momentum 0.999, tuned for long ImageNet runs; 0.99 lets the moving
# statistics settle within the few hundred steps of a short fine-tuning stage.
_BN = dict(epsilon=1e-3, momentum=0.99)


def _inverted_residual(x, expansion: int, filters: int, stride: int, alpha: float, block_id: int):
    in_channels = x.shape[-1]
    out_channels = make_divisible(int(filters * alpha), 8)
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    inputs = x
    if block_id:
        x = layers.Conv2D(expansion * in_channels, 1, padding="same", use_bias=False, name=prefix + "expand")(x)
        x = layers.BatchNormalization(**_BN, name=prefix + "expand_BN")(x)
        x = layers.ReLU(6.0, name=prefix + "expand_relu")(x)
    # "same" padding everywhere (also at stride 2) keeps the graph free of PAD ops.
    x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=prefix + "depthwise")(x)
    x = layers.BatchNormalization(**_BN, name=prefix + "depthwise_BN")(x)
    x = layers.ReLU(6.0, name=prefix + "depthwise_relu")(x)
    x = layers.Conv2D(out_channels, 1, padding="same", use_bias=False, name=prefix + "project")(x)
    x = layers.BatchNormalization(**_BN, name=prefix + "project_BN")(x)
    if stride == 1 and in_channels == out_channels:
        x = layers.Add(name=prefix + "add")([inputs, x])
    return x


def MobileNetV2(
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
    """Build MobileNet v2 for inputs in [-1, 1] (mean 127.5, std 127.5 on 0-255 pixels).

    Args:
        input_shape: static (height, width, 3); the resolution multiplier. Default (224, 224, 3).
        alpha: width multiplier; 1.0 is the paper's base network.
        include_top: whether to end in the global-pool + dense classifier.
        weights: None, "imagenet" (Keras' published checkpoint; downloads) or a weights file path.
        pooling: with ``include_top=False``: None, "avg" or "max".
        classes: classifier width.
        classifier_activation: activation of the classifier ("softmax", or None for logits).
        dropout: dropout rate before the classifier.
        name: model name; defaults to ``mobilenetv2_{alpha}_{size}``.
    """
    check_common_args(weights, include_top, classes)
    if alpha <= 0:
        raise ValueError(f"`alpha` must be positive, got {alpha}")
    img_input = model_input(input_shape, 224)
    rows = img_input.shape[1]

    first_filters = make_divisible(32 * alpha, 8)
    x = layers.Conv2D(first_filters, 3, strides=2, padding="same", use_bias=False, name="Conv1")(img_input)
    x = layers.BatchNormalization(**_BN, name="bn_Conv1")(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)

    block_id = 0
    for expansion, filters, repeats, stride in _BLOCKS:
        for i in range(repeats):
            x = _inverted_residual(x, expansion, filters, stride if i == 0 else 1, alpha, block_id)
            block_id += 1

    # The last 1x1 conv is not narrowed for alpha < 1 (paper, section 5.1).
    last_filters = make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    x = layers.Conv2D(last_filters, 1, use_bias=False, name="Conv_1")(x)
    x = layers.BatchNormalization(**_BN, name="Conv_1_bn")(x)
    x = layers.ReLU(6.0, name="out_relu")(x)
    x = classifier_head(x, include_top, pooling, classes, classifier_activation, dropout)

    model = keras.Model(img_input, x, name=name or f"mobilenetv2_{alpha:g}_{rows}")
    url = None
    if weights == "imagenet":
        if alpha not in _IMAGENET_ALPHAS or rows not in _IMAGENET_SIZES:
            raise ValueError(
                f"ImageNet weights exist for alpha in {_IMAGENET_ALPHAS} and sizes {_IMAGENET_SIZES}; "
                f"got alpha={alpha}, size={rows}"
            )
        suffix = "" if include_top else "_no_top"
        url = f"{_WEIGHTS_URL}mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}{suffix}.h5"
    load_weights(model, weights, url)
    return model
