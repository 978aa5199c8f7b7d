"""Stage 1: train (or fine-tune) the float Keras model; also the fit loop later stages reuse."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.data import ImageSet, normalize
from pipeline.core.errors import PipelineError
from pipeline.core.tf_env import keras, tf


@dataclass(frozen=True)
class FitSettings:
    """How one training phase runs; pruning and QAT fine-tuning use the same loop with other values."""

    epochs: int
    learning_rate: float = 0.05
    batch_size: int = 64
    weight_decay: float = 5e-5
    label_smoothing: float = 0.1
    augment: bool = True
    flip: bool = True
    warmup_epochs: float = 0.0
    seed: int = 0


def make_dataset(data: ImageSet, batch_size: int, training: bool, augment: bool = False, flip: bool = True, seed: int = 0):
    """A tf.data pipeline over in-memory uint8 images: pad-and-crop (+ flip) augmentation, [-1, 1] inputs."""
    classes = len(data.class_names)
    images, labels = tf.constant(data.images), tf.constant(data.labels)
    # Image sets are stored class by class: only a shuffle over the whole set (of indices, so the
    # buffer stays small) gives batches with every class in them.
    ds = tf.data.Dataset.range(len(data))
    if training:
        ds = ds.shuffle(len(data), seed=seed, reshuffle_each_iteration=True)
    size = data.images.shape[1]

    def prepare(index):
        image, label = tf.cast(tf.gather(images, index), tf.float32), tf.gather(labels, index)
        if training and augment:
            pad = max(1, size // 8)
            image = tf.image.resize_with_crop_or_pad(image, size + 2 * pad, size + 2 * pad)
            image = tf.image.random_crop(image, (size, size, 3))
            if flip:
                image = tf.image.random_flip_left_right(image)
        return (image - 127.5) / 127.5, tf.one_hot(label, classes)

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def compile_for_training(model: keras.Model, settings: FitSettings, steps_per_epoch: int) -> None:
    total = max(1, settings.epochs * steps_per_epoch)
    warmup = int(settings.warmup_epochs * steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=settings.learning_rate if not warmup else settings.learning_rate / 10,
        decay_steps=max(1, total - warmup),
        warmup_target=settings.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    optimizer = keras.optimizers.SGD(
        schedule, momentum=0.9, nesterov=True, weight_decay=settings.weight_decay or None
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing),
        metrics=["accuracy"],
    )


@dataclass(frozen=True)
class Distillation:
    """Knowledge distillation (Hinton et al., 2015, "Distilling the Knowledge in a Neural Network").

    The student learns from ``alpha`` x (the teacher's temperature-softened class distribution) +
    (1 - ``alpha``) x (the labels). Both nets end in softmax; their log-probabilities stand in for
    logits, which give the same softened distribution.
    """

    teacher: keras.Model
    temperature: float = 4.0
    alpha: float = 0.9


class _Distiller(keras.Model):
    """Trains ``student`` against a frozen teacher; predicts and validates as the student alone."""

    def __init__(self, student: keras.Model, distillation: Distillation):
        super().__init__(name=f"{student.name}_distiller")
        self.student = student
        self.distillation = distillation
        distillation.teacher.trainable = False

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def _softened(self, probs):
        return tf.nn.softmax(tf.math.log(tf.maximum(probs, 1e-8)) / self.distillation.temperature)

    def train_step(self, data):
        images, labels = data
        d = self.distillation
        soft_targets = self._softened(d.teacher(images, training=False))
        with tf.GradientTape() as tape:
            probs = self.student(images, training=True)
            hard = self.compiled_loss(labels, probs, regularization_losses=self.student.losses)
            soft = tf.reduce_mean(keras.losses.kl_divergence(soft_targets, self._softened(probs)))
            loss = (1.0 - d.alpha) * hard + d.alpha * d.temperature**2 * soft
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.compiled_metrics.update_state(labels, probs)
        return {"loss": loss, "distill_loss": soft, **{m.name: m.result() for m in self.metrics if m.name != "loss"}}


class _ValidationAsReported(keras.callbacks.Callback):
    """At each epoch's end, the validation accuracy the report will give this model, in Keras' logs.

    Keras' own ``val_accuracy`` evaluates with BatchNorm moving statistics that short runs have not
    settled yet (0.09 for a net the report then scores at 97%), so it is not shown. Here the
    statistics are recalibrated first, exactly as the stage does after training (unless the phase
    keeps them, as QAT does, whose quantizer ranges would move in training mode).
    """

    def __init__(self, student: keras.Model, train: ImageSet, val: ImageSet, settings: FitSettings, recalibrate: bool):
        super().__init__()
        self.student, self.train, self.val, self.settings, self.recalibrate = student, train, val, settings, recalibrate

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.recalibrate:
            recalibrate_batchnorm(self.student, self.train, self.settings)
        if logs is not None:
            logs["val_accuracy"] = keras_accuracy(self.student, self.val)


def fit(model: keras.Model, train: ImageSet, val: ImageSet | None, settings: FitSettings, callbacks=(),
        distill: Distillation | None = None, log_dir: str | Path | None = None,
        recalibrate: bool = True) -> dict:
    """Train ``model`` in place (from a teacher too, with ``distill``); returns the per-epoch history.

    With ``recalibrate``, the model leaves with BatchNorm statistics recalibrated at its final
    weights, so the validation accuracy shown for the last epoch is exactly the one the report
    gives it (see :class:`_ValidationAsReported`). ``log_dir`` receives TensorBoard logs.
    """
    if settings.epochs == 0:  # e.g. clustering or QAT wrapping without fine-tuning: nothing to train
        return {}
    keras.utils.set_random_seed(settings.seed)
    steps = math.ceil(len(train) / settings.batch_size)
    student = model
    if distill is not None:
        check_teacher(distill.teacher, model)
        model = _Distiller(model, distill)
    compile_for_training(model, settings, steps)
    train_ds = make_dataset(train, settings.batch_size, True, settings.augment, settings.flip, settings.seed)
    extra = [_ValidationAsReported(student, train, val, settings, recalibrate)] if val is not None else []
    if log_dir is not None:
        extra.append(keras.callbacks.TensorBoard(str(log_dir), write_graph=False, profile_batch=0))
    history = model.fit(
        train_ds,
        epochs=settings.epochs,
        verbose=1 if sys.stdout.isatty() else 2,
        callbacks=[*extra, *callbacks],
    )
    if recalibrate and val is None:  # otherwise the last epoch's callback did it
        recalibrate_batchnorm(student, train, settings)
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def check_teacher(teacher: keras.Model, student: keras.Model) -> None:
    """A teacher must see the student's inputs and predict the same classes."""
    if tuple(teacher.input_shape[1:]) != tuple(student.input_shape[1:]) or teacher.output_shape[-1] != student.output_shape[-1]:
        raise PipelineError(f"teacher {teacher.name} takes {teacher.input_shape[1:]} and predicts {teacher.output_shape[-1]} "
                            f"classes, the student {student.input_shape[1:]} and {student.output_shape[-1]}; "
                            "train the teacher on the same data and input size")


def keras_accuracy(model: keras.Model, data: ImageSet, batch_size: int = 256) -> float:
    """Top-1 accuracy of a Keras model (float, pruned or QAT-wrapped) on ``data``."""
    probs = model.predict(normalize(data.images), batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(probs, axis=-1) == data.labels))


def recalibrate_batchnorm(model: keras.Model, data: ImageSet, settings: FitSettings, batches: int = 40) -> None:
    """Replace BatchNorm moving statistics by their average over training batches at the final weights.

    Moving averages with momentum 0.99 need ~500 steps to forget their initial values; short runs
    (fine-tuning, small datasets) would otherwise evaluate with stale statistics. The batches go
    through the same augmentation as training: statistics of un-augmented images (no pad-and-crop
    borders) cost MobileNet v1 four points on CIFAR-10. Running them in training mode with momentum
    k/(k+1) leaves the exact mean of the batch statistics.
    """
    bn_layers = [layer for layer in model.submodules if isinstance(layer, keras.layers.BatchNormalization)]
    if not bn_layers:
        return
    saved = [layer.momentum for layer in bn_layers]
    batches_ds = make_dataset(data, min(settings.batch_size, 64), True, settings.augment, settings.flip, settings.seed)
    try:
        for k, (images, _) in enumerate(batches_ds.take(batches)):
            for layer in bn_layers:
                layer.momentum = k / (k + 1)
            model(images, training=True)
    finally:
        for layer, momentum in zip(bn_layers, saved):
            layer.momentum = momentum
