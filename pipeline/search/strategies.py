"""Search strategies over the space: each proposes architectures and learns from their rewards.

- ``random``: uniform samples, the baseline every other strategy must beat at equal evaluations;
- ``evolution``: regularized evolution (Real et al., AAAI 2019): tournaments of ``sample`` from a
  population of ``population``, the winner mutated, the oldest member retired;
- ``nsga2``: NSGA-II (Deb et al., 2002) through Optuna's sampler, on two objectives at once (accuracy up,
  predicted latency down) instead of one reward: it searches the Pareto front itself;
- ``reinforce``: MnasNet's policy gradient with a simpler controller: one categorical distribution per
  decision (resolution; per stage depth, width, SE, activation; per block kernel and expansion), trained
  with REINFORCE against an exponential-moving-average baseline;
- ``gradient``: ProxylessNAS through a Once-for-All supernet's weights (:mod:`pipeline.search.gradient`).

All are ask/tell objects: ``ask(rng)`` returns the next architecture, ``tell(arch, reward, objectives)``
reports its reward and (accuracy, latency), None for a net that was not trained. Their state is rebuilt from the study's finished trials on resume (``replay``).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.search.space import BASE_STAGES, Arch, Block, SearchSpace, Stage

STRATEGIES = ("random", "evolution", "reinforce", "nsga2", "gradient")  # gradient: pipeline/search/gradient.py
MAX_DEPTH_SLOTS = 8


def mnasnet_reward(accuracy: float, latency_ms: float, target_ms: float, w: float = -0.07,
                   hard: bool = False) -> float:
    """MnasNet's objective ACC(m) x [LAT(m)/T]^w; with ``hard``, 0 for a net over the target."""
    if hard:
        return accuracy if latency_ms <= target_ms else 0.0
    return accuracy * (latency_ms / target_ms) ** w


class RandomSearch:
    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def ask(self, rng: np.random.Generator) -> Arch:
        return self.space.sample(rng)

    def tell(self, arch: Arch, reward: float, objectives: tuple[float, float] | None = None) -> None:
        pass


@dataclass
class RegularizedEvolution:
    space: SearchSpace
    population: int = 16
    sample: int = 4
    members: deque = field(default_factory=deque)

    def ask(self, rng: np.random.Generator) -> Arch:
        if len(self.members) < self.population:
            return self.space.sample(rng)
        picks = rng.choice(len(self.members), size=min(self.sample, len(self.members)), replace=False)
        parent = max((self.members[i] for i in picks), key=lambda m: m[1])[0]
        return self.space.mutate(parent, rng)

    def tell(self, arch: Arch, reward: float, objectives: tuple[float, float] | None = None) -> None:
        self.members.append((arch, reward))
        if len(self.members) > self.population:
            self.members.popleft()  # the oldest dies, however good: regularization by age


def decisions(space: SearchSpace) -> list[tuple[str, tuple]]:
    """Every choice the space offers, named (``s3.depth``, ``s3b2.kernel``, ...), with its options."""
    found = [("resolution", space.resolutions)]
    for stage in range(2, len(BASE_STAGES) + 1):
        found += [(f"s{stage}.depth", space.depths), (f"s{stage}.width", space.widths), (f"s{stage}.se", space.se),
                  (f"s{stage}.act", space.acts)]
        found += [(f"s{stage}b{b}.{what}", values) for b in range(1, max(space.depths) + 1)
                  for what, values in (("kernel", space.kernels), ("expansion", space.expansions))]
    return found


def arch_of(value: dict) -> Arch:
    """The architecture of a full set of decisions (blocks beyond a stage's depth are ignored)."""
    stages = []
    for stage in range(2, len(BASE_STAGES) + 1):
        depth = value[f"s{stage}.depth"]
        blocks = tuple(Block(value[f"s{stage}b{b}.kernel"], value[f"s{stage}b{b}.expansion"])
                       for b in range(1, depth + 1))
        stages.append(Stage(value[f"s{stage}.width"], value[f"s{stage}.se"], value[f"s{stage}.act"], blocks))
    return Arch(value["resolution"], tuple(stages))


