"""Building blocks several zoo nets share: conv-BN-activation, squeeze-excite, grouped 1x1 convs.

Layers TF-MOT cannot quantize by itself are annotated here with their quantize configs, so every
builder that uses these blocks yields a model ``quantize_model`` accepts as is.
"""
from __future__ import annotations

from keras_models._common import layers
from keras_models.layers import ChannelSplit, HardSigmoid, HardSwish
from keras_models.quantize_configs import (
    HardSigmoidQuantizeConfig,
    HardSwishQuantizeConfig,
    OutputQuantizeConfig,
    PassThroughQuantizeConfig,
    annotate,
)

# Momentum 0.99 (not Keras applications' 0.999) lets moving statistics settle in short fine-tunings.
BN = dict(epsilon=1e-3, momentum=0.99)
ACTIVATIONS = ("relu", "relu6", "hard_swish", "sigmoid", "hard_sigmoid")


def activation(x, kind: str | None, name: str):
    """Apply activation ``kind`` as a layer TF-MOT and the TFLite converter both handle natively."""
    if kind is None:
        return x
    if kind == "relu":
        return layers.ReLU(name=name)(x)
    if kind == "relu6":
        return layers.ReLU(6.0, name=name)(x)
    if kind == "hard_swish":
        return annotate(HardSwish(name=name), HardSwishQuantizeConfig())(x)
    if kind == "hard_sigmoid":
        return annotate(HardSigmoid(name=name), HardSigmoidQuantizeConfig())(x)
    if kind == "sigmoid":
        return layers.Activation("sigmoid", name=name)(x)
    raise ValueError(f"unknown activation {kind!r}; choose from {', '.join(ACTIVATIONS)}")


def conv_bn(x, filters: int, kernel: int, name: str, strides: int = 1, act: str | None = "relu"):
    """Conv (no bias: BN has one) + BN + activation, 'same' padding so TFLite needs no PAD op."""
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(**BN, name=f"{name}_bn")(x)
    return activation(x, act, f"{name}_{act}") if act else x


def depthwise_bn(x, kernel: int, name: str, strides: int = 1, act: str | None = "relu"):
    x = layers.DepthwiseConv2D(kernel, strides=strides, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(**BN, name=f"{name}_bn")(x)
    return activation(x, act, f"{name}_{act}") if act else x


def squeeze_excite(x, reduced: int, name: str, inner: str = "relu", gate: str = "hard_sigmoid"):
    """Squeeze-and-excite (Hu et al. 2018): channel gates from globally pooled features.

    Pooling keeps dims (MEAN to 1x1xC) so the gates are 1x1 convs and the final product is a plain
    broadcast MUL, which TF-MOT quantizes through an annotated ``Multiply``.
    """
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = layers.Conv2D(reduced, 1, name=f"{name}_reduce")(s)
    s = activation(s, inner, f"{name}_{inner}")
    s = layers.Conv2D(channels, 1, name=f"{name}_expand")(s)
    s = activation(s, gate, f"{name}_{gate}")
    return annotate(layers.Multiply(name=f"{name}_mul"), OutputQuantizeConfig())([x, s])


def channel_split(x, parts: int, name: str) -> list:
    return annotate(ChannelSplit(parts, name=name), PassThroughQuantizeConfig())(x)


def grouped_conv_bn(x, filters: int, groups: int, name: str, act: str | None = "relu"):
    """1x1 group convolution + BN + activation, as split + per-group conv-BN-act + concat.

    Keras' ``Conv2D(groups=g)`` becomes a grouped ``CONV_2D`` that the Edge TPU and several TFLite
    delegates do not run; split/conv/concat is the same function (and the same MACs and weights)
    in ops every backend has. Batch norm is per channel, so normalizing each group before the
    concat is the same as after it, and it lets TF-MOT and the converter fold each BN into its conv.
    """
    if groups == 1:
        return conv_bn(x, filters, 1, name, act=act)
    if filters % groups or x.shape[-1] % groups:
        raise ValueError(f"{name}: {x.shape[-1]} -> {filters} channels do not split into {groups} groups")
    parts = channel_split(x, groups, f"{name}_split")
    outs = [conv_bn(p, filters // groups, 1, f"{name}_g{i}", act=act) for i, p in enumerate(parts)]
    return layers.Concatenate(name=f"{name}_concat")(outs)


def mbconv(x, expansion: int, out: int, kernel: int, stride: int, name: str, act: str = "relu",
           se_reduced: int = 0, se_gate: str = "sigmoid", skip: bool = True):
    """Mobile inverted bottleneck (MnasNet, EfficientNet): expand 1x1, depthwise, optional SE,
    linear 1x1 projection, and an identity shortcut when the shape allows and ``skip`` is set."""
    inputs, in_channels = x, x.shape[-1]
    if expansion != 1:
        x = conv_bn(x, in_channels * expansion, 1, f"{name}_expand", act=act)
    x = depthwise_bn(x, kernel, f"{name}_dwconv", strides=stride, act=act)
    if se_reduced:
        x = squeeze_excite(x, se_reduced, f"{name}_se", inner=act, gate=se_gate)
    x = conv_bn(x, out, 1, f"{name}_project", act=None)
    if skip and stride == 1 and in_channels == out:
        x = layers.Add(name=f"{name}_add")([inputs, x])
    return x
