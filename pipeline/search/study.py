"""``tflpipe search``: a study of candidate nets for a target, resumable, with its Pareto front.

Each trial: the strategy proposes an architecture; it is checked for deployability (full int8 + the
target's static checker) and its int8 latency predicted from the target's latency table, both before any
training; only deployable nets (and, with a hard budget, only those under it) are trained, briefly, on
the user's data and scored by MnasNet's reward. Trials are appended to ``trials.jsonl`` as they finish,
so a killed search resumes without losing one; a resumed study with another space or settings is refused.
The Pareto front (accuracy up, predicted latency and size down) is measured in LiteRT and written as JSON,
CSV and a plot, with a card per trial.
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.core.data import ImageSet
from pipeline.core.errors import PipelineError, first_line
from pipeline.core.fsutil import save_figure, write_json, write_text
from pipeline.latency.predict import predict_flatbuffer
from pipeline.latency.table import LatencyTable
from pipeline.search.deployable import DeployabilityCheck
from pipeline.search.space import Arch, SearchSpace, build
from pipeline.search.strategies import make_strategy, mnasnet_reward

MAX_UNDEPLOYABLE_IN_A_ROW = 200
BEST_FILE = "best.json"  # the highest-reward net: `tflpipe run --model searched:STUDY` builds it
SEARCHED = "searched:"
NOT_IN_STUDY = ("workers", "ray_address", "zoo")  # how a study runs, not what it compares: a resume may change them


def load_best(study: str | Path) -> Arch:
    """The best architecture of a finished study folder (``searched:DIR`` in ``run``)."""
    path = Path(study) / BEST_FILE
    try:
        return Arch.from_json(json.loads(path.read_text(encoding="utf-8"))["arch"])
    except FileNotFoundError:
        raise PipelineError(f"{path} does not exist: run `tflpipe search --out {study}` first") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise PipelineError(f"{path} is not a search result ({type(exc).__name__})") from None


@dataclass(frozen=True)
class SearchSettings:
    latency_budget_ms: float
    strategy: str = "evolution"
    target: str = "cpu-int8"
    evaluations: int = 30  # trained candidates (undeployable ones are not counted: they cost no training)
    minutes: float | None = None
    epochs: int = 1  # proxy training of each candidate
    train_images: int = 5000  # of the training split, per candidate
    learning_rate: float = 0.05
    batch_size: int = 64
    reward_exponent: float = -0.07  # MnasNet's w (soft constraint)
    hard_budget: bool = False  # infeasible (reward 0, not trained) above the budget
    nnapi_api_level: int = 30
    seed: int = 0
    supernet: str | None = None  # score candidates with inherited weights from this supernet, no training
    gradient_steps: int = 30  # gradient strategy: architecture steps before each proposal
    zoo: tuple[str, ...] = ()  # zoo nets (name or name@alpha) proxy-trained beside the study, drawn on its plot
    workers: int = 1  # candidates scored at once (Ray tasks when above 1); not part of the study
    ray_address: str | None = None  # a Ray cluster to join instead of a local one; not part of the study

    def check(self) -> "SearchSettings":
        if self.latency_budget_ms <= 0:
            raise PipelineError("--latency-budget must be a positive number of milliseconds")
        if self.evaluations < 1 or self.epochs < 1 or self.train_images < 1 or self.batch_size < 1:
            raise PipelineError("--budget, --epochs, --train-images and --batch-size must be at least 1")
        if self.workers < 1:
            raise PipelineError("--workers must be at least 1")
        if self.minutes is not None and self.minutes <= 0:
            raise PipelineError("a time budget must be positive")
        return self


def pareto_front(trials: list[dict]) -> list[dict]:
    """Trials no other trial beats on accuracy, latency and size at once."""
    feasible = [t for t in trials if t.get("accuracy") is not None]

    def dominates(a: dict, b: dict) -> bool:
        at_least = (a["accuracy"] >= b["accuracy"] and a["predicted_ms"] <= b["predicted_ms"]
                    and a["size_bytes"] <= b["size_bytes"])
        better = (a["accuracy"] > b["accuracy"] or a["predicted_ms"] < b["predicted_ms"]
                  or a["size_bytes"] < b["size_bytes"])
        return at_least and better

    return sorted((t for t in feasible if not any(dominates(o, t) for o in feasible)), key=lambda t: t["predicted_ms"])


class Study:
    """``study.json`` (space and settings) and ``trials.jsonl`` (one line per finished trial)."""

    def __init__(self, out: Path, space: SearchSpace, settings: SearchSettings, table: LatencyTable) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        # The budget may grow on resume (search more) and the workers change; everything else must match the
        # finished trials.
        fixed = {k: v for k, v in asdict(settings).items() if k not in ("evaluations", "minutes") + NOT_IN_STUDY}
        header = {"space": space.to_json(), "settings": fixed,
                  "table": {"target": table.target, "threads": table.threads, "device": table.device}}
        path = out / "study.json"
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved != header:
                raise PipelineError(f"{out} holds a study with another search space, settings or latency table; "
                                    "resume it with the same ones or use another --out")
        else:
            write_json(path, header)
        self.trials_path = out / "trials.jsonl"
        self.trials: list[dict] = []
        if self.trials_path.exists():
            for line in self.trials_path.read_text(encoding="utf-8").splitlines():
                try:
                    self.trials.append(json.loads(line))
                except ValueError:
                    break  # cut short by a kill: that trial is redone
            write_text(self.trials_path, "".join(json.dumps(t) + "\n" for t in self.trials))

    def record(self, trial: dict) -> None:
        self.trials.append(trial)
        with self.trials_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(trial) + "\n")


def train_and_score(arch: Arch, train: ImageSet, val: ImageSet, settings: SearchSettings, seed: int) -> float:
    from pipeline.core.tf_env import keras

    keras.backend.clear_session()
    return _proxy_accuracy(build(arch, len(train.class_names)), train, val, settings, seed)


def _proxy_accuracy(model, train: ImageSet, val: ImageSet, settings: SearchSettings, seed: int) -> float:
    """The search's proxy: ``settings.epochs`` on ``settings.train_images`` of the training split."""
    from pipeline.stages.train import FitSettings, fit, keras_accuracy

    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(train), size=min(len(train), settings.train_images), replace=False))
    fit(model, train.subset(chosen), None, FitSettings(epochs=settings.epochs, learning_rate=settings.learning_rate,
                                                        batch_size=settings.batch_size, seed=seed,
                                                        warmup_epochs=min(1.0, settings.epochs / 5)))
    return keras_accuracy(model, val)


