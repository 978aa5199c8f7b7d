"""Structured channel pruning: remove whole filters from a tf_keras model and rebuild it smaller and dense.

Pruning a filter removes a channel everywhere it travels, so the analysis follows every channel through the
graph. Each filter a producer (conv, dense, depthwise) writes is one channel; layers that combine tensors
element-wise (``Add``, ``Multiply``: residuals, squeeze-excite) *tie* the channels at the same position of
their inputs, which are then kept or removed as one; ``Concatenate`` puts its inputs side by side. The
channels a producer writes, and every channel tied to one of them, form a *group*: the unit a caller shrinks
("keep k channels of group g", the k most important ones).

ShuffleNet's ``ChannelShuffle`` (g groups) is a fixed permutation: output ``j*g + i`` is input ``i*C/g + j``.
If the same indices ``j`` are removed from each of the g parts it interleaves, the shuffle of the smaller
tensor is exactly the kept part of the shuffled original; with different indices (even as many) it is in
general not. So a shuffle ties its g parts index by index. A ``ChannelSplit`` into equal parts only needs
as many channels kept in each part; it ties its parts index by index too, the simplest way to guarantee
that, and what grouped 1x1 convs (split, a conv per part, concatenate) ask: the same filters removed from
every group. Ties can chain until a group shrinks to few channels, each one many filters wide (a ShuffleNet
v2 stage's identity path: every unit's split halves it), or to one that cannot shrink.

Channels whose order a layer changes or mixes in ways that a smaller tensor cannot reproduce (Keras grouped
convs, a reshape that folds space into channels, a softmax over channels, a channel broadcast), the model
input and the model outputs are marked not prunable, which is always safe.

The pruned model is rebuilt from the original's config with fewer ``filters``/``units`` and every weight
sliced to the kept channels (kernels on both sides, biases, batch-norm parameters and moving statistics), so
it computes exactly what the original computes with the removed channels zeroed.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.core.errors import PipelineError, first_line
from pipeline.core.tf_env import keras, tf
from pipeline.stages.options import CHANNEL_CRITERIA


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be pruned together, with the layers that write them and those that read them."""

    id: int
    size: int  # channels now (a channel that a shuffle or split copies around counts once)
    producers: tuple[str, ...]  # layers whose OUTPUT channels are this group (conv/dense/depthwise)
    consumers: tuple[str, ...]  # layers whose INPUT channels hold this group (weighted or not)
    prunable: bool
    reason: str = ""  # why not prunable


@dataclass(frozen=True)
class LayerChannels:
    """Which groups make up each input and output tensor of a layer, and where each of its channels comes from.

    ``inputs``/``outputs`` list each tensor's groups in order of first appearance, a group as many times as
    the tensor holds copies of it (a shuffle's output holds its group twice), so a tensor's channel count is
    the sum of its groups' sizes however they are pruned: a cost model's view. ``input_map``/``output_map``
    hold, per tensor, one row (group id, index in the group) per channel, in the tensor's order.
    """

    inputs: tuple[tuple[int, ...], ...]
    outputs: tuple[tuple[int, ...], ...]
    input_map: tuple[np.ndarray, ...] = field(default=(), compare=False, repr=False)
    output_map: tuple[np.ndarray, ...] = field(default=(), compare=False, repr=False)


