"""Once-for-All supernet: every subnet computes exactly what its extracted tf_keras model computes, channel
sorting changes nothing, training by progressive shrinking resumes after a kill, subnets come out as models
the pipeline runs, and bad input is one line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.core.tf_env import tf
from pipeline.search.space import SearchSpace
from pipeline.search.supernet import Supernet, SupernetSettings, extract, load_supernet, phase_rate, train_supernet
from tests.helpers import invoke, json_output, write_image_folder

TINY = {"name": "tiny", "resolutions": [32], "kernels": [3, 5], "expansions": [3], "depths": [1], "widths": [0.5],
        "se": [False, True], "acts": ["relu6"]}
SMALL = {"name": "small", "resolutions": [32], "kernels": [3, 5, 7], "expansions": [3, 4], "depths": [1, 2],
         "widths": [0.5, 0.75], "se": [False, True], "acts": ["relu6", "hard_swish"]}


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    """The tiny space (one block a stage): the supernet's graph traces in seconds."""
    path = tmp_path_factory.mktemp("space") / "space.json"
    path.write_text(json.dumps(TINY))
    return path


def _probs(net: Supernet, images: np.ndarray, arch) -> np.ndarray:
    """The subnet's graph alone: its code as numbers, static shapes (how training runs the largest net)."""
    return tf.nn.softmax(net(tf.constant(images), net.encode(arch))).numpy()


def test_subnets_compute_what_their_extracted_models_compute():
    space = SearchSpace.from_json(SMALL)
    net = Supernet(space, classes=3)
    rng = np.random.default_rng(0)
    for name, var in net.vars.items():  # kernel transforms away from identity, so that they are exercised
        if "transform" in name:
            var.assign(var.numpy() + rng.normal(0, 0.1, var.shape).astype(np.float32))
    images = rng.uniform(-1, 1, (6, 32, 32, 3)).astype(np.float32)
    # One graph for every subnet, its code a tensor (dynamic shapes): how training runs the sampled subnets.
    shared = tf.function(lambda x, code: tf.nn.softmax(net(x, code)),
                         input_signature=[tf.TensorSpec([None, 32, 32, 3]), tf.TensorSpec([net.code_length], tf.int32)])
    archs = [space.largest(), space.smallest()] + [net.sample("width", rng) for _ in range(3)]
    for arch in archs:
        # Training mode: BatchNorm on batch statistics, as the supernet always normalizes.
        expected = extract(net, arch)(images, training=True).numpy()
        assert np.abs(_probs(net, images, arch) - expected).max() < 1e-4, arch.describe()
        assert np.abs(shared(images, net.encode(arch)).numpy() - expected).max() < 1e-4, arch.describe()
    assert shared.experimental_get_tracing_count() == 1
    before = _probs(net, images, space.largest())
    net.sort_channels()
    assert np.abs(_probs(net, images, space.largest()) - before).max() < 1e-4
    order = np.abs(net.vars["s3b1_expand/kernel"].numpy()).sum(axis=(0, 1, 2))
    assert np.all(np.diff(order) <= 1e-6)  # most important expansion channel first
    with pytest.raises(PipelineError, match="not in the supernet's search space"):
        net.encode(SearchSpace().largest())


def test_phase_rate_warms_up_linearly_then_decays_by_cosine():
    assert phase_rate(0, 100, 20) == pytest.approx(0.1) and phase_rate(10, 100, 20) == pytest.approx(0.55)
    assert phase_rate(20, 100, 20) == pytest.approx(1.0) and phase_rate(60, 100, 20) == pytest.approx(0.5)
    assert phase_rate(0, 100) == pytest.approx(1.0) and phase_rate(50, 100) == pytest.approx(0.5)
    assert phase_rate(99, 100, 20) < 0.01


def _optimizer_steps(folder: Path) -> int:
    with np.load(folder / "supernet.npz") as saved:
        return int(saved["optimizer/0"])  # the optimizer's first variable: its step count


