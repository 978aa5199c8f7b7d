"""``tflpipe demo`` (the phone app's frame loop, live here) and ``tflpipe export android``."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from pipeline.cli.common import emit, json_option
from pipeline.core.errors import PipelineError
from pipeline.core.labels import display_label


def _pick_source(video: str | None, camera: int | None, images: str | None, skipped: list[Path]):
    from pipeline.targets.android import demo

    chosen = [name for name, value in (("--video", video), ("--camera", camera), ("--images", images)) if value is not None]
    if len(chosen) != 1:
        raise PipelineError("give exactly one frame source: --video FILE, --camera N or --images DIR")
    if video is not None:
        return demo.capture_frames(demo.open_video(video))
    if camera is not None:
        return demo.capture_frames(demo.open_camera(camera))
    return demo.image_frames(images, skipped)


class _Display:
    """Shows annotated frames in a window, or prints one line per frame where OpenCV has no GUI."""

    def __init__(self, model, window: bool):
        self.model, self.window = model, window

    def __call__(self, frame, result) -> None:
        import cv2

        from pipeline.targets.android.demo import annotate

        if self.window:
            try:
                cv2.imshow("tflpipe demo", annotate(frame, result, self.model.label))
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    raise KeyboardInterrupt
                return
            except cv2.error:
                click.echo("OpenCV has no GUI here (opencv-python-headless); printing results instead", err=True)
                self.window = False
        best = " | ".join(f"{s:.2f} {display_label(self.model.label(i))}" for i, s in result.top_k)
        click.echo(f"frame {result.index:5d}  {result.fps:6.1f} fps  {best}")


@click.command("demo")
@click.option("--video", type=str, help="Video file to classify frame by frame.")
@click.option("--camera", type=int, help="Camera index (OpenCV) to classify live.")
@click.option("--images", type=str, help="Folder of images, classified in name order.")
@click.option("--model", "model_source", required=True, help="RUN_DIR (model_int8.tflite + labels.txt) or a .tflite file.")
@click.option("--threads", default=1, show_default=True, help="CPU threads in all; 2+ overlap capture/preprocessing with inference.")
@click.option("--overlap/--no-overlap", default=None, help="Force the capture thread on or off (default: on when --threads >= 2).")
@click.option("--frames", "max_frames", type=int, help="Stop after this many frames.")
@click.option("--top-k", default=3, show_default=True)
@click.option("--threshold", default=0.0, show_default=True, help="Hide classes scoring below this.")
@click.option("--rotation", default=0, type=click.Choice(["0", "90", "180", "270"]), show_default=True, help="Clockwise rotation that makes frames upright.")
@click.option("--headless", is_flag=True, help="No window: print results (and the summary) only.")
@json_option
def demo_command(video, camera, images, model_source, threads, overlap, max_frames, top_k, threshold, rotation, headless, as_json):
    """Classify video, camera or image frames live, with the Android app's preprocessing; report FPS."""
    from pipeline.targets.android import demo

    if threads < 1:
        raise PipelineError(f"--threads must be at least 1, got {threads}")
    if max_frames is not None and max_frames < 1:
        raise PipelineError(f"--frames must be at least 1, got {max_frames}")
    if top_k < 1:
        raise PipelineError(f"--top-k must be at least 1, got {top_k}")
    overlap = threads >= 2 if overlap is None else overlap
    interpreter_threads = max(1, threads - 1) if overlap else threads
    model = demo.load_model(model_source, interpreter_threads)
    skipped: list[Path] = []
    source = _pick_source(video, camera, images, skipped)
    show = None if as_json else _Display(model, window=not headless)
    try:
        summary = demo.run_loop(model, source, max_frames, overlap, top_k, threshold, int(rotation), show)
    except KeyboardInterrupt:
        sys.exit(0)
    finally:
        if skipped:  # sub-folders and undecodable images, said once rather than ending the demo
            click.echo(f"tflpipe: {images}: {demo.skipped_summary(skipped)}", err=True)
    summary.update({"model": str(model.path), "threads": threads, "interpreter_threads": interpreter_threads,
                    "overlap": overlap, "skipped": len(skipped)})
    emit(summary, as_json, _summary_text)


def _summary_text(s: dict) -> str:
    return (f"{s['frames']} frames, {s['fps']:.1f} fps end to end; per frame: capture {s['capture_ms']:.1f} ms, "
            f"preprocess {s['preprocess_ms']:.1f} ms, inference {s['inference_ms']:.1f} ms "
            f"({s['threads']} thread(s), overlap {'on' if s['overlap'] else 'off'})")


@click.group("export")
def export_group() -> None:
    """Package a run's model for an app."""


@export_group.command("android")
@click.argument("run_dir", type=str)
@click.option("--out", "out_dir", type=str,
              help="Assets folder to write (default: android_demo/app/src/main/assets, in a source checkout only).")
@json_option
def export_android_command(run_dir: str, out_dir: str | None, as_json: bool):
    """Copy RUN_DIR's int8 model and labels into the Android demo's assets with a model_config.json."""
    from pipeline.targets.android.export import export_android

    result = export_android(run_dir, out_dir)
    emit(result, as_json, lambda r: (
        f"wrote {', '.join(Path(f).name for f in r['files'])} to {r['out_dir']}: "
        f"{r['input']['width']}x{r['input']['height']} {r['input']['dtype']} input, {r['num_classes']} classes"))


COMMANDS = [demo_command, export_group]
