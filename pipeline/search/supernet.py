"""Once-for-All weight sharing (Cai et al., ICLR 2020): one supernet trained once, any subnet taken from it.

The supernet holds the weights of the search space's largest net; a subnet uses a slice of them:

- elastic kernel: a depthwise kxk kernel is the centre of the next larger one through a learned
  (k*k x k*k) transformation per layer (OFA's kernel transformation matrices), 7 -> 5 -> 3;
- elastic depth: the first d blocks of each stage;
- elastic width: the first ``e * cin`` channels of each expansion, after they are sorted by importance
  (L1 norm of the expansion filters; OFA's channel sorting) when width becomes elastic, and the first
  channels of each stage's output;
- operator choices of the space that OFA does not have: squeeze-excite skipped or applied, ReLU6 or
  hard-swish, on the same weights;
- elastic resolution: each batch is resized to a sampled input size.

Training is progressive shrinking in four phases: ``largest`` (the largest net alone, on the labels), then
``kernel`` (kernels, squeeze-excite and activation sampled), ``depth`` (depths too) and ``width`` (widths
too). From the second phase on each step follows the sandwich rule with in-place distillation (Yu & Huang,
ICCV 2019; BigNAS, Yu et al., ECCV 2020): the largest subnet learns from the labels and ``subnets`` sampled
ones learn from its predictions.

Every choice of a subnet is one int32 vector (:func:`encode`), so one traced graph, with dynamic shapes,
trains every sampled subnet; the largest subnet's code is known while the graph is built, so its forward and
backward pass have static shapes and no branches, and choices the space does not make (one activation, one
resolution, ...) are fixed in the graph too. Data-parallel training over Ray Train workers:
:func:`train_supernet_data_parallel`. BatchNorm always normalizes with batch
statistics in the supernet (one fused op, as tf_keras trains); an extracted
subnet (:func:`extract`) is a standalone tf_keras model of :func:`pipeline.search.space.build` whose
moving statistics are recalibrated on training images, as OFA does, before it is evaluated.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np

from pipeline.core.data import ImageSet
from pipeline.core.errors import PipelineError
from pipeline.core.fsutil import atomic_path, write_json
from pipeline.core.tf_env import keras, tf
from pipeline.search.options import PHASES, SupernetSettings
from pipeline.search.space import (
    BASE_STAGES,
    HEAD,
    STEM,
    Arch,
    Block,
    SearchSpace,
    Stage,
    _divisible,
    build,
    se_channels,
)

WEIGHTS_FILE, STATE_FILE = "supernet.npz", "supernet.json"
OPTIMIZER_PREFIX = "optimizer/"  # keys of the optimizer's state in WEIGHTS_FILE
_EPS = 1e-3  # the zoo's BatchNorm epsilon


def _stage_io(space: SearchSpace) -> list[tuple[int, int, int]]:
    """(input channels, output channels, stride) of each searched stage at the space's widest widths."""
    widest = max(space.widths)
    found, cin = [], BASE_STAGES[0][0]
    for base, _, stride in BASE_STAGES[1:]:
        cout = _divisible(base * widest)
        found.append((cin, cout, stride))
        cin = cout
    return found


