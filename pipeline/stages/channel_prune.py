"""Structured channel pruning: remove whole filters from a tf_keras model and rebuild it smaller and dense.

Pruning a filter removes a channel everywhere it travels, so the channels of a model are first split into
*groups*: the channels one set of producers (conv, dense, depthwise) writes and the same channels every later
layer reads. Layers that combine tensors element-wise (``Add``, ``Multiply``: residuals, squeeze-excite) tie
their inputs' groups into one, which must shrink as one; ``Concatenate`` keeps its inputs' groups side by side.
Channels whose order a layer changes or mixes in ways that a smaller tensor cannot reproduce (ShuffleNet's
``ChannelSplit``/``ChannelShuffle``, grouped convs, a reshape that folds space into channels, a softmax over
channels), the model input and the model outputs are marked not prunable, which is always safe.

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

CRITERIA = ("l1", "l2", "bn")


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be pruned together, with the layers that write them and those that read them."""

    id: int
    size: int  # channels now
    producers: tuple[str, ...]  # layers whose OUTPUT channels are this group (conv/dense/depthwise)
    consumers: tuple[str, ...]  # layers whose INPUT channels hold this group (weighted or not)
    prunable: bool
    reason: str = ""  # why not prunable


@dataclass(frozen=True)
class LayerChannels:
    """Which groups, in order, make up the channels of each input and output tensor of a layer."""

    inputs: tuple[tuple[int, ...], ...]
    outputs: tuple[tuple[int, ...], ...]


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


