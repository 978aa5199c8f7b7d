"""MobileNet v1 (Howard et al., 2017, "MobileNets: Efficient Convolutional Neural Networks for
Mobile Vision Applications").

A stack of depthwise-separable convolutions (3x3 depthwise + 1x1 pointwise, each with BN and
ReLU6). Width multiplier ``alpha`` thins every layer; the resolution multiplier is the input size.
Layer names match ``keras.applications.MobileNet`` so its ImageNet checkpoints load by name.
"""
from __future__ import annotations

import numpy as np

from keras_models._common import check_common_args, classifier_head, layers, model_input
from pipeline.core.tf_env import keras

_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/"
_IMAGENET_ALPHAS = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}
_IMAGENET_SIZES = (128, 160, 192, 224)

# (pointwise filters, depthwise stride) for the 13 separable blocks — Table 1 of the paper.
_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
           (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def _padded(x, stride: int, explicit_padding: bool, name: str):
    """Padding for a 3x3 conv: "same", or 1 pixel on every side before a "valid" conv at stride 2."""
    if explicit_padding and stride == 2:
        return layers.ZeroPadding2D(((1, 1), (1, 1)), name=name)(x), "valid"
    return x, "same"


def _separable_block(x, filters: int, alpha: float, depth_multiplier: int, stride: int, block_id: int,
                     explicit_padding: bool):
    x, padding = _padded(x, stride, explicit_padding, f"conv_pad_{block_id}")
    x = layers.DepthwiseConv2D(3, strides=stride, padding=padding, depth_multiplier=depth_multiplier,
                               use_bias=False, name=f"conv_dw_{block_id}")(x)
    x = layers.BatchNormalization(name=f"conv_dw_{block_id}_bn")(x)
    x = layers.ReLU(6.0, name=f"conv_dw_{block_id}_relu")(x)
    x = layers.Conv2D(int(filters * alpha), 1, padding="same", use_bias=False, name=f"conv_pw_{block_id}")(x)
    x = layers.BatchNormalization(name=f"conv_pw_{block_id}_bn")(x)
    return layers.ReLU(6.0, name=f"conv_pw_{block_id}_relu")(x)


def MobileNetV1(
    input_shape: tuple[int, int, int] | None = None,
    alpha: float = 1.0,
    depth_multiplier: int = 1,
    include_top: bool = True,
    weights: str | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    dropout: float = 1e-3,
    explicit_padding: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Build MobileNet v1 for inputs in [-1, 1] (mean 127.5, std 127.5 on 0-255 pixels).

    Args:
        input_shape: static (height, width, 3); the resolution multiplier. Default (224, 224, 3).
        alpha: width multiplier (the paper's 1.0, 0.75, 0.5, 0.25).
        depth_multiplier: depthwise channel multiplier (1 in the paper).
        include_top: whether to end in the global-pool + dense classifier.
        weights: None, "imagenet" (Keras' published checkpoint; downloads) or a weights file path.
        pooling: with ``include_top=False``: None, "avg" or "max".
        classes: classifier width.
        classifier_activation: activation of the classifier ("softmax", or None for logits).
        dropout: dropout rate before the classifier.
        explicit_padding: pad stride-2 convs by one pixel on every side ("valid" conv after
            ZeroPadding2D) instead of "same" (which pads only right/bottom on even sizes): the layout
            XNNPACK's sparse inference needs. Same weights and output sizes, but the stride-2
            sampling grid moves by one pixel, so weights trained with "same" need fine-tuning.
        name: model name; defaults to ``mobilenet_{alpha}_{size}``.
    """
    check_common_args(weights, include_top, classes)
    if alpha <= 0 or depth_multiplier < 1:
        raise ValueError(f"`alpha` must be positive and `depth_multiplier` >= 1, got {alpha}, {depth_multiplier}")
    img_input = model_input(input_shape, 224)
    rows = img_input.shape[1]

    x, padding = _padded(img_input, 2, explicit_padding, "conv1_pad")
    x = layers.Conv2D(int(32 * alpha), 3, strides=2, padding=padding, use_bias=False, name="conv1")(x)
    x = layers.BatchNormalization(name="conv1_bn")(x)
    x = layers.ReLU(6.0, name="conv1_relu")(x)
    for block_id, (filters, stride) in enumerate(_BLOCKS, start=1):
        x = _separable_block(x, filters, alpha, depth_multiplier, stride, block_id, explicit_padding)
    x = classifier_head(x, include_top, pooling, classes, classifier_activation, dropout)

    model = keras.Model(img_input, x, name=name or f"mobilenet_{alpha:g}_{rows}")
    if weights == "imagenet":
        _load_imagenet(model, alpha, depth_multiplier, rows, include_top)
    elif weights is not None:
        model.load_weights(weights)
    return model


def _load_imagenet(model: keras.Model, alpha: float, depth_multiplier: int, rows: int, include_top: bool) -> None:
    """Load Keras' published checkpoint; its 1x1-conv classifier becomes our Dense layer."""
    if alpha not in _IMAGENET_ALPHAS or rows not in _IMAGENET_SIZES or depth_multiplier != 1:
        raise ValueError(
            f"ImageNet weights exist for alpha in {tuple(_IMAGENET_ALPHAS)}, sizes {_IMAGENET_SIZES} "
            f"and depth_multiplier 1; got alpha={alpha}, size={rows}, depth_multiplier={depth_multiplier}"
        )
    suffix = "_tf.h5" if include_top else "_tf_no_top.h5"
    filename = f"mobilenet_{_IMAGENET_ALPHAS[alpha]}_{rows}{suffix}"
    path = keras.utils.get_file(filename, _WEIGHTS_URL + filename, cache_subdir="models")
    model.load_weights(path, by_name=True, skip_mismatch=True)
    if include_top:
        import h5py

        with h5py.File(path, "r") as f:
            group = f["conv_preds"]["conv_preds"] if "conv_preds" in f["conv_preds"] else f["conv_preds"]
            kernel = np.asarray(group["kernel:0"])
            bias = np.asarray(group["bias:0"])
        model.get_layer("predictions").set_weights([kernel.reshape(kernel.shape[-2:]), bias])
