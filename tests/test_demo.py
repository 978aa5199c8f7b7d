"""``tflpipe demo``: the Python frame loop on videos, image folders and cameras, and its bad inputs."""
from __future__ import annotations

import shutil

import pytest

from pipeline.targets.android.demo import make_test_video
from tests.helpers import OFFICIAL_MODEL as MODEL
from tests.helpers import invoke, json_output, official_run_dir

CATS = {"Egyptian cat", "tabby, tabby cat", "tiger cat"}


@pytest.fixture(scope="module")
def run_dir(reference_dir, tmp_path_factory):
    return official_run_dir(tmp_path_factory.mktemp("run"), reference_dir)


@pytest.fixture(scope="module")
def video(reference_dir, tmp_path_factory):
    return make_test_video(tmp_path_factory.mktemp("video") / "clip.avi", [reference_dir / "cat.bmp"], 12, (320, 240))


def _demo(*args: str):
    return invoke("demo", *args)


def test_images_folder_reports_fps_and_the_time_split(run_dir, reference_dir, tmp_path):
    shutil.copyfile(reference_dir / "cat.bmp", tmp_path / "a_cat.bmp")
    shutil.copyfile(reference_dir / "parrot.jpg", tmp_path / "b_parrot.jpg")
    data = json_output(_demo("--images", str(tmp_path), "--model", str(run_dir), "--headless", "--json"))
    assert data["frames"] == 2 and data["fps"] > 0
    assert data["inference_ms"] > 0 and data["preprocess_ms"] > 0
    assert data["top_k"][0]["label"] == "macaw"  # the last frame is the parrot
    first = json_output(_demo("--images", str(tmp_path), "--model", str(run_dir), "--frames", "1", "--json", "--top-k", "5"))
    assert first["frames"] == 1 and first["top_k"][0]["label"] in CATS and len(first["top_k"]) == 5


def test_video_overlapped_loop_gives_the_same_results_as_the_sequential_one(run_dir, video):
    seq = json_output(_demo("--video", str(video), "--model", str(run_dir), "--threads", "1", "--json"))
    ovl = json_output(_demo("--video", str(video), "--model", str(run_dir), "--threads", "2", "--json"))
    assert seq["frames"] == ovl["frames"] == 12
    assert (seq["overlap"], ovl["overlap"], ovl["interpreter_threads"]) == (False, True, 1)
    assert seq["top_k"] == ovl["top_k"] and seq["top_k"][0]["label"] in CATS


def test_headless_text_prints_each_frame_and_a_summary(reference_dir, video):
    result = _demo("--video", str(video), "--model", str(reference_dir / MODEL), "--frames", "3", "--headless")
    assert result.exit_code == 0, result.output
    assert result.output.count("frame ") == 3 and "fps end to end" in result.output


@pytest.mark.parametrize("args,message", [
    (["--video", "{tmp}/missing.avi"], "video not found"),
    (["--video", "{tmp}/broken.avi"], "cannot open video"),
    (["--camera", "97"], "camera 97 is not available"),
    (["--images", "{tmp}"], "no images"),
    ([], "exactly one frame source"),
    (["--camera", "0", "--images", "{tmp}"], "exactly one frame source"),
])
def test_bad_sources_fail_in_one_line(run_dir, tmp_path, args, message):
    (tmp_path / "broken.avi").write_bytes(b"not a video at all")
    result = _demo(*[a.format(tmp=tmp_path) for a in args], "--model", str(run_dir), "--headless")
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize("model,message", [
    ("keras_lstm_mnist_ptq.tflite", "not an image classifier"),
    ("split_concat.tflite", "not an image classifier"),
])
def test_models_without_an_image_input_are_refused(reference_dir, video, model, message):
    result = _demo("--video", str(video), "--model", str(reference_dir / model), "--headless")
    assert result.exit_code != 0 and message in result.output, result.output


def test_run_dir_without_labels_is_refused(run_dir, video, tmp_path):
    shutil.copyfile(run_dir / "model_int8.tflite", tmp_path / "model_int8.tflite")
    result = _demo("--video", str(video), "--model", str(tmp_path), "--headless")
    assert result.exit_code != 0 and "has no labels.txt" in result.output
    result = _demo("--video", str(video), "--model", str(tmp_path / "nothing.tflite"))
    assert result.exit_code != 0 and "model not found" in result.output
