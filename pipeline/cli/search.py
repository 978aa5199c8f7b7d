"""``tflpipe search``: architecture search for a target under a latency budget (issue 16, first strategies)."""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.common import emit, field_default, json_option
from pipeline.search.strategies import STRATEGIES


def _default(name: str):
    from pipeline.search.study import SearchSettings

    return field_default(SearchSettings, name)


def _datasets(data: str, validation_split: float, seed: int, progress: bool):
    """(train, validation) images at any resolution, each size decoded once; the split is the same at every
    size (it depends on the labels and the seed only)."""
    from pipeline.core.data import load_dataset, split

    cache: dict = {}

    def at(resolution: int):
        if resolution not in cache:
            cache[resolution] = split(load_dataset(data, resolution, progress=progress), validation_split, seed)
        return cache[resolution]

    return at


@click.command()
@click.option("--data", required=True, help="Image folder (<class>/*.jpg) or builtin:digits.")
@click.option("--latency-budget", type=float, required=True, help="Target int8 latency T, ms (MnasNet's reward).")
@click.option("--table", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Latency table of the target (`tflpipe latency build`); its thread count is the search's.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Study folder (trials.jsonl, pareto.json/.csv/.png, cards/); a killed search resumes there.")
@click.option("--target", type=click.Choice(["cpu-int8", "edgetpu", "nnapi"]), default="cpu-int8", show_default=True,
              help="Every candidate must convert to full int8 and, for edgetpu/nnapi, map completely.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=_default("strategy"), show_default=True,
              help="Random baseline, regularized evolution, a REINFORCE controller, NSGA-II (Optuna) on accuracy "
                   "and latency together, or gradient (ProxylessNAS through a supernet; needs --supernet).")
@click.option("--budget", "evaluations", type=click.IntRange(1), default=_default("evaluations"), show_default=True,
              help="Candidates trained (undeployable ones cost no training and do not count).")
@click.option("--minutes", type=float, help="Stop after this many minutes, whatever the budget.")
@click.option("--epochs", type=click.IntRange(1), default=_default("epochs"), show_default=True,
              help="Proxy training epochs per candidate.")
@click.option("--train-images", type=click.IntRange(1), default=_default("train_images"), show_default=True,
              help="Training images per candidate (a subset of the training split).")
@click.option("--hard-budget", is_flag=True, help="Nets over the budget are infeasible (not trained, reward 0).")
@click.option("--space", "space_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Search space JSON (resolutions, kernels, expansions, depths, widths, se, acts); default: "
                   "the issue's space at 32-64 px.")
@click.option("--nnapi-api-level", type=click.IntRange(27, 34), default=30, show_default=True,
              help="Android API level the nnapi target checks against.")
@click.option("--validation-split", type=float, default=0.1, show_default=True, help="Held-out share of --data.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--workers", type=click.IntRange(1), default=_default("workers"), show_default=True,
              help="Candidates trained at once, as Ray tasks (an embedded local Ray unless --ray-address); "
                   "a study may resume with another count.")
@click.option("--export-epochs", type=click.IntRange(0), default=0, show_default=True,
              help="Then train the best net this many epochs through the whole pipeline (prune, QAT, int8, "
                   "metadata, the target's checks) into OUT/best, a normal run folder; with --supernet it starts "
                   "from its inherited weights. 0: only best.json.")
@click.option("--zoo", default="", help="Zoo nets to proxy-train beside the study and draw on its plot, comma-separated "
                                         "NAME or NAME@ALPHA (e.g. mobilenet_v2@0.35,mnasnet_b1@0.5).")
@click.option("--supernet", "supernet_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Score candidates with weights inherited from this supernet (`tflpipe supernet train`), "
                   "BatchNorm recalibrated, no training: seconds per candidate (Once-for-All).")
@click.option("--ray-address", help="Join this Ray cluster (HOST:PORT, ray://HOST:PORT or auto) instead of starting "
                                    "a local one; every node needs this package installed.")
@json_option
def search(data, latency_budget, table, out, target, strategy, evaluations, minutes, epochs, train_images, hard_budget,
           space_file, nnapi_api_level, validation_split, seed, workers, export_epochs, zoo, supernet_dir, ray_address, as_json) -> None:
    """Search the inverted-residual space for the most accurate deployable net under a latency budget."""
    from pipeline.core.fsutil import ensure_writable_dir
    from pipeline.latency.table import load_table
    from pipeline.search.space import SearchSpace
    from pipeline.search.study import SearchSettings
    from pipeline.search.study import search as run_search

    ensure_writable_dir(out)
    space = SearchSpace.from_file(space_file)
    settings = SearchSettings(latency_budget, strategy, target, evaluations, minutes, epochs, train_images,
                              hard_budget=hard_budget, nnapi_api_level=nnapi_api_level, seed=seed,
                              supernet=None if supernet_dir is None else str(supernet_dir),
                              zoo=tuple(z.strip() for z in zoo.split(",") if z.strip()), workers=workers,
                              ray_address=ray_address).check()
    loaded = load_table(table)
    datasets = _datasets(data, validation_split, seed, not as_json)
    summary = run_search(datasets, space, loaded, settings, out, progress=not as_json,
                         log=lambda line: click.echo(f"tflpipe: {line}", err=True))
    if export_epochs and summary["best"]:
        summary["best_run"] = _export_best(out, summary, datasets, supernet_dir, data, validation_split, target,
                                           nnapi_api_level, export_epochs, seed)

    def human(d: dict) -> str:
        lines = [f"{d['trained']} nets trained, {d['undeployable']} refused as undeployable on {d['target']} "
                 f"({d['strategy']}); Pareto front ({len(d['pareto'])}):"]
        for t in d["pareto"]:
            measured = f", measured {t['measured_ms']:.3f} ms" if "measured_ms" in t else ""
            lines.append(f"  {t['accuracy']:.2%} at {t['predicted_ms']:.3f} ms predicted{measured}, "
                         f"{t['size_bytes'] / 1024:.0f} KB: {t['describe']}")
        lines += [f"  zoo {z['spec']}: {z['accuracy']:.2%} at {z['predicted_ms']:.3f} ms predicted"
                  for z in d.get("zoo", [])]
        if d.get("best_run"):
            lines.append(f"best net through the pipeline: {d['best_run']['out']} (deployable model: "
                         f"{d['best_run']['deployable']})")
        elif d["best"]:
            lines.append(f"best by reward: {out / 'best.json'}; deploy it with `tflpipe run --model searched:{out} "
                         f"--input-size {d['best']['arch']['resolution']} --data ...` (or search with --export-epochs)")
        return "\n".join(lines)

    emit(summary, as_json, human)


def _export_best(out: Path, summary: dict, datasets, supernet_dir: Path | None, data: str, validation_split: float,
                 target: str, nnapi_api_level: int, epochs: int, seed: int) -> dict:
    """The study's best net as a run folder OUT/best: trained (from the supernet's weights when there is one)
    and sent through every stage, with the target's checks."""
    from pipeline.core.fsutil import save_keras_model
    from pipeline.runner.config import RunConfig
    from pipeline.runner.report import summary_rows
    from pipeline.runner.run import run_pipeline
    from pipeline.search.space import Arch
    from pipeline.stages.artifacts import DEPLOYABLE

    arch = Arch.from_json(summary["best"]["arch"])
    weights = None
    if supernet_dir is not None:
        from pipeline.search.supernet import extract_subnet, load_supernet

        model, _ = extract_subnet(load_supernet(supernet_dir)[0], arch, *datasets(arch.resolution))
        weights = out / "best_subnet.h5"
        save_keras_model(model, weights)
    config = RunConfig(model=f"searched:{out}", alpha=None, input_size=arch.resolution, data=data,
                       validation_split=validation_split, epochs=epochs, weights=None if weights is None else str(weights),
                       targets=[] if target == "cpu-int8" else [target], nnapi_api_level=nnapi_api_level,
                       seed=seed).validate()
    state = run_pipeline(config, out / "best")
    return {"out": str(out / "best"), "deployable": str(out / "best" / DEPLOYABLE), "summary": summary_rows(state)}


@click.command()
@click.option("--study", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Search study folder whose best net (best.json) is the base.")
@click.option("--data", required=True, help="Image folder (<class>/*.jpg) or builtin:digits.")
@click.option("--table", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Latency table of the target.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for scaling.json and one searched-net folder per φ (phi1/, phi2/, ...).")
@click.option("--phis", default="1,2,3", show_default=True, help="Compound coefficients of the family.")
@click.option("--step", type=float, default=2.0, show_default=True,
              help="Predicted latency growth per φ that α, β, γ must give (EfficientNet: 2x FLOPs).")
@click.option("--tolerance", type=click.FloatRange(0.01, 1.0), default=0.10, show_default=True,
              help="How far from --step a grid point's latency growth may be.")
@click.option("--grid", default="1.0,1.1,1.2,1.3", show_default=True,
              help="Values tried for each of α, β, γ (every combination is predicted).")
@click.option("--epochs", type=click.IntRange(1), default=1, show_default=True, help="Proxy training epochs.")
@click.option("--train-images", type=click.IntRange(1), default=5000, show_default=True,
              help="Training images per grid point.")
@click.option("--validation-split", type=float, default=0.1, show_default=True, help="Held-out share of --data.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@json_option
def scale(study, data, table, out, phis, step, tolerance, grid, epochs, train_images, validation_split, seed, as_json) -> None:
    """Compound-scale a searched net (EfficientNet's α, β, γ) against the target's predicted latency."""
    from pipeline.core.errors import PipelineError
    from pipeline.core.fsutil import ensure_writable_dir, write_json
    from pipeline.latency.table import load_table
    from pipeline.search.scaling import compound_scaling
    from pipeline.search.study import BEST_FILE, SearchSettings, load_best, train_and_score

    try:
        phi_values = tuple(int(p) for p in phis.split(",") if p.strip())
        grid_values = tuple(float(g) for g in grid.split(",") if g.strip())
    except ValueError:
        raise PipelineError(f"--phis must be integers like 1,2,3 and --grid numbers like 1.0,1.2; got {phis!r}, "
                            f"{grid!r}") from None
    if not grid_values or min(grid_values) < 1:
        raise PipelineError("--grid values must be at least 1.0")
    if not phi_values or min(phi_values) < 1 or step <= 1:
        raise PipelineError("--phis must be positive integers and --step above 1")
    ensure_writable_dir(out)
    base, loaded = load_best(study), load_table(table)
    settings = SearchSettings(latency_budget_ms=1.0, epochs=epochs, train_images=train_images, seed=seed)
    result = compound_scaling(base, _datasets(data, validation_split, seed, not as_json), loaded, lambda arch, tr, va: train_and_score(arch, tr, va, settings,
                                                                                             seed),
                              phi_values, step, grid_values, tolerance, log=lambda line: click.echo(f"tflpipe: {line}", err=True))
    write_json(out / "scaling.json", result)
    for member in result["family"]:
        (out / f"phi{member['phi']}").mkdir(exist_ok=True)
        write_json(out / f"phi{member['phi']}" / BEST_FILE, {"arch": member["arch"], "describe": member["describe"],
                                                             "predicted_ms": member["predicted_ms"]})

    def human(d: dict) -> str:
        c = d["coefficients"]
        lines = [f"α={c['alpha']:g} β={c['beta']:g} γ={c['gamma']:g} (best of {len(d['grid'])} grid points at "
                 f"{d['step']:g}x latency per step)"]
        for m in d["family"]:
            measured = f", measured {m['measured_ms']:.3f}" if "measured_ms" in m else ""
            lines.append(f"  φ={m['phi']}: {m['predicted_ms']:.3f} ms predicted{measured}: {m['describe']} "
                         f"(`tflpipe run --model searched:{out / ('phi' + str(m['phi']))}`)")
        return "\n".join(lines)

    emit(result, as_json, human)


COMMANDS = [search, scale]
