"""Options shared by ``run`` and the stage verbs; every default and its help text come from ``RunConfig``."""
from __future__ import annotations

from typing import Any, Callable

import click

from pipeline.runner.config import setting_default


def setting(name: str, help: str, *decls: str, **kwargs: Any) -> Callable:
    """A ``run`` flag for RunConfig field ``name``: unset (None) means the configuration's value.

    The help shows RunConfig's default, so the CLI never restates a default of its own.
    """
    flag = "--" + name.replace("_", "-")
    default = setting_default(name)
    shown = "" if default is None else f" [default: {default}]"
    return click.option(*(decls or (flag,)), name, default=None, help=help + shown, **kwargs)


def stage_setting(name: str, help: str, *decls: str, **kwargs: Any) -> Callable:
    """A stage verb's option for RunConfig field ``name``, defaulting to the configuration's value."""
    return click.option(*(decls or ("--" + name.replace("_", "-"),)), default=setting_default(name),
                        show_default=True, help=help, **kwargs)


def _apply(func: Callable, options: list[Callable]) -> Callable:
    for option in reversed(options):
        func = option(func)
    return func


def model_options(func: Callable) -> Callable:
    return _apply(func, [
        setting("model", "Zoo net name (see `tflpipe models list`)."),
        setting("alpha", "Width multiplier α.", type=float),
        setting("input_size", "Square input resolution in pixels (the ρ multiplier).", type=int),
        setting("data", "Image folder (<class>/*.jpg) or builtin:digits."),
        setting("epochs", "Float training epochs.", type=int),
        setting("batch_size", "Training batch size.", type=int),
        setting("learning_rate", "Peak learning rate of float training (SGD, cosine decay).", type=float),
        setting("weight_decay", "Decoupled weight decay of float training.", type=float),
        setting("weights", "Local weights file to fine-tune from, or 'imagenet' (downloads)."),
        setting("seed", "Random seed for the split, initialization and augmentation.", type=int),
    ])


def distill_options(func: Callable) -> Callable:
    return _apply(func, [
        setting("teacher", "Distill from this teacher: a saved Keras model (.h5/.keras) or, in `run`, a zoo net "
                           "name trained first on the same data."),
        setting("kd_temperature", "Softmax temperature of the distilled targets.", type=float),
        setting("kd_alpha", "Weight of the teacher's targets against the labels.", type=float),
    ])
