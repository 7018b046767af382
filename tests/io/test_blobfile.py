"""The blob file: round trips, memory mapping, atomic writes, and every corruption it must name."""

import json
import mmap
import os
import struct
import time

import numpy as np
import pytest

from decaf.io import DecafFormatError, read_blobfile, write_blobfile
from decaf.io import blobfile

DTYPES = ["bool", "uint8", "int8", "uint16", "int16", "float16", "uint32", "int32", "float32",
          "uint64", "int64", "float64"]
SHAPES = [(), (0,), (1,), (7,), (3, 0, 2), (2, 3), (2, 3, 4, 5)]


def sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(size=shape).astype(dtype)


def raw_file(path, header, data=b"", header_bytes=None, length=None):
    """Write a blob file by hand: header (dict, or raw bytes), data, optional length field."""
    if header_bytes is None:
        header_bytes = json.dumps(header).encode("utf-8")
    if length is None:
        length = len(header_bytes)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", length) + header_bytes + data)
    return path


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


# ---------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("use_mmap", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_every_dtype_and_shape(tmp_path, dtype, use_mmap):
    arrays = {f"a{i}": sample(dtype, shape, seed=i) for i, shape in enumerate(SHAPES)}
    path = tmp_path / "x.decaf"
    write_blobfile(path, arrays, {"k": "v"})
    loaded, metadata = read_blobfile(path, mmap=use_mmap)
    assert metadata == {"k": "v"}
    assert list(loaded) == list(arrays)
    for name, expected in arrays.items():
        got = loaded[name]
        assert got.shape == expected.shape
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
        assert not got.flags.writeable


def test_mixed_dtypes_keep_order_and_alignment(tmp_path):
    names = ["flag", "w", "b", "idx", "half"]
    arrays = {
        "flag": np.array([True, False, True]),
        "w": sample("float32", (5, 3)),
        "b": sample("uint8", (3,)),
        "idx": sample("int64", (4,)),
        "half": sample("float16", (3,)),
    }
    path = tmp_path / "mixed.decaf"
    write_blobfile(path, arrays, {})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 64 == 0, "data must start 64-byte aligned"
    header = json.loads(raw[8 : 8 + n])
    assert [k for k in header if k != "__metadata__"] == names  # caller's order kept
    for name in names:
        begin, _ = header[name]["data_offsets"]
        assert begin % arrays[name].dtype.itemsize == 0, f"{name} is not aligned"
    loaded, _ = read_blobfile(path)
    assert list(loaded) == names
    for name in names:
        np.testing.assert_array_equal(loaded[name], arrays[name])
        assert loaded[name].flags.aligned


