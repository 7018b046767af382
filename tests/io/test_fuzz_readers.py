"""Fuzzing the readers: whatever bytes they are given, the only exception out is DecafFormatError.

Readers: the blob file, decaf.load (the net spec and metadata inside a valid blob file), torch
zip and legacy checkpoints (hand-assembled pickles too), caffemodel and prototxt.

Random bytes, valid files with bits flipped, bytes overwritten or the end cut off, and
blob-file headers with fields replaced by random JSON.  A reader may accept a mutated
file (flipping a bit of weight data gives a valid file), but it must not raise anything
else, crash or hang.
"""

import io
import json
import pickle
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decaf.io import DecafFormatError, read_blobfile, read_torch_checkpoint, write_blobfile
from decaf.io.torch_reader import LEGACY_MAGIC

# Deterministic (derandomize: the same examples every run) and short; SLOW_FUZZ, marked slow and
# out of the default run (`pytest -m slow`), tries many more.
FUZZ = settings(max_examples=250, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SLOW_FUZZ = settings(FUZZ, max_examples=5000)


def call_reader(reader, path):
    """Run reader(path); return True if it accepted the file, False on DecafFormatError."""
    try:
        result = reader(path)
        if reader is read_blobfile:
            arrays, _ = result
            for array in arrays.values():  # touch the data, as a user would
                array.tobytes()
        accepted = True
    except DecafFormatError as exc:
        assert str(path) in str(exc), f"message does not name the file: {exc}"
        accepted = False
    return accepted


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def blob_bytes(work_dir):
    path = work_dir / "valid.decaf"
    write_blobfile(
        path,
        {
            "conv1.weight": np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3),
            "conv1.bias": np.array([0.5, -0.5], dtype=np.float32),
            "steps": np.array(12, dtype=np.int64),
            "mask": np.array([True, False, True]),
            "empty": np.zeros((0, 4), dtype=np.float64),
            "codes": np.arange(5, dtype=np.uint8),
        },
        {"decaf.format_version": "1", "decaf.net": json.dumps({"layers": []})},
    )
    return path.read_bytes()


def _torch_checkpoints():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    state = {
        "w": base,
        "view": base[1:, ::2],
        "i": torch.arange(5),
        "b": torch.tensor([True, False]),
        "h": torch.randn(3, generator=g).half(),
        "s": torch.tensor(2.0),
        "nested": {"p": torch.nn.Parameter(torch.ones(2))},
    }
    files = {}
    for fmt in ("zip", "legacy"):
        buffer = io.BytesIO()
        torch.save(state, buffer, _use_new_zipfile_serialization=(fmt == "zip"))
        files[fmt] = buffer.getvalue()
    return files


@pytest.fixture(scope="module")
def torch_files():
    return _torch_checkpoints()


def write(work_dir, name, data):
    path = work_dir / name
    path.write_bytes(data)
    return path


def flip_bits(data, flips):
    data = bytearray(data)
    for position, bit in flips:
        data[position % len(data)] ^= 1 << bit
    return bytes(data)


def overwrite(data, position, chunk):
    position %= len(data)
    return data[:position] + chunk + data[position + len(chunk) :]


FLIPS = st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 7)), min_size=1, max_size=8)


def test_valid_inputs_are_accepted(work_dir, blob_bytes, torch_files):
    assert call_reader(read_blobfile, write(work_dir, "ok.decaf", blob_bytes))
    for fmt, data in torch_files.items():
        assert call_reader(read_torch_checkpoint, write(work_dir, f"ok.{fmt}.pt", data))


# ---------------------------------------------------------------------------------------
# read_blobfile


@FUZZ
@given(data=st.binary(max_size=2048))
def test_blobfile_random_bytes(work_dir, data):
    call_reader(read_blobfile, write(work_dir, "random.decaf", data))