def _zoo_spec(spec: str) -> tuple[str, dict]:
    """``name`` or ``name@alpha`` -> (name, knobs); an unknown net or a malformed spec is one line."""
    from keras_models import REGISTRY

    name, _, alpha = spec.partition("@")
    try:
        knobs = {"alpha": float(alpha)} if alpha else {}
    except ValueError:
        knobs = None
    if knobs is None or name not in REGISTRY:
        raise PipelineError(f"--zoo {spec!r}: write a zoo net as NAME or NAME@ALPHA (e.g. mobilenet_v2@0.35); "
                            f"nets: {', '.join(sorted(REGISTRY))}")
    return name, knobs


def zoo_reference(spec: str, datasets: Callable[[int], tuple[ImageSet, ImageSet]], resolution: int,
                  table: LatencyTable, settings: SearchSettings) -> dict:
    """A zoo net (``name`` or ``name@alpha``) at the study's resolution with the same proxy training as the
    candidates, its int8 latency predicted from the table and, on this CPU's tables, measured: the points
    a search must beat, drawn on its Pareto plot."""
    from keras_models import ZooError, build_model
    from pipeline.core.keras_convert import full_int8_flatbuffer
    from pipeline.core.tf_env import keras

    name, knobs = _zoo_spec(spec)
    train, val = datasets(resolution)
    keras.backend.clear_session()
    try:
        model = build_model(name, resolution, classes=len(train.class_names), **knobs)
    except ZooError as exc:  # unknown net, a knob it does not take
        raise PipelineError(f"--zoo {spec!r}: {first_line(exc)}") from None
    flatbuffer = full_int8_flatbuffer(model)
    found = {"spec": spec, "resolution": resolution, "size_bytes": len(flatbuffer),
             "predicted_ms": predict_flatbuffer(flatbuffer, table).latency_ms,
             "accuracy": _proxy_accuracy(model, train, val, settings, settings.seed)}
    if table.device == "cpu":
        from pipeline.latency.measure import LocalMeasurer

        found["measured_ms"] = LocalMeasurer(threads=table.threads, min_seconds=0.3).time(flatbuffer)
    return found


