"""Verification of .tflite files: each kind of damage, planted in a valid reference model, is one PipelineError line.

Structural damage (offsets, vector lengths, strings) is planted by patching bytes at positions the
generated flatbuffer accessors locate; semantic damage (indices, shapes, quantization) by editing
the unpacked model and packing it again. The last tests cover LiteRT: nothing unverified reaches it,
and a native crash on a verified file is contained in the probe's child process.
"""
from __future__ import annotations

import io
import struct
import subprocess
import time
import zipfile
from pathlib import Path

import flatbuffers
import pytest
from ai_edge_litert import schema_py_generated as schema

from edgetpu.check import check as edgetpu_check
from pipeline.core import litert
from pipeline.core.errors import PipelineError
from pipeline.core.tflite_file import read_model
from pipeline.targets import nnapi

SPLIT_CONCAT = "split_concat.tflite"  # CONCATENATION, SPLIT (axis: constant tensor 11 = 3), CONCATENATION
MOBILENET = "mobilenet_v1_0.25_128_quant.tflite"  # with TFLITE_METADATA and a labels zip
LSTM = "keras_lstm_mnist_ptq.tflite"


@pytest.fixture
def split_concat(reference_dir: Path) -> bytearray:
    return bytearray((reference_dir / SPLIT_CONCAT).read_bytes())