@FUZZ
@given(length=st.integers(0, 300), rest=st.binary(max_size=400))
def test_blobfile_random_bytes_with_a_plausible_length(work_dir, length, rest):
    call_reader(read_blobfile, write(work_dir, "plausible.decaf", struct.pack("<Q", length) + rest))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(header=st.dictionaries(st.text(max_size=10), JSON, max_size=5), data=st.binary(max_size=64))
def test_blobfile_random_json_headers(work_dir, header, data):
    raw = json.dumps(header).encode()
    call_reader(read_blobfile, write(work_dir, "json.decaf", struct.pack("<Q", len(raw)) + raw + data))


@FUZZ
@given(flips=FLIPS)
def test_blobfile_bit_flips(work_dir, blob_bytes, flips):
    call_reader(read_blobfile, write(work_dir, "flipped.decaf", flip_bits(blob_bytes, flips)))


@FUZZ
@given(position=st.integers(0, 2**31), chunk=st.binary(min_size=1, max_size=16))
def test_blobfile_overwritten_bytes(work_dir, blob_bytes, position, chunk):
    call_reader(read_blobfile, write(work_dir, "overwritten.decaf", overwrite(blob_bytes, position, chunk)))


@FUZZ
@given(choice=st.data(), value=JSON)
def test_blobfile_header_field_changes(work_dir, blob_bytes, choice, value):
    (length,) = struct.unpack("<Q", blob_bytes[:8])
    header = json.loads(blob_bytes[8 : 8 + length])
    data = blob_bytes[8 + length :]
    name = choice.draw(st.sampled_from(sorted(header)))
    action = choice.draw(st.sampled_from(["replace", "delete", "add", "replace entry", "nudge"]))
    if name == "__metadata__" or action == "replace entry":
        header[name] = value
    else:
        field = choice.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        if action == "replace":
            header[name][field] = value
        elif action == "delete":
            del header[name][field]
        elif action == "add":
            header[name][choice.draw(st.text(max_size=5))] = value
        else:  # small numeric change: the kind of corruption hardest to notice
            numbers = header[name]["shape"] if field != "data_offsets" else header[name][field]
            if numbers:
                i = choice.draw(st.integers(0, len(numbers) - 1))
                numbers[i] += choice.draw(st.sampled_from([-1, 1, 4, -4]))
    raw = json.dumps(header).encode()
    call_reader(read_blobfile, write(work_dir, "fields.decaf", struct.pack("<Q", len(raw)) + raw + data))


def test_blobfile_truncated_anywhere_is_refused(work_dir, blob_bytes):
    for end in range(0, len(blob_bytes), 3):
        assert not call_reader(read_blobfile, write(work_dir, "cut.decaf", blob_bytes[:end])), end


# ---------------------------------------------------------------------------------------
# read_torch_checkpoint

FORMATS = ["zip", "legacy"]


@FUZZ
@given(data=st.binary(max_size=2048))
def test_torch_random_bytes(work_dir, data):
    call_reader(read_torch_checkpoint, write(work_dir, "random.pt", data))


MAGIC_PICKLES = pickle.dumps(LEGACY_MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)


@FUZZ
@given(prefix=st.sampled_from([b"PK\x03\x04", MAGIC_PICKLES, b"\x80\x02"]), data=st.binary(max_size=1024))
def test_torch_random_bytes_after_a_plausible_start(work_dir, prefix, data):
    call_reader(read_torch_checkpoint, write(work_dir, "plausible.pt", prefix + data))


@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ
@given(flips=FLIPS)
def test_torch_bit_flips(work_dir, torch_files, fmt, flips):
    call_reader(read_torch_checkpoint, write(work_dir, f"flipped.{fmt}.pt", flip_bits(torch_files[fmt], flips)))


@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ
@given(position=st.integers(0, 2**31), chunk=st.binary(min_size=1, max_size=16))
def test_torch_overwritten_bytes(work_dir, torch_files, fmt, position, chunk):
    data = overwrite(torch_files[fmt], position, chunk)
    call_reader(read_torch_checkpoint, write(work_dir, f"overwritten.{fmt}.pt", data))


