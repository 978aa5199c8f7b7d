"""The architecture search space: MobileNet v2/v3-style inverted-residual stages, as in MnasNet (Tan et al.,
CVPR 2019), ProxylessNAS (Cai et al., ICLR 2019) and Once-for-All (Cai et al., ICLR 2020).

A net is a stem (3x3 conv, stride 2), seven stages of inverted-residual blocks and a 1x1 head before the
classifier. The first stage is MobileNet v2's fixed single block (no expansion, 3x3); for each of the six
others the search picks a depth (1-4 blocks), a width multiplier of the stage's base width, squeeze-excite
on or off and ReLU6 or hard-swish, and for each of its blocks a kernel (3, 5, 7) and an expansion (3, 4, 6);
the input resolution is searched too. Layer names are stable (``s{stage}b{block}_...``), so weights of a
larger net map onto a smaller one by name and slice (the supernet's weight sharing).

Points of the space (``ZOO_POINTS``): MobileNet v2 α=1.0 exactly (every layer shape equal, checked by
the tests); MnasNet-B1, MnasNet-A1 and EfficientNet-Lite0 are near: their stage widths 40/80/112/192 are
base 32/64/96/160 times 1.25/1.25/1.17/1.2, and MnasNet-A1's first stage is a separable conv without
expansion, and MnasNet-A1 gates squeeze-excite with a sigmoid (``differences`` lists what two points differ in).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import PipelineError

# (base width, base depth, first stride) of MobileNet v2's seven stages; the first stage is fixed.
BASE_STAGES = ((16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))
STEM, HEAD = 32, 1280
ACTIVATIONS = ("relu6", "hard_swish")


@dataclass(frozen=True)
class Block:
    kernel: int
    expansion: int


@dataclass(frozen=True)
class Stage:
    width: float  # multiplier of the stage's base width
    se: bool
    act: str
    blocks: tuple[Block, ...]

    @property
    def depth(self) -> int:
        return len(self.blocks)


@dataclass(frozen=True)
class Arch:
    """One net of the space; ``stages`` are the six searched ones (MobileNet v2's stages 2-7)."""

    resolution: int
    stages: tuple[Stage, ...]

    def to_json(self) -> dict:
        return {"resolution": self.resolution,
                "stages": [{"width": s.width, "se": s.se, "act": s.act,
                            "blocks": [[b.kernel, b.expansion] for b in s.blocks]} for s in self.stages]}

    @classmethod
    def from_json(cls, raw: Any) -> "Arch":
        try:
            return cls(int(raw["resolution"]), tuple(
                Stage(float(s["width"]), bool(s["se"]), str(s["act"]),
                      tuple(Block(int(k), int(e)) for k, e in s["blocks"])) for s in raw["stages"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise PipelineError(f"not an architecture of the search space ({type(exc).__name__}: {exc})") from None

    @property
    def key(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def channels(self) -> list[int]:
        """Output channels of each searched stage."""
        return [_divisible(base * s.width) for (base, _, _), s in zip(BASE_STAGES[1:], self.stages)]

    def describe(self) -> str:
        parts = [f"{self.resolution}px"]
        for number, (stage, width) in enumerate(zip(self.stages, self.channels()), start=2):
            kernels = "".join(str(b.kernel) for b in stage.blocks)
            expansions = "".join(str(b.expansion) for b in stage.blocks)
            parts.append(f"s{number}:{width}c k{kernels} e{expansions}{' se' if stage.se else ''}"
                         f"{' hs' if stage.act == 'hard_swish' else ''}")
        return " | ".join(parts)


def _divisible(value: float) -> int:
    from keras_models._common import make_divisible

    return make_divisible(value, 8)


def se_channels(cin: int, expansion: int) -> int:
    """Squeeze-excite's hidden width in a block of ``cin`` input channels and expansion ``expansion``."""
    return max(8, _divisible(cin * expansion / 4))


@dataclass(frozen=True)
class SearchSpace:
    """The choices; defaults are the issue's (kernels 3/5/7, expansions 3/4/6, depths 1-4)."""

    resolutions: tuple[int, ...] = (32, 40, 48, 56, 64)
    kernels: tuple[int, ...] = (3, 5, 7)
    expansions: tuple[int, ...] = (3, 4, 6)
    depths: tuple[int, ...] = (1, 2, 3, 4)
    widths: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25)
    se: tuple[bool, ...] = (False, True)
    acts: tuple[str, ...] = ACTIVATIONS
    name: str = field(default="mobile-ir", compare=True)

    def check(self) -> "SearchSpace":
        problems = [f"{what} must not be empty" for what, values in (
            ("resolutions", self.resolutions), ("kernels", self.kernels), ("expansions", self.expansions),
            ("depths", self.depths), ("widths", self.widths), ("se", self.se), ("acts", self.acts)) if not values]
        problems += [f"kernel {k} must be odd and 1-9" for k in self.kernels if k % 2 == 0 or not 1 <= k <= 9]
        problems += [f"depth {d} must be 1-8" for d in self.depths if not 1 <= d <= 8]
        problems += [f"resolution {r} must be 32-512" for r in self.resolutions if not 32 <= r <= 512]
        problems += [f"unknown activation {a!r}" for a in self.acts if a not in ACTIVATIONS]
        problems += [f"width {w} must be in (0, 4]" for w in self.widths if not 0 < w <= 4]
        if problems:
            raise PipelineError(f"search space {self.name}: {'; '.join(problems)}")
        return self

    def to_json(self) -> dict:
        return {"name": self.name, "resolutions": list(self.resolutions), "kernels": list(self.kernels),
                "expansions": list(self.expansions), "depths": list(self.depths), "widths": list(self.widths),
                "se": list(self.se), "acts": list(self.acts)}

    @classmethod
    def from_json(cls, raw: Any) -> "SearchSpace":
        try:
            return cls(tuple(int(r) for r in raw["resolutions"]), tuple(int(k) for k in raw["kernels"]),
                       tuple(int(e) for e in raw["expansions"]), tuple(int(d) for d in raw["depths"]),
                       tuple(float(w) for w in raw["widths"]), tuple(bool(s) for s in raw["se"]),
                       tuple(str(a) for a in raw["acts"]), str(raw.get("name", "custom"))).check()
        except (KeyError, TypeError, ValueError) as exc:
            raise PipelineError(f"not a search space description ({type(exc).__name__}: {exc})") from None

    @classmethod
    def from_file(cls, path: str | Path | None) -> "SearchSpace":
        """The space of a JSON file (``--space``); the default space without one."""
        if path is None:
            return cls()
        try:
            return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PipelineError(f"{path} is not a JSON search space ({type(exc).__name__})") from None

    def size(self) -> int:
        """How many distinct nets the space holds."""
        per_block = len(self.kernels) * len(self.expansions)
        per_stage = len(self.widths) * len(self.se) * len(self.acts) * sum(per_block ** d for d in self.depths)
        return len(self.resolutions) * per_stage ** (len(BASE_STAGES) - 1)

    def contains(self, arch: Arch) -> bool:
        return (arch.resolution in self.resolutions and len(arch.stages) == len(BASE_STAGES) - 1 and all(
            s.width in self.widths and s.se in self.se and s.act in self.acts and s.depth in self.depths
            and all(b.kernel in self.kernels and b.expansion in self.expansions for b in s.blocks)
            for s in arch.stages))

    def sample(self, rng: np.random.Generator) -> Arch:
        def pick(values):
            return values[int(rng.integers(len(values)))]

        stages = []
        for _ in BASE_STAGES[1:]:
            depth = pick(self.depths)
            stages.append(Stage(pick(self.widths), pick(self.se), pick(self.acts),
                                tuple(Block(pick(self.kernels), pick(self.expansions)) for _ in range(depth))))
        return Arch(pick(self.resolutions), tuple(stages))

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """One choice changed at random (regularized evolution's mutation, Real et al. 2019)."""
        for _ in range(20):
            child = self._mutate_once(arch, rng)
            if child != arch:
                return child
        return self.sample(rng)

    def _mutate_once(self, arch: Arch, rng: np.random.Generator) -> Arch:
        def pick(values):
            return values[int(rng.integers(len(values)))]

        what = pick(("resolution", "depth", "width", "se", "act", "kernel", "expansion"))
        if what == "resolution":
            return Arch(pick(self.resolutions), arch.stages)
        index = int(rng.integers(len(arch.stages)))
        stage = arch.stages[index]
        if what == "depth":
            depth = pick(self.depths)
            blocks = stage.blocks[:depth] + tuple(Block(pick(self.kernels), pick(self.expansions))
                                                  for _ in range(depth - stage.depth))
            stage = Stage(stage.width, stage.se, stage.act, blocks)
        elif what == "width":
            stage = Stage(pick(self.widths), stage.se, stage.act, stage.blocks)
        elif what == "se":
            stage = Stage(stage.width, pick(self.se), stage.act, stage.blocks)
        elif what == "act":
            stage = Stage(stage.width, stage.se, pick(self.acts), stage.blocks)
        else:
            number = int(rng.integers(stage.depth))
            old = stage.blocks[number]
            new = Block(pick(self.kernels), old.expansion) if what == "kernel" else Block(old.kernel,
                                                                                          pick(self.expansions))
            stage = Stage(stage.width, stage.se, stage.act,
                          stage.blocks[:number] + (new,) + stage.blocks[number + 1:])
        return Arch(arch.resolution, arch.stages[:index] + (stage,) + arch.stages[index + 1:])

    def largest(self) -> Arch:
        stage = [Stage(max(self.widths), max(self.se), self.acts[-1],
                       tuple(Block(max(self.kernels), max(self.expansions)) for _ in range(max(self.depths))))]
        return Arch(max(self.resolutions), tuple(stage * (len(BASE_STAGES) - 1)))

    def smallest(self) -> Arch:
        stage = [Stage(min(self.widths), False if False in self.se else True, self.acts[0],
                       tuple(Block(min(self.kernels), min(self.expansions)) for _ in range(min(self.depths))))]
        return Arch(min(self.resolutions), tuple(stage * (len(BASE_STAGES) - 1)))


def build(arch: Arch, classes: int, dropout: float = 0.0):
    """The tf_keras model of ``arch`` (inputs in [-1, 1], as every zoo net), built from the zoo's blocks."""
    from keras_models._blocks import conv_bn, depthwise_bn, mbconv
    from keras_models._common import classifier_head, model_input

    if not 2 <= classes:
        raise PipelineError(f"a classifier needs at least 2 classes, got {classes}")
    inputs = model_input((arch.resolution, arch.resolution, 3), arch.resolution)
    x = conv_bn(inputs, STEM, 3, "stem", strides=2, act="relu6")
    # Stage 1 (fixed, as MobileNet v2): depthwise 3x3 + linear projection to 16 channels.
    x = depthwise_bn(x, 3, "s1b1_dwconv", act="relu6")
    x = conv_bn(x, BASE_STAGES[0][0], 1, "s1b1_project", act=None)
    for number, ((_, _, stride), stage, width) in enumerate(zip(BASE_STAGES[1:], arch.stages, arch.channels()),
                                                             start=2):
        for index, block in enumerate(stage.blocks):
            se = se_channels(x.shape[-1], block.expansion) if stage.se else 0
            x = mbconv(x, block.expansion, width, block.kernel, stride if index == 0 else 1, f"s{number}b{index + 1}",
                       act=stage.act, se_reduced=se, se_gate="hard_sigmoid")
    x = conv_bn(x, HEAD, 1, "head", act=arch.stages[-1].act)
    x = classifier_head(x, True, None, classes, "softmax", dropout)
    from pipeline.core.tf_env import keras

    return keras.Model(inputs, x, name=f"searched_{arch.resolution}")


def differences(a: Arch, b: Arch) -> list[str]:
    """The choices in which two architectures differ, readable ("s3 width 1.0 -> 1.25", ...)."""
    found = [f"resolution {a.resolution} -> {b.resolution}"] if a.resolution != b.resolution else []
    for number, (x, y) in enumerate(zip(a.stages, b.stages), start=2):
        for what in ("width", "se", "act", "depth"):
            if getattr(x, what) != getattr(y, what):
                found.append(f"s{number} {what} {getattr(x, what)} -> {getattr(y, what)}")
        for index, (p, q) in enumerate(zip(x.blocks, y.blocks), start=1):
            if p != q:
                found.append(f"s{number}b{index} k{p.kernel}e{p.expansion} -> k{q.kernel}e{q.expansion}")
    return found


def _uniform(resolution: int, widths, depths, kernels, expansions, se=False, act="relu6") -> Arch:
    stages = []
    for width, depth, kernel, expansion, s in zip(widths, depths, kernels, expansions,
                                                  se if isinstance(se, tuple) else (se,) * 6):
        stages.append(Stage(width, s, act, tuple(Block(kernel, expansion) for _ in range(depth))))
    return Arch(resolution, tuple(stages))


# Zoo nets as points of (or near) the space, at 224 px; stage widths as multipliers of the base widths.
ZOO_POINTS = {
    "mobilenet_v2": _uniform(224, (1.0,) * 6, (2, 3, 4, 3, 3, 1), (3,) * 6, (6,) * 6),
    "mnasnet_b1": _uniform(224, (1.0, 1.25, 1.25, 1.0, 1.25, 1.0), (3, 3, 3, 2, 4, 1), (3, 5, 5, 3, 5, 3),
                           (3, 3, 6, 6, 6, 6)),
    "mnasnet_a1": _uniform(224, (1.0, 1.25, 1.25, 1.25, 1.25, 1.0), (2, 3, 4, 2, 3, 1), (3, 5, 3, 3, 5, 3),
                           (6, 3, 6, 6, 6, 6), se=(False, True, False, True, True, False)),
    "efficientnet_lite0": _uniform(224, (1.0, 1.25, 1.25, 1.25, 1.25, 1.0), (2, 2, 3, 3, 4, 1), (3, 5, 3, 5, 5, 3),
                                   (6,) * 6),
}
