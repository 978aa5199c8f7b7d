"""EfficientNet-Lite0..4 (Tan & Le, 2019, "EfficientNet: Rethinking Model Scaling for Convolutional
Neural Networks", arXiv:1905.11946; the Lite variants from the authors' efficientnet/lite release).

EfficientNet-B0's mobile inverted bottlenecks with the Lite changes for int8 and accelerators:
no squeeze-excite, ReLU6 instead of swish, and a fixed stem (32) and head (1280) while scaling. The
compound scaling sets width, depth and resolution together per variant; the first and last stages
keep one block, as in the Lite reference.
"""
from __future__ import annotations

import math
from functools import partial

from keras_models._blocks import conv_bn, mbconv
from keras_models._common import check_common_args, classifier_head, load_weights, make_divisible, model_input
from pipeline.core.tf_env import keras

# (repeats, kernel, first stride, expansion, output width) of EfficientNet-B0 (Table 1).
_B0 = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
       (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
# variant -> (width coefficient, depth coefficient, resolution, dropout)
VARIANTS = {0: (1.0, 1.0, 224, 0.2), 1: (1.0, 1.1, 240, 0.2), 2: (1.1, 1.2, 260, 0.3),
            3: (1.2, 1.4, 280, 0.3), 4: (1.4, 1.8, 300, 0.3)}


def EfficientNetLite(
    variant: int,
    input_shape: tuple[int, int, int] | None = None,
    include_top: bool = True,
    weights: str | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    dropout: float | None = None,
    name: str | None = None,
) -> keras.Model:
    """Build EfficientNet-Lite``variant`` (0-4) for inputs in [-1, 1].

    Args:
        variant: 0..4, which fixes width, depth and the native resolution (224, 240, 260, 280, 300).
        input_shape: static (height, width, 3); defaults to the variant's resolution.
        dropout: dropout before the classifier; defaults to the variant's (0.2 or 0.3).
        include_top, weights, pooling, classes, classifier_activation, name: as in Keras
            applications; weights is None or a local weights file.
    """
    check_common_args(weights, include_top, classes, imagenet_for=None, family="EfficientNet-Lite")
    if variant not in VARIANTS:
        raise ValueError(f"EfficientNet-Lite variant must be one of {', '.join(map(str, VARIANTS))}, got {variant}")
    width, depth, resolution, default_dropout = VARIANTS[variant]
    img_input = model_input(input_shape, resolution)

    x = conv_bn(img_input, 32, 3, "stem", strides=2, act="relu6")
    for stage, (repeats, kernel, stride, expansion, filters) in enumerate(_B0, start=1):
        if 1 < stage < len(_B0):
            repeats = int(math.ceil(depth * repeats))
        for i in range(repeats):
            x = mbconv(x, expansion, make_divisible(filters * width), kernel, stride if i == 0 else 1,
                       f"stage{stage}_block{i + 1}", act="relu6")
    x = conv_bn(x, 1280, 1, "head", act="relu6")
    x = classifier_head(x, include_top, pooling, classes, classifier_activation,
                        default_dropout if dropout is None else dropout)

    rows = img_input.shape[1]
    model = keras.Model(img_input, x, name=name or f"efficientnet_lite{variant}_{rows}")
    load_weights(model, weights)
    return model


EfficientNetLite0 = partial(EfficientNetLite, 0)
EfficientNetLite1 = partial(EfficientNetLite, 1)
EfficientNetLite2 = partial(EfficientNetLite, 2)
EfficientNetLite3 = partial(EfficientNetLite, 3)
EfficientNetLite4 = partial(EfficientNetLite, 4)