def test_training_until_a_phase_stops_after_it_resumes_with_its_optimizer_until_done_and_a_bad_phase_is_one_line(tmp_path, space_file):
    data = write_image_folder(tmp_path / "data", classes=2, per_class=16, size=32)
    from pipeline.core.data import load_dataset

    images = load_dataset(str(data), 32, progress=False)
    settings = SupernetSettings(epochs=(2, 1, 1, 0), batch_size=32, subnets=1, seed=0)
    space = SearchSpace.from_json(TINY)

    def killed(line: str) -> None:
        raise KeyboardInterrupt  # a kill right after the first epoch (one step) was saved

    with pytest.raises(KeyboardInterrupt):
        train_supernet(images, space, settings, tmp_path / "net", progress=False, log=killed)
    assert _optimizer_steps(tmp_path / "net") == 1
    report = json_output(invoke("supernet", "train", "--data", data, "--space", space_file, "--out", tmp_path / "net",
                                "--epochs", "2,1,1,0", "--batch-size", 32, "--subnets", 1, "--until", "largest",
                                "--json"))
    assert report["phases"] == {"largest": 2} and [h["phase"] for h in report["history"]] == ["largest"] * 2
    # The resumed run went on with the saved momentum and step count, not a fresh optimizer.
    assert _optimizer_steps(tmp_path / "net") == 2
    state = train_supernet(images, space, settings, tmp_path / "net", progress=False, until="largest")
    assert state["done"] == {"largest": 2}  # a finished phase trains nothing more
    with pytest.raises(PipelineError, match="unknown supernet phase 'widest'") as caught:
        train_supernet(images, space, settings, tmp_path / "net", until="widest")
    assert "\n" not in str(caught.value)
    refused = invoke("supernet", "train", "--data", data, "--out", tmp_path / "other", "--until", "widest")
    assert refused.exit_code == 2 and "widest" in refused.output
    shutil.copytree(tmp_path / "net", tmp_path / "lost")
    (tmp_path / "lost" / "supernet.npz").unlink()  # e.g. a run folder copied without its weights
    with pytest.raises(PipelineError, match=r"records 2 trained epoch\(s\) but supernet.npz is missing") as caught:
        train_supernet(images, space, settings, tmp_path / "lost", progress=False)
    assert "\n" not in str(caught.value)
    assert train_supernet(images, space, settings, tmp_path / "lost", until="largest") == state  # nothing to train
    finished = train_supernet(images, space, settings, tmp_path / "net", progress=False)
    assert finished["done"] == {"largest": 2, "kernel": 1, "depth": 1}
    with np.load(tmp_path / "net" / "supernet.npz") as saved:  # nothing resumes a finished supernet
        assert saved.files and not [name for name in saved.files if name.startswith("optimizer/")]
    (tmp_path / "net" / "supernet.npz").unlink()  # its weights used up and dropped: the state still answers
    assert train_supernet(images, space, settings, tmp_path / "net", progress=False) == finished