class NSGA2:
    """NSGA-II on (accuracy, predicted latency) through Optuna's ask/tell interface; each decision is a
    categorical parameter (options by index, so booleans and floats stay exact)."""

    def __init__(self, space: SearchSpace, population: int = 16, seed: int = 0) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.choices = decisions(space)
        self.study = optuna.create_study(directions=["maximize", "minimize"],
                                         sampler=optuna.samplers.NSGAIISampler(population_size=population, seed=seed))
        self.pending: dict[str, list] = {}

    def ask(self, rng: np.random.Generator) -> Arch:
        trial = self.study.ask()
        value = {name: options[trial.suggest_categorical(name, list(range(len(options))))]
                 for name, options in self.choices}
        arch = arch_of(value)
        self.pending.setdefault(arch.key, []).append(trial)
        return arch

    def tell(self, arch: Arch, reward: float, objectives: tuple[float, float] | None = None) -> None:
        import optuna

        trials = self.pending.get(arch.key)
        if not trials:  # a finished trial replayed on resume: teach the sampler through a fixed trial
            self._replay(arch, objectives)
            return
        trial = trials.pop(0)
        if objectives is None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, list(objectives))

    def _replay(self, arch: Arch, objectives: tuple[float, float] | None) -> None:
        import optuna

        if objectives is None:
            return
        params, distributions, value = {}, {}, {"resolution": arch.resolution}
        for number, stage in enumerate(arch.stages, start=2):
            value.update({f"s{number}.depth": stage.depth, f"s{number}.width": stage.width,
                          f"s{number}.se": stage.se, f"s{number}.act": stage.act})
            for b, block in enumerate(stage.blocks, start=1):
                value[f"s{number}b{b}.kernel"], value[f"s{number}b{b}.expansion"] = block.kernel, block.expansion
        for name, options in self.choices:
            params[name] = options.index(value[name]) if value.get(name) in options else 0
            distributions[name] = optuna.distributions.CategoricalDistribution(list(range(len(options))))
        self.study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                       values=list(objectives)))


class Reinforce:
    """A factorized policy over the space's decisions, trained with REINFORCE (Williams, 1992)."""

    def __init__(self, space: SearchSpace, learning_rate: float = 0.2, baseline_decay: float = 0.9) -> None:
        self.space, self.learning_rate, self.decay = space, learning_rate, baseline_decay
        self.choices = decisions(space)
        self.logits = [np.zeros(len(options)) for _, options in self.choices]
        self.baseline: float | None = None
        self.last: dict[str, list[int]] = {}


    def _probabilities(self, index: int) -> np.ndarray:
        z = np.exp(self.logits[index] - self.logits[index].max())
        return z / z.sum()

    def ask(self, rng: np.random.Generator) -> Arch:
        picks = [int(rng.choice(len(options), p=self._probabilities(i))) for i, (_, options) in
                 enumerate(self.choices)]
        arch = self._arch(picks)
        self.last[arch.key] = picks
        return arch

    def _arch(self, picks: list[int]) -> Arch:
        return arch_of({name: options[p] for (name, options), p in zip(self.choices, picks)})

    def picks_of(self, arch: Arch) -> list[int]:
        """The decision indices that produce ``arch`` (blocks beyond its depth: their most likely value)."""
        if arch.key in self.last:
            return self.last[arch.key]
        value = {"resolution": arch.resolution}
        for number, stage in enumerate(arch.stages, start=2):
            value.update({f"s{number}.depth": stage.depth, f"s{number}.width": stage.width,
                          f"s{number}.se": stage.se, f"s{number}.act": stage.act})
            for b, block in enumerate(stage.blocks, start=1):
                value[f"s{number}b{b}.kernel"], value[f"s{number}b{b}.expansion"] = block.kernel, block.expansion
        picks = []
        for index, (name, options) in enumerate(self.choices):
            picks.append(options.index(value[name]) if name in value and value[name] in options
                         else int(np.argmax(self.logits[index])))
        return picks

    def tell(self, arch: Arch, reward: float, objectives: tuple[float, float] | None = None) -> None:
        picks = self.picks_of(arch)
        self.baseline = reward if self.baseline is None else self.decay * self.baseline + (1 - self.decay) * reward
        advantage = reward - self.baseline
        used = self._used(picks)
        for index, pick in enumerate(picks):
            if index not in used:
                continue  # blocks beyond the sampled depth did not shape this net
            gradient = -self._probabilities(index)
            gradient[pick] += 1.0
            self.logits[index] += self.learning_rate * advantage * gradient
        self.last.pop(arch.key, None)

    def _used(self, picks: list[int]) -> set[int]:
        used = set()
        depth = 0
        for index, (name, options) in enumerate(self.choices):
            if name.endswith(".depth"):
                depth = options[picks[index]]
            if "b" in name.split(".")[0][2:]:
                block = int(name.split(".")[0].split("b")[1])
                if block > depth:
                    continue
            used.add(index)
        return used


def make_strategy(name: str, space: SearchSpace):
    if name == "random":
        return RandomSearch(space)
    if name == "evolution":
        return RegularizedEvolution(space)
    if name == "reinforce":
        return Reinforce(space)
    if name == "nsga2":
        return NSGA2(space)
    raise PipelineError(f"unknown search strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
