"""Every setting checked before any training starts, in one line each: fast unit tests of ``load_config``."""
from __future__ import annotations

import pytest

from pipeline.core.errors import PipelineError
from pipeline.runner.config import RunConfig, load_config, setting_default


@pytest.mark.parametrize("overrides, message", [
    ({"epochs": "ten"}, "setting epochs must be int"),
    ({"alpha": True}, "setting alpha must be float | None"),
    ({"ptq_modes": [3]}, "setting ptq_modes must be a list of names"),
    ({"learning_rate": 0.0}, "learning rates must be positive"),
    ({"cluster_epochs": -1}, "epochs cannot be negative"),
    ({"benchmark_runs": 0}, "benchmark_runs must be at least 1"),
    ({"prune_pattern": "xnnpack", "prune_sparsity": 0.5}, "at least 2/3"),
    ({"ptq_modes": ["int4"]}, "unknown PTQ mode(s) int4"),
    ({"targets": ["tpu"]}, "unknown target(s) tpu"),
    ({"weights": "/no/such/weights.h5"}, "--weights file not found"),
    ({"teacher": "/no/such/teacher.h5"}, "--teacher file not found"),
    ({"io_dtype": "int16"}, "--io-dtype must be one of uint8, int8"),
])
def test_bad_settings_are_one_line(overrides, message):
    with pytest.raises(PipelineError, match=None) as caught:
        load_config(None, overrides)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("text, message", [
    ("a: &x [1, 2]\nb: *x\n", "uses YAML aliases"),
    ("epochs: [unclosed\n", "is not valid YAML"),
    ("- just\n- a list\n", "must hold a mapping"),
    ("learning_rat: 0.1\n", "unknown setting(s) learning_rat"),
])
def test_bad_config_files_are_one_line(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(PipelineError) as caught:
        load_config(path, {})
    assert message in str(caught.value)


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(levels) + "\n")
    with pytest.raises(PipelineError, match="aliases"):
        load_config(path, {})


def test_non_utf8_and_oversized_config_files(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("model: caf\xe9\n".encode("latin-1"))
    with pytest.raises(PipelineError, match="not UTF-8"):
        load_config(latin, {})
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(PipelineError, match="a settings file is at most"):
        load_config(big, {})


def test_flags_override_the_file_and_unset_flags_keep_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\nprune-sparsity: 0.25\n")
    config = load_config(path, {"epochs": 7, "alpha": None})
    assert (config.epochs, config.prune_sparsity, config.alpha) == (7, 0.25, setting_default("alpha"))


def test_fit_settings_are_the_one_mapping_from_the_configuration():
    config = RunConfig(epochs=10, prune_epochs=3, prune_learning_rate=0.004, data="some/folder")
    train, prune = config.fit_settings("train"), config.fit_settings("prune")
    assert (train.epochs, train.learning_rate, train.weight_decay, train.warmup_epochs) == (10, 0.05, 5e-5, 1.0)
    assert (prune.epochs, prune.learning_rate, prune.weight_decay, prune.warmup_epochs) == (3, 0.004, 0.0, 0.0)
    assert train.flip and not RunConfig(data="builtin:digits").fit_settings("qat").flip  # no mirrored digits
