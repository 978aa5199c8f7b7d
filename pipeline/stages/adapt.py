"""Adapt a trained net to a latency budget on the target: NetAdapt, or AMC-style per-layer ratios.

NetAdapt (Yang et al., "NetAdapt: Platform-Aware Neural Network Adaptation for Mobile Applications",
ECCV 2018): each iteration asks for a latency drop that follows a schedule (``first_step`` of the original
latency, times ``decay`` per iteration; the reference implementation uses 2.5% and 0.96). For every channel
group it finds, from the latency model, the fewest filters whose removal meets the drop, removes those
with the smallest filter norms, fine-tunes the proposal briefly and measures it on a held-out split; the
most accurate proposal goes on to the next iteration. A longer fine-tune ends the adaptation, distilled
from the unadapted net unless ``distill`` is off (Hinton et al., 2015: the pruned net learns its teacher's
softened outputs beside the labels).

AMC (He et al., "AMC: AutoML for Model Compression and Acceleration on Mobile Devices", ECCV 2018): an
agent chooses every group's pruning ratio; each choice is scaled to meet the budget exactly and
rewarded with the held-out accuracy without fine-tuning (BatchNorm statistics recalibrated); the best
choice is fine-tuned once. Two agents: ``amc``, the cross-entropy method over the ratio vector (a Gaussian
policy refitted to the best-rewarded tenth), and ``amc-ddpg``, the paper's DDPG agent choosing one ratio per
group in order from an embedding of that group and of the latency cut so far (``ddpg_search``).

Every iteration (NetAdapt), episode batch (CEM) or episode (DDPG) is saved, so an interrupted adaptation resumes;
the search's result is kept apart from each final fine-tune's, so changing only the final fine-tune reuses the search.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.core.data import ImageSet
from pipeline.core.errors import PipelineError
from pipeline.core.fsutil import save_figure, save_keras_model, write_json
from pipeline.core.keras_convert import full_int8_flatbuffer
from pipeline.core.tf_env import keras
from pipeline.latency.channels import ChannelLatency
from pipeline.latency.table import LatencyTable
from pipeline.stages.channel_prune import channel_groups, layer_channels, prune_channels
from pipeline.stages.options import ADAPT_FINAL_FIELDS, AdaptSettings, parse_budget  # noqa: F401 (re-exported)
from pipeline.stages.train import Distillation, FitSettings, fit, keras_accuracy, recalibrate_batchnorm

# A measured latency this far from the prediction (the latency model's goal is ±10%) points at the table, not at
# the model: `adapt` says how to check it.
STALE_TABLE_HINT = 0.25

def _compositions(model: keras.Model) -> dict[str, tuple[int, ...]]:
    return {name: lc.outputs[0] for name, lc in layer_channels(model).items() if len(lc.outputs) == 1}


@dataclass
class _Problem:
    """What both strategies share: the groups, the latency model and the target."""

    latency: ChannelLatency
    sizes: dict[int, int]
    prunable: list[int]
    original_ms: float
    target_ms: float
    floor_ms: float
    minimum: dict[int, int]


def _problem(model: keras.Model, table: LatencyTable, settings: AdaptSettings, threads: int | None) -> _Problem:
    groups = channel_groups(model)
    sizes = {g.id: g.size for g in groups}
    prunable = [g.id for g in groups if g.prunable and g.size > 1]
    if not prunable:
        raise PipelineError(f"{model.name} has no prunable channel group")
    latency = ChannelLatency(table, full_int8_flatbuffer(model), _compositions(model), sizes, threads)
    original = latency.predict()
    kind, value = parse_budget(settings.budget)
    target = original * value if kind == "x" else value
    minimum = {g: min(sizes[g], settings.divisor) for g in prunable}
    floor = latency.predict(minimum)
    if target >= original:
        raise PipelineError(f"the budget {settings.budget} ({target:.3f} ms) is not below the model's predicted "
                            f"{original:.3f} ms: nothing to adapt")
    if target < floor:
        raise PipelineError(f"no pruning reaches {target:.3f} ms: the smallest reachable latency is {floor:.3f} ms "
                            f"({settings.divisor} channels per group; {original:.3f} ms now)")
    return _Problem(latency, sizes, prunable, original, target, floor, minimum)


def predicted_memory_mb(model: keras.Model, threads: int = 1) -> float:
    """LiteRT + XNNPACK peak memory of ``model`` as full int8, from the memory model (no run needed)."""
    from pipeline.core.tflite_file import parse_model
    from pipeline.latency.memory import predict_runtime

    flatbuffer = full_int8_flatbuffer(model)
    return predict_runtime(parse_model(flatbuffer, model.name), threads).growth_bytes / 2**20


def _memory_ok(model: keras.Model, settings: AdaptSettings, threads: int) -> bool:
    return settings.memory_budget_mb is None or predicted_memory_mb(model, threads) <= settings.memory_budget_mb


def _fine_tune(model: keras.Model, train: ImageSet, settings: AdaptSettings, steps: int, seed: int) -> None:
    if steps <= 0:
        recalibrate_batchnorm(model, train, _fit_settings(settings, 0, seed))
        return
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(train), size=min(len(train), steps * settings.batch_size), replace=False)
    fit(model, train.subset(np.sort(chosen)), None, _fit_settings(settings, 1, seed))


def _fit_settings(settings: AdaptSettings, epochs: int, seed: int, learning_rate: float | None = None) -> FitSettings:
    return FitSettings(epochs=epochs, learning_rate=learning_rate or settings.learning_rate,
                       batch_size=settings.batch_size, seed=seed, label_smoothing=0.1)


class _State:
    """``state.json`` in the output folder: what an interrupted run resumes from. The search's working model is
    ``current.h5``, its result ``searched.h5``; each final fine-tune's result is ``final_<key>.h5``, keyed by its
    settings (:meth:`AdaptSettings.final_key`), so another final fine-tune reuses the search."""

    def __init__(self, out: Path, settings: AdaptSettings, source: str) -> None:
        self.clock = time.monotonic()
        self.out, self.path, self.model_path = out, out / "state.json", out / "current.h5"
        self.searched_path = out / "searched.h5"
        self.data: dict = {"settings": _search_settings(asdict(settings)), "source": source, "trajectory": [],
                           "finals": {}, "seconds": {}}
        if self.path.exists():
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            if _search_settings(saved.get("settings", {})) != self.data["settings"] or saved.get("source") != source:
                raise PipelineError(f"{out} holds an adaptation with other settings or another model; "
                                    "use another --out or remove it")
            self.data = saved
            self._upgrade()

    def _upgrade(self) -> None:
        """A state written before the final fine-tune was cached apart: ``current.h5`` held the search's result
        and then, once ``done``, the final model (fine-tuned from the labels alone)."""
        if "finals" in self.data:
            return
        old = self.data["settings"]
        self.data.update(finals={}, seconds={})
        if self.data.pop("done", False):
            key = AdaptSettings(budget=old["budget"], final_epochs=old["final_epochs"], distill=False).final_key()
            self.model_path.replace(self.final_path(key))
            self.data["finals"][key] = {"holdout_accuracy": self.data.pop("final_holdout_accuracy")}
        elif self.data.get("searched") and self.model_path.exists():
            self.model_path.replace(self.searched_path)
        self.data["settings"] = _search_settings(old)
        self.save()

    def final_path(self, key: str) -> Path:
        return self.out / f"final_{key}.h5"

    def save(self, model: keras.Model | None = None, phase: str = "search") -> None:
        """Writes the state (and the search's working ``model``); the time since the last save counts to ``phase``."""
        if model is not None:
            save_keras_model(model, self.model_path)
        now = time.monotonic()
        seconds = self.data.setdefault("seconds", {})
        seconds[phase] = round(seconds.get(phase, 0.0) + now - self.clock, 1)
        self.clock = now
        write_json(self.path, self.data)


def _search_settings(settings: dict) -> dict:
    """The settings the search's cached iterations depend on: all but the final fine-tune's."""
    return {name: value for name, value in settings.items() if name not in ADAPT_FINAL_FIELDS}


def _rebuild_searched(model: keras.Model, train: ImageSet, problem: _Problem, settings: AdaptSettings,
                      state: _State, log: Callable[[str], None]) -> keras.Model:
    """The search's result for a state that did not keep it (written before ``searched.h5`` was): AMC's is the
    original pruned to the recorded sizes, exactly; NetAdapt's replays each iteration's winning cut and short
    fine-tune, on the same images with the same seeds (the same net, not bit for bit the same weights)."""
    steps = state.data["trajectory"][1:]
    log(f"rebuilding the searched model from its {len(steps)} recorded step(s)")
    if settings.strategy != "netadapt":
        sizes = {int(g): c for g, c in steps[-1]["sizes"].items()}
        return prune_channels(model, {g: sizes[g] for g in problem.prunable}, settings.criterion)
    for step in steps:
        model = prune_channels(model, {step["group"]: step["kept"]}, settings.criterion)
        _fine_tune(model, train, settings, settings.short_steps, settings.seed + step["iteration"])
    return model


def _final_fine_tune(student: keras.Model, teacher: keras.Model, train: ImageSet, settings: AdaptSettings) -> None:
    """The long fine-tune at the end, distilled from the unadapted net (``teacher``) unless ``settings`` say not."""
    distillation = Distillation(teacher, settings.distill_temperature, settings.distill_weight) \
        if settings.distill else None
    trainable = teacher.trainable  # the distiller freezes the teacher: the caller's model leaves as it came
    try:
        fit(student, train, None, _fit_settings(settings, settings.final_epochs, settings.seed + 999,
                                                settings.final_learning_rate),
            distill=distillation)
    finally:
        teacher.trainable = trainable


def adapt(model: keras.Model, train: ImageSet, holdout: ImageSet, table: LatencyTable, settings: AdaptSettings,
          out: str | Path, threads: int | None = None, progress: bool = True,
          log: Callable[[str], None] = lambda _: None) -> tuple[keras.Model, dict]:
    """Prune ``model`` to ``settings.budget`` on ``table``'s target; returns the adapted model and its report."""
    from pipeline.stages.convert import load_keras_model

    settings.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = _State(out, settings, f"{model.name}:{model.count_params()}")
    problem = _problem(model, table, settings, threads)
    if settings.memory_budget_mb is not None:
        smallest = predicted_memory_mb(prune_channels(model, problem.minimum, settings.criterion), table.threads)
        if smallest > settings.memory_budget_mb:
            raise PipelineError(f"no pruning fits {settings.memory_budget_mb} MB: the smallest reachable predicted "
                                f"peak memory is {smallest:.2f} MB")
    started = time.monotonic()
    log(f"{settings.strategy}: {problem.original_ms:.3f} ms predicted now, budget {problem.target_ms:.3f} ms "
        f"({len(problem.prunable)} prunable channel groups)")
    if not state.data["trajectory"]:
        state.data["trajectory"].append({"iteration": 0, "predicted_ms": problem.original_ms,
                                         "holdout_accuracy": keras_accuracy(model, holdout), "sizes": problem.sizes})
        state.data.update(original_ms=problem.original_ms, target_ms=problem.target_ms, floor_ms=problem.floor_ms)
        state.save()
    run = {"netadapt": _netadapt, "amc": _amc, "amc-ddpg": _amc_ddpg}[settings.strategy]
    key, searched = settings.final_key(), None
    if not state.data.get("searched"):
        current = load_keras_model(state.model_path) if state.model_path.exists() else model
        searched = run(current, train, holdout, problem, settings, state, progress, log)
        save_keras_model(searched, state.searched_path)
        state.data["searched"] = True
        state.save()
        state.model_path.unlink(missing_ok=True)
    final = state.data["finals"].get(key)
    if final is not None and state.final_path(key).exists():
        current = load_keras_model(state.final_path(key))
    else:
        if searched is None and state.searched_path.exists():
            searched = load_keras_model(state.searched_path)
        elif searched is None:
            searched = _rebuild_searched(model, train, problem, settings, state, log)
            save_keras_model(searched, state.searched_path)
            state.data["searched_rebuilt"] = True
            state.save(phase="rebuild")
        current = searched
        log(f"final fine-tune: {settings.final_epochs} epoch(s)"
            + (f", distilled from {model.name}" if settings.distill and settings.final_epochs else ""))
        if settings.final_epochs:
            _final_fine_tune(current, model, train, settings)
        save_keras_model(current, state.final_path(key))
        final = {"holdout_accuracy": keras_accuracy(current, holdout),
                 **{name: getattr(settings, name) for name in ADAPT_FINAL_FIELDS}}
        state.data["finals"][key] = final
        state.save(phase=f"final_{key}")
    final_sizes = {g.id: g.size for g in channel_groups(current)}
    report = {"strategy": settings.strategy, "budget": settings.budget, "original_ms": state.data["original_ms"],
              "target_ms": state.data["target_ms"], "smallest_reachable_ms": state.data["floor_ms"],
              "predicted_ms": problem.latency.predict(final_sizes), "trajectory": state.data["trajectory"],
              "holdout_accuracy_before": state.data["trajectory"][0]["holdout_accuracy"],
              "holdout_accuracy_searched": state.data["trajectory"][-1]["holdout_accuracy"],
              "holdout_accuracy_after": final["holdout_accuracy"],
              "final_fine_tune": {"key": key, **{name: getattr(settings, name) for name in ADAPT_FINAL_FIELDS}},
              "params_before": model.count_params(), "params_after": current.count_params(),
              "seconds_this_run": round(time.monotonic() - started, 1),
              "seconds": {"search": state.data["seconds"].get("search", 0.0),
                          "final": state.data["seconds"].get(f"final_{key}", 0.0)},
              "searched_rebuilt": bool(state.data.get("searched_rebuilt")),
              "target": table.target, "threads": table.threads}
    if "episodes" in state.data:
        report["episodes"] = state.data["episodes"]
    return current, report


def _score(model: keras.Model, group: int, keep: int, phase: str, train: ImageSet, holdout: ImageSet,
           settings: AdaptSettings, seed: int) -> tuple[float, keras.Model]:
    """Held-out accuracy of ``model`` with group ``group`` cut to ``keep`` channels: after re-estimating the
    BatchNorm statistics (``rank``) or after the short fine-tune (``tune``)."""
    candidate = prune_channels(model, {group: keep}, settings.criterion)
    if phase == "rank":  # ten batches re-estimate the statistics: only those images go to TensorFlow
        rng = np.random.default_rng(seed)
        few = rng.choice(len(train), size=min(len(train), 10 * settings.batch_size), replace=False)
        recalibrate_batchnorm(candidate, train.subset(np.sort(few)), _fit_settings(settings, 0, settings.seed),
                              batches=10)
    else:
        _fine_tune(candidate, train, settings, settings.short_steps, seed)
    return keras_accuracy(candidate, holdout), candidate


class _Evaluator:
    """Scores NetAdapt's proposals, in this process or (``workers`` > 1) in a pool of processes that each
    run TensorFlow on one thread and read the images from memory-mapped files; candidates come back as
    files, so only the chosen one is loaded."""

    def __init__(self, train: ImageSet, holdout: ImageSet, settings: AdaptSettings, folder: Path) -> None:
        self.train, self.holdout, self.settings, self.folder = train, holdout, settings, folder
        self.pool = None
        self.kept: dict[tuple[int, int], keras.Model] = {}
        if settings.workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            folder.mkdir(parents=True, exist_ok=True)
            for name, data in (("train", train), ("holdout", holdout)):
                np.save(folder / f"{name}_images.npy", data.images)
                np.save(folder / f"{name}_labels.npy", data.labels)
            self.pool = ProcessPoolExecutor(settings.workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_worker_init,
                                            initargs=(str(folder), train.class_names, asdict(settings)))

    def score(self, model: keras.Model, jobs: list[tuple[int, int, str]], iteration: int) -> list[float]:
        seed = self.settings.seed + iteration
        if self.pool is None:
            results = []
            for group, keep, phase in jobs:
                accuracy, candidate = _score(model, group, keep, phase, self.train, self.holdout, self.settings, seed)
                if phase == "tune":
                    self.kept[group, keep] = candidate
                results.append(accuracy)
            return results
        source = self.folder / f"model_{iteration}.h5"
        save_keras_model(model, source)
        futures = [self.pool.submit(_worker_score, str(source), group, keep, phase, seed,
                                    str(self.folder / f"candidate_{group}_{keep}.h5")) for group, keep, phase in jobs]
        return [f.result() for f in futures]

    def candidate(self, model: keras.Model, group: int, keep: int, iteration: int) -> keras.Model:
        """The fine-tuned proposal that won."""
        if self.pool is None:
            chosen, self.kept = self.kept[group, keep], {}
            return chosen
        from pipeline.stages.convert import load_keras_model

        return load_keras_model(self.folder / f"candidate_{group}_{keep}.h5")

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            import shutil

            shutil.rmtree(self.folder, ignore_errors=True)


_WORKER: dict = {}


def _worker_init(folder: str, class_names: list[str], settings: dict) -> None:
    from pipeline.core.tf_env import tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    root = Path(folder)
    for name in ("train", "holdout"):
        _WORKER[name] = ImageSet(np.load(root / f"{name}_images.npy", mmap_mode="r"),
                                 np.load(root / f"{name}_labels.npy"), class_names)
    _WORKER["settings"] = AdaptSettings(**settings)


def _worker_score(source: str, group: int, keep: int, phase: str, seed: int, out: str) -> float:
    from pipeline.stages.convert import load_keras_model

    accuracy, candidate = _score(load_keras_model(source), group, keep, phase, _WORKER["train"], _WORKER["holdout"],
                                 _WORKER["settings"], seed)
    if phase == "tune":
        save_keras_model(candidate, out)
    return accuracy


def _netadapt(model: keras.Model, train: ImageSet, holdout: ImageSet, problem: _Problem, settings: AdaptSettings,
              state: _State, progress: bool, log: Callable[[str], None]) -> keras.Model:
    from tqdm import tqdm

    sizes = {int(g): c for g, c in state.data["trajectory"][-1]["sizes"].items()}
    current_ms = state.data["trajectory"][-1]["predicted_ms"]
    bar = tqdm(total=100, initial=_progress(problem, current_ms), unit="%", desc="netadapt (latency to budget)",
               disable=not progress, leave=False)
    threads = problem.latency.table.threads
    evaluator = _Evaluator(train, holdout, settings, state.out / "proposals")
    while current_ms > problem.target_ms + 1e-9 or not _memory_ok(model, settings, threads):
        iteration = len(state.data["trajectory"])
        drop = problem.original_ms * settings.first_step * settings.decay ** (iteration - 1)
        # Under the latency budget but over the memory one: keep shrinking by the schedule.
        goal = current_ms - drop if current_ms <= problem.target_ms else max(current_ms - drop, problem.target_ms)
        proposals = _proposals(problem, sizes, goal, settings.divisor)
        for _ in range(10):  # the drop asked for is more than any one group holds: ask for half as much
            if proposals or current_ms - goal < 1e-6:
                break
            goal = current_ms - (current_ms - goal) / 2
            proposals = _proposals(problem, sizes, goal, settings.divisor)
        if not proposals:
            raise PipelineError(f"no channel group can be pruned further below {current_ms:.3f} ms "
                                f"(budget {problem.target_ms:.3f} ms); the latency model sees no gain left")
        ranked = [(0.0, -ms, group, keep, ms) for group, keep, ms in proposals]
        if settings.finalists:  # ranked before fine-tuning; only the best earn the short fine-tune
            scores = evaluator.score(model, [(g, k, "rank") for _, _, g, k, _ in ranked], iteration)
            ranked = sorted(((a, *r[1:]) for a, r in zip(scores, ranked)), key=lambda c: c[:2], reverse=True)
            ranked = ranked[: settings.finalists]
        scores = evaluator.score(model, [(g, k, "tune") for _, _, g, k, _ in ranked], iteration)
        scored = [(a, *r[1:]) for a, r in zip(scores, ranked)]
        accuracy, _, group, keep, ms = max(scored, key=lambda s: s[:2])
        model = evaluator.candidate(model, group, keep, iteration)
        sizes = {**sizes, group: keep}
        current_ms = ms
        state.data["trajectory"].append({"iteration": iteration, "predicted_ms": ms, "holdout_accuracy": accuracy,
                                         "group": group, "kept": keep, "proposals": len(proposals),
                                         "sizes": sizes})
        state.save(model)
        bar.n = _progress(problem, current_ms)
        bar.refresh()
        log(f"iteration {iteration}: group {group} -> {keep} channels, {ms:.3f} ms predicted, "
            f"held-out accuracy {accuracy:.2%} (best of {len(proposals)})")
    bar.close()
    evaluator.close()
    return model


def _progress(problem: _Problem, current_ms: float) -> int:
    return int(min(100, max(0, 100 * (problem.original_ms - current_ms) / (problem.original_ms - problem.target_ms))))


def _proposals(problem: _Problem, sizes: dict[int, int], goal: float, divisor: int) -> list[tuple[int, int, float]]:
    """For each group, the most channels it can keep with the model at or under ``goal`` ms (NetAdapt's
    "fewest filters to remove"), found from the latency model in one batch per group."""
    found = []
    for group in problem.prunable:
        options = list(range(sizes[group] - divisor, problem.minimum[group] - 1, -divisor))
        if sizes[group] > problem.minimum[group] and (not options or options[-1] != problem.minimum[group]):
            options.append(problem.minimum[group])
        options = [c for c in options if c >= 1]
        if not options:
            continue
        predicted = problem.latency.predict_many([{**sizes, group: c} for c in options])
        for keep, ms in zip(options, predicted):
            if ms <= goal:
                found.append((group, keep, ms))
                break
    return found


def _sizes_for(problem: _Problem, ratios: np.ndarray, divisor: int, scale: float) -> dict[int, int]:
    """Channels per group with the first ``len(ratios)`` prunable groups cut by ``ratios`` times ``scale``."""
    result = dict(problem.sizes)
    for group, ratio in zip(problem.prunable, ratios):
        kept = problem.sizes[group] * (1 - min(0.95, ratio * scale))
        result[group] = max(problem.minimum[group], int(math.floor(kept / divisor) * divisor) or divisor)
    return result


def _scaled(problem: _Problem, ratios: np.ndarray, divisor: int) -> tuple[dict[int, int], float]:
    """Channels per group from pruning ``ratios``, scaled up together until the budget is met (AMC's
    action constraint, done here for the whole vector at once)."""
    low, high = 0.0, 1.0
    while problem.latency.predict(_sizes_for(problem, ratios, divisor, high)) > problem.target_ms and high < 64:
        low, high = high, high * 2
    for _ in range(12):
        middle = (low + high) / 2
        if problem.latency.predict(_sizes_for(problem, ratios, divisor, middle)) > problem.target_ms:
            low = middle
        else:
            high = middle
    sizes = _sizes_for(problem, ratios, divisor, high)
    return sizes, problem.latency.predict(sizes)


def _episode(model: keras.Model, problem: _Problem, ratios: np.ndarray, train: ImageSet, holdout: ImageSet,
             settings: AdaptSettings) -> dict:
    """One AMC episode, whichever agent chose ``ratios``: scaled to the budget, pruned, BatchNorm statistics
    re-estimated, rewarded with the held-out accuracy (0 over the memory budget)."""
    sizes, ms = _scaled(problem, ratios, settings.divisor)
    candidate = prune_channels(model, {g: sizes[g] for g in problem.prunable}, settings.criterion)
    recalibrate_batchnorm(candidate, train, _fit_settings(settings, 0, settings.seed))
    fits = _memory_ok(candidate, settings, problem.latency.table.threads)
    return {"ratios": [round(float(r), 4) for r in ratios], "predicted_ms": ms,
            "reward": keras_accuracy(candidate, holdout) if fits else 0.0, "sizes": sizes, "fits_memory": fits}


def _best_episode(model: keras.Model, episodes: list[dict], problem: _Problem, settings: AdaptSettings,
                  state: _State) -> keras.Model:
    """The best-rewarded episode's pruned model (not fine-tuned yet), recorded as the search's one step."""
    best = max(episodes, key=lambda e: e["reward"])
    if not best.get("fits_memory", True) or best["reward"] <= 0:
        raise PipelineError(f"no AMC episode met the memory budget of {settings.memory_budget_mb} MB; "
                            "raise it or lower the latency budget")
    sizes = {int(g): c for g, c in best["sizes"].items()}
    chosen = prune_channels(model, {g: sizes[g] for g in problem.prunable}, settings.criterion)
    state.data["trajectory"].append({"iteration": 1, "predicted_ms": best["predicted_ms"],
                                     "holdout_accuracy": best["reward"], "sizes": sizes})
    return chosen


def _amc(model: keras.Model, train: ImageSet, holdout: ImageSet, problem: _Problem, settings: AdaptSettings,
         state: _State, progress: bool, log: Callable[[str], None]) -> keras.Model:
    from tqdm import tqdm

    rng = np.random.default_rng(settings.seed)
    dims = len(problem.prunable)
    mean, std = np.full(dims, 0.3), np.full(dims, 0.2)
    episodes: list[dict] = state.data.setdefault("episodes", [])
    batch = max(4, settings.episodes // 6)
    bar = tqdm(total=settings.episodes, initial=len(episodes), unit="episode", desc="amc", disable=not progress,
               leave=False)
    for done in range(0, settings.episodes, batch):
        ratios_batch = np.clip(rng.normal(mean, std, size=(batch, dims)), 0.0, 0.9)
        for number, ratios in enumerate(ratios_batch[: settings.episodes - done]):
            if done + number < len(episodes):  # resumed: scored before the interruption
                continue
            episodes.append(_episode(model, problem, ratios, train, holdout, settings))
            bar.update(1)
        elite = sorted(episodes[: done + batch], key=lambda e: -e["reward"])[: max(2, len(episodes) // 10)]
        picked = np.array([e["ratios"] for e in elite])
        mean, std = picked.mean(axis=0), np.maximum(picked.std(axis=0), 0.03)
        state.save()
        log(f"episodes {len(episodes)}: best reward {elite[0]['reward']:.2%} at {elite[0]['predicted_ms']:.3f} ms")
    bar.close()
    return _best_episode(model, episodes, problem, settings, state)


class _Net:
    """A small multilayer perceptron (ReLU hidden layers, linear output) with its own Adam optimizer: numpy,
    because the agent's networks are tiny and TensorFlow's per-call overhead would dominate."""

    def __init__(self, sizes: list[int], rng: np.random.Generator, learning_rate: float) -> None:
        self.params: list[np.ndarray] = []
        for number, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
            bound = 3e-3 if number == len(sizes) - 2 else 1 / math.sqrt(fan_in)  # DDPG's initialisation
            self.params += [rng.uniform(-bound, bound, (fan_in, fan_out)), rng.uniform(-bound, bound, fan_out)]
        self.learning_rate, self.steps = learning_rate, 0
        self.moments = [np.zeros_like(p) for p in self.params]
        self.squares = [np.zeros_like(p) for p in self.params]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Outputs, and each layer's input (what ``backward`` needs)."""
        inputs = []
        for index in range(0, len(self.params), 2):
            inputs.append(x)
            x = x @ self.params[index] + self.params[index + 1]
            if index < len(self.params) - 2:
                x = np.maximum(x, 0.0)
        return x, inputs

    def backward(self, inputs: list[np.ndarray], grad: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Gradients of the parameters and of the input, given the gradient of the outputs."""
        grads: list[np.ndarray] = [np.empty(0)] * len(self.params)
        for index in range(len(self.params) - 2, -1, -2):
            x = inputs[index // 2]
            grads[index], grads[index + 1] = x.T @ grad, grad.sum(axis=0)
            grad = grad @ self.params[index].T
            if index:
                grad = grad * (x > 0)  # x is the previous layer's ReLU output
        return grads, grad

    def step(self, grads: list[np.ndarray]) -> None:
        self.steps += 1
        for param, grad, moment, square in zip(self.params, grads, self.moments, self.squares):
            moment += 0.1 * (grad - moment)
            square += 0.001 * (grad * grad - square)
            param -= self.learning_rate * (moment / (1 - 0.9 ** self.steps)) / (
                np.sqrt(square / (1 - 0.999 ** self.steps)) + 1e-8)

    def follow(self, source: "_Net", tau: float) -> None:
        """Soft update of a target network towards ``source``."""
        for mine, theirs in zip(self.params, source.params):
            mine += tau * (theirs - mine)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(x, -60, 60)))


@dataclass(frozen=True)
class DDPGSettings:
    """The agent's hyperparameters: the paper's (tau 0.01, batch 64, truncated-normal noise from 0.5 decaying
    by 0.95 per episode after the warm-up, reward minus a moving-average baseline, no discount) but smaller
    networks (64 units, not 300) learning faster (both 1e-3, not 1e-4 and 1e-3): a search here gets tens of
    episodes, not the paper's 400. On the synthetic rewards of the tests these learned best of those tried."""

    hidden: int = 64
    actor_learning_rate: float = 1e-3
    critic_learning_rate: float = 1e-3
    tau: float = 0.01
    batch_size: int = 64
    memory: int = 2000  # transitions kept in the replay buffer
    updates_per_step: int = 1  # gradient steps per transition of an episode, after the warm-up
    noise: float = 0.5
    noise_decay: float = 0.95
    baseline_rate: float = 0.5
    warmup_share: float = 0.25  # share of the episodes with uniformly random actions (the paper: 100 of 400)


class DDPGAgent:
    """AMC's agent (He et al., 2018, Sec. 3.3): a deterministic actor maps a layer's state to its action in
    [0, 1], a critic scores (state, action); both learn from a replay buffer of transitions, every transition of
    an episode carrying that episode's final reward."""

    def __init__(self, state_dims: int, seed: int, settings: DDPGSettings = DDPGSettings()) -> None:
        self.settings, self.rng = settings, np.random.default_rng(seed)
        self.actor = _Net([state_dims, settings.hidden, settings.hidden, 1], self.rng, settings.actor_learning_rate)
        self.critic = _Net([state_dims + 1, settings.hidden, settings.hidden, 1], self.rng,
                           settings.critic_learning_rate)
        self.actor_target, self.critic_target = copy.deepcopy(self.actor), copy.deepcopy(self.critic)
        self.memory: list[tuple[np.ndarray, float, float, np.ndarray, bool]] = []
        self.baseline: float | None = None

    def policy(self, state: np.ndarray) -> float:
        return float(_sigmoid(self.actor.forward(state[None])[0])[0, 0])

    def act(self, state: np.ndarray, noise: float | None) -> float:
        """The policy's action with truncated-normal noise of width ``noise``; uniform when ``noise`` is None."""
        if noise is None:
            return float(self.rng.uniform())
        mean = self.policy(state)
        for _ in range(100):
            action = self.rng.normal(mean, noise)
            if 0.0 <= action <= 1.0:
                return float(action)
        return mean

    def remember(self, states: list[np.ndarray], actions: list[float], reward: float) -> None:
        last = len(actions) - 1
        for t, action in enumerate(actions):
            self.memory.append((states[t], action, reward, states[min(t + 1, last)], t == last))
        del self.memory[: -self.settings.memory]

    def learn(self) -> None:
        """One gradient step of the critic towards r - b + Q'(s', mu'(s')), then of the actor up the critic."""
        picked = self.rng.choice(len(self.memory), size=min(self.settings.batch_size, len(self.memory)),
                                 replace=False)
        states, actions, rewards, following, last = (np.array(column) for column in
                                                     zip(*(self.memory[i] for i in picked)))
        mean = float(rewards.mean())
        self.baseline = mean if self.baseline is None else \
            self.baseline + self.settings.baseline_rate * (mean - self.baseline)
        next_actions = _sigmoid(self.actor_target.forward(following)[0])
        next_q = self.critic_target.forward(np.hstack([following, next_actions]))[0][:, 0]
        target = rewards - self.baseline + np.where(last, 0.0, next_q)
        q, inputs = self.critic.forward(np.hstack([states, actions[:, None]]))
        self.critic.step(self.critic.backward(inputs, 2 * (q - target[:, None]) / len(picked))[0])
        logits, actor_inputs = self.actor.forward(states)
        chosen = _sigmoid(logits)
        q, inputs = self.critic.forward(np.hstack([states, chosen]))
        grad_action = self.critic.backward(inputs, -np.ones_like(q) / len(picked))[1][:, -1:]
        self.actor.step(self.actor.backward(actor_inputs, grad_action * chosen * (1 - chosen))[0])
        self.actor_target.follow(self.actor, self.settings.tau)
        self.critic_target.follow(self.critic, self.settings.tau)


def ddpg_search(layers: np.ndarray, progress: Callable[[np.ndarray], np.ndarray],
                evaluate: Callable[[np.ndarray], dict], episodes: int, seed: int, history: list[dict] | None = None,
                ratio_max: float = 0.9, settings: DDPGSettings = DDPGSettings(),
                on_episode: Callable[[list[dict]], None] = lambda _: None) -> list[dict]:
    """AMC's search: per episode, one pruning ratio in [0, ``ratio_max``] per layer, in order, each from the
    state (``layers[t]``, the layer's own features; ``progress(ratios so far)``, e.g. the latency cut so far;
    the previous action); ``evaluate(ratios)`` returns the episode's record with its ``reward``.

    ``history`` holds the episodes of an interrupted search (each record keeps its ``actions``): they are
    replayed into the agent, not evaluated again, so a resumed search goes on as if never stopped. It is
    appended to in place, ``on_episode(history)`` called after each new episode; returns it."""
    history = [] if history is None else history
    warmup = max(1, round(episodes * settings.warmup_share))
    count = len(layers)
    agent = DDPGAgent(layers.shape[1] + len(progress(np.zeros(0))) + 1, seed, settings)
    for episode in range(episodes):
        noise = None if episode < warmup else settings.noise * settings.noise_decay ** (episode - warmup)
        replayed = history[episode] if episode < len(history) else None
        states: list[np.ndarray] = []
        actions: list[float] = []
        for t in range(count):
            states.append(np.concatenate([layers[t], progress(ratio_max * np.array(actions)),
                                          [actions[-1] if actions else 0.0]]))
            action = agent.act(states[-1], noise)  # drawn even when replayed: the same random stream
            actions.append(float(replayed["actions"][t]) if replayed else action)
        record = replayed or {**evaluate(ratio_max * np.array(actions)), "actions": actions, "noise": noise}
        agent.remember(states, actions, record["reward"])
        if episode >= warmup:
            for _ in range(count * settings.updates_per_step):
                agent.learn()
        if replayed is None:
            history.append(record)
            on_episode(history)
    return history


def _ddpg_layers(model: keras.Model, problem: _Problem) -> np.ndarray:
    """AMC's per-layer embedding, one row per prunable group in graph order: its index, channels, the first
    producer's input channels, kernel, stride and output resolution, the predicted latency this group carries
    (what pruning it to the minimum saves) and the groups after it carry; each column scaled to [0, 1]."""
    groups = {g.id: g for g in channel_groups(model)}
    layers = {layer.name: layer for layer in model.submodules if isinstance(layer, keras.layers.Layer)}
    alone = problem.latency.predict_many([{g: problem.minimum[g]} for g in problem.prunable])
    carried = [(problem.original_ms - ms) / problem.original_ms for ms in alone]
    rows = []
    for index, group in enumerate(problem.prunable):
        producer = next((layers[n] for n in groups[group].producers if n in layers), None)
        try:
            in_shape, out_shape = producer.input_shape, producer.output_shape
        except (AttributeError, RuntimeError):  # no producer, or one called more than once
            in_shape, out_shape = (), ()
        resolution = out_shape[1] if len(out_shape) == 4 and out_shape[1] else 1
        rows.append([index, problem.sizes[group], in_shape[-1] if in_shape and in_shape[-1] else 0,
                     getattr(producer, "kernel_size", (1,))[0], getattr(producer, "strides", (1,))[0], resolution,
                     carried[index], sum(carried[index + 1:])])
    table = np.array(rows, dtype=float)
    low, span = table.min(axis=0), np.ptp(table, axis=0)
    return (table - low) / np.where(span > 0, span, 1.0)


def _ddpg_progress(problem: _Problem, ratios: np.ndarray, divisor: int) -> np.ndarray:
    """The latency part of the state: predicted latency with the groups so far cut by ``ratios`` (before the
    scaling to the budget), the latency cut so far and the latency still to cut, as shares of the original."""
    ms = problem.latency.predict(_sizes_for(problem, ratios, divisor, 1.0))
    original = problem.original_ms
    return np.array([ms / original, (original - ms) / original, (ms - problem.target_ms) / original])


def _amc_ddpg(model: keras.Model, train: ImageSet, holdout: ImageSet, problem: _Problem, settings: AdaptSettings,
              state: _State, progress: bool, log: Callable[[str], None]) -> keras.Model:
    from tqdm import tqdm

    episodes: list[dict] = state.data.setdefault("episodes", [])
    bar = tqdm(total=settings.episodes, initial=len(episodes), unit="episode", desc="amc-ddpg",
               disable=not progress, leave=False)

    def saved(history: list[dict]) -> None:
        state.save()
        bar.update(1)
        if len(history) % 10 == 0 or len(history) == settings.episodes:
            best = max(history, key=lambda e: e["reward"])
            log(f"episodes {len(history)}: best reward {best['reward']:.2%} at {best['predicted_ms']:.3f} ms")

    ddpg_search(_ddpg_layers(model, problem), lambda ratios: _ddpg_progress(problem, ratios, settings.divisor),
                lambda ratios: _episode(model, problem, ratios, train, holdout, settings), settings.episodes,
                settings.seed, episodes, on_episode=saved)
    bar.close()
    return _best_episode(model, episodes, problem, settings, state)


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = report["trajectory"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([s["predicted_ms"] for s in steps], [100 * s["holdout_accuracy"] for s in steps], "o-", label="iterations")
    ax.axvline(report["target_ms"], color="grey", linestyle="--", label="budget")
    if "measured_after_ms" in report:
        ax.plot([report["measured_after_ms"]], [100 * report["holdout_accuracy_after"]], "r*", markersize=12,
                label="final (measured)")
    ax.set_xlabel(f"int8 latency, ms ({report['target']}, {report['threads']} thread(s))")
    ax.set_ylabel("held-out accuracy, %")
    ax.set_title(f"{report['strategy']}: {report['model']}")
    ax.invert_xaxis()
    ax.legend()
    save_figure(fig, path)


def adapt_file(model_path: str | Path, data: str, table_path: str | Path, settings: AdaptSettings, out: str | Path,
               validation_split: float = 0.1, target: str | None = None, threads: int | None = None,
               trust_code: bool = False, measure: bool = True, progress: bool = True,
               log: Callable[[str], None] = lambda _: None) -> dict:
    """``tflpipe adapt``: a saved model and an image folder in, ``model_adapted.h5``, ``report.json`` and
    ``trajectory.png`` out; the int8 latency of both models measured here when the table is this CPU's."""
    from pipeline.core.data import load_dataset, split
    from pipeline.latency.table import load_table
    from pipeline.stages.convert import load_keras_model

    settings.check()
    table = load_table(table_path)
    if target is not None and table.target != target:
        raise PipelineError(f"the latency table describes {table.target}, not {target}")
    model = load_keras_model(model_path, trust_code)
    size = int(model.input_shape[1])
    train, holdout = split(load_dataset(data, size, progress=progress), validation_split, settings.seed)
    if model.output_shape[-1] != len(train.class_names):
        raise PipelineError(f"{Path(model_path).name} predicts {model.output_shape[-1]} classes but {data} has "
                            f"{len(train.class_names)}")
    out = Path(out)
    adapted, report = adapt(model, train, holdout, table, settings, out, threads, progress, log)
    save_keras_model(adapted, out / "model_adapted.h5")
    report = {"model": Path(model_path).name, **report}
    if measure and table.device == "cpu":
        from pipeline.latency.measure import LocalMeasurer

        timer = LocalMeasurer(threads=table.threads, min_seconds=0.5)
        before, after = full_int8_flatbuffer(model), full_int8_flatbuffer(adapted)
        try:
            pairs = [(timer.time(before), timer.time(after)) for _ in range(3)]  # alternating: the CPU drifts
        except PipelineError as exc:  # e.g. XNNPACK refusing a degenerate (random-calibrated) layer
            report["measurement_failed"] = str(exc)
        else:
            report["measured_before_ms"] = float(np.median([p[0] for p in pairs]))
            report["measured_after_ms"] = float(np.median([p[1] for p in pairs]))
            report["predicted_over_measured"] = report["predicted_ms"] / report["measured_after_ms"]
            if abs(report["predicted_over_measured"] - 1) > STALE_TABLE_HINT:
                log(f"measured {1 / report['predicted_over_measured']:.2f}x the table's prediction: a table from "
                    f"another machine does that (`tflpipe latency check --table {table_path}` tells)")
    if settings.memory_budget_mb is not None:
        report["predicted_memory_mb"] = predicted_memory_mb(adapted, table.threads)
    write_json(out / "report.json", report)
    _plot(report, out / "trajectory.png")
    return report