@dataclass(frozen=True)
class ProxyTraining:
    """The default score: brief training on in-memory (train, validation) images, then validation accuracy.

    Arrays, not a loader: it pickles, so a Ray task receives it through the object store (once per size)."""

    train: ImageSet
    val: ImageSet
    settings: SearchSettings

    def __call__(self, arch: Arch, seed: int) -> float:
        return train_and_score(arch, self.train, self.val, self.settings, seed)


def _score(score: Callable[[Arch, int], float], arch: Arch, seed: int) -> float:
    return score(arch, seed)


def search(datasets: Callable[[int], tuple[ImageSet, ImageSet]], space: SearchSpace, table: LatencyTable,
           settings: SearchSettings, out: str | Path, progress: bool = True,
           log: Callable[[str], None] = lambda _: None, score: Callable[[Arch, int], float] | None = None) -> dict:
    """Run (or resume) a study; ``datasets(resolution)`` gives the (train, validation) images at a size.
    Returns the study's summary with the Pareto front.

    ``score(arch, seed)`` gives a candidate's accuracy (default: :class:`ProxyTraining` on ``datasets``); with
    ``settings.workers > 1`` or a Ray address it runs in Ray workers and must pickle. Deployability and the
    latency prediction stay here; up to ``workers`` candidates are scored at once, each trial is recorded as
    soon as it finishes and the strategy told in completion order, so a kill loses only unfinished ones."""
    from tqdm import tqdm

    from pipeline.search.distributed import make_executor

    settings.check()
    space.check()
    for spec in settings.zoo:  # before any search work: the references are trained at its end
        _zoo_spec(spec)
    if table.device != "cpu" and settings.target == "cpu-int8":
        log(f"latencies are predicted for {table.device}, the device the table was measured on")
    study = Study(Path(out), space, settings, table)
    if score is None and settings.supernet is not None:
        from pipeline.search.supernet import SupernetScore

        score = SupernetScore.for_search(settings.supernet, space, datasets, settings.train_images, settings.seed)
    with make_executor(settings.workers, settings.ray_address, log) as executor:
        if settings.strategy == "gradient":
            from pipeline.search.gradient import GradientStrategy

            if settings.supernet is None:
                raise PipelineError("--strategy gradient searches through a supernet's weights: give --supernet DIR "
                                    "(`tflpipe supernet train`)")
            strategy = GradientStrategy(settings.supernet, table, space, datasets, settings.latency_budget_ms,
                                        settings.reward_exponent, study.out, settings.seed,
                                        steps=settings.gradient_steps, log=log)
        else:
            strategy = make_strategy(settings.strategy, space)
        classes = len(datasets(space.resolutions[0])[0].class_names)
        checker = DeployabilityCheck(settings.target, classes, settings.nnapi_api_level)
        for trial in study.trials:  # rebuild the strategy's state from the finished trials
            if trial.get("reward") is not None:
                strategy.tell(Arch.from_json(trial["arch"]), trial["reward"], _objectives(trial))
        trained = sum(1 for t in study.trials if t.get("accuracy") is not None)
        started = time.monotonic()
        bar = tqdm(total=settings.evaluations, initial=trained, unit="net", desc=f"search ({settings.strategy})",
                   disable=not progress, leave=False)
        refused_in_a_row, refused = 0, {t["describe"] for t in study.trials if t.get("deployable") is False}
        # Numbers of trials killed while running are never reused: a resumed study numbers on after the highest.
        number = 1 + max((t["number"] for t in study.trials), default=-1)
        shared: dict = {}  # the scorer in the executor's store: one per resolution, or the caller's one
        running: dict[int, tuple[dict, Arch]] = {}
        time_left = True
        while True:
            while time_left and len(running) < executor.slots and trained + len(running) < settings.evaluations:
                if settings.minutes is not None and time.monotonic() - started > settings.minutes * 60:
                    log("time budget spent")
                    time_left = False
                    break
                # A refused net leaves the number free; the retry draws from another stream, not the same net.
                seed = [settings.seed, number] + ([refused_in_a_row] if refused_in_a_row else [])
                arch = strategy.ask(np.random.default_rng(seed))
                trial = {"number": number, "arch": arch.to_json(), "describe": arch.describe()}
                verdict = checker.verdict(arch)
                if not verdict.deployable:
                    refused_in_a_row += 1
                    if arch.describe() not in refused:
                        refused.add(arch.describe())
                        study.record({**trial, "deployable": False, "reasons": verdict.reasons[:3], "reward": 0.0})
                        number += 1
                    strategy.tell(arch, 0.0)
                    if refused_in_a_row >= MAX_UNDEPLOYABLE_IN_A_ROW or len(refused) >= space.size():
                        raise PipelineError(f"no deployable candidate for {settings.target} after {refused_in_a_row} "
                                            f"tries ({len(refused)} distinct nets); first reason: "
                                            f"{(verdict.reasons or ['?'])[0]}")
                    continue
                refused_in_a_row = 0
                number += 1
                predicted = predict_flatbuffer(verdict.flatbuffer, table).latency_ms
                trial.update(deployable=True, predicted_ms=predicted, size_bytes=len(verdict.flatbuffer))
                if settings.hard_budget and predicted > settings.latency_budget_ms:
                    study.record({**trial, "reward": 0.0, "over_budget": True})
                    strategy.tell(arch, 0.0)
                    continue
                key = None if score is not None else arch.resolution
                if key not in shared:
                    shared[key] = executor.share(score if score is not None else
                                                 ProxyTraining(*datasets(arch.resolution), settings))
                executor.submit(trial["number"], _score, shared[key], arch, settings.seed + trial["number"])
                running[trial["number"]] = (trial, arch)
            if not running:
                break
            finished, accuracy = executor.next_done()
            trial, arch = running.pop(finished)
            predicted = trial["predicted_ms"]
            reward = mnasnet_reward(accuracy, predicted, settings.latency_budget_ms, settings.reward_exponent,
                                    settings.hard_budget)
            study.record({**trial, "accuracy": accuracy, "reward": reward})
            strategy.tell(arch, reward, (accuracy, predicted))
            trained += 1
            bar.update(1)
            log(f"trial {finished}: {accuracy:.2%} at {predicted:.3f} ms predicted, reward {reward:.4f} "
                f"({arch.describe()})")
        bar.close()
    zoo = _zoo_references(study, datasets, max(space.resolutions), table, settings, log)
    return finish(study, table, settings, classes, zoo)


