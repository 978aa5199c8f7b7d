"""The ``tflpipe`` command line: a thin click wrapper over the stage functions."""
from __future__ import annotations

import json
import sys
from typing import Any, Callable

import click

from pipeline.errors import PipelineError


class _Group(click.Group):
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
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text.")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tflpipe")
def main() -> None:
    """Train, prune, quantize and convert lightweight CNNs to int8 TFLite for phones and the Edge TPU."""


# Each area keeps its commands in its own module, which exposes ``COMMANDS``; they are attached here.
_COMMAND_MODULES = (
    "pipeline.cli_stages",
    "pipeline.cli_models",
    "pipeline.cli_demo",
    "edgetpu.cli",
)


def _register_commands() -> None:
    import importlib

    for module_name in _COMMAND_MODULES:
        for command in importlib.import_module(module_name).COMMANDS:
            main.add_command(command)


_register_commands()

if __name__ == "__main__":
    sys.exit(main())