# Layer classes matched exactly (a subclass such as Conv2DTranspose lays its kernel out differently).
_L = keras.layers
_CONVS = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
_PRODUCERS = (*_CONVS, _L.Dense, _L.SeparableConv2D)
_ELEMENTWISE = (
    _L.Activation, _L.ReLU, _L.LeakyReLU, _L.ELU, _L.ThresholdedReLU, _L.Dropout, _L.SpatialDropout1D,
    _L.SpatialDropout2D, _L.GaussianNoise, _L.GaussianDropout, _L.AlphaDropout, _L.ZeroPadding1D, _L.ZeroPadding2D,
    _L.Cropping1D, _L.Cropping2D, _L.UpSampling1D, _L.UpSampling2D, _L.MaxPooling1D, _L.MaxPooling2D,
    _L.AveragePooling1D, _L.AveragePooling2D, _L.GlobalAveragePooling1D, _L.GlobalAveragePooling2D,
    _L.GlobalMaxPooling1D, _L.GlobalMaxPooling2D,
)
_MERGES = (_L.Add, _L.Subtract, _L.Multiply, _L.Average, _L.Maximum, _L.Minimum)
_RESHAPES = (_L.Reshape, _L.Flatten)
_SOFTMAX_NAMES = ("softmax", "log_softmax")
# Weight name -> the axes it is sliced along: "in" by the layer's input channels, "out" by its output ones.
_SLICES: dict[type, dict[str, dict[str, int]]] = {
    **{cls: {"kernel": {"in": -2, "out": -1}, "bias": {"out": 0}} for cls in _CONVS},
    _L.Dense: {"kernel": {"in": 0, "out": 1}, "bias": {"out": 0}},
    _L.DepthwiseConv2D: {"depthwise_kernel": {"in": 2}, "bias": {"in": 0}},
    _L.SeparableConv2D: {"depthwise_kernel": {"in": 2}, "pointwise_kernel": {"in": 2, "out": 3}, "bias": {"out": 0}},
    _L.BatchNormalization: {name: {"in": 0} for name in ("gamma", "beta", "moving_mean", "moving_variance")},
}
_KERNEL_OUT = {  # producer class -> (weight whose output channels are the filters, its output axis)
    **{cls: ("kernel", -1) for cls in _CONVS},
    _L.Dense: ("kernel", -1),
    _L.DepthwiseConv2D: ("depthwise_kernel", 2),
    _L.SeparableConv2D: ("pointwise_kernel", -1),
}


def _zoo_layers() -> dict[str, type]:
    from keras_models import custom_objects

    return custom_objects()


