"""The ``tflpipe`` command line: a click group whose verbs live in thin command modules.

Each module exposes ``COMMANDS``; they only parse options and call the stage functions.
"""
from __future__ import annotations

import importlib

import click

from pipeline.cli.common import OneLineErrors

_COMMAND_MODULES = ("run", "stages", "files", "models", "targets", "android", "latency", "channels", "adapt", "search", "supernet")


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tflpipe")
def main() -> None:
    """Train, prune, quantize and convert lightweight CNNs to int8 TFLite for phones and the Edge TPU."""


for _name in _COMMAND_MODULES:
    for _command in importlib.import_module(f"pipeline.cli.{_name}").COMMANDS:
        main.add_command(_command)
