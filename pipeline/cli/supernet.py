"""``tflpipe supernet``: train a Once-for-All supernet on the user's data, take subnets out of it."""
from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.cli.common import emit, field_default, json_option
from pipeline.search.options import PHASES


@click.group()
def supernet() -> None:
    """Once-for-All weight sharing: one supernet trained by progressive shrinking, any subnet extracted."""


def _default(name: str):
    from pipeline.search.options import SupernetSettings

    return field_default(SupernetSettings, name)


@supernet.command("train")
@click.option("--data", required=True, help="Image folder (<class>/*.jpg) or builtin:digits.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Supernet folder (supernet.npz, supernet.json, logs/, report.json); a killed run resumes there.")
@click.option("--space", "space_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Search space JSON; default: the issue's space at 32-64 px.")
@click.option("--epochs", default=",".join(str(e) for e in _default("epochs")), show_default=True,
              help="Epochs of the four phases: largest, kernel, depth, width.")
@click.option("--learning-rate", type=float, default=_default("learning_rate"), show_default=True,
              help="Peak SGD rate (the shrinking phases start at 0.4x).")
@click.option("--batch-size", type=click.IntRange(1), default=_default("batch_size"), show_default=True,
              help="Images per step (per worker with --workers).")
@click.option("--subnets", type=click.IntRange(0), default=_default("subnets"), show_default=True,
              help="Sampled subnets distilled from the largest at each step (sandwich rule).")
@click.option("--weight-decay", type=float, default=_default("weight_decay"), show_default=True,
              help="Decoupled weight decay (each step the weights lose rate x decay of themselves).")
@click.option("--label-smoothing", type=float, default=_default("label_smoothing"), show_default=True,
              help="Label smoothing of the largest net's loss (the subnets learn from its predictions).")
@click.option("--validation-split", type=float, default=0.1, show_default=True,
              help="Held-out share of --data (the same split `tflpipe search` uses).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Train data-parallel on this many Ray Train workers (an embedded local Ray unless --ray-address); "
                   "--batch-size is per worker. A run resumes only with the same count.")
@click.option("--ray-address", help="Join this Ray cluster (HOST:PORT, ray://HOST:PORT or auto) for the workers; "
                                    "--out must be a folder every node sees.")
@click.option("--until", type=click.Choice(PHASES),
              help="Stop after this phase (e.g. check the largest net before the shrinking phases); the same "
                   "command without it goes on from there.")
@json_option
def train(data, out, space_file, epochs, learning_rate, batch_size, subnets, weight_decay, label_smoothing,
          validation_split, seed, workers, ray_address, until, as_json) -> None:
    """Train the supernet by progressive shrinking, then score its largest and smallest subnets."""
    from pipeline.cli.search import _datasets
    from pipeline.core.errors import PipelineError
    from pipeline.core.fsutil import ensure_writable_dir, write_json
    from pipeline.search.space import SearchSpace
    from pipeline.search.supernet import SupernetSettings, read_state, subnet_accuracy, train_supernet

    try:
        phases = tuple(int(e) for e in epochs.split(","))
    except ValueError:
        raise PipelineError(f"--epochs must be four integers like 6,3,3,3; got {epochs!r}") from None
    ensure_writable_dir(out)
    read_state(out)  # a damaged folder is refused before the images are decoded
    if ray_address is not None:  # and so is a cluster nothing answers at
        from pipeline.search.distributed import check_reachable

        check_reachable(ray_address)
    space = SearchSpace.from_file(space_file)
    settings = SupernetSettings(phases, learning_rate, batch_size, subnets, weight_decay, label_smoothing, seed).check()
    datasets = _datasets(data, validation_split, seed, not as_json)
    state = train_supernet(datasets(max(space.resolutions))[0], space, settings, out, progress=not as_json,
                           log=lambda line: click.echo(f"tflpipe: {line}", err=True), workers=workers,
                           ray_address=ray_address, until=until)
    from pipeline.search.supernet import load_supernet

    net, _ = load_supernet(out)
    scores = {}
    for which, arch in (("largest", space.largest()), ("smallest", space.smallest())):
        train_set, val = datasets(arch.resolution)
        scores[which] = {"describe": arch.describe(), "accuracy": subnet_accuracy(net, arch, train_set, val)}
    report = {"phases": dict(state["done"]), "history": state["history"], "seconds": round(state["seconds"], 1),
              "subnets": scores, "space": state["space"]}
    write_json(out / "report.json", report)

    def human(r: dict) -> str:
        lines = [f"supernet trained ({', '.join(f'{p} {n}' for p, n in r['phases'].items())} epochs) in "
                 f"{r['seconds'] / 60:.1f} min; inherited weights, no retraining:"]
        lines += [f"  {which}: {s['accuracy']:.2%} ({s['describe']})" for which, s in r["subnets"].items()]
        return "\n".join(lines)

    emit(report, as_json, human)


