"""``tflpipe models``: list the zoo and count a net's parameters and MACs before training it."""
from __future__ import annotations

import click

from pipeline.cli.common import emit, json_option, zoo_options


@click.group()
def models() -> None:
    """Browse the model zoo: names, papers, scaling knobs, parameter and MAC counts."""


@models.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List every zoo net with its paper, default input size and scaling knobs."""
    from keras_models import list_models

    rows = [{"name": s.name, "paper": s.paper, "default_input_size": s.default_input_size, "knobs": list(s.knobs)}
            for s in list_models()]

    def human(data: dict) -> str:
        width = max(len(r["name"]) for r in data["models"])
        return "\n".join(f"{r['name']:<{width}}  {r['default_input_size']:>3}px  knobs: {', '.join(r['knobs']) or '-':<34}"
                         f"  {r['paper']}" for r in data["models"])

    emit({"models": rows}, as_json, human)


@models.command()
@click.argument("name")
@zoo_options
@click.option("--layers", "per_layer", is_flag=True, help="Also list each layer's parameters and MACs.")
@json_option
def info(name: str, input_size: int | None, classes: int, per_layer: bool, as_json: bool, **knobs) -> None:
    """Parameters and multiply-accumulates of zoo net NAME for one image, classifier included.

    MACs count convolutions and dense layers (the papers' mult-adds); parameters are the trainable
    ones (batch-norm moving statistics excluded).
    """
    from keras_models import ZooError, build_model, get_spec
    from keras_models.macs import count

    spec = get_spec(name)
    if input_size is not None and input_size < 16:
        raise ZooError(f"--input-size must be at least 16, got {input_size}")
    model = build_model(name, input_size, classes=classes, **knobs)
    counted = count(model)
    data = {"model": name, "input_size": model.input_shape[1], "classes": classes,
            "knobs": {k: v for k, v in knobs.items() if v is not None and k in spec.knobs}, **counted.as_dict()}
    if per_layer:
        data["layers"] = [vars(c) for c in counted.layers if c.params or c.macs]

    def human(d: dict) -> str:
        knob_text = ", ".join(f"{k}={v}" for k, v in d["knobs"].items())
        lines = [f"{d['model']} at {d['input_size']}px{' (' + knob_text + ')' if knob_text else ''}: "
                 f"{d['params'] / 1e6:.3f}M params, {d['macs'] / 1e6:.1f}M MACs"]
        lines += [f"  {c['name']:<40} {c['kind']:<22} {c['params']:>10,} {c['macs']:>14,}" for c in d.get("layers", [])]
        return "\n".join(lines)

    emit(data, as_json, human)


COMMANDS = [models]
