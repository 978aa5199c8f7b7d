"""Gradient search over the supernet's choices: ProxylessNAS (Cai et al., ICLR 2019) path sampling with
straight-through binary gates and a differentiable expected-latency term from the latency table.

Architecture parameters are one logit vector per decision of the space at a resolution: per stage depth,
width, squeeze-excite and activation, per block slot kernel and expansion. Each step samples one path: a
one-hot gate per decision, straight-through (``onehot + p - stop_gradient(p)``), so the forward pass is
exactly the sampled subnet and the backward pass gives every option's logit ProxylessNAS's binary-gate
gradient ``sum_j dL/dg_j p_j (delta_ij - p_i)``. To have ``dL/dg_j`` for options that were not sampled,
every choice is written linearly in its gates over the largest net's weights (the supernet's, frozen):
kernels as one zero-padded superkernel (Single-Path NAS, Stamoulis et al., 2019), expansions and widths as
channel masks, depth as a gate on each optional block's residual branch, SE and activation by mixing.

The loss on held-out batches is cross-entropy plus MnasNet's soft latency term ``-w log(E[LAT]/T)`` and a
hinge ``max(0, log(E[LAT]/T))`` that pushes the expected latency under the budget. ``E[LAT]`` is the sum of
every block's kernels predicted by the latency table for each option, weighted by the options'
probabilities, plus a constant fitted on sampled nets against the whole-model prediction.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from pipeline.core.data import ImageSet, normalize
from pipeline.core.errors import PipelineError
from pipeline.core.tf_env import tf
from pipeline.latency import space as kernels
from pipeline.latency.table import LatencyTable, packed_bytes
from pipeline.search.space import BASE_STAGES, HEAD, STEM, Arch, Block, Stage, _divisible, se_channels
from pipeline.search.supernet import Supernet

RELU6, NONE = 3, 0


def _out(size: int, stride: int) -> int:
    return -(-size // stride)


def _mask(count: int, total: int) -> np.ndarray:
    return (np.arange(total) < count).astype(np.float32)


class GradientSearch:
    """Architecture logits at one resolution, trained on held-out batches through the frozen supernet."""

    def __init__(self, net: Supernet, table: LatencyTable, resolution: int, budget_ms: float,
                 reward_exponent: float = -0.07, learning_rate: float = 0.006, seed: int = 0) -> None:
        if resolution not in net.space.resolutions:
            raise PipelineError(f"resolution {resolution} is not in the supernet's space {net.space.resolutions}")
        self.net, self.space, self.resolution = net, net.space, resolution
        self.budget, self.w = budget_ms, reward_exponent
        self.stages = len(BASE_STAGES) - 1
        self.widths = [[_divisible(base * w) for w in self.space.widths] for base, _, _ in BASE_STAGES[1:]]
        init = tf.random.stateless_normal  # small noise breaks the symmetry of equal logits
        self.logits = {name: tf.Variable(init((len(options),), (seed, i)) * 1e-3, name=name)
                       for i, (name, options) in enumerate(self.decisions())}
        self._adam = _Adam(learning_rate)
        self.lut = _LatencyLUT(self, table)
        self._train = None  # the traced architecture step, built on first use

    def decisions(self) -> list[tuple[str, tuple]]:
        found = []
        for s in range(self.stages):
            found += [(f"s{s + 2}.depth", self.space.depths), (f"s{s + 2}.width", self.space.widths),
                      (f"s{s + 2}.se", self.space.se), (f"s{s + 2}.act", self.space.acts)]
            for b in range(self.net.depth_slots):
                found += [(f"s{s + 2}b{b + 1}.kernel", self.space.kernels),
                          (f"s{s + 2}b{b + 1}.expansion", self.space.expansions)]
        return found

    def probabilities(self) -> dict[str, tf.Tensor]:
        return {name: tf.nn.softmax(v) for name, v in self.logits.items()}

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One path: an option index per decision, drawn from the current probabilities."""
        picks = []
        for p in self.probabilities().values():
            p = p.numpy().astype(np.float64)
            picks.append(int(rng.choice(len(p), p=p / p.sum())))
        return np.asarray(picks, np.int32)

    def gates(self, picks) -> dict[str, tf.Tensor]:
        """Straight-through one-hot gates of a path: the sampled subnet forward, ProxylessNAS's gradient back."""
        return {name: tf.one_hot(picks[i], len(p)) + p - tf.stop_gradient(p)
                for i, (name, p) in enumerate(self.probabilities().items())}

    def arch_of(self, picks) -> Arch:
        pick = dict(zip(self.logits, (int(i) for i in picks)))
        options = dict(self.decisions())
        stages = []
        for s in range(self.stages):
            p = f"s{s + 2}"
            depth = options[f"{p}.depth"][pick[f"{p}.depth"]]
            blocks = tuple(Block(options[f"{p}b{b + 1}.kernel"][pick[f"{p}b{b + 1}.kernel"]],
                                 options[f"{p}b{b + 1}.expansion"][pick[f"{p}b{b + 1}.expansion"]])
                           for b in range(depth))
            stages.append(Stage(options[f"{p}.width"][pick[f"{p}.width"]], options[f"{p}.se"][pick[f"{p}.se"]],
                                options[f"{p}.act"][pick[f"{p}.act"]], blocks))
        return Arch(self.resolution, tuple(stages))

    def derive(self) -> Arch:
        """The most likely architecture (ProxylessNAS's final choice)."""
        return self.arch_of([int(tf.argmax(v)) for v in self.logits.values()])

    # --- the relaxed forward pass ------------------------------------------------------------------------
    def _act(self, x, gate):
        acts = self.space.acts
        out = 0.0
        for i, kind in enumerate(acts):
            out += gate[i] * (tf.nn.relu6(x) if kind == "relu6" else x * tf.nn.relu6(x + 3.0) / 6.0)
        return out

    def _bn(self, x, name: str, channels: int):
        mean, var = tf.nn.moments(x, [0, 1, 2])
        v = self.net.vars
        return tf.nn.batch_normalization(x, mean, var, v[f"{name}_bn/beta"][:channels],
                                         v[f"{name}_bn/gamma"][:channels], 1e-3)

    def _width_mask(self, s: int, gate) -> tf.Tensor:
        if s < 0:
            return tf.ones(BASE_STAGES[0][0])
        total = max(self.widths[s])
        return tf.add_n([gate[i] * _mask(c, total) for i, c in enumerate(self.widths[s])])

    def _in_channels(self, s: int) -> list[int]:
        return [BASE_STAGES[0][0]] if s < 0 else self.widths[s]

    def forward(self, images, g: dict[str, tf.Tensor]):
        v, net = self.net.vars, self.net
        x = tf.image.resize(images, (self.resolution, self.resolution))
        x = tf.nn.relu6(self._bn(tf.nn.conv2d(x, v["stem/kernel"], 2, "SAME"), "stem", STEM))
        x = tf.nn.relu6(self._bn(tf.nn.depthwise_conv2d(x, v["s1b1_dwconv/kernel"], (1, 1, 1, 1), "SAME"),
                                 "s1b1_dwconv", STEM))
        x = self._bn(tf.nn.conv2d(x, v["s1b1_project/kernel"], 1, "SAME"), "s1b1_project", BASE_STAGES[0][0])
        kmax, emax = max(self.space.kernels), max(self.space.expansions)
        prev_gate = None
        for s, (_, _, stride) in enumerate(BASE_STAGES[1:]):
            p = f"s{s + 2}"
            width, act, se = g[f"{p}.width"], g[f"{p}.act"], g[f"{p}.se"]
            out_mask, cout_max = self._width_mask(s, width), max(self.widths[s])
            se_on = sum(g_i for g_i, on in zip(tf.unstack(se), self.space.se) if on) if True in self.space.se else 0.0
            for b in range(net.depth_slots):
                name = f"{p}b{b + 1}"
                in_gate, ins = (prev_gate, self._in_channels(s - 1)) if b == 0 else (width, self.widths[s])
                cin_max = x.shape[-1]
                expansion = g[f"{name}.expansion"]
                mid_max = cin_max * emax
                # Active expansion channels: cin x e, for every (input width, expansion) pair.
                # Active expansion (and SE) channels: cin x e, for every (input width, expansion) pair.
                pairs = [(1.0 if in_gate is None else in_gate[i]) * expansion[j]
                         for i in range(len(ins)) for j in range(len(self.space.expansions))]
                sizes = [(c, e) for c in ins for e in self.space.expansions]
                se_max = v[f"{name}_se_reduce/kernel"].shape[-1]
                mid_mask = tf.add_n([w * _mask(c * e, mid_max) for w, (c, e) in zip(pairs, sizes)])
                se_mask = tf.add_n([w * _mask(se_channels(c, e), se_max) for w, (c, e) in zip(pairs, sizes)])
                y = tf.nn.conv2d(x, v[f"{name}_expand/kernel"][:, :, :cin_max, :mid_max], 1, "SAME")
                y = self._act(self._bn(y, f"{name}_expand", mid_max), act) * mid_mask
                kernel = g[f"{name}.kernel"]
                superkernel = tf.add_n([kernel[i] * _pad_to(net.depthwise_kernel(f"{name}_dwconv", k), kmax)
                                        for i, k in enumerate(self.space.kernels)])[:, :, :mid_max]
                step = stride if b == 0 else 1
                y = tf.nn.depthwise_conv2d(y, superkernel, (1, step, step, 1), "SAME")
                y = self._act(self._bn(y, f"{name}_dwconv", mid_max), act) * mid_mask
                pooled = tf.reduce_mean(y, axis=(1, 2), keepdims=True)
                r = tf.nn.conv2d(pooled, v[f"{name}_se_reduce/kernel"][:, :, :mid_max], 1, "SAME")
                r = self._act(r + v[f"{name}_se_reduce/bias"], act) * se_mask
                e = tf.nn.conv2d(r, v[f"{name}_se_expand/kernel"][:, :, :, :mid_max], 1, "SAME")
                gate = tf.nn.relu6(e + v[f"{name}_se_expand/bias"][:mid_max] + 3.0) / 6.0
                y = y * (1.0 + se_on * (gate - 1.0))
                y = tf.nn.conv2d(y, v[f"{name}_project/kernel"][:, :, :mid_max, :cout_max], 1, "SAME")
                y = self._bn(y, f"{name}_project", cout_max) * out_mask
                if b == 0:
                    if stride == 1:  # a shortcut where the input and output widths happen to be equal
                        same = tf.add_n([(1.0 if in_gate is None else in_gate[i]) * width[j]
                                         for i, c in enumerate(ins) for j, d in enumerate(self.widths[s]) if c == d]
                                        or [tf.constant(0.0)])
                        shortcut = tf.pad(x, [[0, 0], [0, 0], [0, 0], [0, max(0, cout_max - cin_max)]])
                        y = y + same * shortcut[..., :cout_max]
                    x = y
                else:  # block b runs when the stage's depth is more than b
                    depth = g[f"{p}.depth"]
                    alive = tf.add_n([depth[i] for i, d in enumerate(self.space.depths) if d > b] or [0.0 * depth[0]])
                    x = x + alive * y
            prev_gate = width
        head = tf.nn.conv2d(x, v["head/kernel"][:, :, : x.shape[-1]], 1, "SAME")
        x = self._act(self._bn(head, "head", HEAD), g[f"s{self.stages + 1}.act"])
        x = tf.reduce_mean(x, axis=(1, 2))
        return x @ v["predictions/kernel"] + v["predictions/bias"]

    # --- training ------------------------------------------------------------------------------------------
    def step(self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> dict:
        """One architecture step on a held-out batch (uint8 images at any size, integer labels)."""
        if self._train is None:
            self._train = tf.function(self._loss_and_gradients)
        loss, ce, expected, grads = self._train(tf.constant(normalize(images)),
                                                tf.one_hot(labels, self.net.classes), tf.constant(self.sample(rng)))
        self._adam.apply(grads, list(self.logits.values()))
        return {"loss": float(loss), "cross_entropy": float(ce), "expected_ms": float(expected)}

    def _loss_and_gradients(self, x, y, picks):
        with tf.GradientTape() as tape:
            ce = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(y, self.forward(x, self.gates(picks))))
            expected = self.lut.expected(self.probabilities())
            ratio = tf.math.log(expected / self.budget)
            loss = ce - self.w * ratio + tf.nn.relu(ratio)  # MnasNet's soft term and a hinge at the budget
        return loss, ce, expected, tape.gradient(loss, list(self.logits.values()))