def _zoo_references(study: Study, datasets, resolution: int, table: LatencyTable, settings: SearchSettings,
                    log: Callable[[str], None]) -> list[dict]:
    """The ``settings.zoo`` nets, each trained once and kept in ``zoo.json`` (a resumed study reuses them)."""
    path = study.out / "zoo.json"
    done = {z["spec"]: z for z in (json.loads(path.read_text(encoding="utf-8")) if path.exists() else [])
            if z.get("resolution") == resolution}
    for spec in settings.zoo:
        if spec not in done:
            done[spec] = zoo_reference(spec, datasets, resolution, table, settings)
            write_json(path, list(done.values()))
            log(f"zoo {spec}: {done[spec]['accuracy']:.2%} at {done[spec]['predicted_ms']:.3f} ms predicted")
    return [done[spec] for spec in settings.zoo]


def _objectives(trial: dict) -> tuple[float, float] | None:
    return (trial["accuracy"], trial["predicted_ms"]) if trial.get("accuracy") is not None else None


def finish(study: Study, table: LatencyTable, settings: SearchSettings, classes: int,
           zoo: list[dict] = ()) -> dict:
    """Pareto front measured here (this CPU's tables), its JSON, CSV and plot, and a card per trial."""
    front = pareto_front(study.trials)
    if table.device == "cpu":
        from pipeline.latency.measure import LocalMeasurer

        timer = LocalMeasurer(threads=table.threads, min_seconds=0.3)
        checker = DeployabilityCheck(settings.target, classes, settings.nnapi_api_level)
        for trial in front:
            if "measured_ms" not in trial:
                arch = Arch.from_json(trial["arch"])
                trial["measured_ms"] = timer.time(checker.verdict(arch).flatbuffer)
    trained = [t for t in study.trials if t.get("accuracy") is not None]
    best = max(trained, key=lambda t: t["reward"], default=None)
    summary = {"trials": len(study.trials), "trained": len(trained),
               "undeployable": sum(1 for t in study.trials if t.get("deployable") is False),
               "latency_budget_ms": settings.latency_budget_ms, "strategy": settings.strategy,
               "target": settings.target, "best": best, "pareto": front,
               "best_reward_by_evaluation": _running_best(trained), "zoo": list(zoo)}
    if best is not None:
        write_json(study.out / BEST_FILE, {"arch": best["arch"], "describe": best["describe"],
                                           "accuracy": best["accuracy"], "predicted_ms": best["predicted_ms"],
                                           "reward": best["reward"], "trial": best["number"]})
    write_json(study.out / "pareto.json", {"pareto": front})
    write_text(study.out / "pareto.csv", _csv(front))
    cards = study.out / "cards"
    cards.mkdir(exist_ok=True)
    for trial in study.trials:
        write_json(cards / f"{trial['number']:04d}.json", trial)
    write_json(study.out / "summary.json", summary)
    if trained:
        _plot(trained, front, list(zoo), settings, study.out / "pareto.png")
    return summary


