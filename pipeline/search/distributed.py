"""Scale-out on Ray: candidate evaluations as Ray tasks, and data-parallel training with Ray Train (a Keras
``fit``, :func:`fit_data_parallel`; the supernet's own loop is ``pipeline.search.supernet``'s).

With more than one worker an embedded local Ray starts (nothing to set up); ``address`` joins a running
cluster instead (``ray start --head`` on one machine, ``ray start --address HEAD:6379`` on the others, this
package installed in every node's Python). One worker needs no Ray at all: :class:`LocalExecutor` runs
the evaluations in this process, so small searches and tests never pay Ray's start-up (seconds).

Facts this module is built on (Ray 2.60 beside TF 2.21): ``TF_USE_LEGACY_KERAS=1`` must be set in every
worker before TensorFlow is imported (the runtime environment does it); Ray Train's TensorFlow trainer only
writes ``TF_CONFIG``, so the distribution strategy is created first thing in the training function, before
any TF op; Ray's ``TensorflowCheckpoint`` breaks on subclassed models, so rank 0 saves a tf_keras ``.h5``
itself; and joining ``127.0.0.1:1`` (nothing there) makes ``ray.init`` retry for minutes, so an address is
probed with a plain TCP connect first.
"""
from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Hashable

from pipeline.core.data import ImageSet
from pipeline.core.errors import PipelineError
from pipeline.core.fsutil import write_bytes

CONNECT_TIMEOUT_S = 5.0
WORKER_ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
DEFAULT_CLIENT_PORT = 10001  # ``ray://HOST`` without a port (Ray Client's default)


class LocalExecutor:
    """Evaluations in this process, one at a time, each run when its result is collected."""

    slots = 1

    def __init__(self) -> None:
        self._queue: deque = deque()

    def share(self, value: Any) -> Any:
        """A handle ``submit`` accepts in place of ``value`` (here: the value itself)."""
        return value

    def submit(self, tag: Hashable, function: Callable, *args: Any) -> None:
        self._queue.append((tag, function, args))

    def pending(self) -> int:
        return len(self._queue)

    def next_done(self) -> tuple[Hashable, Any]:
        """The tag and result of the next finished evaluation."""
        tag, function, args = self._queue.popleft()
        return tag, function(*args)

    def close(self) -> None:
        self._queue.clear()

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _call(function: Callable, *args: Any) -> Any:
    return function(*args)


class RayExecutor:
    """Evaluations as Ray tasks, ``workers`` at a time; results come back in the order they finish.

    The cluster's CPUs are split evenly over the concurrent tasks, and each task's TensorFlow uses that many
    intra-op threads (Ray itself pins OMP threads, not TensorFlow's).
    """

    def __init__(self, workers: int, address: str | None = None, log: Callable[[str], None] = lambda _: None) -> None:
        import ray

        self.slots = workers
        self._started = connect(address, max(workers, os.cpu_count() or 1), log)
        cpus = max(1, int(ray.cluster_resources().get("CPU", workers)) // workers)
        env = {**WORKER_ENV, "TF_NUM_INTRAOP_THREADS": str(cpus)}
        self._remote = ray.remote(_call).options(num_cpus=cpus, runtime_env={"env_vars": env})
        self._running: dict = {}  # ObjectRef -> tag

    def share(self, value: Any) -> Any:
        """``value`` in the object store, once: every task that gets the handle reads the same copy."""
        import ray

        return ray.put(value)

    def submit(self, tag: Hashable, function: Callable, *args: Any) -> None:
        self._running[self._remote.remote(function, *args)] = tag

    def pending(self) -> int:
        return len(self._running)

    def next_done(self) -> tuple[Hashable, Any]:
        import ray

        done, _ = ray.wait(list(self._running), num_returns=1)
        tag = self._running.pop(done[0])
        try:
            return tag, ray.get(done[0])
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, PipelineError):
                raise PipelineError(str(cause)) from None
            raise PipelineError(f"evaluation {tag} failed in a Ray worker: {type(cause).__name__}: "
                                f"{str(cause).splitlines()[0] if str(cause) else ''}") from None
        except ray.exceptions.RayError as exc:
            raise PipelineError(f"evaluation {tag} was lost with its Ray worker ({type(exc).__name__}); "
                                "finished trials are kept: run the same command again to resume") from None

    def close(self) -> None:
        import ray

        for ref in self._running:
            ray.cancel(ref, force=True)
        self._running.clear()
        if self._started:
            ray.shutdown()

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def make_executor(workers: int = 1, address: str | None = None,
                  log: Callable[[str], None] = lambda _: None) -> LocalExecutor | RayExecutor:
    """In-process for one worker and no cluster; Ray otherwise."""
    if workers < 1:
        raise PipelineError("--workers must be at least 1")
    if workers == 1 and address is None:
        return LocalExecutor()
    return RayExecutor(workers, address, log)


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse an address nothing answers on, in seconds (``ray.init`` itself retries for minutes)."""
    if address == "auto":
        return  # Ray reads the running cluster's address from this machine's session files
    client = address.startswith("ray://")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host:
        host, port = port, str(DEFAULT_CLIENT_PORT) if client else ""
    if not port.isdigit():
        raise PipelineError(f"--ray-address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise PipelineError(f"no Ray cluster answers at {address} ({exc.strerror or type(exc).__name__}); start "
                            "one with `ray start --head` or leave --ray-address out for a local one") from None


def connect(address: str | None, num_cpus: int, log: Callable[[str], None] = lambda _: None) -> bool:
    """Start an embedded local Ray with ``num_cpus`` CPUs, or join the cluster at ``address``; True when this
    call started Ray (and so must shut it down). A Ray already initialized in this process is used as is."""
    import ray

    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False,
             "runtime_env": {"env_vars": WORKER_ENV}}
    if address is None:
        started = time.monotonic()
        ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
        log(f"started a local Ray with {num_cpus} CPUs in {time.monotonic() - started:.1f} s")
        return True
    check_reachable(address)
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise PipelineError(f"cannot join the Ray cluster at {address}: {str(exc).splitlines()[0]}") from None
    log(f"joined the Ray cluster at {address} ({int(ray.cluster_resources().get('CPU', 0))} CPUs)")
    return True


def _train_worker(config: dict) -> None:
    """One Ray Train worker: the strategy before any TF op, the model built and trained in its scope."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import ray
    import ray.train

    from pipeline.core.fsutil import save_keras_model
    from pipeline.core.tf_env import tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # reads TF_CONFIG, written by Ray Train
    from pipeline.stages.train import fit, keras_accuracy, recalibrate_batchnorm

    train, val, settings = ray.get(config["train"]), ray.get(config["val"]), config["settings"]
    with strategy.scope():
        model = config["build"]()
        history = fit(model, train, None, settings, recalibrate=False)
    # A plain copy, outside the strategy: BatchNorm statistics recalibrated, scored and saved like `fit` would.
    plain = config["build"]()
    plain.set_weights(model.get_weights())
    recalibrate_batchnorm(plain, train, settings)
    metrics = {"accuracy": keras_accuracy(plain, val), "history": history}
    if ray.train.get_context().get_world_rank() == 0:
        with tempfile.TemporaryDirectory() as folder:
            save_keras_model(plain, Path(folder) / "model.h5")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
    else:
        ray.train.report(metrics)


