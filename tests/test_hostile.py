"""Issue 14: hostile files and concurrent use. One test (at least) per finding, each on small
files generated here; memory bounds are measured with tracemalloc, never with a clock."""

import collections
import os
import tracemalloc
import zipfile

import numpy as np
import pytest

from decaf.io import DecafFormatError, read_torch_checkpoint
from decaf.io import limits

MiB = 1 << 20


# ---------------------------------------------------------------------------------------
# a tiny pickle assembler: torch checkpoints without torch


def text(value):
    data = value.encode()
    if len(data) < 256:
        return b"\x8c" + bytes([len(data)]) + data          # SHORT_BINUNICODE
    return b"X" + len(data).to_bytes(4, "little") + data   # BINUNICODE


def integer(n):
    return b"J" + int(n).to_bytes(4, "little", signed=True)  # BININT


def storage_pid(key, numel):
    return b"(" + text("storage") + b"ctorch\nFloatStorage\n" + text(key) + text("cpu") + integer(numel) + b"tQ"


def tensor(key, numel, size, stride, offset=0):
    """_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
    shape = b"(" + b"".join(integer(n) for n in size) + b"t"
    strides = b"(" + b"".join(integer(n) for n in stride) + b"t"
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage_pid(key, numel) + integer(offset) + shape
            + strides + b"\x89ccollections\nOrderedDict\n)RtR")


def zip_checkpoint(path, data_pkl, storages=(), compress=False):
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        for key, data in dict(storages).items():
            archive.writestr("archive/data/" + key, data)
    return path


def good_checkpoint(path, values=(1.0, 2.0, 3.0)):
    values = np.asarray(values, "<f4")
    body = b"\x80\x02}" + text("w") + tensor("0", values.size, (values.size,), (1,)) + b"s."
    return zip_checkpoint(path, body, {"0": values.tobytes()})


def peak_traced_bytes(function, *args, **kwargs):
    """(result or the exception raised, peak bytes allocated while it ran)."""
    tracemalloc.start()
    try:
        try:
            result = function(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001  (returned for the caller to check)
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ---------------------------------------------------------------------------------------
# finding 3: a checkpoint must not change how later checkpoints are read


def build_on_global(module, name, attributes):
    """A pickle that BUILDs (None, attributes) onto the global module.name, then returns {}."""
    slots = b"}" + b"".join(text(k) + v + b"s" for k, v in attributes.items())
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"N" + slots + b"\x86b0}."


NEG_METADATA = b"}" + text("neg") + b"\x88s\x85"   # ({"neg": True},)


@pytest.mark.parametrize("target, attributes", [
    (("torch._utils", "_rebuild_tensor_v2"), {"__defaults__": NEG_METADATA}),
    (("torch._utils", "_rebuild_tensor_v2"), {"__kwdefaults__": b"}"}),
    (("torch._utils", "_rebuild_tensor"), {"__qualname__": text("x")}),
    (("collections", "OrderedDict"), {"__init__": b"N"}),
    (("torch", "FloatStorage"), {"dtype": b"N"}),
    (("torch", "float32"), {"bfloat16": b"\x88"}),
], ids=["defaults", "kwdefaults", "qualname", "OrderedDict", "storage type", "dtype"])
def test_a_checkpoint_cannot_poison_later_reads(tmp_path, target, attributes):
    poison = zip_checkpoint(tmp_path / "poison.pt", build_on_global(*target, attributes))
    with pytest.raises(DecafFormatError, match="poison.pt: .*(tries to modify|corrupt)"):
        read_torch_checkpoint(poison)
    arrays = read_torch_checkpoint(good_checkpoint(tmp_path / "good.pt"))
    np.testing.assert_array_equal(arrays["w"], [1.0, 2.0, 3.0])


def test_allowed_globals_are_new_for_every_file():
    from decaf.io.torch_reader import _allowed_globals

    first, second = _allowed_globals(limits.Budget("a", 0)), _allowed_globals(limits.Budget("b", 0))
    assert set(first) == set(second)
    for key in [k for k in first if k[0] in ("collections", "torch._utils")]:  # (types: immutable)
        assert first[key] is not second[key], key


def test_torch_state_dict_metadata_is_still_read(tmp_path):
    torch = pytest.importorskip("torch")
    module = torch.nn.Linear(2, 3)
    path = tmp_path / "m.pt"
    torch.save(module.state_dict(), path)      # an OrderedDict carrying _metadata (BUILD)
    arrays = read_torch_checkpoint(path)
    np.testing.assert_array_equal(arrays["weight"], module.weight.detach().numpy())


# ---------------------------------------------------------------------------------------
# finding 4: small files that cost gigabytes or minutes


def expanded_tensors(count, elements):
    """`count` tensors, each one stored element expanded (stride 0) to `elements` float32."""
    entries = b"".join(text(f"t{i}") + tensor("0", 1, (elements,), (0,)) for i in range(count))
    return b"\x80\x02}(" + entries + b"u."


def test_expanded_views_have_a_total_budget(tmp_path):
    # 3 x 40 MB from a ~700-byte file: under the old per-tensor cap (1 GiB), over any sane total
    path = zip_checkpoint(tmp_path / "expand.pt", expanded_tensors(3, 10 * MiB), {"0": bytes(4)})
    assert path.stat().st_size < 2000
    with pytest.raises(DecafFormatError, match=r"expand.pt: .*over the limit of \d+ .*DECAF_MAX_READ_BYTES"):
        read_torch_checkpoint(path)
    result, peak = peak_traced_bytes(read_torch_checkpoint, path, max_bytes=MiB)
    assert isinstance(result, DecafFormatError) and peak < 2 * MiB, (result, peak)


def test_budget_is_configurable(tmp_path, monkeypatch):
    path = zip_checkpoint(tmp_path / "expand.pt", expanded_tensors(2, MiB // 4), {"0": bytes(4)})
    assert len(read_torch_checkpoint(path)) == 2                   # 2 MiB: under the default
    with pytest.raises(DecafFormatError, match="over the limit of 1048576"):
        read_torch_checkpoint(path, max_bytes=MiB)
    monkeypatch.setenv(limits.ENV_MAX_READ_BYTES, "1M")
    with pytest.raises(DecafFormatError, match="over the limit of 1048576"):
        read_torch_checkpoint(path)
    assert len(read_torch_checkpoint(path, max_bytes=4 * MiB)) == 2  # the argument wins
    monkeypatch.setenv(limits.ENV_MAX_READ_BYTES, "lots")
    with pytest.raises(ValueError, match="DECAF_MAX_READ_BYTES='lots' is not a number of bytes"):
        read_torch_checkpoint(path)


def zip_bomb(path, inflated):
    """A checkpoint whose one storage is `inflated` zero bytes, deflated to ~1/1000 of that."""
    body = b"\x80\x02}" + text("w") + tensor("0", inflated // 4, (inflated // 4,), (1,)) + b"s."
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", body)
        with archive.open("archive/data/0", "w") as entry:
            block = bytes(MiB)
            for _ in range(inflated // MiB):
                entry.write(block)
    return path


def test_zip_entry_inflating_past_the_budget_is_refused_before_inflating(tmp_path):
    path = zip_bomb(tmp_path / "bomb.pt", 96 * MiB)
    assert path.stat().st_size < 200_000
    result, peak = peak_traced_bytes(read_torch_checkpoint, path)
    assert isinstance(result, DecafFormatError), result
    assert "zip entry 'archive/data/0'" in str(result) and "over the limit" in str(result)
    assert peak < 4 * MiB, peak


def test_compressed_entries_under_the_budget_are_read(tmp_path):
    values = np.arange(1000, dtype="<f4")
    path = tmp_path / "deflated.pt"
    body = b"\x80\x02}" + text("w") + tensor("0", 1000, (1000,), (1,)) + b"s."
    zip_checkpoint(path, body, {"0": values.tobytes()}, compress=True)
    np.testing.assert_array_equal(read_torch_checkpoint(path)["w"], values)


def test_tensor_names_are_budgeted(tmp_path):
    # one 60 KB key memoised, 1500 tensors under it: 90 MB of names from ~70 KB of pickle
    inner = text("0") + tensor("0", 1, (1,), (1,)) + b"q\x01"
    inner += b"".join(text(str(i)) + b"h\x01" for i in range(1, 1500))
    body = b"\x80\x02}" + text("k" * 60_000) + b"}(" + inner + b"us."
    path = zip_checkpoint(tmp_path / "names.pt", body, {"0": bytes(4)})
    with pytest.raises(DecafFormatError, match="names.pt: tensor names would bring"):
        read_torch_checkpoint(path)
    result, peak = peak_traced_bytes(read_torch_checkpoint, path, max_bytes=MiB)
    assert isinstance(result, DecafFormatError) and peak < 4 * MiB, (result, peak)


def test_a_single_huge_tensor_name_is_refused(tmp_path):
    body = b"\x80\x02}" + text("k" * 70_000) + tensor("0", 1, (1,), (1,)) + b"s."
    path = zip_checkpoint(tmp_path / "name.pt", body, {"0": bytes(4)})
    with pytest.raises(DecafFormatError, match="a tensor name is 70000 characters long"):
        read_torch_checkpoint(path)


def test_shared_sub_objects_cannot_multiply_the_work(tmp_path):
    # level k+1 = [level k] * 8, memoised: 8**6 = 262144 tensor names from ~300 bytes
    body = b"\x80\x02" + tensor("0", 1, (1,), (1,)) + b"\x85"
    for _ in range(6):
        body += b"q\x01(" + b"h\x01" * 8 + b"l"
    path = zip_checkpoint(tmp_path / "dag.pt", body + b".", {"0": bytes(4)})
    assert path.stat().st_size < 1000
    with pytest.raises(DecafFormatError, match="dag.pt: walking the unpickled object: more than"):
        read_torch_checkpoint(path)


def test_dicts_built_from_one_memoised_list_cannot_multiply_the_work(tmp_path):
    pairs = b"(" + b"".join(b"(" + integer(i) + b"Nt" for i in range(2000)) + b"lq\x01"
    calls = b"".join(b"ccollections\nOrderedDict\n" + b"h\x01\x85R" for _ in range(500))
    path = zip_checkpoint(tmp_path / "dicts.pt", b"\x80\x02(" + pairs + calls + b"l.")
    with pytest.raises(DecafFormatError, match="dicts.pt: building a dict: more than"):
        read_torch_checkpoint(path)


def test_pickle_opcode_count_is_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_PICKLE_OPS", 100)
    path = zip_checkpoint(tmp_path / "ops.pt", b"\x80\x02(" + b"N" * 200 + b"l.")
    with pytest.raises(DecafFormatError, match="ops.pt: the pickle has more than 100 opcodes"):
        read_torch_checkpoint(path)


def test_real_checkpoints_fit_the_default_budget(tmp_path):
    torch = pytest.importorskip("torch")
    state = collections.OrderedDict(w=torch.randn(64, 64), b=torch.zeros(64), e=torch.ones(1).expand(16))
    for fmt in ("zip", "legacy"):
        path = tmp_path / f"{fmt}.pt"
        torch.save(state, path, _use_new_zipfile_serialization=(fmt == "zip"))
        assert sorted(read_torch_checkpoint(path)) == ["b", "e", "w"]
    assert os.environ.get(limits.ENV_MAX_READ_BYTES) is None


# ---------------------------------------------------------------------------------------
# finding 6: caffemodel decoding was quadratic in repeated fields


def _merge_schema():
    from decaf.io.protobuf import Field, Message

    deep = Message("Deep", [Field(1, "k", "int32", repeated=True)])
    inner = Message("Inner", [Field(1, "v", "float", repeated=True, array=True),
                              Field(2, "n", "int32", repeated=True), Field(3, "s", "string"),
                              Field(4, "deep", "message", message=deep)])
    return Message("Outer", [Field(1, "inner", "message", message=inner)]), inner


def repeated_inner(count):
    """`count` copies of a non-repeated message field: protobuf merges them into one."""
    from decaf.io.protobuf import encode, encode_varint

    _, inner = _merge_schema()
    out = bytearray()
    for i in range(count):
        body = encode(inner, {"v": [float(i)], "n": [i], "s": str(i % 10), "deep": {"k": [i]}})
        out += b"\x0a" + encode_varint(len(body)) + body
    return bytes(out)


def test_repeated_messages_merge_as_protobuf_does():
    from decaf.io.protobuf import decode, parse_text

    outer, _ = _merge_schema()
    got = decode(outer, repeated_inner(5))["inner"]
    assert got["v"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] and got["v"].dtype == np.float32
    assert got["n"] == [0, 1, 2, 3, 4] and got["s"] == "4" and got["deep"] == {"k": [0, 1, 2, 3, 4]}
    text = "inner { v: 1 n: 1 s: 'a' } inner { v: [2, 3] deep { k: 7 } } inner { v: 4 n: 2 deep { k: 8 } }"
    got = parse_text(outer, text)["inner"]
    assert got["v"].tolist() == [1.0, 2.0, 3.0, 4.0] and got["v"].dtype == np.float32
    assert got["n"] == [1, 2] and got["s"] == "a" and got["deep"] == {"k": [7, 8]}


def test_repeated_message_decoding_copies_each_value_once(monkeypatch):
    # Merging the repeats one by one copied everything gathered so far each time: n**2 / 2
    # element copies. Count what np.concatenate copies for 20000 repeats: about 20000.
    from decaf.io import protobuf

    copied = []
    real = np.concatenate

    class CountingNumpy:
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def concatenate(parts, *args, **kwargs):
            copied.append(sum(len(p) for p in parts))
            return real(parts, *args, **kwargs)

    monkeypatch.setattr(protobuf, "np", CountingNumpy())
    outer, _ = _merge_schema()
    got = protobuf.decode(outer, repeated_inner(20_000))["inner"]
    assert len(got["v"]) == 20_000 and len(got["n"]) == 20_000 and len(got["deep"]["k"]) == 20_000
    assert sum(copied) <= 2 * 20_000, sum(copied)
    copied.clear()
    text = " ".join(f"inner {{ v: {i} }}" for i in range(5000)) + " " + "inner { v: [1, 2] }"
    protobuf.parse_text(outer, text)
    assert sum(copied) <= 2 * 5002, sum(copied)


@pytest.mark.timing
def test_repeated_message_decoding_time_is_linear():
    import time

    from decaf.io.protobuf import decode

    outer, _ = _merge_schema()
    times = {}
    for count in (40_000, 160_000):
        data = repeated_inner(count)
        start = time.process_time()
        decode(outer, data)
        times[count] = time.process_time() - start
    assert times[160_000] < 8 * times[40_000], times     # linear: ~4x; quadratic: ~16x


# ---------------------------------------------------------------------------------------
# finding 5: one Net from two threads gave wrong results silently


def _blocking_net():
    """A one-layer net whose layer waits on an Event inside forward/backward: the second
    thread's call is certain to arrive while the first is inside the net."""
    import threading

    from decaf.layer import LAYERS, Layer, register
    from decaf.net import Net

    if "_TestBlocking" not in LAYERS:
        @register
        class Blocking(Layer):
            type_name = "_TestBlocking"
            inside = threading.Event()
            release = threading.Event()

            def reshape(self, bottom_shapes):
                return [bottom_shapes[0]]

            def forward(self, bottom, top):
                type(self).inside.set()
                assert type(self).release.wait(30), "the test never released the layer"
                top[0].data[...] = bottom[0].data

            def backward(self, top, propagate_down, bottom):
                self.forward(top, bottom)
    layer = LAYERS["_TestBlocking"]
    layer.inside.clear()
    layer.release.clear()
    spec = {"name": "shared", "inputs": {"x": [2]},
            "layers": [{"name": "wait", "type": "_TestBlocking", "bottom": "x", "top": "y"}]}
    return Net(spec, force_backward=True), layer