@pytest.mark.slow  # trains a supernet twice (kill + resume) and extracts a subnet: 13-35 s here
def test_supernet_trains_resumes_after_a_kill_and_its_subnet_goes_on(tmp_path, space_file):
    data = write_image_folder(tmp_path / "data", classes=3, per_class=30, size=32)
    out = tmp_path / "supernet"
    space = SearchSpace.from_json(TINY)
    from pipeline.core.data import load_dataset

    images = load_dataset(str(data), 32, progress=False)

    def killed(line: str) -> None:
        if line.startswith("supernet largest epoch 2"):
            raise KeyboardInterrupt  # a kill right after the second epoch was saved

    settings = SupernetSettings(epochs=(2, 1, 0, 0), batch_size=32, subnets=1)
    with pytest.raises(KeyboardInterrupt):
        train_supernet(images, space, settings, out, progress=False, log=killed)
    assert json.loads((out / "supernet.json").read_text())["done"] == {"largest": 2}

    report = json_output(invoke("supernet", "train", "--data", data, "--space", space_file, "--out", out,
                                "--epochs", "2,1,0,0", "--batch-size", 32, "--subnets", 1, "--json"))
    assert [(h["phase"], h["epoch"]) for h in report["history"]] == [("largest", 1), ("largest", 2), ("kernel", 1)]
    assert set(report["subnets"]) == {"largest", "smallest"}
    assert all(0 <= s["accuracy"] <= 1 for s in report["subnets"].values())
    assert (out / "logs").is_dir() and (out / "report.json").is_file()

    subnet = tmp_path / "subnet"
    result = json_output(invoke("supernet", "extract", out, "--arch", "smallest", "--data", data, "--out", subnet,
                                "--json"))
    assert result["describe"] == space.smallest().describe()
    from pipeline.runner.run import build_net
    from pipeline.stages.convert import load_keras_model

    # `run --model searched:OUT --weights OUT/subnet.h5` starts from exactly the extracted subnet.
    rebuilt = build_net(f"searched:{subnet}", 32, 3, weights=str(subnet / "subnet.h5"))
    saved = load_keras_model(subnet / "subnet.h5")
    probe = np.random.default_rng(1).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    assert np.abs(rebuilt.predict(probe, verbose=0) - saved.predict(probe, verbose=0)).max() < 1e-6
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(PipelineError, match="does not fit searched:"):
        build_net(f"searched:{subnet}", 32, 3, weights=str(tmp_path / "junk.h5"))


def test_bad_input_is_one_line(tmp_path, space_file):
    data = write_image_folder(tmp_path / "data", classes=2, per_class=4, size=32)
    cases = [
        (["train", "--data", data, "--out", tmp_path / "a", "--space", space_file, "--epochs", "1,2"],
         "needs 4 non-negative numbers"),
        (["train", "--data", data, "--out", tmp_path / "a", "--space", space_file, "--epochs", "x"],
         "must be four integers"),
        (["train", "--data", data, "--out", tmp_path / "a", "--space", space_file, "--weight-decay", "-1"],
         "--weight-decay must be ≥ 0"),
        (["train", "--data", data, "--out", tmp_path / "a", "--space", space_file, "--label-smoothing", "1"],
         "--label-smoothing in [0, 1)"),
        (["extract", tmp_path / "nothing", "--arch", "largest", "--data", data, "--out", tmp_path / "e"],
         "holds no supernet"),
    ]
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "supernet.json").write_text("{not json")
    cases.append((["train", "--data", data, "--out", damaged, "--space", space_file], "is damaged"))
    cases.append((["train", "--data", data, "--out", tmp_path / "r", "--space", space_file, "--ray-address",
                   "127.0.0.1:1"], "no Ray cluster answers at 127.0.0.1:1"))
    for args, message in cases:
        result = invoke("supernet", *args)
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    # A folder of another space's supernet is refused, not silently mixed.
    net = Supernet(SearchSpace.from_json(SMALL), 2)
    from pipeline.search.supernet import _save

    (tmp_path / "other").mkdir()
    _save(net, tmp_path / "other", {"space": {**SMALL, "depths": [1]}, "classes": 2, "class_names": ["a", "b"],
                                    "settings": {"seed": 0}, "done": {}})
    with pytest.raises(PipelineError, match="does not fit this space"):
        load_supernet(tmp_path / "other")
    (tmp_path / "other" / "supernet.json").write_text('{"space": 1}')
    with pytest.raises(PipelineError, match="not a search space"):
        load_supernet(tmp_path / "other")
    # A run resumes only with the worker count it started with (the global batch and the rate depend on it).
    from pipeline.core.data import ImageSet
    from pipeline.search.supernet import _header

    images = ImageSet(np.zeros((4, 32, 32, 3), np.uint8), np.array([0, 1, 0, 1]), ["a", "b"])
    tiny, settings = SearchSpace.from_json(TINY), SupernetSettings(epochs=(1, 0, 0, 0))
    _save(Supernet(tiny, 2), tmp_path / "other", {**_header(images, tiny, settings, 1), "done": {}})
    with pytest.raises(PipelineError, match=r"trained with --workers 1\); use another --out"):
        train_supernet(images, tiny, settings, tmp_path / "other", workers=2)