def _se_channels(cin, expansion):
    """:func:`pipeline.search.space.se_channels` on tensors (the width of a subnet the graph is given)."""
    value = tf.cast(cin * expansion, tf.float32) / 4.0
    rounded = tf.maximum(8, tf.cast((value + 4.0) // 8.0, tf.int32) * 8)
    return tf.where(tf.cast(rounded, tf.float32) < 0.9 * value, rounded + 8, rounded)


def _channels(x):
    """The channel count of ``x``: a Python int where the graph knows it, a scalar tensor otherwise."""
    return x.shape[-1] if x.shape[-1] is not None else tf.shape(x)[-1]


def _known_equal(value, size) -> bool:
    """Whether ``value`` is known, while the graph is built, to equal ``size``."""
    return not isinstance(value, tf.Tensor) and value == size


def _head(vector, count):
    """The first ``count`` entries of a per-channel variable (the variable itself when that is all of it)."""
    return vector if _known_equal(count, vector.shape[0]) else vector[:count]


class Supernet:
    """The shared weights (``tf.Variable``s named after the layers of ``space.build``) and the forward pass."""

    def __init__(self, space: SearchSpace, classes: int, seed: int = 0) -> None:
        self.space = space.check()
        self.classes = classes
        self.depth_slots = max(space.depths)
        self.stages = _stage_io(space)
        rng = np.random.default_rng(seed)
        self.vars: dict[str, tf.Variable] = {}

        def conv(name: str, shape: tuple[int, ...], bias: bool = False, bn: bool = True) -> None:
            depthwise = name.endswith("dwconv")  # (k, k, C, 1): C channels of k*k inputs each
            channels = shape[2] if depthwise else shape[-1]
            fan_in = shape[0] * shape[1] * (1 if depthwise else shape[2])
            self._add(f"{name}/kernel", rng.normal(0, math.sqrt(2.0 / fan_in), shape))
            if bias:
                self._add(f"{name}/bias", np.zeros(channels))
            if bn:
                self._add(f"{name}_bn/gamma", np.ones(channels))
                self._add(f"{name}_bn/beta", np.zeros(channels))

        conv("stem", (3, 3, 3, STEM))
        conv("s1b1_dwconv", (3, 3, STEM, 1))
        conv("s1b1_project", (1, 1, STEM, BASE_STAGES[0][0]))
        kmax, emax = max(space.kernels), max(space.expansions)
        for number, (cin, cout, _) in enumerate(self.stages, start=2):
            for index in range(self.depth_slots):
                name, c = f"s{number}b{index + 1}", (cin if index == 0 else cout)
                mid = c * emax
                conv(f"{name}_expand", (1, 1, c, mid))
                conv(f"{name}_dwconv", (kmax, kmax, mid, 1))
                for k in sorted(space.kernels)[:-1]:  # identity at start: the centre crop
                    self._add(f"{name}_dwconv/transform{k}", np.eye(k * k))
                se = se_channels(c, emax)
                conv(f"{name}_se_reduce", (1, 1, mid, se), bias=True, bn=False)
                conv(f"{name}_se_expand", (1, 1, se, mid), bias=True, bn=False)
                conv(f"{name}_project", (1, 1, mid, cout))
        conv("head", (1, 1, self.stages[-1][1], HEAD))
        self._add("predictions/kernel", rng.normal(0, math.sqrt(1.0 / HEAD), (HEAD, classes)))
        self._add("predictions/bias", np.zeros(classes))

    def _add(self, name: str, value: np.ndarray) -> None:
        self.vars[name] = tf.Variable(np.asarray(value, np.float32), name=name.replace("/", "."))

    # --- subnet encoding ---------------------------------------------------------------------------------
    @property
    def code_length(self) -> int:
        return 1 + len(self.stages) * (4 + 2 * self.depth_slots)

    def encode(self, arch: Arch) -> np.ndarray:
        """The int32 vector of a subnet: resolution, then per stage channels, depth, SE, hard-swish and the
        kernel and expansion of each block slot."""
        if not self.space.contains(arch):
            raise PipelineError(f"{arch.describe()} is not in the supernet's search space")
        code = [arch.resolution]
        for stage, channels in zip(arch.stages, arch.channels()):
            kernels = [b.kernel for b in stage.blocks] + [max(self.space.kernels)] * (self.depth_slots - stage.depth)
            expansions = [b.expansion for b in stage.blocks] + [1] * (self.depth_slots - stage.depth)
            code += [channels, stage.depth, int(stage.se), int(stage.act == "hard_swish"), *kernels, *expansions]
        return np.asarray(code, np.int32)

    def sample(self, phase: str, rng: np.random.Generator) -> Arch:
        """A subnet of what ``phase`` has made elastic so far (progressive shrinking)."""
        largest, space = self.space.largest(), self.space
        level = PHASES.index(phase)

        def pick(values, elastic: bool, default):
            return values[int(rng.integers(len(values)))] if elastic else default

        stages = []
        for big in largest.stages:
            depth = pick(space.depths, level >= 2, big.depth)
            blocks = tuple(Block(pick(space.kernels, level >= 1, max(space.kernels)),
                                 pick(space.expansions, level >= 3, max(space.expansions))) for _ in range(depth))
            stages.append(Stage(pick(space.widths, level >= 3, big.width), pick(space.se, level >= 1, big.se),
                                pick(space.acts, level >= 1, big.act), blocks))
        return Arch(int(rng.choice(space.resolutions)), tuple(stages))

    # --- forward -----------------------------------------------------------------------------------------
    def _fields(self, code) -> list:
        """The entries of a subnet code: Python ints where they are known when the graph is built (a code given
        as numbers, or a choice the space does not make), scalar tensors otherwise. Known entries give static
        shapes and drop the flag arithmetic and ``tf.cond``s of the choices they fix."""
        if isinstance(code, tf.Tensor):
            fields = [code[i] for i in range(self.code_length)]
        else:
            fields = [c if isinstance(c, tf.Tensor) else int(c) for c in code]
        fixed = self._fixed_fields()
        return [fixed.get(i, value) for i, value in enumerate(fields)]

    def _fixed_fields(self) -> dict[int, int]:
        """Code positions whose value the space leaves no choice in (a block slot past a stage's depth is never
        computed, so its kernel and expansion may be fixed too)."""
        space, step = self.space, 4 + 2 * self.depth_slots
        fixed = {0: space.resolutions[0]} if len(space.resolutions) == 1 else {}
        for s, (base, _, _) in enumerate(BASE_STAGES[1:]):
            at = 1 + s * step
            for offset, values in ((0, [_divisible(base * w) for w in space.widths]), (1, space.depths),
                                   (2, [int(v) for v in space.se]), (3, [int(a == "hard_swish") for a in space.acts])):
                if len(set(values)) == 1:
                    fixed[at + offset] = values[0]
            for b in range(self.depth_slots):
                if len(space.kernels) == 1:
                    fixed[at + 4 + b] = space.kernels[0]
                if len(space.expansions) == 1:
                    fixed[at + 4 + self.depth_slots + b] = space.expansions[0]
        return fixed

    def _bn(self, x, name: str):
        """Batch-statistics BatchNorm as one fused op, the one tf_keras trains with (moments + normalization are
        several element-wise passes, forward and backward)."""
        c = _channels(x)
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(x, _head(self.vars[f"{name}_bn/gamma"], c),
                                                   _head(self.vars[f"{name}_bn/beta"], c), epsilon=_EPS,
                                                   is_training=True)
        return y

    def _conv(self, x, name: str, cout, stride: int = 1, bias: bool = False):
        kernel = self.vars[f"{name}/kernel"]
        if not (_known_equal(_channels(x), kernel.shape[2]) and _known_equal(cout, kernel.shape[3])):
            kernel = kernel[:, :, : _channels(x), :cout]
        y = tf.nn.conv2d(x, kernel, stride, "SAME")
        return y + _head(self.vars[f"{name}/bias"], cout) if bias else y

    def depthwise_kernel(self, name: str, kernel):
        """The kxk depthwise kernel of layer ``name``: centre of the next larger one, transformed."""
        sizes = sorted(self.space.kernels, reverse=True)
        full = self.vars[f"{name}/kernel"]

        def shrink(larger, k: int):
            start = (larger.shape[0] - k) // 2
            centre = larger[start:start + k, start:start + k]  # (k, k, C, 1)
            flat = tf.reshape(tf.transpose(centre, (2, 3, 0, 1)), (-1, k * k))
            return tf.transpose(tf.reshape(flat @ self.vars[f"{name}/transform{k}"], (-1, 1, k, k)), (2, 3, 0, 1))

        known = not isinstance(kernel, tf.Tensor)
        chain = [full]
        for k in sizes[1:sizes.index(int(kernel)) + 1 if known else len(sizes)]:
            chain.append(shrink(chain[-1], k))
        if known:
            return chain[-1]
        index = tf.argmax(tf.cast(tf.equal(tf.constant(sizes), kernel), tf.int32))
        return tf.switch_case(tf.cast(index, tf.int32), [lambda t=t: t for t in chain])

    @staticmethod
    def _act(x, hard_swish):
        """ReLU6 or hard-swish; by a 0/1 flag where the choice is a tensor: both are cheap element-wise ops, and
        arithmetic on a flag traces far faster than a ``tf.cond``."""
        if not isinstance(hard_swish, tf.Tensor):
            return x * tf.nn.relu6(x + 3.0) / 6.0 if hard_swish else tf.nn.relu6(x)
        flag = tf.cast(hard_swish, x.dtype)
        relu6 = tf.nn.relu6(x)
        return relu6 + flag * (x * tf.nn.relu6(x + 3.0) / 6.0 - relu6)

    def _block(self, x, name: str, cout, stride: int, kernel, expansion, se, hard_swish, residual):
        cin = _channels(x)
        mid = cin * expansion
        y = self._act(self._bn(self._conv(x, f"{name}_expand", mid), f"{name}_expand"), hard_swish)
        dw = self.depthwise_kernel(f"{name}_dwconv", kernel)
        if not _known_equal(mid, dw.shape[2]):
            dw = dw[:, :, :mid, :]
        y = self._act(self._bn(tf.nn.depthwise_conv2d(y, dw, (1, stride, stride, 1), "SAME"), f"{name}_dwconv"),
                      hard_swish)
        if isinstance(se, tf.Tensor) or se:
            # Squeeze-excite; by a flag where it is a tensor: its gate is computed always (pooled 1x1 convs,
            # cheap), used when on.
            reduced = (_se_channels(cin, expansion) if isinstance(mid, tf.Tensor) else se_channels(cin, expansion))
            s = tf.reduce_mean(y, axis=(1, 2), keepdims=True)
            s = self._act(self._conv(s, f"{name}_se_reduce", reduced, bias=True), hard_swish)
            gate = tf.nn.relu6(self._conv(s, f"{name}_se_expand", mid, bias=True) + 3.0) / 6.0
            y = y * (1.0 + tf.cast(se, y.dtype) * (gate - 1.0)) if isinstance(se, tf.Tensor) else y * gate
        y = self._bn(self._conv(y, f"{name}_project", cout), f"{name}_project")
        if residual is None and not isinstance(cin, tf.Tensor) and not isinstance(cout, tf.Tensor):
            residual = cin == cout
        if residual is True:
            return x + y
        if residual is False:
            return y
        # A stage's stride-1 first block has a shortcut only where widths happen to match; the shortcut is
        # padded so that it has the output's shape whatever the widths (and is used only when they are equal).
        padded = tf.pad(x, [[0, 0], [0, 0], [0, 0], [0, tf.maximum(0, cout - cin)]])[..., :cout]
        return y + tf.cast(tf.equal(cin, cout), y.dtype) * padded

    def __call__(self, images, code):
        """Logits of subnet ``code`` on ``images`` ([-1, 1] floats), BatchNorm on batch statistics.

        ``code`` is :meth:`encode`'s vector: a tensor traces one graph for every subnet (dynamic shapes), numbers
        (a numpy array, or a list that may hold scalar tensors) trace that subnet alone with static shapes."""
        fields = self._fields(code)
        resolution = fields[0]
        x = images
        if isinstance(resolution, tf.Tensor) or not resolution == images.shape[1] == images.shape[2]:
            x = tf.image.resize(images, tf.stack([resolution, resolution]))
        x = tf.nn.relu6(self._bn(self._conv(x, "stem", STEM, stride=2), "stem"))
        dw = self.vars["s1b1_dwconv/kernel"]
        x = tf.nn.relu6(self._bn(tf.nn.depthwise_conv2d(x, dw, (1, 1, 1, 1), "SAME"), "s1b1_dwconv"))
        x = self._bn(self._conv(x, "s1b1_project", BASE_STAGES[0][0]), "s1b1_project")
        step = 4 + 2 * self.depth_slots
        hard_swish = None  # the head takes the last stage's activation
        for s, (_, _, stride) in enumerate(self.stages):
            at = 1 + s * step
            cout, depth, se, hard_swish = fields[at:at + 4]
            for b in range(self.depth_slots):
                kernel, expansion = fields[at + 4 + b], fields[at + 4 + self.depth_slots + b]
                name = f"s{s + 2}b{b + 1}"
                if b == 0:  # a stage's first block: its stride; a shortcut only where widths happen to match
                    x = self._block(x, name, cout, stride, kernel, expansion, se, hard_swish,
                                    None if stride == 1 else False)
                elif not isinstance(depth, tf.Tensor):
                    x = self._block(x, name, cout, 1, kernel, expansion, se, hard_swish, True) if b < depth else x
                else:
                    x = tf.cond(b < depth,
                                lambda x=x, n=name, k=kernel, e=expansion, c=cout, q=se, h=hard_swish:
                                self._block(x, n, c, 1, k, e, q, h, True),
                                lambda x=x: x)
        x = self._act(self._bn(self._conv(x, "head", HEAD), "head"), hard_swish)
        x = tf.reduce_mean(x, axis=(1, 2))
        return x @ self.vars["predictions/kernel"] + self.vars["predictions/bias"]

    # --- channel sorting, weights in and out ---------------------------------------------------------------
    def sort_channels(self) -> None:
        """Reorder every block's expansion channels by importance, most important first (OFA, before width
        becomes elastic). The function the supernet computes is unchanged: a permutation on both sides."""
        v = self.vars
        for number in range(2, len(self.stages) + 2):
            for index in range(1, self.depth_slots + 1):
                name = f"s{number}b{index}"
                order = np.argsort(-np.abs(v[f"{name}_expand/kernel"].numpy()).sum(axis=(0, 1, 2)), kind="stable")
                for key, axis in ((f"{name}_expand/kernel", 3), (f"{name}_expand_bn/gamma", 0),
                                  (f"{name}_expand_bn/beta", 0), (f"{name}_dwconv/kernel", 2),
                                  (f"{name}_dwconv_bn/gamma", 0), (f"{name}_dwconv_bn/beta", 0),
                                  (f"{name}_se_reduce/kernel", 2), (f"{name}_se_expand/kernel", 3),
                                  (f"{name}_se_expand/bias", 0), (f"{name}_project/kernel", 2)):
                    v[key].assign(np.take(v[key].numpy(), order, axis=axis))

    def get_weights(self) -> dict[str, np.ndarray]:
        return {name: var.numpy() for name, var in self.vars.items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        missing, extra = set(self.vars) - set(weights), set(weights) - set(self.vars)
        wrong = [n for n in self.vars if n in weights and weights[n].shape != tuple(self.vars[n].shape)]
        if missing or extra or wrong:
            raise PipelineError(f"the saved supernet does not fit this space ({len(missing)} weights missing, "
                                f"{len(extra)} unknown, {len(wrong)} of another shape"
                                f"{', e.g. ' + wrong[0] if wrong else ''})")
        for name, var in self.vars.items():
            var.assign(weights[name])

    def subnet_weights(self, arch: Arch) -> dict[str, list[np.ndarray]]:
        """Per Keras layer of ``build(arch)``, its weights sliced (and transformed) out of the supernet."""
        v = {name: var.numpy() for name, var in self.vars.items()}
        out: dict[str, list[np.ndarray]] = {}

        def conv(name: str, cin: int, cout: int, bias: bool = False) -> None:
            out[name] = [v[f"{name}/kernel"][:, :, :cin, :cout]] + ([v[f"{name}/bias"][:cout]] if bias else [])

        def bn(name: str, c: int) -> None:
            out[f"{name}_bn"] = [v[f"{name}_bn/gamma"][:c], v[f"{name}_bn/beta"][:c], np.zeros(c, np.float32),
                                 np.ones(c, np.float32)]

        conv("stem", 3, STEM), bn("stem", STEM)
        out["s1b1_dwconv"] = [v["s1b1_dwconv/kernel"]]
        bn("s1b1_dwconv", STEM)
        conv("s1b1_project", STEM, BASE_STAGES[0][0]), bn("s1b1_project", BASE_STAGES[0][0])
        cin = BASE_STAGES[0][0]
        for number, (stage, cout) in enumerate(zip(arch.stages, arch.channels()), start=2):
            for index, block in enumerate(stage.blocks, start=1):
                name, mid = f"s{number}b{index}", cin * block.expansion
                conv(f"{name}_expand", cin, mid), bn(f"{name}_expand", mid)
                out[f"{name}_dwconv"] = [self.depthwise_kernel(f"{name}_dwconv", block.kernel).numpy()[:, :, :mid]]
                bn(f"{name}_dwconv", mid)
                if stage.se:
                    se = se_channels(cin, block.expansion)
                    conv(f"{name}_se_reduce", mid, se, bias=True)
                    conv(f"{name}_se_expand", se, mid, bias=True)
                conv(f"{name}_project", mid, cout), bn(f"{name}_project", cout)
                cin = cout
        conv("head", cin, HEAD), bn("head", HEAD)
        out["predictions"] = [v["predictions/kernel"], v["predictions/bias"]]
        return out


def extract(supernet: Supernet, arch: Arch, recalibrate_on: ImageSet | None = None, batches: int = 20):
    """``arch`` as a standalone tf_keras model with the supernet's weights; with ``recalibrate_on`` (images
    at ``arch.resolution``), BatchNorm moving statistics set to their average over training batches."""
    from pipeline.stages.train import FitSettings, recalibrate_batchnorm

    supernet.encode(arch)  # refuses an architecture outside the space
    model = build(arch, supernet.classes)
    for name, weights in supernet.subnet_weights(arch).items():
        model.get_layer(name).set_weights(weights)
    if recalibrate_on is not None:
        recalibrate_batchnorm(model, recalibrate_on, FitSettings(epochs=1, batch_size=64), batches=batches)
    return model


# --- training ----------------------------------------------------------------------------------------------
def read_state(out: Path) -> dict:
    """A supernet folder's state ({} for a new folder); a damaged one is one line, before any work."""
    path = out / STATE_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise PipelineError(f"{path} is damaged; remove it (and {WEIGHTS_FILE}) to train the supernet anew") from None


def _save(net: Supernet, out: Path, state: dict, optimizer=None) -> None:
    """The weights with the optimizer's state (its step count and momentum, under ``optimizer/``), so that a
    resumed run goes on with them, then the state that marks the epoch done. A supernet whose every phase is done
    keeps no optimizer state: nothing resumes it, and the momentum would double the file."""
    slots = {f"{OPTIMIZER_PREFIX}{i}": v.numpy()
             for i, v in enumerate(optimizer.variables if optimizer and not phases_done(state) else ())}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **net.get_weights(), **slots)
    write_json(out / STATE_FILE, state)


def phases_done(state: dict, until: str | None = None) -> bool:
    """Whether every phase (up to ``until``) has all its epochs."""
    phases = PHASES[:PHASES.index(until) + 1] if until else PHASES
    return all(int(state["done"].get(phase, 0)) >= epochs for phase, epochs in zip(phases, state["settings"]["epochs"]))


def _restore_optimizer(optimizer, out: Path) -> None:
    """The saved optimizer state back into a built optimizer (a supernet saved before it was kept restarts its
    momentum)."""
    names = [f"{OPTIMIZER_PREFIX}{i}" for i in range(len(optimizer.variables))]
    with np.load(out / WEIGHTS_FILE, allow_pickle=False) as saved:
        slots = [saved[name] for name in names if name in saved.files]
    if len(slots) == len(names) and all(s.shape == tuple(v.shape) for s, v in zip(slots, optimizer.variables)):
        for variable, value in zip(optimizer.variables, slots):
            variable.assign(value)


def load_supernet(folder: str | Path, scope: Callable[[], ContextManager] = contextlib.nullcontext
                  ) -> tuple[Supernet, dict]:
    """A trained (or partly trained) supernet folder: the net with its weights, and its state. ``scope`` is
    where its variables are created (a distribution strategy's ``scope``)."""
    out = Path(folder)
    state = read_state(out)
    if not state or not (out / WEIGHTS_FILE).exists():
        raise PipelineError(f"{out} holds no supernet: run `tflpipe supernet train --out {out}` first")
    try:
        space, classes, seed = SearchSpace.from_json(state["space"]), int(state["classes"]), int(state["settings"]["seed"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PipelineError(f"{out / STATE_FILE} is damaged ({type(exc).__name__}: {exc}); train the supernet "
                            "anew in another folder") from None
    try:
        with np.load(out / WEIGHTS_FILE, allow_pickle=False) as saved:
            weights = {name: saved[name] for name in saved.files if not name.startswith(OPTIMIZER_PREFIX)}
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{out / WEIGHTS_FILE} is not a supernet weights file ({type(exc).__name__})") from None
    with scope():
        net = Supernet(space, classes, seed)
    net.set_weights(weights)
    return net, state


def _header(train: ImageSet, space: SearchSpace, settings: SupernetSettings, workers: int) -> dict:
    """What a resumed run must share with the saved one (one worker's runs record no worker count)."""
    header = {"space": space.to_json(), "classes": len(train.class_names), "class_names": train.class_names,
              "settings": {**asdict(settings), "epochs": list(settings.epochs)}}
    return {**header, "workers": workers} if workers > 1 else header


def train_supernet(train: ImageSet, space: SearchSpace, settings: SupernetSettings, out: str | Path,
                   progress: bool = True, log: Callable[[str], None] = lambda _: None, workers: int = 1,
                   ray_address: str | None = None, until: str | None = None) -> dict:
    """Progressive shrinking on ``train`` (images at the space's largest resolution), resumable per epoch;
    returns the state (phases finished, losses per epoch, seconds). With ``until`` (a phase) training stops
    after that phase, so the caller can check the largest net before paying for the shrinking; the same call
    without it goes on from there.

    With ``workers`` > 1 or a ``ray_address`` the phases run data-parallel on Ray Train
    (:func:`train_supernet_data_parallel`): ``settings.batch_size`` images per worker
    and step, the learning rate scaled by the worker count; the run resumes only with the same worker count."""
    settings.check()
    space.check()
    if workers < 1:
        raise PipelineError("--workers must be at least 1")
    if until is not None and until not in PHASES:
        raise PipelineError(f"unknown supernet phase {until!r}; choose one of {', '.join(PHASES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if train.images.shape[1] != max(space.resolutions):
        raise PipelineError(f"supernet training images must be {max(space.resolutions)} px (the space's largest "
                            f"resolution), got {train.images.shape[1]}")
    header = _header(train, space, settings, workers)
    state = read_state(out)
    if state and ({k: state.get(k) for k in header} != header or state.get("workers", 1) != workers):
        saved_workers = state.get("workers", 1)
        raise PipelineError(f"{out} holds a supernet of another space, data or settings"
                            f"{f' (trained with --workers {saved_workers})' if saved_workers != workers else ''}; "
                            "use another --out")
    if state and phases_done(state, until):
        return state  # nothing to train: the weights need not be there (a caller may have used them up)
    if state and not (out / WEIGHTS_FILE).exists():
        raise PipelineError(f"{out / STATE_FILE} records {len(state.get('history', []))} trained epoch(s) but "
                            f"{WEIGHTS_FILE} is missing beside it; remove {STATE_FILE} to train the supernet anew")
    if workers > 1 or ray_address is not None:
        return train_supernet_data_parallel(train, space, settings, out, workers, ray_address, log, until)
    return run_phases(train, space, settings, out, progress, log, until=until)


def run_phases(train: ImageSet, space: SearchSpace, settings: SupernetSettings, out: Path, progress: bool = True,
               log: Callable[[str], None] = lambda _: None, strategy=None, until: str | None = None) -> dict:
    """The supernet built (or loaded from ``out``) and its unfinished phases trained, in this process; with a
    ``strategy`` (``MultiWorkerMirroredStrategy``, one replica per worker) as one of its workers: variables
    created in its scope, gradients all-reduced, only the chief (worker 0) saving and logging."""
    workers = strategy.num_replicas_in_sync if strategy is not None else 1
    scope = strategy.scope if strategy is not None else contextlib.nullcontext
    state = read_state(out)
    if state:
        net, state = load_supernet(out, scope)
    else:
        with scope():
            net = Supernet(space, len(train.class_names), settings.seed)
        state = {**_header(train, space, settings, workers), "done": {}, "history": [], "seconds": 0.0}
    optimizer = make_optimizer(net, settings, scope)
    if state["history"]:
        _restore_optimizer(optimizer, out)
    keras.utils.set_random_seed(settings.seed)
    return _shrink(net, optimizer, train, state, settings, out, progress, log, strategy, until)


def make_optimizer(net: Supernet, settings: SupernetSettings,
                   scope: Callable[[], ContextManager] = contextlib.nullcontext):
    """The supernet's SGD, built for every one of its variables (in ``scope``, a distribution strategy's)."""
    with scope():
        # Decoupled weight decay, as the zoo nets train (`pipeline.stages.train`): an L2 term in the loss would be
        # amplified ~10x by the momentum.
        optimizer = keras.optimizers.SGD(settings.learning_rate, momentum=0.9, nesterov=True,
                                         weight_decay=settings.weight_decay or None)
        # Every variable gets its optimizer slots now: the largest net alone leaves the kernel transforms without
        # gradients, and an optimizer built on the first step's gradients would refuse them in the next phase.
        optimizer.build(list(net.vars.values()))
    return optimizer


def _supernet_worker(config: dict) -> None:
    """One Ray Train worker of the supernet: threads and the strategy before any TF op, then the phases."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import ray
    import ray.train

    from pipeline.core.tf_env import tf

    tf.config.threading.set_intra_op_parallelism_threads(config["threads"])
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # reads TF_CONFIG, written by Ray Train
    state = run_phases(ray.get(config["train"]), config["space"], config["settings"], Path(config["out"]),
                       progress=False, strategy=strategy, until=config["until"])
    ray.train.report({"done": state["done"]})


def train_supernet_data_parallel(train: ImageSet, space: SearchSpace, settings: SupernetSettings, out: str | Path,
                                 workers: int = 2, address: str | None = None,
                                 log: Callable[[str], None] = lambda _: None, until: str | None = None) -> dict:
    """Progressive shrinking data-parallel over ``workers`` Ray Train workers
    (MultiWorkerMirroredStrategy); returns the supernet's state as ``train_supernet`` does.

    Every worker builds the supernet in the strategy's scope (from ``out`` where a run stopped), draws the same
    subnets (same seeds) and runs each step on its own share of the batches; the gradients are all-reduced and
    worker 0 saves the state after every epoch, as one process does, so a killed run resumes from its last
    epoch. ``settings.batch_size`` is per worker (the global batch is ``workers`` times larger, with as many
    times fewer steps) and the learning rate is scaled by ``workers``. ``out`` must be a folder every worker
    sees (this machine's for a local Ray; a shared file system on a cluster)."""
    import pipeline.core.tf_env  # noqa: F401 - TensorFlow with tf_keras first: Ray Train's module imports it

    if workers < 1:
        raise PipelineError("workers must be at least 1")
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    from pipeline.search.distributed import connect

    out = Path(out).resolve()
    before = len(read_state(out).get("history", []))
    started = connect(address, max(workers, os.cpu_count() or 1), log)
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", workers)) // workers)
        log(f"supernet: {workers} Ray Train workers of {cpus} CPU(s), {settings.batch_size} images each per step")
        with tempfile.TemporaryDirectory() as scratch:
            trainer = TensorflowTrainer(
                _supernet_worker,
                train_loop_config={"train": ray.put(train), "space": space, "settings": settings, "out": str(out),
                                   "threads": cpus, "until": until},
                scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": cpus}),
                run_config=RunConfig(storage_path=scratch, name=f"supernet_{os.getpid()}_{time.time_ns()}"),
            )
            try:
                trainer.fit()
            except Exception as exc:  # Ray Train wraps the worker's error; its last line says what failed
                raise PipelineError(f"data-parallel supernet training on {workers} Ray workers failed: "
                                    f"{str(exc).strip().splitlines()[-1][:300]}; finished epochs are kept in {out}: "
                                    "run the same command again to resume") from None
    finally:
        if started:
            ray.shutdown()
    state = read_state(out)
    for entry in state["history"][before:]:
        log(f"supernet {entry['phase']} epoch {entry['epoch']}: loss {entry['loss']:.3f}")
    return state


def _step_function(net: Supernet, optimizer, settings: SupernetSettings, image_shape: tuple[int, ...],
                   subnets: int, strategy=None) -> Callable:
    """One training step ``step(images, labels, resolution, codes, learning_rate)``: the largest net at
    ``resolution`` learns from the labels, the ``subnets`` subnets of ``codes`` from its predictions. With a
    ``strategy``, each worker runs it on its own images and the gradients are averaged over the workers."""
    variables = list(net.vars.values())
    classes = net.classes
    workers = strategy.num_replicas_in_sync if strategy is not None else 1
    # The largest net's code is known while the graph is built (only its resolution is sampled): static shapes,
    # no branches, and it runs at the speed of the extracted tf_keras model. Leave Grappler on (TF's default):
    # measured here, it makes the largest net's step 1.4x and the sandwich step 1.1x faster than with it off.
    largest = list(net.encode(net.space.largest()))[1:]

    def replica_step(images, labels, resolution, codes):
        with tf.GradientTape() as tape:
            logits = net(images, [resolution, *largest])
            smoothed = labels * (1 - settings.label_smoothing) + settings.label_smoothing / classes
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(smoothed, logits))
            teacher = tf.stop_gradient(tf.nn.softmax(logits))
            for i in range(subnets):
                loss += tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(teacher, net(images, codes[i]))) / subnets
            # Divided by the workers, as apply_gradients sums their gradients.
            total = loss / workers
        grads = tape.gradient(total, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return loss / workers

    @tf.function(input_signature=[tf.TensorSpec([None, *image_shape], tf.float32),
                                  tf.TensorSpec([None, classes], tf.float32),
                                  tf.TensorSpec([], tf.int32),
                                  tf.TensorSpec([subnets, net.code_length], tf.int32),
                                  tf.TensorSpec([], tf.float32)])
    def step(images, labels, resolution, codes, learning_rate):
        optimizer.learning_rate.assign(learning_rate)
        if strategy is None:
            return replica_step(images, labels, resolution, codes)
        losses = strategy.run(replica_step, args=(images, labels, resolution, codes))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    return step


def phase_rate(step: int, total: int, warmup: int = 0) -> float:
    """Share of the peak learning rate at ``step`` of a phase's ``total`` steps: a linear warm-up from a tenth over
    the first ``warmup`` steps, then cosine decay over the rest."""
    if step < warmup:
        return 0.1 + 0.9 * step / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _shrink(net: Supernet, optimizer, train: ImageSet, state: dict, settings: SupernetSettings, out: Path,
            progress: bool, log: Callable[[str], None], strategy=None, until: str | None = None) -> dict:
    """The phases of progressive shrinking not finished yet (up to ``until``), saved after every epoch (by the
    chief)."""
    from tqdm import tqdm

    from pipeline.stages.train import make_dataset

    space = net.space
    workers = strategy.num_replicas_in_sync if strategy is not None else 1
    chief = strategy is None or strategy.cluster_resolver.task_id == 0
    dataset = make_dataset(train, settings.batch_size, True, True, True, settings.seed)
    if workers > 1:
        # Every worker shuffles alike and keeps its share of the batches: whole batches only, so that no
        # worker runs a step on fewer images (or none) while the others wait in the all-reduce.
        steps = len(train) // (settings.batch_size * workers)
        if steps == 0:
            raise PipelineError(f"{len(train)} images do not fill one batch of {settings.batch_size} on each of "
                                f"{workers} workers; use a smaller --batch-size")
        dataset = dataset.shard(workers, strategy.cluster_resolver.task_id).take(steps)
    else:
        steps = math.ceil(len(train) / settings.batch_size)
    step_functions: dict[int, Callable] = {}  # one traced graph per subnet count, shared by the phases
    started = time.monotonic()
    writer = None  # created with the first epoch trained (a finished supernet leaves no empty log behind)
    phases = PHASES[:PHASES.index(until) + 1] if until else PHASES
    for phase, epochs in zip(phases, settings.epochs):
        done = int(state["done"].get(phase, 0))
        if done >= epochs:
            continue
        if phase == "width" and done == 0 and not state.get("sorted"):
            net.sort_channels()
            state["sorted"] = True
        rng = np.random.default_rng([settings.seed, PHASES.index(phase), done])
        subnets = 0 if phase == "largest" else settings.subnets
        if subnets not in step_functions:
            step_functions[subnets] = _step_function(net, optimizer, settings, train.images.shape[1:], subnets,
                                                     strategy)
        train_step = step_functions[subnets]
        bar = tqdm(total=(epochs - done) * steps, unit="step", desc=f"supernet {phase}",
                   disable=not (progress and chief), leave=False)
        for epoch in range(done, epochs):
            losses, cpu_started = [], time.process_time()
            for step, (images, labels) in enumerate(dataset):
                # The shrinking phases start lower (OFA fine-tunes them at ~0.4x); the largest net's phase warms up
                # as the zoo nets train (a fifth of it, at most an epoch): from a cold start at the full rate it
                # reached 54.5% held-out on CIFAR-10 at 64 px in 10 epochs, where MobileNet v2 reached 78.4%.
                # Scaled linearly with the workers (Goyal et al., 2017): each image moves the weights as much.
                rate = settings.learning_rate * workers * (1.0 if phase == "largest" else 0.4)
                rate *= phase_rate(epoch * steps + step, epochs * steps,
                                   min(steps, epochs * steps // 5) if phase == "largest" else 0)
                samples = [net.encode(net.sample(phase, rng)) for _ in range(subnets)]
                resolution = int(rng.choice(space.resolutions))
                codes = np.stack(samples) if samples else np.zeros((0, net.code_length), np.int32)
                losses.append(float(train_step(images, labels, tf.constant(resolution, tf.int32), codes,
                                               tf.constant(rate, tf.float32))))
                bar.update(1)
            state["done"][phase] = epoch + 1
            # Wall-clock and this process's CPU seconds of the epoch (on a shared machine CPU / cores is the time
            # the epoch takes on dedicated ones).
            state["history"].append({"phase": phase, "epoch": epoch + 1, "loss": float(np.mean(losses)),
                                     "seconds": round(time.monotonic() - started, 1),
                                     "cpu_seconds": round(time.process_time() - cpu_started, 1)})
            state["seconds"] += time.monotonic() - started
            started = time.monotonic()
            if chief:
                writer = writer or tf.summary.create_file_writer(str(out / "logs"))
                with writer.as_default():
                    tf.summary.scalar(f"loss/{phase}", np.mean(losses), step=epoch + 1)
                _save(net, out, state, optimizer)
                log(f"supernet {phase} epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.3f}")
        bar.close()
    return state


def subnet_accuracy(net: Supernet, arch: Arch, train: ImageSet, val: ImageSet, batches: int = 20) -> float:
    """Accuracy of ``arch`` with inherited weights, no training: BatchNorm recalibrated, then evaluated."""
    from pipeline.stages.train import keras_accuracy

    keras.backend.clear_session()
    return keras_accuracy(extract(net, arch, train, batches), val)


def extract_subnet(net: Supernet, arch: Arch, train: ImageSet, val: ImageSet, finetune_epochs: int = 0,
                   learning_rate: float = 0.01, seed: int = 0):
    """``arch`` out of the supernet, scored with inherited weights and, with ``finetune_epochs``, after a
    short fine-tune; returns (model, result)."""
    from pipeline.stages.train import FitSettings, fit, keras_accuracy

    keras.backend.clear_session()
    model = extract(net, arch, train)
    result = {"arch": arch.to_json(), "describe": arch.describe(), "inherited_accuracy": keras_accuracy(model, val)}
    if finetune_epochs:
        fit(model, train, None, FitSettings(finetune_epochs, learning_rate, seed=seed))
        result.update(finetune_epochs=finetune_epochs, finetuned_accuracy=keras_accuracy(model, val))
    return model, result


class SupernetScore:
    """A candidate's accuracy with weights inherited from a supernet, BatchNorm recalibrated, no training:
    Once-for-All's evaluation, seconds per candidate instead of a training run. It holds arrays (the
    training subset for recalibration and the validation images, per resolution), so it pickles to Ray
    workers; each loads the supernet once."""

    def __init__(self, folder: str | Path, data: dict[int, tuple[ImageSet, ImageSet]], batches: int = 10,
                 net: Supernet | None = None) -> None:
        self.folder, self.data, self.batches = str(folder), data, batches
        self._net = net  # loaded on first use where it was not given (a Ray worker receives none)

    @classmethod
    def for_search(cls, folder: str | Path, space: SearchSpace,
                   datasets: Callable[[int], tuple[ImageSet, ImageSet]], images: int, seed: int) -> "SupernetScore":
        """Checked against the study: the supernet must hold the whole search space and predict its classes."""
        net, state = load_supernet(folder)
        wide = net.space
        covers = all(set(getattr(space, what)) <= set(getattr(wide, what)) for what in
                     ("resolutions", "kernels", "expansions", "depths", "widths", "se", "acts"))
        if not covers:
            raise PipelineError(f"the supernet in {folder} was trained on another search space "
                                f"({wide.to_json()}); search within it or train one on this space")
        data = {}
        for resolution in space.resolutions:
            train, val = datasets(resolution)
            if train.class_names != state["class_names"]:
                raise PipelineError(f"the supernet in {folder} predicts {state['class_names']}, the data holds "
                                    f"{train.class_names}; train the supernet on the same data")
            chosen = np.sort(np.random.default_rng(seed).choice(len(train), min(len(train), images), replace=False))
            data[resolution] = (train.subset(chosen), val)
        return cls(folder, data, net=net)  # the supernet loaded for the check serves this process's scores

    def __getstate__(self) -> dict:
        return {"folder": self.folder, "data": self.data, "batches": self.batches, "_net": None}

    def __call__(self, arch: Arch, seed: int) -> float:
        if self._net is None:
            self._net, _ = load_supernet(self.folder)
        train, val = self.data[arch.resolution]
        return subnet_accuracy(self._net, arch, train, val, self.batches)
