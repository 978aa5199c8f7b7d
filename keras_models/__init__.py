"""The zoo of lightweight CNNs, each a Keras-applications-style builder, behind one registry.

Every model takes inputs normalized to [-1, 1] (pixel mean 127.5, std 127.5), the convention of the
official TFLite MobileNets, so one preprocessing and one metadata record serve the whole zoo.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from pipeline.core.errors import PipelineError

INPUT_MEAN = 127.5
INPUT_STD = 127.5


class ZooError(PipelineError, ValueError):
    """A model name or scaling knob the zoo cannot build; the message says what is valid."""


@dataclass(frozen=True)
class ModelSpec:
    """How to build one zoo net and which scaling knobs it understands."""

    name: str
    builder: Callable[..., Any]
    paper: str
    default_input_size: int = 224
    knobs: tuple[str, ...] = ("alpha",)  # builder keyword arguments beyond the common ones
    knob_defaults: dict[str, Any] = field(default_factory=dict)


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ZooError(f"unknown model {name!r}; known models: {', '.join(sorted(REGISTRY))}") from None


def build_model(
    name: str,
    input_size: int | None = None,
    classes: int = 1000,
    weights: str | None = None,
    include_top: bool = True,
    classifier_activation: str | None = "softmax",
    **knobs: Any,
):
    """Build zoo net ``name`` at a square ``input_size``; ``knobs`` are its scaling arguments.

    Knobs the net does not have (say ``alpha`` for SqueezeNet) are rejected rather than ignored, so a
    user never believes a setting took effect when it did not.
    """
    spec = get_spec(name)
    given = {k: v for k, v in knobs.items() if v is not None}
    unknown = sorted(set(given) - set(spec.knobs))
    if unknown:
        raise ZooError(f"model {name!r} does not take {', '.join(unknown)}; its knobs are: {', '.join(spec.knobs) or 'none'}")
    size = input_size or spec.default_input_size
    kwargs = {**spec.knob_defaults, **given}
    try:
        return spec.builder(
            input_shape=(size, size, 3),
            include_top=include_top,
            weights=weights,
            classes=classes,
            classifier_activation=classifier_activation,
            **kwargs,
        )
    except ValueError as exc:  # the builders' own checks, and weights that do not fit the net
        raise ZooError(f"{name}: {str(exc).strip().splitlines()[0]}") from None


def list_models() -> list[ModelSpec]:
    return [REGISTRY[k] for k in sorted(REGISTRY)]


def _register_builtin() -> None:
    from functools import partial

    from keras_models.densenet import DenseNet121
    from keras_models.efficientnet_lite import VARIANTS as LITE_VARIANTS
    from keras_models.efficientnet_lite import EfficientNetLite
    from keras_models.mnasnet import MnasNetA1, MnasNetB1
    from keras_models.mobilenet_v1 import MobileNetV1
    from keras_models.mobilenet_v2 import MobileNetV2
    from keras_models.mobilenet_v3 import MobileNetV3Large, MobileNetV3Small
    from keras_models.resnet import ResNet50
    from keras_models.shufflenet_v1 import ShuffleNetV1
    from keras_models.shufflenet_v2 import ShuffleNetV2
    from keras_models.squeezenet import SqueezeNet10, SqueezeNet11

    register(ModelSpec("mobilenet_v1", MobileNetV1, "Howard et al. 2017, arXiv:1704.04861",
                       knobs=("alpha", "depth_multiplier", "dropout", "explicit_padding")))
    register(ModelSpec("mobilenet_v2", MobileNetV2, "Sandler et al. 2018, arXiv:1801.04381",
                       knobs=("alpha", "dropout")))
    v3 = "Howard et al. 2019, arXiv:1905.02244"
    register(ModelSpec("mobilenet_v3_small", MobileNetV3Small, v3, knobs=("alpha", "minimalistic", "dropout")))
    register(ModelSpec("mobilenet_v3_large", MobileNetV3Large, v3, knobs=("alpha", "minimalistic", "dropout")))
    squeeze = "Iandola et al. 2016, arXiv:1602.07360"
    register(ModelSpec("squeezenet_1_0", SqueezeNet10, squeeze, knobs=("dropout",)))
    register(ModelSpec("squeezenet_1_1", SqueezeNet11, squeeze + " (v1.1 release)", knobs=("dropout",)))
    register(ModelSpec("shufflenet_v1", ShuffleNetV1, "Zhang et al. 2017, arXiv:1707.01083", knobs=("groups", "alpha")))
    register(ModelSpec("shufflenet_v2", ShuffleNetV2, "Ma et al. 2018, arXiv:1807.11164", knobs=("alpha", "dropout")))
    mnas = "Tan et al. 2019, arXiv:1807.11626"
    register(ModelSpec("mnasnet_a1", MnasNetA1, mnas, knobs=("alpha", "dropout")))
    register(ModelSpec("mnasnet_b1", MnasNetB1, mnas, knobs=("alpha", "dropout")))
    for variant, (_, _, resolution, _) in LITE_VARIANTS.items():
        register(ModelSpec(f"efficientnet_lite{variant}", partial(EfficientNetLite, variant),
                           "Tan & Le 2019, arXiv:1905.11946 (Lite variants: tensorflow/tpu efficientnet/lite)",
                           default_input_size=resolution, knobs=("dropout",)))
    register(ModelSpec("resnet50", ResNet50, "He et al. 2016, arXiv:1512.03385", knobs=()))
    register(ModelSpec("densenet121", DenseNet121, "Huang et al. 2017, arXiv:1608.06993", knobs=()))


def custom_objects() -> dict:
    """Custom layers and TF-MOT quantize configs of the zoo, for ``load_model`` and ``quantize_apply``."""
    from keras_models.quantize_configs import custom_objects as zoo_objects

    return zoo_objects()


def quantize_scope():
    """Context manager: TF-MOT's ``quantize_scope`` with :func:`custom_objects`, to load or quantize zoo models."""
    from keras_models.quantize_configs import quantize_scope as zoo_scope

    return zoo_scope()


_register_builtin()
