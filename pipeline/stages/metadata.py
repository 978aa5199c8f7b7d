"""Stage 5: TFLite metadata (labels, normalization, descriptions) via tflite-support's writers.

With it the Android Task Library ``ImageClassifier`` and our own tools read everything they need
from the model file itself: no glue code, no guessed preprocessing.

Writing always starts from the model without metadata, so it can be repeated (new labels replace
the old) and a file whose metadata was damaged is repaired rather than stuck.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.fsutil import write_bytes
from pipeline.core.labels import display_label, label_problem
from pipeline.core.tflite_file import parse_model, read_file

METADATA_NAME = b"TFLITE_METADATA"


def strip_metadata(data: bytes, path: str | Path) -> bytes:
    """The flatbuffer of ``data`` without its TFLite metadata (entry and buffer) or the zip of associated
    files packed after it (re-packing writes the flatbuffer alone); other metadata entries stay."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
        for entry in [m for m in model.metadata or [] if m.name == METADATA_NAME]:
            model.metadata.remove(entry)
            if entry.buffer == len(model.buffers) - 1:
                model.buffers.pop()
            else:
                model.buffers[entry.buffer] = schema.BufferT()
        builder = flatbuffers.Builder(len(data))
        builder.Finish(model.Pack(builder), b"TFL3")
    except Exception:  # the flatbuffers runtime has no verifier: a damaged file raises anything
        parse_model(data, path)  # names the damage in one line
        raise PipelineError(f"{path} is damaged: its flatbuffer cannot be rebuilt") from None
    return bytes(builder.Output())


def write_metadata(
    model_path: str | Path,
    labels: list[str],
    out_path: str | Path | None = None,
    mean: float = 127.5,
    std: float = 127.5,
    name: str | None = None,
    description: str = "",
) -> Path:
    """Embed labels and input normalization into ``model_path`` (or into a copy at ``out_path``).

    Metadata already in the file (even a damaged one) is replaced, never added to; the file is
    replaced atomically.
    """
    from tensorflow_lite_support.metadata import metadata_schema_py_generated as meta
    from tensorflow_lite_support.metadata import schema_py_generated as tflite_schema
    from tensorflow_lite_support.metadata.python.metadata_writers import (
        image_classifier,
        metadata_info,
    )

    import pipeline.core.tf_env  # noqa: F401  (the writers import TensorFlow; configure it first)

    model_path = Path(model_path)
    bare = strip_metadata(read_file(model_path), model_path)
    model = parse_model(bare, model_path)
    image, scores = model.input_tensors[0], model.output_tensors[0]
    if image.rank != 4 or image.shape[-1] != 3:
        raise PipelineError(f"{model_path.name} does not take an RGB image (input shape {image.shape})")
    classes = scores.shape[-1]
    if len(labels) != classes:
        raise PipelineError(f"{len(labels)} labels given but {model_path.name} has {classes} outputs")
    for number, label in enumerate(labels, 1):
        problem = label_problem(label)
        if problem:  # it would split or hide in the labels file the readers parse
            raise PipelineError(f"label {number} ('{display_label(label)}') cannot be written: {problem}")
    types = tflite_schema.TensorType
    tensor_types = {"uint8": types.UINT8, "int8": types.INT8, "float32": types.FLOAT32}
    with tempfile.TemporaryDirectory() as tmp:
        labels_file = Path(tmp) / "labels.txt"  # the writer names the packed file after this path
        labels_file.write_text("\n".join(labels) + "\n", encoding="utf-8")
        try:
            writer = image_classifier.MetadataWriter.create_from_metadata_info(
                bare,
                general_md=metadata_info.GeneralMd(name=name or model_path.stem, description=description),
                input_md=metadata_info.InputImageTensorMd(
                    name="image",
                    description="RGB image; pixels become (pixel - mean) / std, then are quantized with the "
                    "input tensor's scale and zero point.",
                    norm_mean=[mean],
                    norm_std=[std],
                    color_space_type=meta.ColorSpaceType.RGB,
                    tensor_type=tensor_types[image.dtype],
                ),
                output_md=metadata_info.ClassificationTensorMd(
                    name="probability",
                    description=f"Probabilities of the {classes} labels.",
                    label_files=[metadata_info.LabelFileMd(file_path=str(labels_file))],
                    tensor_type=tensor_types[scores.dtype],
                ),
            )
            data = writer.populate()
        except Exception as exc:  # the writers raise bare exceptions on models they cannot describe
            raise PipelineError(f"cannot write metadata into {model_path.name}: {exc}".splitlines()[0]) from None
    return write_bytes(out_path or model_path, data)