@pytest.mark.parametrize("second_call", ["forward", "backward"])
def test_concurrent_use_of_one_net_is_refused(second_call):
    import threading

    net, layer = _blocking_net()
    results = {}

    def first():
        results["first"] = net.forward({"x": np.ones((1, 2), np.float32)})

    worker = threading.Thread(target=first, name="first-user")
    worker.start()
    try:
        assert layer.inside.wait(30)
        with pytest.raises(RuntimeError, match=r"net 'shared': .* another thread is running this net.*"
                                               r"one Net per thread .* lock"):
            if second_call == "forward":
                net.forward({"x": np.zeros((1, 2), np.float32)})
            else:
                net.backward()
    finally:
        layer.release.set()
        worker.join(30)
    np.testing.assert_array_equal(results["first"]["y"], [[1.0, 1.0]])   # the first call was unharmed
    layer.release.set()
    assert net.forward({"x": np.full((1, 2), 3, np.float32)})["y"].tolist() == [[3.0, 3.0]]   # free again


def test_one_thread_may_reenter_and_nets_stay_copyable():
    import copy

    from decaf.net import Net

    spec = {"name": "tiny", "inputs": {"x": [3]},
            "layers": [{"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y", "num_output": 2}]}
    net = Net(spec)
    x = np.arange(3, dtype=np.float32)[None]
    first = net.forward({"x": x})["y"]
    twin = copy.deepcopy(net)
    np.testing.assert_array_equal(twin.forward({"x": x})["y"], first)
    from decaf.exclusive import exclusive

    with exclusive(net, "outer"):
        np.testing.assert_array_equal(net.forward({"x": x})["y"], first)