def _pad_to(kernel, size: int):
    pad = (size - kernel.shape[0]) // 2
    return tf.pad(kernel, [[pad, pad], [pad, pad], [0, 0], [0, 0]])


class _Adam:
    """Adam on a few logit vectors (ProxylessNAS: lr 6e-3, betas 0 and 0.999), independent of Keras'
    optimizers so that it never touches the supernet's weights."""

    def __init__(self, learning_rate: float, beta1: float = 0.0, beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.lr, self.b1, self.b2, self.eps, self.t = learning_rate, beta1, beta2, eps, 0
        self.m: dict[str, tf.Tensor] = {}
        self.s: dict[str, tf.Tensor] = {}

    def apply(self, grads, variables) -> None:
        self.t += 1
        for g, v in zip(grads, variables):
            if g is None:
                continue
            m = self.b1 * self.m.get(v.name, 0.0) + (1 - self.b1) * g
            s = self.b2 * self.s.get(v.name, 0.0) + (1 - self.b2) * g * g
            self.m[v.name], self.s[v.name] = m, s
            m_hat, s_hat = m / (1 - self.b1 ** self.t), s / (1 - self.b2 ** self.t)
            v.assign_sub(self.lr * m_hat / (tf.sqrt(s_hat) + self.eps))


class _LatencyLUT:
    """Per-block kernel latencies for every option, from the latency table, combined into E[LAT]."""

    def __init__(self, search: GradientSearch, table: LatencyTable) -> None:
        self.search, self.table = search, table
        space = search.space
        r = search.resolution
        size = _out(_out(r, 2), 1)  # after the stem (stride 2) and stage 1
        self.blocks = []  # per stage: list over block slots of dicts of arrays
        items: list = []  # (key, kernel)
        for s, (_, _, stride) in enumerate(BASE_STAGES[1:]):
            out_size = _out(size, stride)
            ins = [BASE_STAGES[0][0]] if s == 0 else search.widths[s - 1]
            for b in range(search.net.depth_slots):
                cins = ins if b == 0 else search.widths[s]
                h_in = size if b == 0 else out_size
                for (i, cin), (j, e) in itertools.product(enumerate(cins), enumerate(space.expansions)):
                    mid = cin * e
                    items.append(((s, b, "expand", i, j), kernels.conv(h_in, h_in, cin, mid, 1, 1, RELU6)))
                    items.append(((s, b, "hs_expand", i, j), kernels.unary("HARD_SWISH", (1, h_in, h_in, mid))))
                    items.append(((s, b, "hs_dw", i, j), kernels.unary("HARD_SWISH", (1, out_size, out_size, mid))))
                    se = se_channels(cin, e)
                    for op in (kernels.mean(out_size, out_size, mid, True), kernels.conv(1, 1, mid, se, 1, 1, RELU6),
                               kernels.conv(1, 1, se, mid, 1, 1, NONE),
                               kernels.binary("ADD", (1, 1, 1, mid), (1, 1, 1, 1), RELU6),
                               kernels.binary("MUL", (1, 1, 1, mid), (1, 1, 1, 1)),
                               kernels.binary("MUL", (1, out_size, out_size, mid), (1, 1, 1, mid))):
                        items.append(((s, b, "se", i, j), op))
                    for t, k in enumerate(space.kernels):
                        items.append(((s, b, "dw", i, j, t), kernels.depthwise(h_in, h_in, mid, k,
                                                                               stride if b == 0 else 1, RELU6)))
                    for t, cout in enumerate(search.widths[s]):
                        items.append(((s, b, "project", i, j, t), kernels.conv(out_size, out_size, mid, cout, 1, 1)))
                for t, cout in enumerate(search.widths[s]):
                    items.append(((s, b, "add", t), kernels.binary("ADD", (1, out_size, out_size, cout),
                                                                   (1, out_size, out_size, cout))))
            size = out_size
        for t, c in enumerate(search.widths[-1]):
            items.append((("head", t), kernels.conv(size, size, c, HEAD, 1, 1, RELU6)))
            items.append((("hs_head", t), kernels.unary("HARD_SWISH", (1, size, size, HEAD))))
        # Large depthwise kernels cost more when a net's weights overflow the cache: estimate a sampled net's
        # weights as the sum over slots (a block's expand, dw, ...; the head) of the mean over that slot's options.
        per_option: dict[tuple, int] = {}
        for key, kernel in items:
            per_option[key] = per_option.get(key, 0) + packed_bytes(kernel)
        slots: dict[tuple, list[int]] = {}
        for key, size in per_option.items():
            slots.setdefault(key[:1] if isinstance(key[0], str) else key[:3], []).append(size)
        working_set = sum(float(np.mean(sizes)) for sizes in slots.values())
        predicted = table.predict_kernels([k for _, k in items], working_set)
        self.ms: dict[tuple, float] = {}
        for (key, _), ms in zip(items, predicted):
            self.ms[key] = self.ms.get(key, 0.0) + (ms or 0.0)
        self.offset = 0.0

    def _hard(self, arch: Arch) -> dict[str, tf.Tensor]:
        """One-hot 'probabilities' of an architecture (a block beyond its stage's depth takes option 0)."""
        out = {}
        for name, options in self.search.decisions():
            where, _, what = name.partition(".")
            stage_number, _, block_number = where[1:].partition("b")
            stage = arch.stages[int(stage_number) - 2]
            if block_number:
                b = int(block_number) - 1
                value = getattr(stage.blocks[b], what) if b < stage.depth else options[0]
            else:
                value = getattr(stage, what)
            out[name] = tf.one_hot(list(options).index(value), len(options))
        return out

    def expected(self, p: dict[str, tf.Tensor]):
        """E[LAT] in ms for independent choices with probabilities ``p``."""
        space, search = self.search.space, self.search
        total = tf.constant(self.offset, tf.float32)
        prev = None  # width probabilities of the previous stage
        for s in range(search.stages):
            pre = f"s{s + 2}"
            width, se, act, depth = p[f"{pre}.width"], p[f"{pre}.se"], p[f"{pre}.act"], p[f"{pre}.depth"]
            se_on = sum(se[i] for i, on in enumerate(space.se) if on) if True in space.se else 0.0
            hs = sum(act[i] for i, a in enumerate(space.acts) if a == "hard_swish") if "hard_swish" in space.acts \
                else 0.0
            for b in range(search.net.depth_slots):
                alive = 1.0 if b == 0 else tf.add_n([depth[i] for i, d in enumerate(space.depths) if d > b]
                                                    or [0.0 * depth[0]])
                cin_p = (tf.ones(1) if prev is None else prev) if b == 0 else width
                kernel, expansion = p[f"{pre}b{b + 1}.kernel"], p[f"{pre}b{b + 1}.expansion"]
                block = 0.0
                for i in range(int(cin_p.shape[0])):
                    for j in range(len(space.expansions)):
                        pair = cin_p[i] * expansion[j]
                        cost = (self.ms[(s, b, "expand", i, j)] + hs * (self.ms[(s, b, "hs_expand", i, j)]
                                                                       + self.ms[(s, b, "hs_dw", i, j)])
                                + se_on * self.ms[(s, b, "se", i, j)])
                        cost += tf.add_n([kernel[t] * self.ms[(s, b, "dw", i, j, t)]
                                          for t in range(len(space.kernels))])
                        if b == 0:
                            cost += tf.add_n([width[t] * self.ms[(s, b, "project", i, j, t)]
                                              for t in range(len(search.widths[s]))])
                        else:  # inside a stage the block's input and output are the stage's width
                            cost += self.ms[(s, b, "project", i, j, i)]
                        block += pair * cost
                if b > 0:
                    block += tf.add_n([width[t] * self.ms[(s, b, "add", t)] for t in range(len(search.widths[s]))])
                total += alive * block
            prev = width
        last_act = p[f"s{search.stages + 1}.act"]
        hs = sum(last_act[i] for i, a in enumerate(space.acts) if a == "hard_swish") if "hard_swish" in space.acts \
            else 0.0
        total += tf.add_n([prev[t] * (self.ms[("head", t)] + hs * self.ms[("hs_head", t)])
                           for t in range(len(search.widths[-1]))])
        return total

    def calibrate(self, archs_and_ms: list[tuple[Arch, float]]) -> dict:
        """The constant (stem, head, classifier, invoke overhead) fitted against whole-model predictions;
        returns how well the sum tracks them."""
        sums = np.array([float(self.expected(self._hard(a))) - self.offset for a, _ in archs_and_ms])
        whole = np.array([ms for _, ms in archs_and_ms])
        self.offset = float(np.median(whole - sums))
        fitted = sums + self.offset
        return {"offset_ms": self.offset, "max_relative_error": float(np.max(np.abs(fitted / whole - 1))),
                "archs": len(whole)}


def save_logits(search: GradientSearch, path: Path) -> None:
    from pipeline.core.fsutil import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{name: v.numpy() for name, v in search.logits.items()})


