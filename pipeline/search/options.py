"""Settings of the search layer that the CLI reads for its defaults, in a module that loads no TensorFlow."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.errors import PipelineError

PHASES = ("largest", "kernel", "depth", "width")  # progressive shrinking (pipeline.search.supernet)


@dataclass(frozen=True)
class SupernetSettings:
    """How ``tflpipe supernet train`` runs progressive shrinking; every field is one of its options."""

    epochs: tuple[int, int, int, int] = (6, 3, 3, 3)  # per phase: largest, kernel, depth, width
    learning_rate: float = 0.05
    batch_size: int = 64
    subnets: int = 2  # sampled subnets per step beside the largest (sandwich rule)
    # Decoupled (each step: weights -= learning rate x decay, as `tflpipe train`'s), the CIFAR-10 recipe's value;
    # OFA's 3e-5 as an L2 term under momentum 0.9 is about 3e-4 decoupled.
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    seed: int = 0

    def check(self) -> "SupernetSettings":
        if len(self.epochs) != len(PHASES) or any(e < 0 for e in self.epochs) or not any(self.epochs):
            raise PipelineError(f"--epochs needs {len(PHASES)} non-negative numbers ({', '.join(PHASES)}), "
                                f"not all zero; got {list(self.epochs)}")
        if self.learning_rate <= 0 or self.batch_size < 1 or self.subnets < 0:
            raise PipelineError("the learning rate must be positive, the batch size and subnets at least 1 and 0")
        if self.weight_decay < 0 or not 0 <= self.label_smoothing < 1:
            raise PipelineError(f"--weight-decay must be ≥ 0 and --label-smoothing in [0, 1); got {self.weight_decay} "
                                f"and {self.label_smoothing}")
        return self
