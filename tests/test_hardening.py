"""Hostile or unlucky inputs: models carrying code, labels that drive terminals, damaged metadata, ssh
arguments that become options, decompression bombs, odd folders, unwritable outputs and full disks."""
from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from pipeline.core import fsutil
from pipeline.core.data import list_image_folder, load_image, load_image_folder
from pipeline.core.errors import PipelineError
from pipeline.core.labels import display_label, parse_labels, read_labels
from pipeline.core.tflite_file import read_model
from pipeline.stages.convert import load_keras_model
from pipeline.stages.metadata import write_metadata
from tests.helpers import invoke, json_output
from tests.test_edgetpu_deploy import _calls, fake_ssh  # noqa: F401  (the recording ssh/scp stand-ins)

HOSTILE_LABELS = ["\x1b]0;owned\x07\x1b[31mred", "car\rriage", "\u202eevil\x9b2J"]


def _one_line_failure(result) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    return result.output


def _tiny(middle=None):
    """Input(8x8x3) -> Conv2D(2) -> [middle] -> GlobalAveragePooling -> Dense(3, softmax)."""
    from pipeline.core.tf_env import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3)(inputs)
    x = middle(x) if middle else x
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def _marker_lambda(marker: Path):
    """A Lambda layer whose function creates ``marker`` whenever it runs (a Keras loader rebuilding it runs it)."""
    from pipeline.core.tf_env import keras

    # Named: Keras' automatic name ('lambda', 'lambda_1', ...) depends on what the process built before.
    return keras.layers.Lambda(eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]"), name="lambda")


@pytest.fixture(scope="module")
def tflite(tmp_path_factory) -> Path:
    """The tiny model as float32 .tflite, without metadata."""
    from pipeline.stages.convert import convert

    path = tmp_path_factory.mktemp("tiny") / "tiny.tflite"
    path.write_bytes(convert(_tiny(), "float32"))
    return path


@pytest.fixture()
def hostile_tflite(tflite, tmp_path, monkeypatch) -> Path:
    """The tiny model with hostile labels in its metadata, as a third-party file could hold them."""
    import pipeline.stages.metadata as metadata

    monkeypatch.setattr(metadata, "label_problem", lambda text: None)  # our writer refuses them
    return write_metadata(tflite, HOSTILE_LABELS, tmp_path / "hostile.tflite")


def _png(path: Path, size: int = 16) -> Path:
    Image.fromarray(np.full((size, size, 3), 200, np.uint8)).save(path)
    return path