class _Tracker:
    """Walks the graph once: raw groups (one per producer output), their ties (union-find) and every layout."""

    def __init__(self, model: keras.Model) -> None:
        self.sizes: list[int] = []
        self.parent: list[int] = []
        self.reasons: dict[int, str] = {}  # raw group -> first reason it may not be pruned
        self.roles: list[tuple[str, str, int]] = []  # (layer, "producer"|"consumer", raw group), graph order
        self.layouts: dict[str, tuple[list[tuple[int, ...]], list[tuple[int, ...]]]] = {}
        self.weighted: dict[str, keras.layers.Layer] = {}  # layer name -> inner layer whose weights get sliced
        self._zoo = _zoo_layers()
        self._walk(model)

    # union-find over raw groups
    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def _tie(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)

    def _new(self, size: int, reason: str = "") -> int:
        self.sizes.append(int(size))
        self.parent.append(len(self.parent))
        if reason:
            self.reasons[len(self.sizes) - 1] = reason
        return len(self.sizes) - 1

    def _freeze(self, layout: tuple[int, ...], reason: str) -> None:
        for g in layout:
            self.reasons.setdefault(g, reason)

    def _channels(self, layout: tuple[int, ...]) -> int:
        return sum(self.sizes[g] for g in layout)

    def _walk(self, model: keras.Model) -> None:
        tensors: dict[tuple[str, int, int], tuple[int, ...]] = {}
        for t in model.inputs:
            layer, node, index = t._keras_history
            tensors[layer.name, node, index] = (self._new(t.shape[-1], "model input"),)
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
                for i, t in enumerate(inputs):
                    if self._channels(t) != in_shapes[i][-1]:
                        raise _unsupported(layer, f"lost track of its input channels ({in_shapes[i][-1]} expected)")
                out_layouts = self._visit(layer, inputs, in_shapes, [tuple(t.shape) for t in outputs])
                self.layouts[layer.name] = (inputs, out_layouts)
                for i, layout in enumerate(out_layouts):
                    tensors[layer.name, node_index, i] = layout
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
            (layout,) = inputs
            self._consume(name, layout)
            out = self._new(out_shapes[0][-1])
            self.roles.append((name, "producer", out))
            if getattr(layer, "groups", 1) != 1:
                self._freeze(layout + (out,), f"grouped convolution {name!r}")
            if getattr(layer, "depth_multiplier", 1) != 1:
                self._freeze(layout, f"depth_multiplier of {name!r}")
            if getattr(getattr(layer, "activation", None), "__name__", "") in _SOFTMAX_NAMES:
                self._freeze((out,), f"softmax over the channels of {name!r}")
            return [(out,)]
        if kind is _L.DepthwiseConv2D:
            (layout,) = inputs
            self._consume(name, layout)
            if layer.depth_multiplier != 1:
                self._freeze(layout, f"depth_multiplier of {name!r}")
                return [(self._new(out_shapes[0][-1], f"depth_multiplier of {name!r}"),)]
            self.roles.extend((name, "producer", g) for g in layout)
            return [layout]
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
            for layout in inputs:
                self._consume(name, layout)
            rank = len(out_shapes[0])
            if layer.axis in (-1, rank - 1):
                return [tuple(g for layout in inputs for g in layout)]
            return [self._merge(name, inputs, in_shapes, out_shapes[0])]
        if kind in _RESHAPES:
            self._consume(name, inputs[0])
            if math.prod(in_shapes[0][1:-1]) == 1 and math.prod(out_shapes[0][1:-1]) == 1 \
                    and in_shapes[0][-1] == out_shapes[0][-1]:
                return [inputs[0]]  # only unit dimensions move: the channels stay as they are
            return self._opaque(inputs, out_shapes, f"channels reshaped at {name!r}")
        if kind in (zoo["ChannelSplit"], zoo["ChannelShuffle"]):
            self._consume(name, inputs[0])
            return self._opaque(inputs, out_shapes, f"channels split or shuffled at {name!r}")
        raise _unsupported(layer, "this layer type is not supported; supported are convs, dense, depthwise, "
                                  "batch norm, element-wise layers, pooling, Add/Multiply/Concatenate and the zoo's")

    def _consume(self, name: str, layout: tuple[int, ...]) -> None:
        self.roles.extend((name, "consumer", g) for g in layout)

    def _opaque(self, inputs: list, out_shapes: list, reason: str) -> list:
        """Outputs whose channels cannot be traced to the inputs': all of them frozen."""
        for layout in inputs:
            self._freeze(layout, reason)
        return [(self._new(shape[-1], reason),) for shape in out_shapes]

    def _merge(self, name: str, inputs: list, in_shapes: list, out_shape: tuple) -> tuple[int, ...]:
        """Element-wise combination: channel i of every input is channel i of the output, so their groups tie."""
        for layout in inputs:
            self._consume(name, layout)
        broadcast = [layout for layout, shape in zip(inputs, in_shapes) if shape[-1] == 1 and out_shape[-1] != 1]
        for layout in broadcast:
            self._freeze(layout, f"channel broadcast at {name!r}")
        full = [layout for layout in inputs if not any(layout is b for b in broadcast)]
        segments = {tuple(self.sizes[g] for g in layout) for layout in full}
        if len(segments) > 1:  # the inputs' groups do not line up: keep all of them whole
            for layout in full:
                self._freeze(layout, f"channel groups of different sizes meet at {name!r}")
            return full[0]
        for layout in full[1:]:
            for a, b in zip(full[0], layout):
                self._tie(a, b)
        return full[0]


@dataclass
class _Analysis:
    """The groups of a model and the layout of every layer, in final group ids."""

    groups: list[ChannelGroup]
    layers: dict[str, LayerChannels]
    weighted: dict[str, keras.layers.Layer] = field(repr=False)