def load_logits(search: GradientSearch, path: Path) -> None:
    if not path.exists():
        return
    with np.load(path, allow_pickle=False) as saved:
        for name, v in search.logits.items():
            if name in saved.files and saved[name].shape == tuple(v.shape):
                v.assign(saved[name])


def batches(data: ImageSet, batch_size: int, rng: np.random.Generator):
    """Endless shuffled batches of (uint8 images, labels)."""
    while True:
        order = rng.permutation(len(data))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chosen = order[start:start + batch_size]
            yield data.images[chosen], data.labels[chosen]


class GradientStrategy:
    """``--strategy gradient`` as an ask/tell strategy of a study: each ``ask`` runs ``steps`` architecture
    steps at the next resolution of the space (each resolution has its own logits) and proposes the most
    likely architecture, or a sample of the distribution when that one was evaluated already. The logits are
    saved in the study folder after every ask, so a resumed study continues where it stopped."""

    def __init__(self, supernet: str | Path, table: LatencyTable, space, datasets, budget_ms: float,
                 reward_exponent: float, out: Path, seed: int = 0, steps: int = 30, batch_size: int = 32,
                 calibration_nets: int = 3, log=lambda _: None) -> None:
        from pipeline.core.keras_convert import full_int8_flatbuffer
        from pipeline.core.tf_env import keras
        from pipeline.latency.predict import predict_flatbuffer
        from pipeline.search.space import build
        from pipeline.search.supernet import load_supernet

        net, _ = load_supernet(supernet)
        self.out, self.steps, self.batch_size = Path(out), steps, batch_size
        self.resolutions = list(space.resolutions)
        self.searches: dict[int, GradientSearch] = {}
        self.batches = {}
        rng = np.random.default_rng(seed)
        for resolution in self.resolutions:
            search = GradientSearch(net, table, resolution, budget_ms, reward_exponent, seed=seed)
            keras.backend.clear_session()
            nets = [space.largest(), space.smallest()] + [search.arch_of(search.sample(rng))
                                                           for _ in range(max(0, calibration_nets - 2))]
            nets = [Arch(resolution, a.stages) for a in nets]
            fit = search.lut.calibrate([(a, predict_flatbuffer(full_int8_flatbuffer(build(a, net.classes)),
                                                               table).latency_ms) for a in nets])
            log(f"gradient search at {resolution} px: expected latency within {fit['max_relative_error']:.1%} of "
                f"the whole-model prediction on {fit['archs']} nets")
            load_logits(search, self._logits_path(resolution))
            train, _ = datasets(resolution)
            # Architecture steps use a sample of the training split (the weights stay frozen, only the logits
            # fit it), never the study's validation images, which score the proposals.
            held_out = train.subset(np.sort(rng.choice(len(train), min(len(train), max(batch_size * 4,
                                                                                     len(train) // 10)),
                                                       replace=False)))
            self.searches[resolution] = search
            self.batches[resolution] = batches(held_out, min(batch_size, len(held_out)), rng)
        self.turn = 0
        self.seen: set[str] = set()

    def _logits_path(self, resolution: int) -> Path:
        return self.out / f"gradient_logits_{resolution}.npz"

    def ask(self, rng: np.random.Generator) -> Arch:
        resolution = self.resolutions[self.turn % len(self.resolutions)]
        self.turn += 1
        search = self.searches[resolution]
        for _ in range(self.steps):
            search.step(*next(self.batches[resolution]), rng)
        save_logits(search, self._logits_path(resolution))
        arch = search.derive()
        for _ in range(20):
            if arch.key not in self.seen:
                break
            arch = search.arch_of(search.sample(rng))
        return arch

    def tell(self, arch: Arch, reward: float, objectives=None) -> None:
        self.seen.add(arch.key)