# ---------------------------------------------------------------------------------------
# finding 9 (part): zero geometry, gradcheck --eps 0, hostile spec values


@pytest.mark.parametrize("params, message", [
    ({"kernel_size": 2, "stride": 0}, "stride must be an integer in 1..2147483647 or a pair of them, got 0"),
    ({"kernel_size": 2, "stride": [1, 0]}, "stride must be .* got \\[1, 0\\]"),
    ({"kernel_size": 0}, "kernel_size must be .* got 0"),
    ({"kernel_size": -3}, "kernel_size must be .* got -3"),
    ({"kernel_size": 2, "pad": -1}, "pad must be an integer in 0..2147483647, a pair or four of them, got -1"),
    ({"kernel_size": "3"}, "kernel_size must be .* got '3'"),
], ids=["stride 0", "stride pair", "kernel 0", "kernel negative", "pad negative", "kernel text"])
def test_pooling_geometry_is_refused_with_the_layer_named(params, message):
    from decaf.errors import SpecError
    import decaf.layers  # noqa: F401  (registers the layer types)
    from decaf.layer import create_layer

    with pytest.raises(SpecError, match=f"layer 'pool1' \\(Pooling\\): {message}"):
        create_layer(dict(params, name="pool1", type="Pooling", bottom="x", top="y"))