def fit_data_parallel(build: Callable[[], Any], train: ImageSet, val: ImageSet, settings: Any, out: str | Path,
                      workers: int = 2, address: str | None = None, storage: str | None = None,
                      log: Callable[[str], None] = lambda _: None) -> dict:
    """Train ``build()`` data-parallel over ``workers`` Ray Train workers (MultiWorkerMirroredStrategy) and
    save the trained net as a tf_keras ``.h5`` at ``out``; returns its validation accuracy, the history,
    the global batch and the wall time.

    ``build`` must be picklable: a module-level function or ``functools.partial(keras_models.build_model,
    "mobilenet_v2", input_size=32, classes=3, alpha=0.35)``, ``partial(pipeline.search.space.build, arch,
    classes)``. ``settings`` is a ``pipeline.stages.train.FitSettings`` for ONE worker: its batch size is the
    per-worker batch, so the global batch is ``batch_size x workers`` and there are ``workers`` times fewer
    steps per epoch. Kept equal to the 1-worker run: the epochs (passes over the data), the per-worker batch,
    the seed and the schedule's shape (warm-up and cosine decay over the run); the learning rate is scaled
    linearly with the global batch (Goyal et al., 2017), so each image moves the weights as much as with one
    worker. Every worker reads the whole (train, validation) arrays from the object store and keeps its
    shard of each global batch (tf.data's automatic DATA sharding). ``storage`` is where Ray Train keeps the
    checkpoint: a temporary folder by default, a folder every node sees (or ``s3://...``) on a cluster.
    """
    from dataclasses import replace

    import pipeline.core.tf_env  # noqa: F401 - TensorFlow with tf_keras first: Ray Train's module imports it

    if workers < 1:
        raise PipelineError("workers must be at least 1")
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    started_at = time.monotonic()
    started = connect(address, max(workers, os.cpu_count() or 1), log)
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", workers)) // workers)
        scaled = replace(settings, batch_size=settings.batch_size * workers,
                         learning_rate=settings.learning_rate * workers)
        with tempfile.TemporaryDirectory() as scratch:
            trainer = TensorflowTrainer(
                _train_worker,
                train_loop_config={"build": build, "train": ray.put(train), "val": ray.put(val), "settings": scaled},
                scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": cpus}),
                run_config=RunConfig(storage_path=storage or scratch, name=f"fit_{os.getpid()}_{time.time_ns()}"),
            )
            try:
                result = trainer.fit()
            except Exception as exc:  # Ray Train wraps the worker's error; its first line says what failed
                raise PipelineError(f"data-parallel training on {workers} Ray workers failed: "
                                    f"{str(exc).strip().splitlines()[-1][:300]}") from None
            with result.checkpoint.as_directory() as folder:
                write_bytes(out, (Path(folder) / "model.h5").read_bytes())
    finally:
        if started:
            ray.shutdown()
    return {"accuracy": result.metrics["accuracy"], "history": result.metrics["history"], "workers": workers,
            "global_batch": scaled.batch_size, "learning_rate": scaled.learning_rate,
            "seconds": round(time.monotonic() - started_at, 1), "path": str(out)}