RELU6_ONLY = {**SMALL, "resolutions": [32, 40], "acts": ["relu6"]}  # the session's table has no HARD_SWISH


@pytest.mark.slow  # 19 s; the supernet's exactness stays in the default tier
def test_gradient_search_samples_exact_subnets_and_drives_expected_latency_to_the_budget(cpu_table):
    from pipeline.latency.table import load_table
    from pipeline.search.gradient import GradientSearch
    from tests.helpers import colour_blobs

    space, table = SearchSpace.from_json(RELU6_ONLY), load_table(cpu_table)
    net = Supernet(space, classes=3)
    search = GradientSearch(net, table, 32, budget_ms=1.0, learning_rate=0.1)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    for _ in range(2):
        picks = search.sample(rng)
        arch = search.arch_of(picks)
        # The straight-through forward pass is exactly the sampled subnet.
        relaxed = search.forward(tf.constant(images), search.gates(picks)).numpy()
        assert np.abs(relaxed - net(tf.constant(images), tf.constant(net.encode(arch))).numpy()).max() < 1e-3
    # (The per-block latency sum against whole-model predictions: the slow search test's calibration.)
    start = float(search.lut.expected(search.probabilities()))
    search.budget = 0.5 * start  # a budget the current distribution is far over
    blobs, labels = colour_blobs(3, 8, 32)
    for _ in range(8):
        step = search.step(blobs, labels, rng)
    assert step["expected_ms"] < 0.95 * start
    assert search.space.contains(search.derive())


@pytest.mark.slow
def test_search_scores_with_the_supernet_and_searches_by_gradient(tmp_path, space_file, cpu_table):
    """`tflpipe search --supernet`: candidates scored with inherited weights; `--strategy gradient` proposes
    through the supernet and `--export-epochs` sends the best net through the pipeline; without a supernet the
    gradient strategy is one line."""
    data = write_image_folder(tmp_path / "data", classes=3, per_class=12, size=32)
    supernet = tmp_path / "supernet"
    json_output(invoke("supernet", "train", "--data", data, "--space", space_file, "--out", supernet,
                       "--epochs", "1,0,0,0", "--batch-size", 32, "--json"))
    common = ["--data", data, "--space", space_file, "--table", cpu_table, "--latency-budget", 1.0, "--budget", 2]
    result = invoke("search", *common, "--out", tmp_path / "gradient", "--strategy", "gradient",
                    "--supernet", supernet, "--export-epochs", 1, "--json")
    # The expected latency (per-block kernels from the table) tracks the whole-model prediction.
    error = float(result.output.split("expected latency within ")[1].split("%")[0])
    assert error < 10, result.output
    summary = json_output(result)
    assert summary["trained"] == 2 and summary["best"] is not None
    # The chosen net went through the whole pipeline from its inherited weights: a normal run folder.
    best = tmp_path / "gradient" / "best"
    assert (best / "model_int8.tflite").is_file() and (best / "report.json").is_file()
    assert {row["stage"] for row in summary["best_run"]["summary"]} >= {"keras_float", "tflite_int8"}
    assert (tmp_path / "gradient" / "gradient_logits_32.npz").is_file()
    trials = [json.loads(line) for line in (tmp_path / "gradient" / "trials.jsonl").read_text().splitlines()]
    assert all(0 <= t["accuracy"] <= 1 for t in trials if "accuracy" in t)
    result = invoke("search", *common, "--out", tmp_path / "no_supernet", "--strategy", "gradient")
    assert result.exit_code != 0 and "give --supernet" in result.output
    other = tmp_path / "space2.json"
    other.write_text(json.dumps({**TINY, "kernels": [3, 7]}))
    result = invoke("search", *common[:2], "--space", other, *common[4:], "--out", tmp_path / "wide",
                    "--supernet", supernet)
    assert result.exit_code != 0 and "another search space" in result.output
