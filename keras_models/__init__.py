"""The zoo of lightweight CNNs, each a Keras-applications-style builder, behind one registry.

Every model takes inputs normalized to [-1, 1] (pixel mean 127.5, std 127.5), the convention of the
official TFLite MobileNets, so one preprocessing and one metadata record serve the whole zoo.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from pipeline.errors import PipelineError

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
    from keras_models.mobilenet_v1 import MobileNetV1
    from keras_models.mobilenet_v2 import MobileNetV2

    register(ModelSpec("mobilenet_v1", MobileNetV1, "Howard et al. 2017, arXiv:1704.04861",
                       knobs=("alpha", "depth_multiplier", "dropout")))
    register(ModelSpec("mobilenet_v2", MobileNetV2, "Sandler et al. 2018, arXiv:1801.04381",
                       knobs=("alpha", "dropout")))


_register_builtin()