def _running_best(trained: list[dict]) -> list[float]:
    best, curve = 0.0, []
    for trial in trained:
        best = max(best, trial["reward"])
        curve.append(round(best, 5))
    return curve


def _csv(front: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["number", "accuracy", "predicted_ms", "measured_ms", "size_bytes", "reward", "architecture"])
    for t in front:
        writer.writerow([t["number"], f"{t['accuracy']:.4f}", f"{t['predicted_ms']:.4f}",
                         f"{t['measured_ms']:.4f}" if "measured_ms" in t else "", t["size_bytes"],
                         f"{t['reward']:.5f}", t["describe"]])
    return buffer.getvalue()


def _plot(trained: list[dict], front: list[dict], zoo: list[dict], settings: SearchSettings, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter([t["predicted_ms"] for t in trained], [100 * t["accuracy"] for t in trained], s=14, alpha=0.5,
               label="candidates")
    ax.plot([t["predicted_ms"] for t in front], [100 * t["accuracy"] for t in front], "r.-", label="Pareto front")
    for z in zoo:
        ax.scatter([z["predicted_ms"]], [100 * z["accuracy"]], marker="s", color="black", s=22)
        ax.annotate(z["spec"], (z["predicted_ms"], 100 * z["accuracy"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    if zoo:
        ax.scatter([], [], marker="s", color="black", s=22, label="zoo nets (same proxy training)")
    ax.axvline(settings.latency_budget_ms, color="grey", linestyle="--", label="budget")
    ax.set_xlabel("predicted int8 latency (ms)")
    ax.set_ylabel("accuracy after proxy training (%)")
    ax.set_title(f"{settings.strategy} search for {settings.target}")
    ax.legend()
    save_figure(fig, path)
