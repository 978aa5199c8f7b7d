"""MnasNet-A1 and MnasNet-B1 (Tan et al., 2019, "MnasNet: Platform-Aware Neural Architecture Search for
Mobile", arXiv:1807.11626).

Searched stacks of mobile inverted bottlenecks with mixed 3x3/5x5 kernels; A1 adds squeeze-excite
(ReLU inside, sigmoid gate, reduced to a quarter of the block's input width) in three stages, B1
has none. ``alpha`` is the depth multiplier, rounding widths to multiples of 8 as the paper's code
does; as in MobileNet v2, the 1280-wide head is only widened for alpha > 1.
"""
from __future__ import annotations

from keras_models._blocks import conv_bn, depthwise_bn, mbconv
from keras_models._common import check_common_args, classifier_head, load_weights, make_divisible, model_input
from pipeline.core.tf_env import keras

# (repeats, kernel, first stride, expansion, output width, squeeze-excite) after the stem and the
# separable conv (3x3 depthwise + 1x1 to 16, no shortcut): Figure 7 (A1) and the B1 definition.
_A1 = ((2, 3, 2, 6, 24, False), (3, 5, 2, 3, 40, True), (4, 3, 2, 6, 80, False),
       (2, 3, 1, 6, 112, True), (3, 5, 2, 6, 160, True), (1, 3, 1, 6, 320, False))
_B1 = ((3, 3, 2, 3, 24, False), (3, 5, 2, 3, 40, False), (3, 5, 2, 6, 80, False),
       (2, 3, 1, 6, 96, False), (4, 5, 2, 6, 192, False), (1, 3, 1, 6, 320, False))


def _mnasnet(
    variant: str,
    input_shape: tuple[int, int, int] | None,
    alpha: float,
    include_top: bool,
    weights: str | None,
    pooling: str | None,
    classes: int,
    classifier_activation: str | None,
    dropout: float,
    name: str | None,
) -> keras.Model:
    check_common_args(weights, include_top, classes, imagenet_for=None, family="MnasNet")
    if alpha <= 0:
        raise ValueError(f"`alpha` must be positive, got {alpha}")
    img_input = model_input(input_shape, 224)

    x = conv_bn(img_input, make_divisible(32 * alpha), 3, "stem", strides=2)
    x = depthwise_bn(x, 3, "sepconv_dwconv")
    x = conv_bn(x, make_divisible(16 * alpha), 1, "sepconv_project", act=None)
    for stage, (repeats, kernel, stride, expansion, width, se) in enumerate(_A1 if variant == "a1" else _B1, start=1):
        for i in range(repeats):
            in_channels = x.shape[-1]
            x = mbconv(x, expansion, make_divisible(width * alpha), kernel, stride if i == 0 else 1,
                       f"stage{stage}_block{i + 1}", act="relu",
                       se_reduced=max(1, int(in_channels * 0.25)) if se else 0, se_gate="sigmoid")
    x = conv_bn(x, make_divisible(1280 * alpha) if alpha > 1.0 else 1280, 1, "head")
    x = classifier_head(x, include_top, pooling, classes, classifier_activation, dropout)

    rows = img_input.shape[1]
    model = keras.Model(img_input, x, name=name or f"mnasnet_{variant}_{alpha:g}_{rows}")
    load_weights(model, weights)
    return model


def MnasNetA1(
    input_shape: tuple[int, int, int] | None = None,
    alpha: float = 1.0,
    include_top: bool = True,
    weights: str | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    dropout: float = 0.2,
    name: str | None = None,
) -> keras.Model:
    """Build MnasNet-A1 (with SE) for inputs in [-1, 1].

    Args:
        input_shape: static (height, width, 3). Default (224, 224, 3).
        alpha: depth (width) multiplier; the paper reports 0.35 to 1.4.
        include_top, weights, pooling, classes, classifier_activation, dropout, name: as in Keras
            applications; weights is None or a local weights file.
    """
    return _mnasnet("a1", input_shape, alpha, include_top, weights, pooling, classes, classifier_activation, dropout, name)


def MnasNetB1(
    input_shape: tuple[int, int, int] | None = None,
    alpha: float = 1.0,
    include_top: bool = True,
    weights: str | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    dropout: float = 0.2,
    name: str | None = None,
) -> keras.Model:
    """Build MnasNet-B1 (no SE) for inputs in [-1, 1]; arguments as ``MnasNetA1``."""
    return _mnasnet("b1", input_shape, alpha, include_top, weights, pooling, classes, classifier_activation, dropout, name)