def test_pooling_zero_stride_from_a_prototxt_is_a_spec_error(tmp_path):
    from decaf.errors import SpecError
    from decaf.net import Net

    spec = {"name": "p", "inputs": {"x": [1, 4, 4]},
            "layers": [{"name": "pool1", "type": "Pooling", "bottom": "x", "top": "y", "kernel_size": 2,
                        "stride": 0}]}
    with pytest.raises(SpecError, match="layer 'pool1'"):
        Net(spec)


@pytest.mark.parametrize("params, message", [
    ({"num_output": 0, "kernel_size": 3}, "num_output must be an integer in 1..2147483647, got 0"),
    ({"num_output": 4, "kernel_size": 3, "group": 0}, "group must be .* got 0"),
    ({"num_output": "ten", "kernel_size": 3}, "num_output must be .* got 'ten'"),
    ({"num_output": 4, "kernel_size": 3, "dilation": 0}, "dilation must be .* got 0"),
    ({"num_output": 4, "kernel_size": 3, "bias_term": "no"}, "bias_term must be true or false, got 'no'"),
    ({"num_output": 4, "kernel_size": 3, "weight_filler": 3}, "weight_filler must be an object, got 3"),
    ({"num_output": 10**12, "kernel_size": 3}, "num_output must be .* got 1000000000000"),
], ids=["num_output 0", "group 0", "num_output text", "dilation 0", "bias_term text", "filler", "10^12"])
def test_convolution_parameters_are_checked_by_the_schema(params, message):
    from decaf.errors import SpecError
    import decaf.layers  # noqa: F401  (registers the layer types)
    from decaf.layer import create_layer

    with pytest.raises(SpecError, match=f"layer 'c' \\(Convolution\\): {message}"):
        create_layer(dict(params, name="c", type="Convolution", bottom="x", top="y"))


