"""What every command module shares: one-line errors, ``--json`` output, stage progress on stderr."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import click

from pipeline.core.errors import PipelineError

existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)
existing_path = click.Path(exists=True, path_type=Path)
model_file = click.Path(dir_okay=False, path_type=Path)  # checked by the project's own reader, not click


class OneLineErrors(click.Group):
    """Turns the stages' user-facing errors into one-line click errors with a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PipelineError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None


def emit(data: dict, as_json: bool, human: Callable[[dict], str]) -> None:
    """Print ``data`` as JSON for scripts or through ``human`` for people."""
    click.echo(json.dumps(data, indent=2, default=_json_default) if as_json else human(data))


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text.")


class _EchoHandler(logging.Handler):
    """Stage progress on stderr via click, which finds the current stderr at each message."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"tflpipe: {record.getMessage()}", err=True)


def setup_logging(quiet: bool = False) -> None:
    logger = logging.getLogger("tflpipe")
    if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
        logger.addHandler(_EchoHandler())
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False  # TensorFlow installs a root handler; print each line once


def zoo_options(command: Callable) -> Callable:
    """The zoo's scaling knobs as options (``models info``, ``latency predict``)."""
    for option in reversed((
        click.option("--alpha", type=float, help="Width multiplier α (nets that have one; see `models list`)."),
        click.option("--input-size", type=int, help="Square input resolution in pixels; defaults to the net's own."),
        click.option("--groups", type=int, help="Group count g of ShuffleNet v1's pointwise convolutions (1, 2, 3, 4, 8)."),
        click.option("--minimalistic", is_flag=True, default=None,
                     help="MobileNet v3's minimalistic variant (no SE/hard-swish/5x5)."),
        click.option("--depth-multiplier", type=int, help="MobileNet v1's depthwise channel multiplier."),
        click.option("--classes", type=int, default=1000, show_default=True, help="Classifier width."),
    )):
        command = option(command)
    return command


def field_default(settings_class: type, name: str) -> Any:
    """The default of a settings dataclass's field, so a CLI option never restates it."""
    from dataclasses import fields

    return next(f.default for f in fields(settings_class) if f.name == name)