def damaged(tmp_path: Path, data: bytes) -> str:
    """The one-line PipelineError that reading ``data`` as a model raises."""
    path = tmp_path / "damaged.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(PipelineError) as info:
        read_model(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def field(table, slot: int) -> int:
    """Position in the file of field ``slot``'s inline value (a scalar, or the offset to a vector/string/table)."""
    offset = table._tab.Offset(4 + 2 * slot)
    assert offset, f"field {slot} is absent (at its default)"
    return table._tab.Pos + offset


def target(data: bytes, position: int) -> int:
    """Where the offset stored at ``position`` points."""
    return position + struct.unpack_from("<I", data, position)[0]


def root(data: bytes) -> schema.Model:
    return schema.Model.GetRootAs(bytes(data), 0)


def unpacked(reference_dir: Path, name: str) -> schema.ModelT:
    return schema.ModelT.InitFromPackedBuf((reference_dir / name).read_bytes(), 0)


def packed(model: schema.ModelT) -> bytes:
    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# Structure: the file's framing, offsets, vectors and strings.

@pytest.mark.parametrize("data", [b"", b"TFL3", b"\x10\x00\x00\x00TFL2" + bytes(32), b"PK\x03\x04" + bytes(64)])
def test_too_small_or_not_tflite(tmp_path: Path, data: bytes) -> None:
    assert "is not a TFLite model" in damaged(tmp_path, data)


def test_root_offset_beyond_the_end(tmp_path: Path, split_concat: bytearray) -> None:
    struct.pack_into("<I", split_concat, 0, len(split_concat) + 64)
    assert "root table lies outside the file" in damaged(tmp_path, split_concat)


def test_truncated_file(tmp_path: Path, split_concat: bytearray) -> None:
    assert "lies outside the file" in damaged(tmp_path, split_concat[: len(split_concat) // 2])


def test_subgraph_offset_beyond_the_end(tmp_path: Path, split_concat: bytearray) -> None:
    subgraphs = target(split_concat, field(root(split_concat), 2))
    struct.pack_into("<I", split_concat, subgraphs + 4, len(split_concat))  # element 0 of the vector
    assert "subgraph 0 lies outside the file" in damaged(tmp_path, split_concat)


def test_vector_length_beyond_the_end(tmp_path: Path, split_concat: bytearray) -> None:
    inputs = target(split_concat, field(root(split_concat).Subgraphs(0).Operators(1), 1))
    struct.pack_into("<I", split_concat, inputs, 0x40000000)
    assert "subgraph 0 operator 1 inputs lies outside the file" in damaged(tmp_path, split_concat)


def test_buffer_data_beyond_the_end(tmp_path: Path, split_concat: bytearray) -> None:
    data_field = field(root(split_concat).Buffers(1), 0)
    struct.pack_into("<I", split_concat, data_field, len(split_concat))
    assert "buffer 1 data lies outside the file" in damaged(tmp_path, split_concat)


def test_vtable_outside_the_file(tmp_path: Path, split_concat: bytearray) -> None:
    tensor = root(split_concat).Subgraphs(0).Tensors(5)._tab.Pos
    struct.pack_into("<i", split_concat, tensor, -len(split_concat))
    assert "subgraph 0 tensor 5 vtable lies outside the file" in damaged(tmp_path, split_concat)


def test_undecodable_tensor_name(tmp_path: Path, split_concat: bytearray) -> None:
    name = target(split_concat, field(root(split_concat).Subgraphs(0).Tensors(3), 3)) + 4
    split_concat[name : name + 2] = b"\xff\xfe"
    assert "subgraph 0 tensor 3 name is not UTF-8 text" in damaged(tmp_path, split_concat)


def test_name_without_terminator(tmp_path: Path, split_concat: bytearray) -> None:
    name = target(split_concat, field(root(split_concat).Subgraphs(0).Tensors(3), 3))
    length = struct.unpack_from("<I", split_concat, name)[0]
    split_concat[name + 4 + length] = ord("x")
    assert "subgraph 0 tensor 3 name is not NUL-terminated" in damaged(tmp_path, split_concat)


def test_undecodable_metadata_name(tmp_path: Path, reference_dir: Path) -> None:
    data = bytearray((reference_dir / MOBILENET).read_bytes())
    name = target(data, field(root(data).Metadata(1), 0)) + 4
    data[name] = 0xC3  # a UTF-8 lead byte without its continuation
    assert "metadata 1 name is not UTF-8 text" in damaged(tmp_path, data)


def test_metadata_without_its_identifier(tmp_path: Path, reference_dir: Path) -> None:
    data = bytearray((reference_dir / MOBILENET).read_bytes())
    buffer = root(data).Metadata(1).Buffer()
    content = target(data, field(root(data).Buffers(buffer), 0)) + 4
    data[content + 4 : content + 8] = b"XXXX"
    assert "TFLITE_METADATA buffer has no 'M001' metadata identifier" in damaged(tmp_path, data)


# Indices: operator codes, tensors, buffers, subgraphs.

def test_tensor_index_out_of_range(tmp_path: Path, split_concat: bytearray) -> None:
    inputs = target(split_concat, field(root(split_concat).Subgraphs(0).Operators(0), 1))
    struct.pack_into("<i", split_concat, inputs + 4, 5000)
    assert "operator 0 (CONCATENATION) refers to tensor 5000 but the subgraph has 12" in damaged(tmp_path, split_concat)


def test_only_minus_one_marks_an_omitted_input(tmp_path: Path, split_concat: bytearray) -> None:
    inputs = target(split_concat, field(root(split_concat).Subgraphs(0).Operators(0), 1))
    struct.pack_into("<i", split_concat, inputs + 4, -2)
    assert "refers to tensor -2" in damaged(tmp_path, split_concat)


def test_opcode_index_out_of_range(tmp_path: Path, split_concat: bytearray) -> None:
    struct.pack_into("<I", split_concat, field(root(split_concat).Subgraphs(0).Operators(1), 0), 40)
    assert "operator 1 uses operator code 40 but the file has 2" in damaged(tmp_path, split_concat)


def test_buffer_index_out_of_range(tmp_path: Path, split_concat: bytearray) -> None:
    struct.pack_into("<I", split_concat, field(root(split_concat).Subgraphs(0).Tensors(11), 2), 99)
    assert "tensor 11 ('split_dim') uses buffer 99 but the file has 2" in damaged(tmp_path, split_concat)








def _metadata_entry(model) -> None:
    entry = schema.MetadataT()
    entry.name, entry.buffer = b"notes", 7
    model.metadata = [entry]


def _signature(model) -> None:
    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = b"serving_default", 3
    model.signatureDefs = [signature]


def _external_buffer(model) -> None:
    model.buffers[1].data, model.buffers[1].offset, model.buffers[1].size = None, 1 << 20, 4


def _tensor(index: int, **values):
    def mutate(model) -> None:
        tensor = model.subgraphs[0].tensors[index]
        for name, value in values.items():
            target = tensor.quantization if name == "zeroPoint" else tensor
            setattr(target, name, value)
    return mutate


# One edit of the unpacked model each (object API), and the line read_model must answer with.
OBJECT_EDITS = [
    (lambda m: setattr(m.subgraphs[0], "outputs", [4, 12]), "graph outputs name tensor 12 but the subgraph has 12"),
    (lambda m: setattr(m.subgraphs[0].operators[2], "outputs", [-1]), "operator 2 (CONCATENATION) refers to tensor -1"),
    (_metadata_entry, "metadata 'notes' uses buffer 7 but the file has 2"),
    (_signature, "signature 0 names subgraph 3 of 1"),
    (lambda m: setattr(m, "version", 4), "schema version 4, LiteRT reads version 3"),
    (_external_buffer, "buffer 1 (4 bytes at byte 1,048,576) runs past the end of the file"),
    (_tensor(3, shape=[1, 8, -8, 6]), "tensor 3 ('concat') has a negative dimension in shape [1, 8, -8, 6]"),
    (_tensor(11, shape=[2]), "tensor 11 ('split_dim') holds 4 bytes of data but int32 [2] takes 8"),
    (_tensor(3, shape=[2**31 - 1] * 3), "over LiteRT's 2**63-byte tensor limit"),
    (_tensor(3, type=99), "tensor 3 ('concat') has unknown element type 99"),
    (_tensor(0, zeroPoint=[128, 128]), "tensor 0 ('input1') has 1 scales but 2 zero points"),
    (_tensor(0, zeroPoint=[300]), "tensor 0 ('input1') has zero point 300, outside the uint8 range"),
]


@pytest.mark.parametrize("edit, message", OBJECT_EDITS, ids=[m[:40] for _, m in OBJECT_EDITS])
def test_structural_defects_of_an_edited_model(tmp_path: Path, reference_dir: Path, edit, message: str) -> None:
    model = unpacked(reference_dir, SPLIT_CONCAT)
    edit(model)
    assert message in damaged(tmp_path, packed(model))


def test_external_buffer_inside_the_file_is_read(tmp_path: Path, reference_dir: Path) -> None:
    model = unpacked(reference_dir, SPLIT_CONCAT)
    model.buffers[1].data, model.buffers[1].offset, model.buffers[1].size = None, 1, 4
    model.buffers[1].offset = len(packed(model))  # right after the flatbuffer, where models over 2 GB keep data
    path = tmp_path / "external.tflite"
    path.write_bytes(packed(model) + struct.pack("<i", 3))
    assert read_model(path).tensor_data(11).tolist() == 3


# Tensors: shapes, data sizes, types and quantization.






def test_per_channel_scales_must_fit_the_quantized_dimension(tmp_path: Path, reference_dir: Path) -> None:
    model = unpacked(reference_dir, SPLIT_CONCAT)
    q = model.subgraphs[0].tensors[0].quantization  # shape [1, 8, 8, 3]
    q.scale, q.zeroPoint, q.quantizedDimension = [0.1, 0.2], [128, 128], 3
    assert "has 2 scales for dimension 3 of shape [1, 8, 8, 3]" in damaged(tmp_path, packed(model))
    q.quantizedDimension = 4
    assert "quantized dimension 4 outside its shape [1, 8, 8, 3]" in damaged(tmp_path, packed(model))



# Operators: what LiteRT's kernels require of the ops the target checkers inspect.

def test_missing_required_input(tmp_path: Path, reference_dir: Path) -> None:
    model = unpacked(reference_dir, SPLIT_CONCAT)
    model.subgraphs[0].operators[1].inputs = [11]
    assert "operator 1 (SPLIT) has inputs [11] and outputs" in damaged(tmp_path, packed(model))
    model.subgraphs[0].operators[1].inputs = [-1, 3]
    assert "LiteRT needs 2 inputs and 1 output" in damaged(tmp_path, packed(model))


def test_axis_outside_the_rank(tmp_path: Path, reference_dir: Path) -> None:
    model = unpacked(reference_dir, SPLIT_CONCAT)
    model.buffers[1].data = list(struct.pack("<i", 7))
    assert "operator 1 (SPLIT) axis 7 is outside the rank 4 of its input" in damaged(tmp_path, packed(model))


def test_axis_must_be_an_integer_tensor(tmp_path: Path, reference_dir: Path) -> None:
    model = unpacked(reference_dir, SPLIT_CONCAT)
    model.subgraphs[0].tensors[11].type = schema.TensorType.FLOAT32
    message = damaged(tmp_path, packed(model))
    assert "operator 1 (SPLIT) input 0 is float32; LiteRT takes int32 or int64 there" in message


def test_omitted_optional_input_is_accepted_by_every_reader(tmp_path: Path, reference_dir: Path) -> None:
    model = unpacked(reference_dir, LSTM)
    fc = next(op for op in model.subgraphs[0].operators
              if model.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.FULLY_CONNECTED)
    fc.inputs = [*fc.inputs[:2], -1]  # no bias
    path = tmp_path / "no_bias.tflite"
    path.write_bytes(packed(model))
    assert -1 in next(op for op in read_model(path).operators if op.name == "FULLY_CONNECTED").inputs
    edgetpu_check(path)
    nnapi.check(path, 27)
    with pytest.raises(PipelineError, match="-1 marks an omitted optional input"):
        read_model(path).tensor(-1)


# The metadata zip: bounded, and damaged members are one line.

def with_zip(model: bytes, name: str, content: bytes, declared: int | None = None, method: int | None = None) -> bytes:
    """``model`` with a zip appended, as the metadata writer does; ``declared``/``method`` patch its directory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, content)
    archive_bytes = bytearray(buffer.getvalue())
    entry = archive_bytes.index(b"PK\x01\x02")
    if declared is not None:
        struct.pack_into("<I", archive_bytes, entry + 24, declared)
    if method is not None:
        struct.pack_into("<H", archive_bytes, entry + 10, method)
    return model + bytes(archive_bytes)


def test_associated_files_are_read(tmp_path: Path, reference_dir: Path) -> None:
    path = tmp_path / "with_labels.tflite"
    path.write_bytes(with_zip((reference_dir / SPLIT_CONCAT).read_bytes(), "labels.txt", b"cat\ndog\n"))
    assert read_model(path).associated_files == {"labels.txt": b"cat\ndog\n"}


def test_member_declared_at_a_gibibyte_is_not_inflated(tmp_path: Path, reference_dir: Path) -> None:
    model = (reference_dir / "mobilenet_v1_0.5_160_quant.tflite").read_bytes()  # a 1.4 MB model
    start = time.perf_counter()
    message = damaged(tmp_path, with_zip(model, "labels.txt", bytes(1 << 20), declared=1 << 30))
    assert "associated file 'labels.txt' in the metadata zip declares 1,073,741,824 bytes" in message
    assert time.perf_counter() - start < 2


def test_member_that_inflates_past_its_declared_size_is_cut_off(tmp_path: Path, split_concat: bytearray) -> None:
    message = damaged(tmp_path, with_zip(bytes(split_concat), "labels.txt", bytes(17 << 20), declared=100))
    assert "associated file 'labels.txt' in the metadata zip cannot be read (BadZipFile: Bad CRC-32" in message


def test_unsupported_compression(tmp_path: Path, split_concat: bytearray) -> None:
    message = damaged(tmp_path, with_zip(bytes(split_concat), "labels.txt", b"cat\n", method=99))
    assert "cannot be read (NotImplementedError" in message


def test_corrupt_member(tmp_path: Path, reference_dir: Path) -> None:
    data = bytearray((reference_dir / MOBILENET).read_bytes())
    data[data.index(b"tench") + 1] ^= 0x20  # the labels are stored uncompressed: the CRC no longer matches
    assert "'imagenet_labels.txt' in the metadata zip cannot be read (BadZipFile: Bad CRC-32" in damaged(tmp_path, data)


# Valid files.

def test_every_reference_model_verifies(reference_dir: Path) -> None:
    models = sorted(reference_dir.rglob("*.tflite"))
    assert models
    for path in models:
        assert read_model(path).operators, path


def test_tensor_data_refuses_what_numpy_cannot_hold(tmp_path: Path, reference_dir: Path) -> None:
    model = unpacked(reference_dir, SPLIT_CONCAT)
    extra = schema.TensorT()
    extra.name, extra.type, extra.shape, extra.buffer = b"bf16", schema.TensorType.BFLOAT16, [2], 1
    model.subgraphs[0].tensors.append(extra)
    path = tmp_path / "bfloat16.tflite"
    path.write_bytes(packed(model))
    with pytest.raises(PipelineError, match="holds bfloat16 data that is not a dense array numpy can read"):
        read_model(path).tensor_data(12)


# LiteRT: nothing unverified reaches it, and a crash is contained.

def test_damaged_file_never_reaches_litert(tmp_path: Path, split_concat: bytearray, monkeypatch) -> None:
    monkeypatch.setattr(litert, "probe", lambda data, name: pytest.fail("an unverified file reached the probe"))
    split_concat[:4] = struct.pack("<I", len(split_concat) + 64)
    path = tmp_path / "damaged.tflite"
    path.write_bytes(bytes(split_concat))
    with pytest.raises(PipelineError, match="root table lies outside the file"):
        litert.benchmark(path, runs=1, warmup=0)


def test_probe_runs_once_per_file(reference_dir: Path, monkeypatch) -> None:
    runs = []
    real_run = subprocess.run
    monkeypatch.setattr(litert.subprocess, "run", lambda *a, **k: runs.append(1) or real_run(*a, **k))
    monkeypatch.setattr(litert, "_probed", set())
    for _ in range(2):
        assert litert.benchmark(reference_dir / SPLIT_CONCAT, runs=1, warmup=0)["runs"] == 1
    assert len(runs) == 1


def test_probe_reports_a_signal_as_a_crash(monkeypatch) -> None:
    monkeypatch.setattr(litert.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, -11, b"", b""))
    with pytest.raises(PipelineError, match=r"^LiteRT crashed \(SIGSEGV\) while loading m.tflite: the file is damaged"):
        litert.probe(b"not a model, never loaded here", "m.tflite")


def test_verified_file_that_crashes_litert_is_contained(tmp_path: Path, split_concat: bytearray) -> None:
    """SPLIT claiming 255 splits for its 6 outputs passes verification but crashes LiteRT (2.x) natively."""
    options = root(split_concat).Subgraphs(0).Operators(1).BuiltinOptions()  # SplitOptions: num_splits in slot 0
    struct.pack_into("<i", split_concat, options.Pos + options.Offset(4), 255)
    path = tmp_path / "split_255.tflite"
    path.write_bytes(bytes(split_concat))
    read_model(path)
    with pytest.raises(PipelineError, match=r"^LiteRT (crashed \(SIG[A-Z]+\) while loading|cannot run) split_255"):
        litert.benchmark(path, runs=1, warmup=0)