def _unwrap(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The layer inside TF-MOT's ``QuantizeAnnotate`` (a build-time annotation that holds no weights of its own)."""
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_annotate import QuantizeAnnotate

    while isinstance(layer, QuantizeAnnotate):
        layer = layer.layer
    return layer


def _weight_name(variable) -> str:
    return variable.name.split("/")[-1].split(":")[0]


def _unsupported(layer: keras.layers.Layer, why: str) -> PipelineError:
    return PipelineError(f"cannot prune channels through layer {layer.name!r} ({type(layer).__name__}): {why}")


def _find(parent: list[int], a: int) -> int:
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


def _union(parent: list[int], a: int, b: int) -> None:
    a, b = _find(parent, a), _find(parent, b)
    if a != b:
        parent[max(a, b)] = min(a, b)  # the root is the oldest atom: groups number in graph order


class _Tracker:
    """Walks the graph once, filter by filter. Every filter a producer writes is an *atom*; a tensor is the
    array of its channels' atoms. Atoms that must be kept or removed together are tied into one channel
    (union-find ``channel``)."""

    def __init__(self, model: keras.Model) -> None:
        self.channel: list[int] = []
        self.tensors: list[np.ndarray] = []  # every tensor's atoms, each once
        self.reasons: dict[int, str] = {}  # atom -> first reason its group may not be pruned
        self.roles: list[tuple[str, str, np.ndarray]] = []  # (layer, "producer"|"consumer", atoms), graph order
        self.layouts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        self.weighted: dict[str, keras.layers.Layer] = {}  # layer name -> inner layer whose weights get sliced
        self._zoo = _zoo_layers()
        self._walk(model)

    def _new(self, size: int, reason: str = "") -> np.ndarray:
        atoms = np.arange(len(self.channel), len(self.channel) + int(size))
        self.channel.extend(atoms.tolist())
        if reason:
            self._freeze(atoms, reason)
        return atoms

    def _tie(self, a: np.ndarray, b: np.ndarray) -> None:
        """Channel i of ``a`` and channel i of ``b`` are kept or removed as one."""
        for x, y in zip(a.tolist(), b.tolist()):
            _union(self.channel, x, y)

    def _freeze(self, atoms: np.ndarray, reason: str) -> None:
        for a in np.unique(atoms).tolist():
            self.reasons.setdefault(a, reason)

    def _walk(self, model: keras.Model) -> None:
        tensors: dict[tuple[str, int, int], np.ndarray] = {}
        for t in model.inputs:
            layer, node, index = t._keras_history
            tensors[layer.name, node, index] = self._new(t.shape[-1], "model input")
            self.tensors.append(tensors[layer.name, node, index])
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            calls = 0
            for node_index, node in enumerate(layer.inbound_nodes):
                keys = [(h.layer.name, h.node_index, h.tensor_index) for h in
                        (t._keras_history for t in tf.nest.flatten(node.keras_inputs))]
                if not keys or any(k not in tensors for k in keys):
                    continue  # a call outside this model
                calls += 1
                if calls > 1:
                    raise _unsupported(layer, "the layer is called more than once (shared weights)")
                inputs = [tensors[k] for k in keys]
                outputs = tf.nest.flatten(node.outputs)
                in_shapes = [tuple(t.shape) for t in tf.nest.flatten(node.keras_inputs)]
                for i, atoms in enumerate(inputs):
                    if len(atoms) != in_shapes[i][-1]:
                        raise _unsupported(layer, f"lost track of its input channels ({in_shapes[i][-1]} expected)")
                out_atoms = self._visit(layer, inputs, in_shapes, [tuple(t.shape) for t in outputs])
                self.layouts[layer.name] = (inputs, out_atoms)
                self.tensors += out_atoms
                for i, atoms in enumerate(out_atoms):
                    tensors[layer.name, node_index, i] = atoms
        for t in model.outputs:
            layer, node, index = t._keras_history
            self._freeze(tensors[layer.name, node, index], "model output")

    def _visit(self, outer: keras.layers.Layer, inputs: list, in_shapes: list, out_shapes: list) -> list:
        layer = _unwrap(outer)
        kind = type(layer)
        name = outer.name
        if isinstance(layer, (keras.layers.Wrapper, keras.Model)) or kind.__module__.startswith("tensorflow_model_opt"):
            raise _unsupported(layer, "wrappers and nested models are not supported; prune channels before "
                                      "quantization-aware training or magnitude pruning (or strip their wrappers)")
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise _unsupported(layer, "only channels_last layouts are supported")
        if kind in _SLICES or kind in _PRODUCERS:
            if len(inputs) != 1:
                raise _unsupported(layer, "a weighted layer with several inputs")
            self.weighted[name] = layer
        zoo = self._zoo
        if kind in _PRODUCERS:
            (atoms,) = inputs
            self._consume(name, atoms)
            out = self._new(out_shapes[0][-1])
            self.roles.append((name, "producer", out))
            if getattr(layer, "groups", 1) != 1:
                self._freeze(np.concatenate([atoms, out]), f"grouped convolution {name!r}")
            if getattr(layer, "depth_multiplier", 1) != 1:
                self._freeze(atoms, f"depth_multiplier of {name!r}")
            if getattr(getattr(layer, "activation", None), "__name__", "") in _SOFTMAX_NAMES:
                self._freeze(out, f"softmax over the channels of {name!r}")
            return [out]
        if kind is _L.DepthwiseConv2D:
            (atoms,) = inputs
            self._consume(name, atoms)
            if layer.depth_multiplier != 1:
                self._freeze(atoms, f"depth_multiplier of {name!r}")
                return [self._new(out_shapes[0][-1], f"depth_multiplier of {name!r}")]
            self.roles.append((name, "producer", atoms))
            return [atoms]
        if kind is _L.BatchNormalization:
            if layer.axis not in ([-1], [len(in_shapes[0]) - 1]):
                raise _unsupported(layer, f"batch norm over axis {layer.axis}, not the channels")
            self._consume(name, inputs[0])
            return [inputs[0]]
        if kind in _ELEMENTWISE or kind in (zoo["HardSwish"], zoo["HardSigmoid"]):
            self._consume(name, inputs[0])
            if kind is _L.Activation and getattr(layer.activation, "__name__", "") in _SOFTMAX_NAMES:
                self._freeze(inputs[0], f"softmax over the channels at {name!r}")
            return [inputs[0]]
        if kind is _L.Softmax:
            self._consume(name, inputs[0])
            self._freeze(inputs[0], f"softmax over the channels at {name!r}")
            return [inputs[0]]
        if kind in _MERGES:
            return [self._merge(name, inputs, in_shapes, out_shapes[0])]
        if kind is _L.Concatenate:
            for atoms in inputs:
                self._consume(name, atoms)
            if layer.axis in (-1, len(out_shapes[0]) - 1):
                return [np.concatenate(inputs)]
            return [self._merge(name, inputs, in_shapes, out_shapes[0])]
        if kind in _RESHAPES:
            self._consume(name, inputs[0])
            if math.prod(in_shapes[0][1:-1]) == 1 and math.prod(out_shapes[0][1:-1]) == 1 \
                    and in_shapes[0][-1] == out_shapes[0][-1]:
                return [inputs[0]]  # only unit dimensions move: the channels stay as they are
            return self._opaque(inputs, out_shapes, f"channels reshaped at {name!r}")
        if kind is zoo["ChannelSplit"]:
            self._consume(name, inputs[0])
            parts = np.split(inputs[0], layer.parts)
            for part in parts[1:]:
                self._tie(parts[0], part)  # equal counts per part, the same indices in each
            return parts
        if kind is zoo["ChannelShuffle"]:
            self._consume(name, inputs[0])
            parts = inputs[0].reshape(layer.groups, -1)
            for part in parts[1:]:
                self._tie(parts[0], part)  # the same indices removed from every part it interleaves
            return [parts.T.reshape(-1)]  # output j * groups + i is input i * (C / groups) + j
        raise _unsupported(layer, "this layer type is not supported; supported are convs, dense, depthwise, "
                                  "batch norm, element-wise layers, pooling, Add/Multiply/Concatenate and the zoo's")

    def _consume(self, name: str, atoms: np.ndarray) -> None:
        self.roles.append((name, "consumer", atoms))

    def _opaque(self, inputs: list, out_shapes: list, reason: str) -> list:
        """Outputs whose channels cannot be traced to the inputs': all of them frozen."""
        for atoms in inputs:
            self._freeze(atoms, reason)
        return [self._new(shape[-1], reason) for shape in out_shapes]

    def _merge(self, name: str, inputs: list, in_shapes: list, out_shape: tuple) -> np.ndarray:
        """Element-wise combination: channel i of every input is channel i of the output, so they tie."""
        for atoms in inputs:
            self._consume(name, atoms)
        broadcast = [i for i, shape in enumerate(in_shapes) if shape[-1] == 1 and out_shape[-1] != 1]
        for i in broadcast:
            self._freeze(inputs[i], f"channel broadcast at {name!r}")
        full = [atoms for i, atoms in enumerate(inputs) if i not in broadcast]
        for atoms in full[1:]:
            self._tie(full[0], atoms)
        return full[0]


@dataclass
class _Analysis:
    """The groups of a model and the channels of every layer, in final group ids."""

    groups: list[ChannelGroup]
    layers: dict[str, LayerChannels]
    weighted: dict[str, keras.layers.Layer] = field(repr=False)


def _channel_maps(tracker: _Tracker) -> tuple[np.ndarray, list[int]]:
    """Atom -> (group id, index in the group), and the groups' sizes.

    A group is the channels that every tensor holds alike: all of them or none, each as many times. They are
    found by a signature per channel, the sum of a random 64-bit key per tensor times the copies it holds
    there. A producer's filters stay one group unless tensors take parts of them apart (ShuffleNet v1's
    residual adds a unit's output to the stem's channels beside a later unit's). Groups number in the order
    of their oldest filter (the order their first producer runs), channels within a group in the order of theirs.
    """
    channel = np.array([_find(tracker.channel, a) for a in range(len(tracker.channel))], dtype=np.int64)
    channels = np.unique(channel)  # sorted by each channel's oldest atom
    of_atom = np.searchsorted(channels, channel)
    keys = np.random.default_rng(0).integers(1, 2**63, size=len(tracker.tensors), dtype=np.uint64)
    signature = np.zeros(len(channels), dtype=np.uint64)
    for key, atoms in zip(keys, tracker.tensors):
        np.add.at(signature, of_atom[atoms], key)  # wraps modulo 2**64
    _, first, group_of = np.unique(signature, return_index=True, return_inverse=True)
    gid = np.argsort(np.argsort(first))[group_of.reshape(-1)]  # groups in the order of their oldest channel
    sizes = np.bincount(gid, minlength=len(first))
    index = np.empty(len(channels), dtype=np.int64)
    order = np.argsort(gid, kind="stable")
    index[order] = np.arange(len(channels)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return np.stack([gid[of_atom], index[of_atom]], axis=1), sizes.tolist()


def _composition(channel_map: np.ndarray, sizes: list[int]) -> tuple[int, ...]:
    """A tensor's groups in order of first appearance, each once per copy of the group it holds."""
    gids, first, counts = np.unique(channel_map[:, 0], return_index=True, return_counts=True)
    return tuple(g for k in np.argsort(first) for g in [int(gids[k])] * (int(counts[k]) // sizes[gids[k]]))


def _analyze(model: keras.Model) -> _Analysis:
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise PipelineError("channel pruning needs a functional or Sequential Keras model with a known input "
                            f"shape, got {type(model).__name__}")
    tracker = _Tracker(model)
    where, sizes = _channel_maps(tracker)
    roles: dict[int, dict[str, list[str]]] = {g: {"producer": [], "consumer": []} for g in range(len(sizes))}
    for name, role, atoms in tracker.roles:
        gids, first = np.unique(where[atoms, 0], return_index=True)
        for g in gids[np.argsort(first)].tolist():
            if name not in roles[g][role]:
                roles[g][role].append(name)
    reasons: dict[int, str] = {}
    for atom in sorted(tracker.reasons):
        reasons.setdefault(int(where[atom, 0]), tracker.reasons[atom])
    layers = {}
    for name, (ins, outs) in tracker.layouts.items():
        in_maps, out_maps = tuple(where[atoms] for atoms in ins), tuple(where[atoms] for atoms in outs)
        layers[name] = LayerChannels(tuple(_composition(m, sizes) for m in in_maps),
                                     tuple(_composition(m, sizes) for m in out_maps), in_maps, out_maps)
    groups = [ChannelGroup(g, size, tuple(roles[g]["producer"]), tuple(roles[g]["consumer"]), g not in reasons,
                           reasons.get(g, "")) for g, size in enumerate(sizes)]
    return _Analysis(groups, layers, tracker.weighted)


def channel_groups(model: keras.Model) -> list[ChannelGroup]:
    """The model's channel groups in graph order (ids 0, 1, ... in the order their first producer runs)."""
    return _analyze(model).groups


def layer_channels(model: keras.Model) -> dict[str, LayerChannels]:
    """For each layer, the group ids making up its input and output channels (a cost model's view of a layer)."""
    return _analyze(model).layers


def _importance(analysis: _Analysis, group: ChannelGroup, criterion: str) -> np.ndarray:
    if criterion not in CHANNEL_CRITERIA:
        raise PipelineError(f"unknown pruning criterion {criterion!r}; choose from {', '.join(CHANNEL_CRITERIA)}")
    if not 0 <= group.id < len(analysis.groups) or analysis.groups[group.id].size != group.size:
        raise PipelineError(f"channel group {group.id} does not belong to this model")
    score = np.zeros(group.size, dtype=np.float64)
    found = False
    for name in (group.consumers if criterion == "bn" else group.producers):
        layer = analysis.weighted.get(name)
        if layer is None:
            continue
        if criterion == "bn":
            if type(layer) is not _L.BatchNormalization or not layer.scale:
                continue
            channel_map = analysis.layers[name].input_map[0]
            per_channel = np.abs(layer.gamma.numpy())
        else:
            weight, axis = _KERNEL_OUT[type(layer)]
            kernel = np.moveaxis(next(w.numpy() for w in layer.weights if _weight_name(w) == weight), axis, 0)
            kernel = kernel.reshape(kernel.shape[0], -1)
            per_channel = np.abs(kernel).sum(1) if criterion == "l1" else np.sqrt((kernel ** 2).sum(1))
            channel_map = analysis.layers[name].output_map[0]
        mine = channel_map[:, 0] == group.id
        np.add.at(score, channel_map[mine, 1], per_channel[mine])  # a channel copied k times scores k filters
        found = found or bool(mine.any())
    if not found:
        what = "batch norm with a scale (gamma)" if criterion == "bn" else "producer with filters"
        raise PipelineError(f"criterion {criterion!r} needs a {what} on channel group {group.id} "
                            f"(producers: {', '.join(group.producers) or 'none'}); use another criterion")
    return score


def channel_importance(model: keras.Model, group: ChannelGroup, criterion: str = "l1") -> np.ndarray:
    """Per-channel score of ``group``: "l1"/"l2" norm of every producer's filters, summed over the tied
    producers (NetAdapt, Li et al. 2017), or "bn", the |gamma| of the group's batch norms (network slimming)."""
    return _importance(_analyze(model), group, criterion)


def _kept_indices(analysis: _Analysis, keep: dict[int, int], criterion: str) -> dict[int, np.ndarray]:
    """Group id -> sorted indices of the channels kept (the highest scores), for groups that shrink."""
    kept = {}
    for gid, count in keep.items():
        if isinstance(gid, bool) or not isinstance(gid, (int, np.integer)) or not 0 <= gid < len(analysis.groups):
            raise PipelineError(f"unknown channel group {gid!r}; this model has groups 0..{len(analysis.groups) - 1}")
        group = analysis.groups[gid]
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= group.size:
            raise PipelineError(f"channel group {gid}: keep between 1 and {group.size} channels, got {count!r}")
        if count == group.size:
            continue
        if not group.prunable:
            raise PipelineError(f"channel group {gid} ({', '.join(group.producers) or 'no producer'}) cannot be "
                                f"pruned: {group.reason}")
        score = _importance(analysis, group, criterion)
        kept[int(gid)] = np.sort(np.argsort(-score, kind="stable")[:count])
    return kept


def _kept_positions(channel_map: np.ndarray, kept: dict[int, np.ndarray]) -> np.ndarray | None:
    """Positions of a tensor's channels that stay, in order; None when none of its groups shrink."""
    keep = np.ones(len(channel_map), dtype=bool)
    shrinks = False
    for gid, indices in kept.items():
        mine = channel_map[:, 0] == gid
        if mine.any():
            keep[mine] = np.isin(channel_map[mine, 1], indices)
            shrinks = True
    return np.flatnonzero(keep) if shrinks else None


def _layer_configs(config: dict) -> dict[str, dict]:
    """Layer name -> the innermost config dict (inside any QuantizeAnnotate) of the model config's layers."""
    found = {}
    for entry in config["layers"]:
        inner = entry
        while "layer" in inner["config"]:
            inner = inner["config"]["layer"]
        found[entry["config"]["name"]] = inner["config"]
    return found


def _strip_build_configs(value: Any) -> None:
    """Drop the saved build shapes: they hold the old channel counts, and the graph rebuild infers new ones."""
    if isinstance(value, dict):
        value.pop("build_config", None)
        for item in value.values():
            _strip_build_configs(item)
    elif isinstance(value, list):
        for item in value:
            _strip_build_configs(item)


def _rebuild(model: keras.Model, config: dict) -> keras.Model:
    from keras_models import quantize_scope

    cls = keras.Sequential if isinstance(model, keras.Sequential) else keras.Model
    try:
        with quantize_scope():
            return cls.from_config(config, custom_objects=_zoo_layers())
    except (ValueError, TypeError) as exc:
        raise PipelineError(f"cannot rebuild the pruned model {model.name!r}: {first_line(exc)}") from None


def _sliced_weights(layer: keras.layers.Layer, ins: np.ndarray | None, outs: np.ndarray | None) -> list[np.ndarray]:
    weights = []
    for variable in layer.weights:
        value = variable.numpy()
        for side, axis in _SLICES.get(type(layer), {}).get(_weight_name(variable), {}).items():
            index = ins if side == "in" else outs
            if index is not None:
                value = np.take(value, index, axis=axis)
        weights.append(value)
    return weights


def prune_channels(model: keras.Model, keep: dict[int, int], criterion: str = "l1") -> keras.Model:
    """A NEW model with ``keep[group id]`` channels of each group: the most important ones, in their order.

    Layer names stay; weights are sliced (kernels on both sides, biases, batch-norm parameters and moving
    statistics); the original model is left untouched. Groups not in ``keep`` stay whole.
    """
    analysis = _analyze(model)
    kept = _kept_indices(analysis, dict(keep), criterion)
    config = model.get_config()
    _strip_build_configs(config)
    configs = _layer_configs(config)
    slices: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = {}
    for name, layer in analysis.weighted.items():
        channels = analysis.layers[name]
        slices[name] = (_kept_positions(channels.input_map[0], kept), _kept_positions(channels.output_map[0], kept))
        if type(layer) in _PRODUCERS and slices[name][1] is not None:
            configs[name]["units" if type(layer) is _L.Dense else "filters"] = int(slices[name][1].size)
    pruned = _rebuild(model, config)
    for old in model.layers:
        if isinstance(old, keras.layers.InputLayer):
            continue
        inner = _unwrap(old)
        ins, outs = slices.get(old.name, (None, None))
        try:
            _unwrap(pruned.get_layer(old.name)).set_weights(_sliced_weights(inner, ins, outs))
        except ValueError as exc:
            raise PipelineError(f"cannot copy the weights of layer {old.name!r} into the pruned model: "
                                f"{first_line(exc)}") from None
    return pruned


def _kept_count(size: int, ratio: float, divisor: int) -> int:
    """Channels left after removing ``ratio`` of ``size``: a multiple of ``divisor`` where the group allows, >= 1."""
    if divisor >= size:
        return size
    return min(size, max(divisor, int(round(size * (1.0 - ratio) / divisor)) * divisor))


def _check_ratio(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise PipelineError(f"{where}: a pruning ratio is the fraction of channels to remove, in [0, 1), "
                            f"got {value!r}")
    return float(value)


def _ratios_by_group(analysis: _Analysis, ratios: dict[str, float]) -> dict[int, float]:
    by_group: dict[int, tuple[str, float]] = {}
    owners = {name: g for g in analysis.groups for name in g.producers}
    for name, ratio in ratios.items():
        ratio = _check_ratio(ratio, f"ratio of layer {name!r}")
        if name not in owners:
            known = ", ".join(sorted(n for g in analysis.groups if g.prunable for n in g.producers)[:8])
            raise PipelineError(f"layer {name!r} produces no channel group of this model; prunable producers "
                                f"include: {known or 'none'}")
        group = owners[name]
        if not group.prunable and ratio > 0:
            raise PipelineError(f"layer {name!r}'s channels cannot be pruned: {group.reason}")
        if group.id in by_group and by_group[group.id][1] != ratio:
            other = by_group[group.id][0]
            raise PipelineError(f"layers {other!r} and {name!r} are tied (pruned together) but got different "
                                f"ratios {by_group[group.id][1]} and {ratio}")
        by_group[group.id] = (name, ratio)
    return {g: r for g, (_, r) in by_group.items()}


def prune_by_ratio(model: keras.Model, ratio: float | dict[str, float], criterion: str = "l1",
                   divisor: int = 1) -> keras.Model:
    """Remove ``ratio`` of the channels of every prunable group, or ``{producer layer name: ratio}`` per group;
    kept counts round to multiples of ``divisor`` (hardware-friendly widths) and never drop below one."""
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1:
        raise PipelineError(f"divisor must be a positive whole number, got {divisor!r}")
    analysis = _analyze(model)
    if isinstance(ratio, dict):
        per_group = _ratios_by_group(analysis, ratio)
    else:
        every = _check_ratio(ratio, "--ratio")
        per_group = {g.id: every for g in analysis.groups if g.prunable}
    keep = {g: _kept_count(analysis.groups[g].size, r, divisor) for g, r in per_group.items()}
    return prune_channels(model, keep, criterion)


def load_ratios(path: str | Path, model: keras.Model | None = None) -> dict[str, float]:
    """Read a JSON or YAML mapping {producer layer name: ratio}; with ``model``, names are checked against it."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"cannot read ratios file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    loader: Callable[[str], Any] = json.loads if path.suffix.lower() == ".json" else yaml.safe_load
    try:
        data = loader(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise PipelineError(f"ratios file {path} is not valid {'JSON' if loader is json.loads else 'YAML'}: "
                            f"{first_line(exc)}") from None
    if not isinstance(data, dict) or not data or not all(isinstance(k, str) for k in data):
        raise PipelineError(f"ratios file {path} must hold a non-empty mapping of layer name to ratio, "
                            'e.g. {"block_1_expand": 0.3}')
    ratios = {name: _check_ratio(value, f"{path}: layer {name!r}") for name, value in data.items()}
    if model is not None:
        _ratios_by_group(_analyze(model), ratios)
    return ratios


def channel_summary(model: keras.Model) -> dict[str, int]:
    """Channels (all groups, and the prunable ones), trainable parameters and MACs: what pruning shrinks."""
    from keras_models.macs import count

    groups = channel_groups(model)
    counted = count(model)
    return {"channels": sum(g.size for g in groups), "prunable_channels": sum(g.size for g in groups if g.prunable),
            "params": counted.params, "macs": counted.macs}