def _analyze(model: keras.Model) -> _Analysis:
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise PipelineError("channel pruning needs a functional or Sequential Keras model with a known input "
                            f"shape, got {type(model).__name__}")
    tracker = _Tracker(model)
    roots = sorted({tracker.find(g) for g in range(len(tracker.sizes))})
    final = {root: i for i, root in enumerate(roots)}
    gid = [final[tracker.find(g)] for g in range(len(tracker.sizes))]
    roles: dict[int, dict[str, list[str]]] = {i: {"producer": [], "consumer": []} for i in range(len(roots))}
    for name, role, g in tracker.roles:
        names = roles[gid[g]][role]
        if name not in names:
            names.append(name)
    reasons: dict[int, str] = {}
    for g in sorted(tracker.reasons):
        reasons.setdefault(gid[g], tracker.reasons[g])
    groups = [ChannelGroup(i, tracker.sizes[root], tuple(roles[i]["producer"]), tuple(roles[i]["consumer"]),
                           i not in reasons, reasons.get(i, "")) for i, root in enumerate(roots)]
    layers = {name: LayerChannels(tuple(tuple(gid[g] for g in t) for t in ins), tuple(tuple(gid[g] for g in t)
                                                                                     for t in outs))
              for name, (ins, outs) in tracker.layouts.items()}
    return _Analysis(groups, layers, tracker.weighted)


def channel_groups(model: keras.Model) -> list[ChannelGroup]:
    """The model's channel groups in graph order (ids 0, 1, ... in the order their first producer runs)."""
    return _analyze(model).groups


def layer_channels(model: keras.Model) -> dict[str, LayerChannels]:
    """For each layer, the group ids making up its input and output channels (a cost model's view of a layer)."""
    return _analyze(model).layers


def _offsets(layout: tuple[int, ...], groups: list[ChannelGroup]) -> list[int]:
    return [0, *np.cumsum([groups[g].size for g in layout]).tolist()]


def _group_slices(layout: tuple[int, ...], group: int, groups: list[ChannelGroup]) -> list[slice]:
    starts = _offsets(layout, groups)
    return [slice(starts[i], starts[i + 1]) for i, g in enumerate(layout) if g == group]


def _importance(analysis: _Analysis, group: ChannelGroup, criterion: str) -> np.ndarray:
    if criterion not in CRITERIA:
        raise PipelineError(f"unknown pruning criterion {criterion!r}; choose from {', '.join(CRITERIA)}")
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
            layout = analysis.layers[name].inputs[0]
            per_channel = np.abs(layer.gamma.numpy())
        else:
            weight, axis = _KERNEL_OUT[type(layer)]
            kernel = np.moveaxis(next(w.numpy() for w in layer.weights if _weight_name(w) == weight), axis, 0)
            kernel = kernel.reshape(kernel.shape[0], -1)
            per_channel = np.abs(kernel).sum(1) if criterion == "l1" else np.sqrt((kernel ** 2).sum(1))
            layout = analysis.layers[name].outputs[0]
        for part in _group_slices(layout, group.id, analysis.groups):
            score += per_channel[part]
            found = True
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


def _layout_indices(layout: tuple[int, ...], kept: dict[int, np.ndarray], groups: list[ChannelGroup]) -> np.ndarray:
    starts = _offsets(layout, groups)
    return np.concatenate([starts[i] + kept.get(g, np.arange(groups[g].size)) for i, g in enumerate(layout)])


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
    groups = analysis.groups
    config = model.get_config()
    _strip_build_configs(config)
    configs = _layer_configs(config)
    for name, layer in analysis.weighted.items():
        if type(layer) in _PRODUCERS:
            key = "units" if type(layer) is _L.Dense else "filters"
            configs[name][key] = int(_layout_indices(analysis.layers[name].outputs[0], kept, groups).size)
    pruned = _rebuild(model, config)
    for old in model.layers:
        if isinstance(old, keras.layers.InputLayer):
            continue
        inner, channels = _unwrap(old), analysis.layers.get(old.name)
        ins = outs = None
        if channels is not None and old.name in analysis.weighted:
            ins_layout, outs_layout = channels.inputs[0], channels.outputs[0]
            if any(g in kept for g in ins_layout):
                ins = _layout_indices(ins_layout, kept, groups)
            if any(g in kept for g in outs_layout):
                outs = _layout_indices(outs_layout, kept, groups)
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
