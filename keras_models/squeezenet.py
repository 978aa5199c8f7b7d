"""SqueezeNet 1.0 and 1.1 (Iandola et al., 2016, "SqueezeNet: AlexNet-level accuracy with 50x fewer
parameters and <0.5MB model size", arXiv:1602.07360; 1.1 from the authors' v1.1 release).

Fire modules (a 1x1 "squeeze" conv feeding parallel 1x1 and 3x3 "expand" convs, concatenated) and
late downsampling, so most layers see large activation maps. There is no batch norm, and the
classifier is the paper's: a 1x1 conv with ReLU on the last 13x13 map, then global average pooling.
The stem conv is unpadded and the max pools use Caffe's ceil rounding (implemented as 'same'
padding on even sizes, 'valid' on odd ones, which is the same arithmetic), so the feature maps are
the paper's 111/55/27/13 (1.1) and 109/54/27/13 (1.0) at 224 px.
"""
from __future__ import annotations

from keras_models._common import check_common_args, classifier_head, layers, load_weights, model_input
from pipeline.core.tf_env import keras

# (squeeze, expand) widths of fire2..fire9; the expand width is that of each of the two branches.
_FIRES = ((16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256), (64, 256))
# version -> (stem filters, stem kernel, indices of the fire modules a max pool precedes)
_VERSIONS = {"1.0": (96, 7, (3, 7)), "1.1": (64, 3, (2, 4))}


def _ceil_max_pool(x, name: str):
    """3x3/2 max pool with Caffe's ceil rounding: ceil((n - 3) / 2) + 1 is Keras' 'valid' size for odd n
    and its 'same' size (padding one row and column at the end, as Caffe does) for even n."""
    padding = "same" if x.shape[1] % 2 == 0 else "valid"
    return layers.MaxPooling2D(3, strides=2, padding=padding, name=name)(x)


def _fire(x, squeeze: int, expand: int, fire_id: int):
    prefix = f"fire{fire_id}"
    x = layers.Conv2D(squeeze, 1, activation="relu", name=f"{prefix}_squeeze1x1")(x)
    left = layers.Conv2D(expand, 1, activation="relu", name=f"{prefix}_expand1x1")(x)
    right = layers.Conv2D(expand, 3, padding="same", activation="relu", name=f"{prefix}_expand3x3")(x)
    return layers.Concatenate(name=f"{prefix}_concat")([left, right])


def _squeezenet(
    version: str,
    input_shape: tuple[int, int, int] | None,
    include_top: bool,
    weights: str | None,
    pooling: str | None,
    classes: int,
    classifier_activation: str | None,
    dropout: float,
    name: str | None,
) -> keras.Model:
    check_common_args(weights, include_top, classes, imagenet_for=None, family="SqueezeNet")
    img_input = model_input(input_shape, 224)
    stem_filters, stem_kernel, pools_before = _VERSIONS[version]

    x = layers.Conv2D(stem_filters, stem_kernel, strides=2, activation="relu", name="conv1")(img_input)
    x = _ceil_max_pool(x, "pool1")
    for i, (squeeze, expand) in enumerate(_FIRES):
        if i in pools_before:
            x = _ceil_max_pool(x, f"pool{i + 2}")
        x = _fire(x, squeeze, expand, i + 2)

    if include_top:
        if dropout:
            x = layers.Dropout(dropout, name="dropout")(x)
        x = layers.Conv2D(classes, 1, activation="relu", name="conv10")(x)
        x = layers.GlobalAveragePooling2D(name="global_average_pooling")(x)
        if classifier_activation is not None:
            x = layers.Activation(classifier_activation, name="predictions")(x)
    else:
        x = classifier_head(x, False, pooling, classes, classifier_activation)

    rows = img_input.shape[1]
    model = keras.Model(img_input, x, name=name or f"squeezenet{version.replace('.', '_')}_{rows}")
    load_weights(model, weights)
    return model


def SqueezeNet10(
    input_shape: tuple[int, int, int] | None = None,
    include_top: bool = True,
    weights: str | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    dropout: float = 0.5,
    name: str | None = None,
) -> keras.Model:
    """Build SqueezeNet 1.0 for inputs in [-1, 1] (no width multiplier: the paper has none).

    Args:
        input_shape: static (height, width, 3); at least 64 px (three ceil-rounded pools).
        include_top, weights, pooling, classes, classifier_activation, name: as in Keras applications.
        dropout: dropout rate before conv10 (0.5 in the paper).
    """
    return _squeezenet("1.0", input_shape, include_top, weights, pooling, classes, classifier_activation, dropout, name)


def SqueezeNet11(
    input_shape: tuple[int, int, int] | None = None,
    include_top: bool = True,
    weights: str | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    dropout: float = 0.5,
    name: str | None = None,
) -> keras.Model:
    """Build SqueezeNet 1.1 (2.4x fewer MACs than 1.0, same accuracy); arguments as ``SqueezeNet10``."""
    return _squeezenet("1.1", input_shape, include_top, weights, pooling, classes, classifier_activation, dropout, name)