def test_schema_accepts_what_real_specs_use():
    import decaf.layers  # noqa: F401  (registers the layer types)
    from decaf.layer import create_layer

    base = {"bottom": "x", "top": "y"}
    create_layer(dict(base, name="c", type="Convolution", num_output=np.int64(4), kernel_size=[3, 1],
                      stride=(2, 2), pad=[0, 1, 0, 1], bias_term=0))
    create_layer(dict(base, name="p", type="Pooling", pool="ave", global_pooling=True, kernel_size=None))
    create_layer(dict(base, name="r", type="ReLU", negative_slope=0))          # an int for a float
    create_layer(dict(base, name="l", type="LRN", local_size=5, alpha=np.float32(1e-4)))


@pytest.mark.parametrize("argv, message", [
    (["--eps", "0"], "--eps must be a positive finite number, got 0.0"),
    (["--eps=-1e-3"], "--eps must be a positive finite number"),
    (["--eps", "nan"], "--eps must be a positive finite number"),
    (["--rtol=-1"], "--rtol must be a non-negative finite number"),
])
def test_gradcheck_refuses_meaningless_steps_in_one_line(capsys, argv, message):
    from decaf.cli import main

    code = main(["gradcheck", "ReLU", *argv])
    out, err = capsys.readouterr()
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1, (code, err)


