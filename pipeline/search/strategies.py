"""Search strategies over the space: each proposes architectures and learns from their rewards.

- ``random``: uniform samples, the baseline every other strategy must beat at equal evaluations;
- ``evolution``: regularized evolution (Real et al., AAAI 2019): tournaments of ``sample`` from a
  population of ``population``, the winner mutated, the oldest member retired;
- ``reinforce``: MnasNet's policy gradient with a simpler controller: one categorical distribution per
  decision (resolution; per stage depth, width, SE, activation; per block kernel and expansion), trained
  with REINFORCE against an exponential-moving-average baseline.

All are ask/tell objects: ``ask(rng)`` returns the next architecture, ``tell(arch, reward)`` reports its
reward. Their state is rebuilt from the study's finished trials on resume (``replay``).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.search.space import BASE_STAGES, Arch, Block, SearchSpace, Stage

STRATEGIES = ("random", "evolution", "reinforce")
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

    def tell(self, arch: Arch, reward: float) -> None:
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

    def tell(self, arch: Arch, reward: float) -> None:
        self.members.append((arch, reward))
        if len(self.members) > self.population:
            self.members.popleft()  # the oldest dies, however good: regularization by age


class Reinforce:
    """A factorized policy over the space's decisions, trained with REINFORCE (Williams, 1992)."""

    def __init__(self, space: SearchSpace, learning_rate: float = 0.2, baseline_decay: float = 0.9) -> None:
        self.space, self.learning_rate, self.decay = space, learning_rate, baseline_decay
        self.choices = self._decisions()
        self.logits = [np.zeros(len(options)) for _, options in self.choices]
        self.baseline: float | None = None
        self.last: dict[str, list[int]] = {}

    def _decisions(self) -> list[tuple[str, tuple]]:
        s, decisions = self.space, [("resolution", self.space.resolutions)]
        for stage in range(2, len(BASE_STAGES) + 1):
            decisions += [(f"s{stage}.depth", s.depths), (f"s{stage}.width", s.widths), (f"s{stage}.se", s.se),
                          (f"s{stage}.act", s.acts)]
            decisions += [(f"s{stage}b{b}.{what}", values) for b in range(1, max(s.depths) + 1)
                          for what, values in (("kernel", s.kernels), ("expansion", s.expansions))]
        return decisions

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
        value = {name: options[p] for (name, options), p in zip(self.choices, picks)}
        stages = []
        for stage in range(2, len(BASE_STAGES) + 1):
            depth = value[f"s{stage}.depth"]
            blocks = tuple(Block(value[f"s{stage}b{b}.kernel"], value[f"s{stage}b{b}.expansion"])
                           for b in range(1, depth + 1))
            stages.append(Stage(value[f"s{stage}.width"], value[f"s{stage}.se"], value[f"s{stage}.act"], blocks))
        return Arch(value["resolution"], tuple(stages))

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

    def tell(self, arch: Arch, reward: float) -> None:
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
    raise PipelineError(f"unknown search strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