@FUZZ
@given(flips=FLIPS, chunk=st.binary(max_size=8), position=st.integers(0, 2**31))
def test_torch_zip_with_a_mutated_pickle(work_dir, torch_files, flips, chunk, position):
    """Mutate data.pkl inside a well-formed zip, so the unpickler (not the CRC) meets the damage."""
    src = zipfile.ZipFile(io.BytesIO(torch_files["zip"]))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = overwrite(flip_bits(data, flips), position, chunk)
            dst.writestr(info.filename, data)
    call_reader(read_torch_checkpoint, write(work_dir, "pickle.pt", out.getvalue()))


@pytest.mark.parametrize("fmt", FORMATS)
def test_torch_truncated_anywhere_is_refused(work_dir, torch_files, fmt):
    data = torch_files[fmt]
    step = max(1, len(data) // 300)
    for end in range(0, len(data), step):
        assert not call_reader(read_torch_checkpoint, write(work_dir, f"cut.{fmt}.pt", data[:end])), end


# ---------------------------------------------------------------------------------------
# torch: hand-assembled pickles with random opcodes between valid pieces

PICKLE_PIECES = [b"(", b"t", b"l", b"d", b"}", b"]", b")", b"N", b"\x88", b"\x89", b"K\x01", b"K\x00",
                 b"J\xff\xff\xff\x7f", b"\x85", b"\x86", b"\x87", b"R", b"b", b"s", b"u", b"a", b"e", b"0",
                 b"2", b"q\x01", b"h\x01", b"r\x00\x00\x01\x00", b"j\x00\x00\x01\x00", b"\x8c\x01w",
                 b"ctorch._utils\n_rebuild_tensor_v2\n", b"ctorch._utils\n_rebuild_tensor\n",
                 b"ccollections\nOrderedDict\n", b"ctorch\nFloatStorage\n", b"ctorch\nfloat32\n",
                 b"(\x8c\x07storage\x8c\x00ctorch\nFloatStorage\n\x8c\x010\x8c\x03cpuK\x04tQ", b"Q"]


@FUZZ
@given(pieces=st.lists(st.sampled_from(PICKLE_PIECES), max_size=40))
def test_torch_assembled_pickles(work_dir, pieces):
    body = b"\x80\x02" + b"".join(pieces) + b"."
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("archive/data.pkl", body)
        archive.writestr("archive/data/0", bytes(16))
    call_reader(read_torch_checkpoint, write(work_dir, "assembled.pt", out.getvalue()))
    legacy = MAGIC_PICKLES + pickle.dumps({"little_endian": True}, protocol=2) + body + pickle.dumps([], protocol=2)
    call_reader(read_torch_checkpoint, write(work_dir, "assembled.legacy.pt", legacy))


# ---------------------------------------------------------------------------------------
# decaf.load: the spec and metadata of a valid file replaced by random JSON


@pytest.fixture(scope="module")
def net_file_parts(work_dir):
    from decaf.io.netfile import save
    from decaf.net import Net

    spec = {"name": "tiny", "inputs": {"x": [1, 4, 4]},
            "layers": [{"name": "conv", "type": "Convolution", "bottom": "x", "top": "c", "num_output": 2,
                        "kernel_size": 3},
                       {"name": "pool", "type": "Pooling", "bottom": "c", "top": "p", "kernel_size": 2},
                       {"name": "ip", "type": "InnerProduct", "bottom": "p", "top": "y", "num_output": 3}]}
    path = work_dir / "tiny.decaf"
    save(Net(spec), path, labels=["a", "b", "c"])
    arrays, metadata = read_blobfile(path, mmap=False)
    return {k: np.array(v) for k, v in arrays.items()}, metadata


def load_only_format_errors(path):
    import decaf

    try:
        decaf.load(path)
    except DecafFormatError as exc:
        assert str(path) in str(exc), f"message does not name the file: {exc}"


def _mutate_json(value, data):
    """Replace one node of a JSON value, chosen by walking down at random, with random JSON."""
    if isinstance(value, (dict, list)) and value and data.draw(st.booleans()):
        keys = sorted(value) if isinstance(value, dict) else list(range(len(value)))
        key = data.draw(st.sampled_from(keys))
        value[key] = _mutate_json(value[key], data)
        return value
    return data.draw(JSON)


def _fuzz_net_file(work_dir, net_file_parts, data):
    arrays, metadata = net_file_parts
    metadata = dict(metadata)
    key = data.draw(st.sampled_from(sorted(k for k in metadata if k != "decaf.format_version")))
    if data.draw(st.booleans()):
        metadata[key] = json.dumps(_mutate_json(json.loads(metadata[key]), data))
    else:
        metadata[key] = data.draw(st.text(max_size=30))
    path = work_dir / "fuzz.decaf"
    write_blobfile(path, arrays, metadata)
    load_only_format_errors(path)


@FUZZ
@given(data=st.data())
def test_decaf_load_mutated_metadata(work_dir, net_file_parts, data):
    _fuzz_net_file(work_dir, net_file_parts, data)


# ---------------------------------------------------------------------------------------
# caffemodel and prototxt


PROTOTXT = """name: "tiny"
input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 } }
"""


@pytest.fixture(scope="module")
def caffe_bytes():
    from decaf.io.caffe import NET_PARAMETER
    from decaf.io.protobuf import encode, parse_text

    net = parse_text(NET_PARAMETER, PROTOTXT)
    net["layer"][0]["blobs"] = [{"shape": {"dim": [2, 1, 3, 3]}, "data": np.arange(18, dtype=np.float32)},
                                {"shape": {"dim": [2]}, "data": np.zeros(2, np.float32)}]
    return encode(NET_PARAMETER, net)


@FUZZ
@given(data=st.binary(max_size=1024))
def test_caffemodel_random_bytes(work_dir, data):
    from decaf.io.caffe import read_caffemodel

    call_reader(read_caffemodel, write(work_dir, "random.caffemodel", data))


@FUZZ
@given(flips=FLIPS, position=st.integers(0, 2**31), chunk=st.binary(max_size=6), cut=st.integers(0, 2**31))
def test_caffemodel_mutated(work_dir, caffe_bytes, flips, position, chunk, cut):
    from decaf.io.caffe import read_caffemodel

    data = overwrite(flip_bits(caffe_bytes, flips), position, chunk)
    call_reader(read_caffemodel, write(work_dir, "mutated.caffemodel", data[: max(1, cut % (len(data) + 1))]))


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 2**31), st.sampled_from(list('{}:"\' #\n0123456789-.axz_[],<>\\'))),
                      min_size=1, max_size=6))