def tiny_net_file(path, spec_changes=None, metadata_changes=None):
    """A valid .decaf file of a tiny net, then its metadata changed as a hostile file would."""
    import json

    from decaf.io.blobfile import read_blobfile, write_blobfile
    from decaf.io.netfile import save
    from decaf.net import Net

    spec = {"name": "tiny", "inputs": {"x": [3]},
            "layers": [{"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y", "num_output": 2}]}
    save(Net(spec), path, labels=["a", "b"])
    arrays, metadata = read_blobfile(path, mmap=False)
    arrays = {k: np.array(v) for k, v in arrays.items()}
    net = json.loads(metadata["decaf.net"])
    for change in spec_changes or []:
        change(net)
    metadata["decaf.net"] = json.dumps(net)
    metadata.update(metadata_changes or {})
    write_blobfile(path, arrays, metadata)
    return path


def _set_layer(key, value):
    def change(spec):
        spec["layers"][0][key] = value
    return change


@pytest.mark.parametrize("spec_changes, metadata_changes, message", [
    ([_set_layer("num_output", 10**12)], None, "num_output must be an integer in 1..2147483647"),
    ([_set_layer("num_output", 2**31 - 1)], None, "over the limit of"),
    ([_set_layer("num_output", "two")], None, "num_output must be .* got 'two'"),
    ([_set_layer("bias_term", {"x": 1})], None, "bias_term must be true or false"),
    ([_set_layer("bottom", 7)], None, "bottom must be a blob name or a list of them"),
    ([_set_layer("lr_mult", "fast")], None, "lr_mult must be a number"),
    ([lambda s: s.update(inputs={"x": [None]})], None, "input 'x': shape must be a list of positive integers"),
    ([lambda s: s.update(inputs={"x": [100000, 100000, 1000]})], None, "has more than 2147483648 elements"),
    ([lambda s: s.update(inputs=3)], None, "inputs must be an object"),
    ([lambda s: s.update(layers=["ip"])], None, "layer 0 is not an object"),
    (None, {"decaf.net": "[" * 50_000 + "]" * 50_000}, "decaf.net nests 50000 levels deep"),
    (None, {"decaf.labels": "[" * 50_000 + "]" * 50_000}, "decaf.labels nests 50000 levels deep"),
    (None, {"decaf.labels": '["a", 3]'}, "decaf.labels must be a list of strings"),
    (None, {"decaf.preprocess": "NaN"}, "decaf.preprocess is not valid JSON"),
], ids=["num_output 1e12", "num_output 2^31", "text", "bool", "bottom", "lr_mult", "shape None",
        "shape huge", "inputs", "layer text", "deep net", "deep labels", "labels", "NaN"])
def test_hostile_decaf_metadata_is_one_format_error(tmp_path, spec_changes, metadata_changes, message):
    import decaf

    path = tiny_net_file(tmp_path / "hostile.decaf", spec_changes, metadata_changes)
    result, peak = peak_traced_bytes(decaf.load, path)
    assert isinstance(result, DecafFormatError), repr(result)
    assert "hostile.decaf" in str(result) and len(str(result).splitlines()) == 1
    assert __import__("re").search(message, str(result)), str(result)
    assert peak < 64 * MiB, peak


def test_parameter_bytes_of_one_net_are_budgeted(monkeypatch):
    from decaf.errors import SpecError
    from decaf.net import Net
    from decaf.param_schema import ENV_MAX_PARAM_BYTES

    spec = {"name": "wide", "inputs": {"x": [1000]},
            "layers": [{"name": "a", "type": "InnerProduct", "bottom": "x", "top": "y", "num_output": 300},
                       {"name": "b", "type": "InnerProduct", "bottom": "y", "top": "z", "num_output": 1000}]}
    Net(spec, init=False)                                            # 2.4 MB: fine
    monkeypatch.setenv(ENV_MAX_PARAM_BYTES, str(2 * MiB))           # a budget for both layers together
    with pytest.raises(SpecError, match=r"net 'wide': layer 'b' \(InnerProduct\) parameter 'weight' .* "
                                        r"over the limit of 2097152 .*DECAF_MAX_PARAM_BYTES"):
        Net(spec, init=False)