def test_layout_is_plain_safetensors(tmp_path):
    """Decode a file with nothing but struct and json, as the spec describes."""
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "spec.decaf"
    write_blobfile(path, {"w": w}, {"decaf.format_version": "1"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    assert header == {
        "__metadata__": {"decaf.format_version": "1"},
        "w": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
    }
    assert raw[8 + n :] == w.astype("<f4").tobytes()


def test_safetensors_package_reads_our_files_and_we_read_its(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    arrays = {"w": sample("float32", (4, 3)), "i": sample("int64", (5,)), "h": sample("float16", ())}
    ours = tmp_path / "ours.decaf"
    write_blobfile(ours, arrays, {"a": "b"})
    theirs = safetensors_numpy.load_file(str(ours))
    for name in arrays:
        np.testing.assert_array_equal(theirs[name], arrays[name])
    other = tmp_path / "theirs.safetensors"
    safetensors_numpy.save_file(arrays, str(other), metadata={"x": "y"})
    loaded, metadata = read_blobfile(other)
    assert metadata == {"x": "y"}
    for name in arrays:
        np.testing.assert_array_equal(loaded[name], arrays[name])


def test_non_contiguous_and_big_endian_inputs_are_stored_little_endian_c_order(tmp_path):
    base = sample("float64", (6, 8))
    arrays = {
        "transposed": base.T,
        "strided": base[::2, 1::3],
        "big_endian": base.astype(">f4"),
        "big_endian_int": np.arange(5, dtype=">i8"),
    }
    path = tmp_path / "views.decaf"
    write_blobfile(path, arrays, {})
    loaded, _ = read_blobfile(path)
    for name, expected in arrays.items():
        np.testing.assert_array_equal(loaded[name], expected)
        assert loaded[name].dtype.byteorder in "<=|"
        assert loaded[name].flags.c_contiguous


def test_scalars_and_lists_are_accepted_as_arrays(tmp_path):
    path = tmp_path / "s.decaf"
    write_blobfile(path, {"f": np.float32(2.5), "py": 3, "lst": [1.0, 2.0]}, None)
    loaded, metadata = read_blobfile(path)
    assert metadata == {}
    assert loaded["f"].shape == () and loaded["f"].dtype == np.float32 and loaded["f"] == 2.5
    assert loaded["py"] == 3
    np.testing.assert_array_equal(loaded["lst"], [1.0, 2.0])


def test_metadata_round_trip(tmp_path):
    metadata = {
        "decaf.format_version": "1",
        "decaf.net": json.dumps({"layers": [{"name": "conv1", "type": "conv"}]}),
        "unicode": "Gänsefüßchen – ✓ 猫",
        "empty": "",
        "newlines": "a\nb\t\"c\"",
    }
    path = tmp_path / "m.decaf"
    write_blobfile(path, {}, metadata)
    arrays, loaded = read_blobfile(path)
    assert arrays == {}
    assert loaded == metadata


def test_files_without_metadata_section_read_as_empty_metadata(tmp_path):
    path = raw_file(tmp_path / "nometa.safetensors", {"x": entry("U8", [2], 0, 2)}, b"\x01\x02")
    arrays, metadata = read_blobfile(path)
    assert metadata == {}
    np.testing.assert_array_equal(arrays["x"], [1, 2])


def test_bf16_is_read_as_float32(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2")
    path = raw_file(tmp_path / "bf16.safetensors", {"x": entry("BF16", [2, 2], 0, 8)}, bf16.tobytes())
    arrays, _ = read_blobfile(path)
    assert arrays["x"].dtype == np.float32
    np.testing.assert_array_equal(arrays["x"], values.reshape(2, 2))


# ---------------------------------------------------------------------------------------
# memory mapping


def _base_buffer(array):
    base = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base.obj if isinstance(base, memoryview) else base


def test_arrays_are_read_only_views_of_a_memory_map(tmp_path):
    path = tmp_path / "ro.decaf"
    write_blobfile(path, {"w": np.ones((4, 4), np.float32)}, {})
    arrays, _ = read_blobfile(path)
    w = arrays["w"]
    assert not w.flags.owndata
    assert isinstance(_base_buffer(w), mmap.mmap)
    with pytest.raises(ValueError):
        w[0, 0] = 2.0
    with pytest.raises(ValueError):
        w.flags.writeable = True
    arrays, _ = read_blobfile(path, mmap=False)
    with pytest.raises(ValueError):
        arrays["w"][0, 0] = 2.0


def test_loading_a_250_mb_file_is_o_header(tmp_path, record_property):
    rng = np.random.default_rng(0)
    arrays = {f"layer{i}.weight": np.full((1024, 1024, 8), i, dtype=np.float32) for i in range(8)}
    arrays["tail"] = rng.standard_normal(1000).astype(np.float32)
    path = tmp_path / "big.decaf"
    write_blobfile(path, arrays, {"decaf.net": "{}"})
    size = path.stat().st_size
    assert size > 250 * 10**6
    start = time.perf_counter()
    loaded, _ = read_blobfile(path)
    elapsed = time.perf_counter() - start
    record_property("load_seconds_250mb", elapsed)
    print(f"\nread_blobfile of a {size / 1e6:.0f} MB file: {elapsed * 1e3:.2f} ms")
    # O(header): the arrays are views of a memory map, nothing was read or copied
    for array in loaded.values():
        base = array
        while isinstance(getattr(base, "base", None), np.ndarray):
            base = base.base
        owner = base.base.obj if isinstance(base.base, memoryview) else base.base
        assert isinstance(owner, mmap.mmap), type(owner)
    assert loaded["layer7.weight"][1023, 1023, 7] == 7
    np.testing.assert_array_equal(loaded["tail"], arrays["tail"])


# ---------------------------------------------------------------------------------------
# atomic writes


def _leftovers(directory, keep):
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def test_failed_fsync_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "net.decaf"
    write_blobfile(path, {"w": np.arange(3.0)}, {"v": "old"})
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(blobfile.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_blobfile(path, {"w": np.arange(1000.0)}, {"v": "new"})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _leftovers(tmp_path, {"net.decaf"}) == []
    assert read_blobfile(path)[1] == {"v": "old"}


def test_failure_in_the_middle_of_the_data_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "net.decaf"
    write_blobfile(path, {"w": np.arange(3.0)}, {"v": "old"})
    before = path.read_bytes()
    real_fdopen = os.fdopen

    class DiskFull:
        """A stream that accepts the first 100 bytes, then fails like a full disk."""

        def __init__(self, stream):
            self._stream, self._written = stream, 0

        def write(self, data):
            n = memoryview(data).nbytes
            if self._written + n > 100:
                raise OSError(28, "No space left on device")
            self._written += n
            return self._stream.write(data)

        def __getattr__(self, attr):
            return getattr(self._stream, attr)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._stream.close()

    monkeypatch.setattr(blobfile.os, "fdopen", lambda fd, mode: DiskFull(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="No space"):
        write_blobfile(path, {"a": np.arange(10.0), "b": np.arange(1000.0)}, {"v": "new"})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _leftovers(tmp_path, {"net.decaf"}) == []


def test_new_file_gets_normal_permissions_and_rewrite_keeps_them(tmp_path):
    path = tmp_path / "p.decaf"
    write_blobfile(path, {}, {})
    mode = path.stat().st_mode & 0o777
    assert mode & 0o600 == 0o600 and mode & 0o022 == 0 or mode & 0o444 == 0o444
    os.chmod(path, 0o640)
    write_blobfile(path, {"x": np.zeros(2)}, {})
    assert path.stat().st_mode & 0o777 == 0o640
    assert _leftovers(tmp_path, {"p.decaf"}) == []


# ---------------------------------------------------------------------------------------
# what the writer refuses


@pytest.mark.parametrize("metadata", [{"n": 1}, {"d": {"a": "b"}}, {"none": None}, {1: "x"}])
def test_writer_refuses_non_str_metadata(tmp_path, metadata):
    with pytest.raises(TypeError, match="metadata must map str to str"):
        write_blobfile(tmp_path / "m.decaf", {}, metadata)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "value",
    [np.zeros(2, np.complex64), np.array(["a"], dtype=object), np.zeros(2, dtype="U3"),
     np.zeros(2, dtype=[("a", "f4")]), np.zeros(2, dtype="datetime64[s]")],
    ids=["complex", "object", "unicode", "structured", "datetime"],
)
def test_writer_refuses_unsupported_dtypes(tmp_path, value):
    with pytest.raises(TypeError, match="cannot hold"):
        write_blobfile(tmp_path / "d.decaf", {"x": value}, {})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["", "__metadata__"])
def test_writer_refuses_reserved_names(tmp_path, name):
    with pytest.raises(ValueError, match="cannot be used as an array name"):
        write_blobfile(tmp_path / "n.decaf", {name: np.zeros(1)}, {})


def test_writer_refuses_non_str_names(tmp_path):
    with pytest.raises(TypeError, match="names must be str"):
        write_blobfile(tmp_path / "n.decaf", {3: np.zeros(1)}, {})


# ---------------------------------------------------------------------------------------
# what the reader refuses, and what it says


def test_missing_file_is_file_not_found_with_the_path(tmp_path):
    path = tmp_path / "nope.decaf"
    with pytest.raises(FileNotFoundError, match="nope.decaf"):
        read_blobfile(path)


@pytest.mark.parametrize("content", [b"", b"\x10\x00\x00"], ids=["empty", "3 bytes"])
def test_too_short_files(tmp_path, content):
    path = tmp_path / "short.decaf"
    path.write_bytes(content)
    with pytest.raises(DecafFormatError, match=r"short.decaf: file is only \d+ bytes"):
        read_blobfile(path)


def test_absurd_header_length(tmp_path):
    path = tmp_path / "absurd.decaf"
    path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(DecafFormatError, match="more than the .*-byte limit"):
        read_blobfile(path)


def test_header_length_beyond_the_file(tmp_path):
    path = raw_file(tmp_path / "net.decaf", None, header_bytes=b"{}" + b" " * 98, length=4096)
    with pytest.raises(
        DecafFormatError,
        match="net.decaf: header says 4096 bytes of JSON but the file has only 100 bytes "
        "after the length field",
    ):
        read_blobfile(path)


@pytest.mark.parametrize("cut", [1, 7, 100, 1000, 3000])
def test_truncated_files_are_reported(tmp_path, cut):
    path = tmp_path / "t.decaf"
    write_blobfile(path, {"w": np.arange(1000, dtype=np.float32)}, {"k": "v"})
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - cut])
    with pytest.raises(DecafFormatError, match="t.decaf: .*(truncated|only)"):
        read_blobfile(path)


def test_trailing_garbage_is_reported(tmp_path):
    path = tmp_path / "t.decaf"
    write_blobfile(path, {"w": np.arange(4, dtype=np.float32)}, {})
    with open(path, "ab") as f:
        f.write(b"junk")
    with pytest.raises(DecafFormatError, match="data buffer has 20 bytes but the tensors cover only 16"):
        read_blobfile(path)


CORRUPT_HEADERS = {
    "invalid utf-8": (b'{"a\xff": 1}', "not valid UTF-8"),
    "invalid json": (b'{"w": {"dtype": "F32",', "not valid JSON"),
    "nan": (b'{"__metadata__": {}, "x": NaN}', "not valid JSON"),
    "duplicate key": (b'{"__metadata__": {}, "__metadata__": {}}', "duplicate key"),
    "not an object": (b"[1, 2, 3]", "must be a JSON object, but it is a array"),
    "string header": (b'"hello"', "must be a JSON object, but it is a string"),
}


@pytest.mark.parametrize("case", CORRUPT_HEADERS, ids=list(CORRUPT_HEADERS))
def test_corrupt_header_text(tmp_path, case):
    header_bytes, message = CORRUPT_HEADERS[case]
    path = raw_file(tmp_path / "h.decaf", None, header_bytes=header_bytes)
    with pytest.raises(DecafFormatError, match=f"h.decaf: .*{message}"):
        read_blobfile(path)


def test_deeply_nested_json_is_a_format_error(tmp_path):
    path = raw_file(tmp_path / "deep.decaf", None, header_bytes=b"[" * 100000 + b"]" * 100000)
    with pytest.raises(DecafFormatError, match="deep.decaf"):
        read_blobfile(path)


F32x2 = entry("F32", [2], 0, 8)
CORRUPT_ENTRIES = {
    "entry not an object": ({"w": [1, 2]}, 0, "tensor 'w': expected an object"),
    "missing dtype": ({"w": {"shape": [2], "data_offsets": [0, 8]}}, 8, "tensor 'w': missing dtype"),
    "missing shape": ({"w": {"dtype": "F32", "data_offsets": [0, 8]}}, 8, "missing shape"),
    "missing offsets": ({"w": {"dtype": "F32", "shape": [2]}}, 8, "missing data_offsets"),
    "unknown field": ({"w": dict(F32x2, extra=1)}, 8, "unknown field.*'extra'"),
    "unknown dtype": ({"w": entry("F8_E4M3", [8], 0, 8)}, 8, "unsupported dtype 'F8_E4M3'"),
    "dtype not str": ({"w": entry(4, [2], 0, 8)}, 8, "unsupported dtype 4"),
    "shape not a list": ({"w": entry("F32", 2, 0, 8)}, 8, "shape must be a list"),
    "negative dim": ({"w": entry("F32", [-2], 0, 8)}, 8, r"shape must be a list .* got \[-2\]"),
    "float dim": ({"w": entry("F32", [2.0], 0, 8)}, 8, "shape must be a list"),
    "bool dim": ({"w": entry("F32", [True, 2], 0, 8)}, 8, "shape must be a list"),
    "too many dims": ({"w": entry("F32", [1] * 40, 0, 4)}, 4, "at most 32"),
    "offsets not a pair": ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, 8,
                           "data_offsets must be a list of two"),
    "negative offset": ({"w": entry("F32", [2], -8, 0)}, 8, "data_offsets must be a list of two"),
    "begin after end": ({"w": entry("F32", [2], 8, 0)}, 8, "end before they begin"),
    "past the end": ({"w": entry("F32", [4], 0, 16)}, 8, r"run past the end .* only 8 bytes"),
    "size mismatch": ({"w": entry("F32", [3], 0, 8)}, 8, r"F32 and shape \[3\] need 12 bytes, but .* span 8"),
    "overlap": ({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}, 12,
                "tensor 'b' .* overlaps tensor 'a'"),
    "gap": ({"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 8, 12)}, 12,
            "bytes 4..8 of the data buffer belong to no tensor"),
    "metadata not object": ({"__metadata__": ["x"], "w": F32x2}, 8, "__metadata__ must be an object"),
    "metadata value not str": ({"__metadata__": {"v": 1}, "w": F32x2}, 8,
                               r"__metadata__\['v'\] must be a string, but it is a number"),
    "empty name": ({"": F32x2}, 8, "empty name"),
}


@pytest.mark.parametrize("case", CORRUPT_ENTRIES, ids=list(CORRUPT_ENTRIES))
def test_corrupt_header_fields(tmp_path, case):
    header, data_size, message = CORRUPT_ENTRIES[case]
    path = raw_file(tmp_path / "f.decaf", header, bytes(data_size))
    with pytest.raises(DecafFormatError, match=f"f.decaf: .*{message}"):
        read_blobfile(path)


def test_empty_tensors_and_zero_dims_are_valid(tmp_path):
    header = {"e": entry("F32", [0, 5], 0, 0), "s": entry("I64", [], 0, 8), "z": entry("U8", [0], 8, 8)}
    path = raw_file(tmp_path / "e.decaf", header, struct.pack("<q", -3))
    arrays, _ = read_blobfile(path)
    assert arrays["e"].shape == (0, 5) and arrays["s"].shape == () and arrays["s"] == -3


def test_huge_dims_with_zero_elements_are_a_format_error(tmp_path):
    path = raw_file(tmp_path / "z.decaf", {"e": entry("F32", [0, 2**62, 2**62], 0, 0)})
    with pytest.raises(DecafFormatError, match="cannot build an array"):
        read_blobfile(path)


def test_writing_into_a_missing_folder_names_the_file_not_a_temporary(tmp_path):
    from decaf.io.blobfile import _write_atomically
    target = tmp_path / "missing" / "net.decaf"
    with pytest.raises(FileNotFoundError) as info:
        _write_atomically(str(target), lambda stream: stream.write(b"x"))
    assert str(info.value) == f"{target}: the folder {target.parent} does not exist"
    assert not target.parent.exists()