def test_prototxt_mutated(work_dir, edits):
    from decaf.io.caffe import read_prototxt

    chars = list(PROTOTXT)
    for position, char in edits:
        chars[position % len(chars)] = char
    call_reader(read_prototxt, write(work_dir, "mutated.prototxt", "".join(chars).encode()))


# ---------------------------------------------------------------------------------------
# the long runs (pytest -m slow)


@pytest.mark.slow
@SLOW_FUZZ
@given(data=st.data())
def test_slow_decaf_load_mutated_metadata(work_dir, net_file_parts, data):
    _fuzz_net_file(work_dir, net_file_parts, data)


@pytest.mark.slow
@SLOW_FUZZ
@given(pieces=st.lists(st.sampled_from(PICKLE_PIECES), max_size=80))
def test_slow_torch_assembled_pickles(work_dir, pieces):
    test_torch_assembled_pickles.hypothesis.inner_test(work_dir, pieces)


@pytest.mark.slow
@SLOW_FUZZ
@given(flips=FLIPS, position=st.integers(0, 2**31), chunk=st.binary(max_size=6), cut=st.integers(0, 2**31))
def test_slow_caffemodel_mutated(work_dir, caffe_bytes, flips, position, chunk, cut):
    test_caffemodel_mutated.hypothesis.inner_test(work_dir, caffe_bytes, flips, position, chunk, cut)