@supernet.command("extract")
@click.argument("supernet_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--arch", "arch_source", required=True,
              help="Architecture JSON file, a search study folder (its best net), or 'largest'/'smallest'.")
@click.option("--data", required=True, help="Training images: BatchNorm statistics are recalibrated on them.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for subnet.h5, its architecture (best.json, so `run --model searched:OUT` builds it) "
                   "and report.json.")
@click.option("--finetune-epochs", type=click.IntRange(0), default=0, show_default=True,
              help="Fine-tune the extracted subnet this many epochs (0: inherited weights only).")
@click.option("--learning-rate", type=float, default=0.01, show_default=True, help="Fine-tuning rate.")
@click.option("--validation-split", type=float, default=0.1, show_default=True, help="Held-out share of --data.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@json_option
def extract(supernet_dir, arch_source, data, out, finetune_epochs, learning_rate, validation_split, seed,
            as_json) -> None:
    """Take one subnet out of a supernet as a standalone tf_keras model, scored before and after fine-tuning."""
    from pipeline.cli.search import _datasets
    from pipeline.core.fsutil import ensure_writable_dir, save_keras_model, write_json
    from pipeline.search.study import BEST_FILE
    from pipeline.search.supernet import extract_subnet

    ensure_writable_dir(out)
    net, arch = _arch(supernet_dir, arch_source)
    datasets = _datasets(data, validation_split, seed, not as_json)
    model, result = extract_subnet(net, arch, *datasets(arch.resolution), finetune_epochs, learning_rate, seed)
    save_keras_model(model, out / "subnet.h5")
    write_json(out / BEST_FILE, {"arch": result["arch"], "describe": result["describe"], "supernet": str(supernet_dir)})
    write_json(out / "report.json", result)
    result["next"] = (f"tflpipe run --model searched:{out} --weights {out / 'subnet.h5'} "
                      f"--input-size {arch.resolution} --data {data} --out RUN_DIR")

    def human(r: dict) -> str:
        text = f"{r['describe']}: {r['inherited_accuracy']:.2%} with inherited weights"
        if "finetuned_accuracy" in r:
            text += f", {r['finetuned_accuracy']:.2%} after {r['finetune_epochs']} epoch(s) of fine-tuning"
        return f"{text}\nthrough the pipeline (QAT, int8, metadata, targets): {r['next']}"

    emit(result, as_json, human)


def _arch(supernet_dir: Path, source: str):
    from pipeline.core.errors import PipelineError
    from pipeline.search.space import Arch
    from pipeline.search.study import load_best
    from pipeline.search.supernet import load_supernet

    net, _ = load_supernet(supernet_dir)
    if source in ("largest", "smallest"):
        return net, getattr(net.space, source)()
    path = Path(source)
    if path.is_dir():
        return net, load_best(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PipelineError(f"--arch {source}: not a study folder, an architecture JSON file or "
                            f"largest/smallest ({type(exc).__name__})") from None
    return net, Arch.from_json(raw.get("arch", raw) if isinstance(raw, dict) else raw)


COMMANDS = [supernet]