# ---------------------------------------------------------------------------------------
# finding 10: killed writes left hidden temporary files; modes follow the umask


def test_the_next_write_removes_temporaries_of_killed_writes(tmp_path):
    import fcntl
    import time

    from decaf.io import write_blobfile

    target = tmp_path / "net.decaf"
    stale = tmp_path / ".net.decaf.abcd1234.tmp"          # as left by a SIGKILLed writer
    stale.write_bytes(b"x" * 1000)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = tmp_path / ".net.decaf.efgh5678.tmp"          # a write that may still be going on
    fresh.write_bytes(b"y")
    live = tmp_path / ".net.decaf.live0000.tmp"           # old, but its writer holds the lock
    live.write_bytes(b"z")
    os.utime(live, (old, old))
    other = tmp_path / ".other.decaf.abcd1234.tmp"        # another file's: not ours to touch
    other.write_bytes(b"w")
    os.utime(other, (old, old))
    with open(live, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        write_blobfile(target, {"w": np.ones(2, np.float32)})
    assert not stale.exists()
    assert fresh.exists() and live.exists() and other.exists() and target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".net.decaf.efgh5678.tmp", ".net.decaf.live0000.tmp", ".other.decaf.abcd1234.tmp", "net.decaf"])


def test_written_files_follow_the_umask_and_keep_an_existing_mode(tmp_path):
    from decaf.io import write_blobfile

    previous = os.umask(0o022)
    try:
        write_blobfile(tmp_path / "a.decaf", {"w": np.ones(1, np.float32)})
        assert (tmp_path / "a.decaf").stat().st_mode & 0o777 == 0o644
        os.chmod(tmp_path / "a.decaf", 0o640)
        write_blobfile(tmp_path / "a.decaf", {"w": np.zeros(1, np.float32)})
        assert (tmp_path / "a.decaf").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)


# ---------------------------------------------------------------------------------------
# finding 7: a FIFO named like an image hung classify/extract forever
# finding 8 (part): a small PNG declaring a huge image was decoded in full