def _bomb(path: Path) -> Path:
    """A 200-byte PNG whose header claims 60000 x 60000 pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


# 1. Safe model loading


def test_lambda_h5_is_refused_before_its_code_runs_and_loads_when_trusted(tmp_path):
    marker, model = tmp_path / "ran", tmp_path / "lambda.h5"
    _tiny(_marker_lambda(marker)).save(model, include_optimizer=False)
    marker.unlink()  # building the model ran it once
    refused = invoke("convert", model, "--mode", "float32", "--out", tmp_path / "m.tflite")
    message = _one_line_failure(refused)
    assert "Lambda" in message and "'lambda'" in message and "--trust-model-code" in message
    assert not marker.exists() and not (tmp_path / "m.tflite").exists()
    trusted = invoke("convert", model, "--mode", "float32", "--out", tmp_path / "m.tflite", "--trust-model-code")
    assert trusted.exit_code == 0, trusted.output
    assert marker.exists() and read_model(tmp_path / "m.tflite").output_tensors[0].shape == (1, 3)


def test_lambda_keras_and_savedmodel_are_refused(tmp_path):
    marker = tmp_path / "ran"
    model = _tiny(_marker_lambda(marker))
    model.save(tmp_path / "lambda.keras")
    model.save(tmp_path / "saved_model")
    plain = tmp_path / "plain_saved_model"
    _tiny().save(plain)
    (plain / "keras_metadata.pb").unlink()
    marker.unlink()
    for path in (tmp_path / "lambda.keras", tmp_path / "saved_model"):
        with pytest.raises(PipelineError, match="Lambda.*--trust-model-code"):
            load_keras_model(path)
    with pytest.raises(PipelineError, match="without keras_metadata.pb.*--trust-model-code"):
        load_keras_model(plain)
    assert not marker.exists()
    assert load_keras_model(tmp_path / "lambda.keras", trust_code=True).output_shape == (None, 3)


def _with_config(path: Path, change) -> Path:
    """Rewrite the model config stored in an .h5 file, as a crafted file would hold it."""
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        change(config["config"]["layers"])
        f.attrs["model_config"] = json.dumps(config)
    return path


def test_unknown_classes_modules_and_file_writing_tf_functions_are_refused(tmp_path):
    from keras_models.layers import HardSwish
    from pipeline.core.tf_env import tf

    fine = tmp_path / "fine.h5"
    _tiny(lambda x: HardSwish()(tf.nn.relu6(x) * 2.0)).save(fine, include_optimizer=False)  # zoo layer, TF math
    assert load_keras_model(fine).output_shape == (None, 3)
    cases = {
        "class 'Backdoor'": lambda layers: layers[1].update(class_name="Backdoor"),
        "module 'os'": lambda layers: layers[1].update(module="os"),
        "'io.write_file'": lambda layers: next(layer for layer in layers if layer["class_name"] == "TFOpLambda")[
            "config"].update(function="io.write_file"),
    }
    for expected, change in cases.items():
        path = _with_config(shutil.copyfile(fine, tmp_path / "crafted.h5"), change)
        with pytest.raises(PipelineError, match=f"{expected}.*--trust-model-code") as info:
            load_keras_model(path)
        assert "\n" not in str(info.value)


def test_every_verb_loading_keras_models_has_the_flag_and_train_checks_its_teacher(tmp_path, monkeypatch):
    import pipeline.cli.stages as stages

    for verb in ("convert", "prune", "qat", "cluster", "quant-debug", "train"):
        assert "--trust-model-code" in invoke(verb, "--help").output, verb
    marker, teacher = tmp_path / "ran", tmp_path / "teacher.h5"
    _tiny(_marker_lambda(marker)).save(teacher, include_optimizer=False)
    marker.unlink()
    monkeypatch.setattr(stages, "_load_split", lambda *a: pytest.fail("data loaded before the teacher was checked"))
    message = _one_line_failure(invoke("train", "--teacher", teacher, "--out", tmp_path / "student.h5"))
    assert "Lambda" in message and not marker.exists()


# 2. Labels


def test_display_label_escapes_what_drives_a_terminal_and_caps_the_length():
    shown = [display_label(label) for label in HOSTILE_LABELS]
    assert shown == ["\\x1b]0;owned\\x07\\x1b[31mred", "car\\x0driage", "\\u202eevil\\x9b2J"]
    assert display_label("\u2028x\ufeff") == "\\u2028x\\ufeff" and display_label("Größe 🐱") == "Größe 🐱"
    long = display_label("a" * 500)
    assert len(long) <= 64 + 3 and long.endswith("...")


def test_labels_split_on_newline_only_and_odd_encodings_are_decoded_or_refused(tmp_path):
    assert parse_labels("a\rb\r\nc\x0bd\n\ne\u2028f\x1cg\n") == ["a\rb", "c\x0bd", "e\u2028f\x1cg"]
    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeffcat\ndog\n".encode("utf-8"))
    assert read_labels(path) == ["cat", "dog"]
    path.write_bytes("cat\r\nchat noir\r\n".encode("utf-16"))  # with a byte-order mark
    assert read_labels(path) == ["cat", "chat noir"]
    for data, message in (("cat\ndog\n".encode("utf-16-le"), "NUL"), ("caf\xe9\n".encode("latin-1"), "not UTF-8")):
        path.write_bytes(data)
        with pytest.raises(PipelineError, match=message) as info:
            read_labels(path)
        assert "\n" not in str(info.value)


def test_predict_prints_hostile_metadata_labels_escaped(hostile_tflite, tmp_path):
    assert read_model(hostile_tflite).metadata["labels"] == HOSTILE_LABELS  # the \r no longer splits a label
    result = invoke("predict", hostile_tflite, _png(tmp_path / "x.png", 8), "--top-k", "3")
    assert result.exit_code == 0, result.output
    assert not {"\x1b", "\r", "\x07", "\x9b", "\u202e"} & set(result.output)
    assert "car\\x0driage" in result.output and "\\x1b]0;owned" in result.output


def test_demo_and_edgetpu_run_print_labels_escaped(hostile_tflite, tflite, tmp_path, monkeypatch):
    import cv2

    import pipeline.cli.targets as targets
    from pipeline.targets.android.demo import FrameResult, annotate

    images = tmp_path / "images"
    images.mkdir()
    _png(images / "a.png")
    demo = invoke("demo", "--images", images, "--model", hostile_tflite, "--headless", "--top-k", "3")
    assert demo.exit_code == 0, demo.output
    assert "frame" in demo.output and "car\\x0driage" in demo.output and not {"\x1b", "\r"} & set(demo.output)
    drawn: list[str] = []
    monkeypatch.setattr(cv2, "putText", lambda frame, text, *a: drawn.append(text))
    annotate(np.zeros((8, 8, 3), np.uint8), FrameResult(0, [(0, 0.5)], 30.0), lambda i: HOSTILE_LABELS[0])
    assert not any("\x1b" in text for text in drawn) and "\\x1b" in drawn[-1]

    monkeypatch.setattr(targets.runtime, "run_image", lambda model, image, names, k: {
        "top": [{"label": names[0], "score": 0.9}]})
    labels = tmp_path / "labels.txt"
    labels.write_text("\x1b[2Jwipe\ncat\ndog\n")
    shown = invoke("edgetpu", "run", tflite, "--image", images / "a.png", "--labels", labels)
    assert shown.exit_code == 0 and shown.output == "\\x1b[2Jwipe: 0.900\n", shown.output
    labels.write_text("cat\ndog\n")
    assert "2 labels" in _one_line_failure(invoke("edgetpu", "run", tflite, "--image", images / "a.png",
                                                   "--labels", labels))


def test_class_folders_whose_names_break_labels_are_refused_before_training(tmp_path, monkeypatch):
    for bad in ("cat\nmeow", "dog\x1b[31m", " padded"):
        root = tmp_path / f"d{len(list(tmp_path.iterdir()))}"
        for name in (bad, "other"):
            (root / name).mkdir(parents=True)
            _png(root / name / "a.png")
        with pytest.raises(PipelineError, match="cannot name a class") as info:
            list_image_folder(root)
        assert "\n" not in str(info.value) and "\x1b" not in str(info.value)
    monkeypatch.setattr("keras_models.build_model", lambda *a, **k: pytest.fail("trained"))
    message = _one_line_failure(invoke("train", "--data", root, "--out", tmp_path / "m.h5"))
    assert "padded" in message and "cannot name a class" in message


def test_labels_that_do_not_fit_the_model_or_the_readers_are_refused(tflite, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    message = _one_line_failure(invoke("metadata", tflite, "--labels", labels, "--out", tmp_path / "m.tflite"))
    assert "2 labels given but tiny.tflite has 3 outputs" in message
    with pytest.raises(PipelineError, match=r"label 2 \('car\\x0driage'\).*control character"):
        write_metadata(tflite, ["a", "car\rriage", "b"], tmp_path / "m.tflite")
    from pipeline.targets.android.export import export_android

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copyfile(tflite, run_dir / "model_int8.tflite")
    (run_dir / "labels.txt").write_text("cat\ndog\x1b[0m\nbird\n")
    with pytest.raises(PipelineError, match="label 2 .* cannot go to the app"):
        export_android(run_dir, tmp_path / "assets")


# 3. Metadata idempotence


def test_metadata_written_twice_keeps_the_second_labels(tflite, tmp_path):
    model = shutil.copyfile(tflite, tmp_path / "m.tflite")
    for labels in (["a", "b", "c"], ["x", "y", "z"]):
        (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n")
        assert invoke("metadata", model, "--labels", tmp_path / "labels.txt").exit_code == 0
    first_size = model.stat().st_size
    write_metadata(model, ["x", "y", "z"])
    assert read_model(model).metadata["labels"] == ["x", "y", "z"] and model.stat().st_size == first_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.txt", "m.tflite"]  # no temps left


def test_damaged_metadata_is_replaced_instead_of_failing_forever(tflite, tmp_path):
    model = write_metadata(tflite, ["a", "b", "c"], tmp_path / "m.tflite")
    data = bytearray(model.read_bytes())
    start = data.index(b"M001") - 4  # the TFLITE_METADATA flatbuffer
    data[start + 8 : start + 40] = b"\xff" * 32
    model.write_bytes(bytes(data[:-12]))  # and a zip cut short, as a kill mid-write leaves it
    with pytest.raises(PipelineError):
        read_model(model)
    write_metadata(model, ["x", "y", "z"])
    assert read_model(model).metadata["labels"] == ["x", "y", "z"]


# 4. Edge TPU deployment over ssh


@pytest.mark.parametrize("args,message", [
    (["--host", "-Fx"], "USER@BOARD"),
    (["--host", "-oProxyCommand"], "USER@BOARD"),
    (["--host", "me@-oProxyCommand"], "USER@BOARD"),
    (["--host", "me@board\n"], "USER@BOARD"),
    (["--host", "me@board", "--remote-dir", "x;touch pwned"], "--remote-dir"),
    (["--host", "me@board", "--remote-dir", "$(id)"], "--remote-dir"),
    (["--host", "me@board", "--remote-dir", "dir\nrm -rf x"], "--remote-dir"),
    (["--host", "me@board", "--remote-dir", "-rf"], "--remote-dir"),
])
def test_deploy_refuses_hosts_and_folders_that_become_options_or_commands(tflite, fake_ssh, args, message):  # noqa: F811
    assert message in _one_line_failure(invoke("edgetpu", "deploy", tflite, *args))
    assert not fake_ssh.exists()


def test_deploy_ends_options_and_quotes_remote_paths(tflite, fake_ssh, tmp_path, monkeypatch):  # noqa: F811
    from edgetpu.deploy import BOARD_SCRIPT

    monkeypatch.chdir(tflite.parent)
    result = invoke("edgetpu", "deploy", "tiny.tflite", "--host", "me@board", "--remote-dir", "models/v1", "--run")
    assert result.exit_code == 0, result.output
    ssh, scp, run = _calls(fake_ssh)
    assert ssh == ["ssh", "--", "me@board", "mkdir -p -- models/v1"]
    assert scp == ["scp", "--", str(BOARD_SCRIPT), str(Path.cwd() / "tiny.tflite"), "me@board:models/v1/"]
    assert run[:3] == ["ssh", "--", "me@board"] and run[3].startswith("cd models/v1 &&")


# 5. Images: decompression bombs, nested folders, link loops


def test_decompression_bomb_is_a_one_line_error_or_a_skipped_file(tmp_path, tflite):
    bomb = _bomb(tmp_path / "bomb.png")
    with pytest.raises(PipelineError, match="cannot read image .*bomb.png") as info:
        load_image(bomb, 8)
    assert "\n" not in str(info.value)
    assert "bomb.png" in _one_line_failure(invoke("predict", tflite, bomb))
    root = tmp_path / "data"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        _png(root / c / "1.png")
    shutil.copyfile(bomb, root / "a" / "2.png")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        assert len(load_image_folder(root, 8)) == 2


def test_demo_images_skips_and_counts_bombs_subfolders_and_link_loops(tflite, tmp_path):
    images = tmp_path / "images"
    (images / "nested.png").mkdir(parents=True)
    _png(images / "nested.png" / "deep.png")
    _png(images / "a.png")
    _bomb(images / "b.png")
    (images / "loop.png").symlink_to(images / "loop.png")
    result = invoke("demo", "--images", images, "--model", tflite, "--headless", "--json")
    data = json_output(result)
    assert data["frames"] == 1 and data["skipped"] == 3
    assert "skipped 3 entries" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_image_folder_reports_nested_folders_and_links_without_following_them(tmp_path):
    root = tmp_path / "data"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        _png(root / c / "1.png")
    (root / "a" / "nested").mkdir()
    _png(root / "a" / "nested" / "2.png")
    (root / "a" / "up").symlink_to(root)  # a loop for anything that recursed
    (root / "b" / "self").symlink_to(root / "b" / "self")
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.warns(UserWarning, match=r"skipped 4 entries .*sub-folders.*e\.g\. "):
        files, labels, names = list_image_folder(root)
    assert [f.name for f in files] == ["1.png", "1.png"] and names == ["a", "b"]


# 6. Output paths


def test_out_must_be_a_writable_non_empty_path_checked_before_any_work(tmp_path, monkeypatch):
    import pipeline.cli.stages as stages

    monkeypatch.setattr(stages, "_load_split", lambda *a: pytest.fail("work started"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    for verb in (["train"], ["convert", tmp_path], ["prune", tmp_path], ["qat", tmp_path], ["cluster", tmp_path]):
        empty = invoke(*verb, "--out", "")
        assert empty.exit_code == 2 and "must not be empty" in empty.output, (verb, empty.output)
        assert "not writable" in _one_line_failure(invoke(*verb, "--out", blocker / "m.h5"))
    assert "not writable" in _one_line_failure(invoke("quant-debug", tmp_path, "--representative-data", tmp_path,
                                                      "--out", blocker / "m.tflite"))


def test_export_android_defaults_to_the_app_only_in_a_source_checkout(tflite, tmp_path, monkeypatch):
    import pipeline.targets.android.export as export

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copyfile(tflite, run_dir / "model_int8.tflite")
    (run_dir / "labels.txt").write_text("a\nb\nc\n")
    installed = tmp_path / "site-packages/android_demo/app/src/main/assets"
    monkeypatch.setattr(export, "DEFAULT_ASSETS", installed)
    assert "--out" in _one_line_failure(invoke("export", "android", run_dir))
    assert not installed.exists()
    installed.mkdir(parents=True)
    (installed.parents[2] / "build.gradle.kts").write_text("")
    assert invoke("export", "android", run_dir).exit_code == 0
    assert (installed / "model.tflite").is_file()


# 7. Saving Keras models: disk space and temps


class _FakeModel:
    def __init__(self, params: int, fail: BaseException | None = None, as_folder: bool = False):
        self.params, self.fail, self.as_folder, self.saved = params, fail, as_folder, []

    def count_params(self) -> int:
        return self.params

    def save(self, path: Path, include_optimizer: bool = True) -> None:
        self.saved.append(path)
        if self.as_folder:
            (path / "variables").mkdir(parents=True)
        else:
            path.write_bytes(b"partial")
        if self.fail:
            raise self.fail


def test_save_refuses_a_disk_too_full_and_never_leaves_temps(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(fsutil.shutil, "disk_usage", lambda path: usage._replace(free=3 * 2**20))
    big = _FakeModel(1_000_000)  # 4 MB of float32 weights
    with pytest.raises(PipelineError, match=r"not enough disk space to save m\.h5: about 6\.7 MiB needed, 3\.0 MiB") as info:
        fsutil.save_keras_model(big, tmp_path / "m.h5")
    assert big.saved == [] and "\n" not in str(info.value)
    for model in (_FakeModel(10, KeyboardInterrupt()), _FakeModel(10, OSError(28, "No space left on device")),
                  _FakeModel(10, KeyboardInterrupt(), as_folder=True)):
        with pytest.raises((KeyboardInterrupt, OSError)):
            fsutil.save_keras_model(model, tmp_path / "m.h5")
        assert model.saved and os.listdir(tmp_path) == []
    fsutil.save_keras_model(_tiny(), tmp_path / "tiny.h5")
    assert os.listdir(tmp_path) == ["tiny.h5"] and load_keras_model(tmp_path / "tiny.h5").output_shape == (None, 3)