def _png_header_only(path, width, height):
    """A valid PNG signature and IHDR declaring width x height, then one tiny IDAT: what a
    decompression bomb's header looks like (the size is all the reader needs to refuse it)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_named_like_an_image_is_refused_without_reading(tmp_path):
    from decaf.image import ImageError, decode
    fifo = tmp_path / "cat.jpg"
    os.mkfifo(fifo)                       # opening it for reading would block until a writer comes
    with pytest.raises(ImageError, match="cat.jpg: not a regular file"):
        decode(str(fifo))
    with pytest.raises(ImageError, match="is a directory"):
        decode(str(tmp_path))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_classify_skips_a_fifo_and_keeps_the_good_image(tmp_path, capsys):
    from PIL import Image

    from decaf import Net, save
    from decaf.cli import main
    spec = {"name": "tiny", "inputs": {"data": [3, 8, 8]}, "layers": [
        {"name": "fc", "type": "InnerProduct", "bottom": "data", "top": "fc", "num_output": 2},
        {"name": "prob", "type": "Softmax", "bottom": "fc", "top": "prob"}]}
    from decaf.recipe import Recipe
    model = tmp_path / "tiny.decaf"
    save(Net(spec, seed=0), model, labels=["a", "b"], preprocess=Recipe(crop=8, resize_shorter=8))
    Image.new("RGB", (10, 12), (200, 10, 10)).save(tmp_path / "good.png")
    os.mkfifo(tmp_path / "pipe.png")
    status = main(["classify", "--model", str(model), str(tmp_path / "pipe.png"), str(tmp_path / "good.png"),
                   "--json"])
    out, err = capsys.readouterr()
    assert "pipe.png: not a regular file" in err
    assert "good.png" in out
    assert status == 0                    # some images classified: the skipped one is reported, not fatal


def test_a_png_declaring_a_huge_image_is_refused_from_its_header(tmp_path, monkeypatch):
    from decaf.image import ImageError, decode
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 13370, 13370)
    assert bomb.stat().st_size < 200
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match=r"13370x13370 is 178756900 pixels, over the limit of 100000000"):
            decode(str(bomb))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB                 # nothing near the 536 MB the pixels would take
    monkeypatch.setenv("DECAF_MAX_IMAGE_PIXELS", "1000")
    small = tmp_path / "small.png"
    _png_header_only(small, 40, 30)       # 1200 pixels: over a limit of 1000
    with pytest.raises(ImageError, match="1200 pixels, over the limit of 1000"):
        decode(str(small))
    monkeypatch.setenv("DECAF_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="DECAF_MAX_IMAGE_PIXELS must be a positive number"):
        decode(str(small))


# ---------------------------------------------------------------------------------------
# finding 9 (part): raw tracebacks from the CLI

def test_train_model_args_are_checked_against_the_builder(capsys):
    from decaf.cli import main
    assert main(["train", "lenet", "--digits", "--model-args", '{"nope": 1}']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("decaf train: error: --model-args: lenet takes no argument(s) ['nope']")
    assert main(["train", "lenet", "--digits", "--model-args", "[1, 2]"]) == 1
    assert "must be a JSON object" in capsys.readouterr().err


def test_os_errors_are_one_line_naming_the_file(tmp_path, capsys):
    from decaf.cli import main
    target = tmp_path / "not_a_dir"
    target.write_text("x")
    status = main(["train", "lenet", "--digits", "--iters", "1", "--out", str(target)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert err[-1] == f"decaf train: error: {target}: File exists"


# ---------------------------------------------------------------------------------------
# finding 1: ONNX Constant nodes with external data read any local file into the weights

def test_onnx_constant_with_external_data_is_refused_and_reads_nothing(tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from decaf.io.onnx_convert import onnx_to_net
    secret = tmp_path / "secrets.txt"
    secret.write_bytes(b"API_KEY=hunter2!" * 4)             # 64 bytes: 16 floats' worth
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1, 16])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "secrets.txt"), ("offset", "0"), ("length", "64")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    nodes = [helper.make_node("Constant", [], ["w"], value=tensor),
             helper.make_node("Add", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])])
    path = tmp_path / "model.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    monkeypatch.chdir(tmp_path)                             # where onnx would look for secrets.txt
    with pytest.raises(DecafFormatError, match=r"refers to external data \(location=secrets.txt"):
        onnx_to_net(path)


# ---------------------------------------------------------------------------------------
# finding 10 (extract): outputs were 0600 whatever the umask; finding 9: -o DIR failed after the work

def _tiny_extract_setup(tmp_path):
    from PIL import Image

    from decaf import Net, save
    from decaf.recipe import Recipe
    spec = {"name": "tiny", "inputs": {"data": [3, 8, 8]}, "layers": [
        {"name": "fc", "type": "InnerProduct", "bottom": "data", "top": "fc", "num_output": 2}]}
    model = tmp_path / "tiny.decaf"
    save(Net(spec, seed=0), model, preprocess=Recipe(crop=8, resize_shorter=8))
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (9, 8), (40 * i, 0, 0)).save(src / f"{i}.png")
    return model, src


def test_extract_output_follows_the_umask_and_keeps_an_existing_mode(tmp_path):
    from decaf.cli import main
    model, src = _tiny_extract_setup(tmp_path)
    out = tmp_path / "f.npz"
    old = os.umask(0o027)
    try:
        assert main(["extract", str(src), "--model", str(model), "--blob", "fc", "-o", str(out), "--quiet"]) == 0
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o640
    out.chmod(0o604)
    assert main(["extract", str(src), "--model", str(model), "--blob", "fc", "-o", str(out), "--quiet"]) == 0
    assert out.stat().st_mode & 0o777 == 0o604


def test_extract_into_an_existing_folder_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    from decaf import features
    from decaf.cli import main
    model, src = _tiny_extract_setup(tmp_path)
    (tmp_path / "outdir").mkdir()
    ran = []
    monkeypatch.setattr(features._Extractor, "run", lambda self, *a, **k: ran.append(1))
    assert main(["extract", str(src), "--model", str(model), "--blob", "fc", "-o", str(tmp_path / "outdir"),
                 "--quiet"]) == 1
    assert "outdir: is a directory; name a .npz file (or a .zarr store) as output" in capsys.readouterr().err
    assert ran == []                            # no image went through the net
