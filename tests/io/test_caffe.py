"""Caffe prototxt/caffemodel conversion, decaf's protobuf codec against an independent encoder, fuzzing."""
import math
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import decaf
import decaf.models
from decaf.io.caffe import (BLOB_PROTO, NET_PARAMETER, caffe_to_net, read_caffemodel, read_mean_binaryproto,
                            write_caffemodel, write_prototxt)
from decaf.io.errors import DecafFormatError
from decaf.io.protobuf import Field, Message, decode, encode, encode_varint, format_text, parse_text

FUZZ = settings(max_examples=int(os.environ.get("DECAF_FUZZ", 150)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# ---- CaffeNet round trip through Caffe's wire format --------------------------------------------
@pytest.fixture(scope="module")
def caffenet():
    spec = decaf.models.get_spec("caffenet")
    net = decaf.Net(spec, seed=7)
    x = np.random.default_rng(0).standard_normal((2, 3, 227, 227)).astype(np.float32)
    ref = net.forward(data=x, outputs=["fc8", "prob"])
    return spec, net.param_arrays(), x, ref


def _structure(spec):
    """The parts of a spec that decide what the net computes."""
    keep = ("name", "type", "bottom", "top", "num_output", "kernel_size", "stride", "pad", "group", "pool",
            "local_size", "alpha", "beta", "k", "dropout_ratio", "lr_mult", "decay_mult")
    out = []
    for layer in spec["layers"]:
        d = {}
        for key in keep:
            if key in layer:
                v = layer[key]
                if key in ("kernel_size", "stride", "pad") and isinstance(v, list) and len(set(v)) == 1:
                    v = v[0]
                if isinstance(v, float):
                    v = float(np.float32(v))
                if isinstance(v, list):
                    v = [float(x) if isinstance(x, float) else x for x in v]
                d[key] = v
        d.setdefault("stride", 1) if layer["type"] in ("Convolution", "Pooling") else None
        d.setdefault("pad", 0) if layer["type"] in ("Convolution", "Pooling") else None
        d.setdefault("group", 1) if layer["type"] == "Convolution" else None
        out.append(d)
    return spec["inputs"], out


@pytest.mark.parametrize("v1, model_v1", [(False, False), (True, True), (False, True)],
                         ids=["V2", "V1", "V2-prototxt-V1-caffemodel"])
def test_caffenet_roundtrip(caffenet, tmp_path, v1, model_v1):
    """V1 and V2 files, and the usual mix: an upgraded deploy.prototxt with a 2014 V1 caffemodel."""
    spec, arrays, x, ref = caffenet
    proto, model = tmp_path / "deploy.prototxt", tmp_path / "net.caffemodel"
    write_prototxt(proto, spec, v1=v1)
    write_caffemodel(model, spec, arrays, v1=model_v1)
    text = proto.read_text()
    assert ("layers {" in text and "type: CONVOLUTION" in text) if v1 else ('type: "Convolution"' in text)

    spec2, arrays2, labels = caffe_to_net(proto, model)
    assert labels is None
    assert _structure(spec2) == _structure(spec)
    assert sorted(arrays2) == sorted(arrays)
    for name, value in arrays.items():
        assert arrays2[name].dtype == np.float32 and arrays2[name].shape == value.shape, name
        assert np.array_equal(arrays2[name], value), name      # bit for bit
    net2 = decaf.Net(spec2, init=False)
    net2.load_params(arrays2)
    out = net2.forward(data=x, outputs=["fc8", "prob"])
    for key in ("fc8", "prob"):
        assert rel_err(out[key], ref[key]) <= 1e-4, key

    if v1 != model_v1:
        return
    # the structure may also come from the caffemodel alone
    spec3, arrays3, _ = caffe_to_net(None, model)
    assert _structure(spec3) == _structure(spec)
    assert all(np.array_equal(arrays3[k], arrays[k]) for k in arrays)


def test_v1_caffemodel_uses_legacy_blob_shapes(caffenet, tmp_path):
    spec, arrays, _, _ = caffenet
    model = tmp_path / "v1.caffemodel"
    write_caffemodel(model, spec, arrays, v1=True)
    net = read_caffemodel(model)
    assert "layer" not in net and len(net["layers"]) == len(spec["layers"])
    fc6 = next(layer for layer in net["layers"] if layer["name"] == "fc6")
    assert fc6["type"] == "INNER_PRODUCT"
    weight, bias = fc6["blobs"]
    assert "shape" not in weight
    assert (weight["num"], weight["channels"], weight["height"], weight["width"]) == (1, 1, 4096, 9216)
    assert (bias["num"], bias["channels"], bias["height"], bias["width"]) == (1, 1, 1, 4096)
    assert net["input_dim"] == [1, 3, 227, 227]


# ---- hand-written prototxts: V2 with BatchNorm/Scale in place, phases, Split; V1 text -----------
TINY_V2 = r'''
# a training/deploy net in the current layout
name: 'tiny'
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { source: "train_lmdb" batch_size: 64 backend: LMDB }
        transform_param { crop_size: 8 mirror: true mean_value: 104 mean_value: 117 mean_value: 123 } }
layer { name: "data" type: "Input" top: "data" include { phase: TEST }
        input_param { shape { dim: 10 dim: 3 dim: 8 dim: 8 } } }
layer {
  name: "conv1"  type: "Convolution"  bottom: "data"  top: "conv1"
  param { lr_mult: 1 decay_mult: 1 }  param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 stride: 1
                      weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 0.2 } }
}
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
        batch_norm_param { use_global_stats: true eps: 1e-3 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 engine: CAFFE } }
layer { name: "conv1_split" type: "Split" bottom: "conv1" top: "a" top: "b" }
layer { name: "sig" type: "Sigmoid" bottom: "a" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "b" top: "tanh" }
layer { name: "sum" type: "Eltwise" bottom: "sig" bottom: "tanh" top: "sum"
        eltwise_param { operation: SUM coeff: [0.5, -2.0] } }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "sig" top: "cat" concat_param { axis: 1 } }
layer { name: "pool" type: "Pooling" bottom: "cat" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "flat" type: "Flatten" bottom: "pool" top: "flat" }
layer { name: "drop" type: "Dropout" bottom: "flat" top: "flat" dropout_param { dropout_ratio: 0.3 } }
layer { name: "ip" type: "InnerProduct" bottom: "flat" top: "ip"
        inner_product_param { num_output: 5 transpose: true } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"
        include { phase: TRAIN } }
'''


def _blob(array, legacy=False):
    array = np.asarray(array, np.float32)
    if legacy:
        dims = (1,) * (4 - array.ndim) + array.shape
        return dict(zip(("num", "channels", "height", "width"), dims), data=array.ravel())
    return {"shape": {"dim": list(array.shape)}, "data": array.ravel()}


@pytest.fixture
def tiny_weights():
    rng = np.random.default_rng(3)
    return {"w1": rng.standard_normal((4, 3, 3, 1)).astype(np.float32), "b1": rng.standard_normal(4).astype(np.float32),
            "mean": rng.standard_normal(4).astype(np.float32), "var": rng.uniform(0.5, 2, 4).astype(np.float32),
            "factor": np.array([2.5], np.float32), "g": rng.uniform(0.5, 1.5, 4).astype(np.float32),
            "h": rng.standard_normal(4).astype(np.float32),
            "wip": rng.standard_normal((8, 5)).astype(np.float32), "bip": rng.standard_normal(5).astype(np.float32)}


def _tiny_model(w, path):
    net = {"name": "tiny", "layer": [
        {"name": "data", "type": "Input"},
        {"name": "conv1", "type": "Convolution", "blobs": [_blob(w["w1"]), _blob(w["b1"])]},
        {"name": "bn1", "type": "BatchNorm", "blobs": [_blob(w["mean"] * 2.5), _blob(w["var"] * 2.5),
                                                       _blob(w["factor"])]},
        {"name": "scale1", "type": "Scale", "blobs": [_blob(w["g"]), _blob(w["h"])]},
        {"name": "ip", "type": "InnerProduct", "blobs": [_blob(w["wip"]), _blob(w["bip"])]},
        {"name": "unused", "type": "Convolution", "blobs": [_blob(np.ones((2, 2)))]},   # ignored, as in Caffe
    ]}
    path.write_bytes(encode(NET_PARAMETER, net))


def _tiny_reference(x, w):
    """The tiny net in NumPy, written from Caffe's definitions of the layers."""
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    y = np.zeros((n, 4, h, wd))
    for i in range(3):
        y += np.einsum("kc,nchw->nkhw", w["w1"][:, :, i, 0], xp[:, :, i:i + h, :])
    y += w["b1"].reshape(1, -1, 1, 1)
    per = lambda v: np.asarray(v, np.float64).reshape(1, -1, 1, 1)  # noqa: E731
    y = (y - per(w["mean"])) / np.sqrt(per(w["var"]) + 1e-3)
    y = y * per(w["g"]) + per(w["h"])
    y = np.where(y > 0, y, 0.1 * y)
    sig, tanh = 1 / (1 + np.exp(-y)), np.tanh(y)
    cat = np.concatenate([0.5 * sig - 2.0 * tanh, sig], axis=1)
    flat = cat.mean(axis=(2, 3))
    ip = flat @ w["wip"] + w["bip"]
    e = np.exp(ip - ip.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_tiny_v2_net_against_numpy(tmp_path, tiny_weights):
    proto, model = tmp_path / "tiny.prototxt", tmp_path / "tiny.caffemodel"
    proto.write_text(TINY_V2)
    _tiny_model(tiny_weights, model)
    spec, arrays, _ = caffe_to_net(proto, model)
    assert spec["inputs"] == {"data": [3, 8, 8]}                       # TEST phase: the Input layer
    types = [layer["type"] for layer in spec["layers"]]
    assert "Split" not in types and "Accuracy" not in types and "SoftmaxWithLoss" not in types
    by_name = {layer["name"]: layer for layer in spec["layers"]}
    assert by_name["conv1"]["kernel_size"] == [3, 1] and by_name["conv1"]["pad"] == [1, 0]
    assert by_name["conv1"]["lr_mult"] == [1.0, 2.0] and by_name["conv1"]["decay_mult"] == [1.0, 0.0]
    # in-place BatchNorm/Scale get new tops; in-place ReLU stays in place
    assert by_name["bn1"]["top"] == "bn1" and by_name["scale1"]["bottom"] == "bn1"
    assert by_name["relu1"]["bottom"] == by_name["relu1"]["top"] == "scale1"
    assert by_name["sig"]["bottom"] == "scale1" and by_name["tanh"]["bottom"] == "scale1"
    assert by_name["bn1"]["use_global_stats"] is True and by_name["bn1"]["eps"] == pytest.approx(1e-3)
    # BatchNorm statistics are divided by Caffe's scale factor
    np.testing.assert_allclose(arrays["bn1.mean"], tiny_weights["mean"], rtol=1e-6)
    np.testing.assert_allclose(arrays["bn1.var"], tiny_weights["var"], rtol=1e-6)
    # a transposed inner product is stored (in, out): decaf gets (out, in)
    assert np.array_equal(arrays["ip.weight"], tiny_weights["wip"].T)

    net = decaf.Net(spec, init=False)
    net.load_params(arrays)
    x = np.random.default_rng(4).standard_normal((2, 3, 8, 8)).astype(np.float32)
    out = net.forward(data=x)
    assert set(out) == {"prob"}
    assert rel_err(out["prob"], _tiny_reference(x, tiny_weights)) <= 1e-5

    # the TRAIN phase takes the Data layer (crop_size -> shape) and the loss
    spec_train, _, _ = caffe_to_net(proto, model, phase="train")
    assert spec_train["inputs"] == {"data": [3, 8, 8], "label": []}
    assert spec_train["layers"][-1]["type"] == "SoftmaxWithLoss"


TINY_V1 = """name: "LegacyNet"
input: "data"
input_dim: 10
input_dim: 3
input_dim: 9
input_dim: 9
layers {
  name: "conv1"
  type: CONVOLUTION
  bottom: "data"
  top: "conv1"
  blobs_lr: 1
  blobs_lr: 2
  weight_decay: 1
  weight_decay: 0
  convolution_param {
    num_output: 6
    kernel_size: 3
    stride: 2
    pad: 1
    group: 3
  }
}
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
         pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "norm1" type: LRN bottom: "pool1" top: "norm1"
         lrn_param { local_size: 3 alpha: 0.001 beta: 0.75 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "norm1" top: "fc" inner_product_param { num_output: 7 } }
layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }
"""


def test_tiny_v1_text_and_legacy_blobs(tmp_path):
    proto, model = tmp_path / "legacy.prototxt", tmp_path / "legacy.caffemodel"
    proto.write_text(TINY_V1)
    rng = np.random.default_rng(5)
    w1, b1 = rng.standard_normal((6, 1, 3, 3)), rng.standard_normal(6)
    wf, bf = rng.standard_normal((7, 6 * 3 * 3)), rng.standard_normal(7)
    model.write_bytes(encode(NET_PARAMETER, {"layers": [
        {"name": "conv1", "type": "CONVOLUTION", "blobs": [_blob(w1, True), _blob(b1, True)]},
        {"name": "fc", "type": "INNER_PRODUCT", "blobs": [_blob(wf, True), _blob(bf, True)]}]}))
    spec, arrays, _ = caffe_to_net(proto, model)
    assert spec["inputs"] == {"data": [3, 9, 9]}
    assert [layer["type"] for layer in spec["layers"]] == ["Convolution", "ReLU", "Pooling", "LRN", "InnerProduct",
                                                          "Softmax"]
    assert spec["layers"][1]["bottom"] == spec["layers"][1]["top"] == "conv1"
    assert spec["layers"][0]["lr_mult"] == [1.0, 2.0]
    assert arrays["fc.weight"].shape == (7, 54) and arrays["fc.bias"].shape == (7,)
    assert np.array_equal(arrays["conv1.weight"], w1.astype(np.float32))

    # against decaf's own layers built directly
    net = decaf.Net(spec, init=False)
    net.load_params(arrays)
    ref = decaf.Net({"name": "ref", "inputs": {"data": [3, 9, 9]}, "layers": [
        {"name": "c", "type": "Convolution", "bottom": "data", "top": "c", "num_output": 6, "kernel_size": 3,
         "stride": 2, "pad": 1, "group": 3},
        {"name": "r", "type": "ReLU", "bottom": "c", "top": "r"},
        {"name": "p", "type": "Pooling", "bottom": "r", "top": "p", "pool": "max", "kernel_size": 2, "stride": 2},
        {"name": "n", "type": "LRN", "bottom": "p", "top": "n", "local_size": 3, "alpha": 0.001, "beta": 0.75},
        {"name": "f", "type": "InnerProduct", "bottom": "n", "top": "f", "num_output": 7},
        {"name": "s", "type": "Softmax", "bottom": "f", "top": "s"}]}, init=False)
    ref.load_params({"c.weight": w1, "c.bias": b1, "f.weight": wf, "f.bias": bf})
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(net.forward(data=x)["prob"], ref.forward(data=x)["s"], rtol=1e-6)


def test_synset_words_labels(caffenet, tmp_path):
    spec, arrays, _, _ = caffenet
    small = decaf.models.get_spec("lenet")
    net = decaf.Net(small, seed=0)
    write_prototxt(tmp_path / "lenet.prototxt", small)
    write_caffemodel(tmp_path / "lenet.caffemodel", small, net.param_arrays())
    (tmp_path / "synset_words.txt").write_text("".join(f"n0{i} digit {i}\n" for i in range(10)))
    _, _, labels = caffe_to_net(tmp_path / "lenet.prototxt", tmp_path / "lenet.caffemodel")
    assert labels == [f"n0{i} digit {i}" for i in range(10)]


def test_mean_binaryproto(tmp_path):
    mean = np.random.default_rng(0).uniform(0, 255, (3, 4, 5)).astype(np.float32)
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(encode(BLOB_PROTO, _blob(mean[None], legacy=True)))
    assert np.array_equal(read_mean_binaryproto(path), mean)
    path.write_bytes(b"")
    with pytest.raises(DecafFormatError, match="holds no data"):
        read_mean_binaryproto(path)


# ---- what must be refused -----------------------------------------------------------------------
def _convert_text(tmp_path, text, model_net=None):
    proto = tmp_path / "net.prototxt"
    proto.write_text(text)
    model = None
    if model_net is not None:
        model = tmp_path / "net.caffemodel"
        model.write_bytes(encode(NET_PARAMETER, model_net))
    return caffe_to_net(proto, model), str(proto), str(model)


HEAD = 'input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'


@pytest.mark.parametrize("text, needle", [
    (HEAD + 'layer { name: "abs" type: "AbsVal" bottom: "data" top: "abs" }', "'abs' has type 'AbsVal'"),
    ('input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
     'layers { name: "b" type: BNLL bottom: "data" top: "b" }', "'b' has type 'BNLL'"),
    (HEAD + 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { pool: STOCHASTIC '
            'kernel_size: 2 } }', "STOCHASTIC"),
    (HEAD + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            'convolution_param { num_output: 3 kernel_sise: 3 } }', "no field 'kernel_sise'"),
    (HEAD + 'layer { name: "c" type: "Convolution" bottom: "nothing" top: "c" '
            'convolution_param { num_output: 3 kernel_size: 3 } }', "bottom 'nothing'"),
    (HEAD + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            'convolution_param { num_output: 3 kernel_size: 9 } }', "not valid"),
    ('layer { name: "d" type: "Data" top: "data" data_param { source: "x" } }\n'
     'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }', "crop_size"),
    (HEAD + 'layer { name: "l" type: "LRN" bottom: "data" top: "l" lrn_param { norm_region: WITHIN_CHANNEL } }',
     "WITHIN_CHANNEL"),
    ('name: "x"', "no layers"),
])
def test_refused_nets(tmp_path, text, needle):
    with pytest.raises(DecafFormatError) as info:
        _convert_text(tmp_path, text)
    assert needle in str(info.value)
    assert "net.prototxt" in str(info.value)


CONV_TEXT = HEAD + ('layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
                    'convolution_param { num_output: 2 kernel_size: 3 } }')


@pytest.mark.parametrize("blobs, needle", [
    (None, "no weights for layer 'c'"),
    ([_blob(np.zeros((2, 3, 3, 3)))], "has 1 blob(s), expected 2"),
    ([_blob(np.zeros((2, 3, 3, 2))), _blob(np.zeros(2))], "decaf expects shape (2, 3, 3, 3)"),
    ([{"shape": {"dim": [2, 3, 3, 3]}, "data": np.zeros(5)}, _blob(np.zeros(2))], "holds 5 values"),
    ([_blob(np.full((2, 3, 3, 3), np.nan)), _blob(np.zeros(2))], "NaN"),
])
def test_refused_weights(tmp_path, blobs, needle):
    layer = {"name": "other" if blobs is None else "c", "blobs": blobs or [_blob(np.zeros(1))]}
    with pytest.raises(DecafFormatError) as info:
        _convert_text(tmp_path, CONV_TEXT, {"layer": [layer]})
    assert needle in str(info.value) and "net.caffemodel" in str(info.value)


# ---- the codec against the protobuf spec and against Google's implementation --------------------
def test_hand_encoded_bytes():
    # examples from the protobuf encoding guide: field 1 = 150 is 08 96 01; "testing" in field 2
    msg = Message("Test", [Field(1, "a", "int32"), Field(2, "b", "string"), Field(3, "c", "int64", repeated=True,
                                                                                   packed=True),
                           Field(4, "f", "float", repeated=True, packed=True, array=True), Field(5, "s", "sint32"),
                           Field(6, "d", "double")])
    assert encode(msg, {"a": 150}) == bytes.fromhex("089601")
    assert encode(msg, {"b": "testing"}) == bytes.fromhex("120774657374696e67")
    # packed int64 [3, 270, 86942] -> 1a 06 03 8e 02 9e a7 05; -1 is ten bytes
    assert encode(msg, {"c": [3, 270, 86942]}) == bytes.fromhex("1a06038e029ea705")
    assert encode_varint(-1) == bytes.fromhex("ffffffffffffffffff01")
    assert encode(msg, {"s": -2}) == bytes.fromhex("2803")            # zigzag
    data = (bytes.fromhex("089601") + bytes.fromhex("1a06038e029ea705") + b"\x1a\x0a" + encode_varint(-1)
            + b"\x22\x08" + struct.pack("<2f", 1.5, -2.0) + b"\x25" + struct.pack("<f", 7.0)  # unpacked float too
            + b"\x31" + struct.pack("<d", 0.1) + bytes.fromhex("2803") + b"\x38\x05")          # unknown field 7
    out = decode(msg, data)
    assert out["a"] == 150 and out["c"] == [3, 270, 86942, -1] and out["s"] == -2 and out["d"] == 0.1
    assert out["f"].dtype == np.float32 and out["f"].tolist() == [1.5, -2.0, 7.0]


def _google_classes():
    pytest.importorskip("google.protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="caffe_subset.proto", package="t", syntax="proto2")
    T = descriptor_pb2.FieldDescriptorProto
    opt, rep = T.LABEL_OPTIONAL, T.LABEL_REPEATED

    def message(name, fields):
        m = fdp.message_type.add(name=name)
        for number, fname, ftype, label, extra in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if extra.get("type_name"):
                f.type_name = extra["type_name"]
            if extra.get("packed"):
                f.options.packed = True
        return m

    # field numbers typed in from Caffe's caffe.proto (see shared/facts/formats.md), independently of decaf
    message("BlobShape", [(1, "dim", T.TYPE_INT64, rep, {"packed": True})])
    message("BlobProto", [(7, "shape", T.TYPE_MESSAGE, opt, {"type_name": ".t.BlobShape"}),
                          (5, "data", T.TYPE_FLOAT, rep, {"packed": True}),
                          (1, "num", T.TYPE_INT32, opt, {}), (2, "channels", T.TYPE_INT32, opt, {}),
                          (3, "height", T.TYPE_INT32, opt, {}), (4, "width", T.TYPE_INT32, opt, {})])
    message("ConvolutionParameter", [(1, "num_output", T.TYPE_UINT32, opt, {}), (2, "bias_term", T.TYPE_BOOL, opt, {}),
                                     (3, "pad", T.TYPE_UINT32, rep, {}), (4, "kernel_size", T.TYPE_UINT32, rep, {}),
                                     (5, "group", T.TYPE_UINT32, opt, {}), (6, "stride", T.TYPE_UINT32, rep, {})])
    message("PoolingParameter", [(1, "pool", T.TYPE_ENUM, opt, {"type_name": ".t.PoolMethod"}),
                                 (2, "kernel_size", T.TYPE_UINT32, opt, {}), (3, "stride", T.TYPE_UINT32, opt, {})])
    enum = fdp.enum_type.add(name="PoolMethod")
    for i, n in enumerate(["MAX", "AVE", "STOCHASTIC"]):
        enum.value.add(name=n, number=i)
    v1 = fdp.enum_type.add(name="V1Type")
    for n, i in [("NONE", 0), ("CONVOLUTION", 4), ("DROPOUT", 6), ("INNER_PRODUCT", 14), ("LRN", 15),
                 ("POOLING", 17), ("RELU", 18), ("SOFTMAX", 20), ("SOFTMAX_LOSS", 21)]:
        v1.value.add(name=n, number=i)
    message("LayerParameter", [(1, "name", T.TYPE_STRING, opt, {}), (2, "type", T.TYPE_STRING, opt, {}),
                               (3, "bottom", T.TYPE_STRING, rep, {}), (4, "top", T.TYPE_STRING, rep, {}),
                               (7, "blobs", T.TYPE_MESSAGE, rep, {"type_name": ".t.BlobProto"}),
                               (106, "convolution_param", T.TYPE_MESSAGE, opt,
                                {"type_name": ".t.ConvolutionParameter"}),
                               (121, "pooling_param", T.TYPE_MESSAGE, opt, {"type_name": ".t.PoolingParameter"})])
    message("V1LayerParameter", [(2, "bottom", T.TYPE_STRING, rep, {}), (3, "top", T.TYPE_STRING, rep, {}),
                                 (4, "name", T.TYPE_STRING, opt, {}),
                                 (5, "type", T.TYPE_ENUM, opt, {"type_name": ".t.V1Type"}),
                                 (6, "blobs", T.TYPE_MESSAGE, rep, {"type_name": ".t.BlobProto"}),
                                 (7, "blobs_lr", T.TYPE_FLOAT, rep, {}),
                                 (10, "convolution_param", T.TYPE_MESSAGE, opt,
                                  {"type_name": ".t.ConvolutionParameter"})])
    message("NetParameter", [(1, "name", T.TYPE_STRING, opt, {}), (3, "input", T.TYPE_STRING, rep, {}),
                             (4, "input_dim", T.TYPE_INT32, rep, {}),
                             (8, "input_shape", T.TYPE_MESSAGE, rep, {"type_name": ".t.BlobShape"}),
                             (100, "layer", T.TYPE_MESSAGE, rep, {"type_name": ".t.LayerParameter"}),
                             (2, "layers", T.TYPE_MESSAGE, rep, {"type_name": ".t.V1LayerParameter"})])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("t.NetParameter"))


def test_decoder_reads_google_encoded_messages():
    NetParameter = _google_classes()
    from google.protobuf import text_format

    g = NetParameter(name="from-google", input=["data"], input_dim=[1, 3, 5, 5])
    g.input_shape.add(dim=[1, -1, 7])
    layer = g.layer.add(name="conv1", type="Convolution", bottom=["data"], top=["conv1"])
    layer.convolution_param.num_output = 2
    layer.convolution_param.pad.append(1)
    layer.convolution_param.kernel_size.extend([3, 2])
    layer.convolution_param.bias_term = False
    weights = np.random.default_rng(0).standard_normal(2 * 3 * 3 * 2).astype(np.float32)
    blob = layer.blobs.add()
    blob.shape.dim.extend([2, 3, 3, 2])
    blob.data.extend(weights.tolist())
    p = g.layer.add(name="pool", type="Pooling")
    p.pooling_param.pool = 1
    v1 = g.layers.add(name="old", type=4, bottom=["a", "b"], blobs_lr=[1.0, 2.0])
    v1.blobs.add(num=1, channels=1, height=2, width=1, data=[0.25, -8.0])

    ours = decode(NET_PARAMETER, g.SerializeToString(), "google.bin")
    assert ours["name"] == "from-google" and ours["input"] == ["data"] and ours["input_dim"] == [1, 3, 5, 5]
    assert ours["input_shape"][0]["dim"] == [1, -1, 7]
    conv = ours["layer"][0]
    assert (conv["name"], conv["type"], conv["bottom"], conv["top"]) == ("conv1", "Convolution", ["data"], ["conv1"])
    assert conv["convolution_param"] == {"num_output": 2, "pad": [1], "kernel_size": [3, 2], "bias_term": False}
    assert conv["blobs"][0]["shape"]["dim"] == [2, 3, 3, 2]
    assert np.array_equal(conv["blobs"][0]["data"], weights)
    assert ours["layer"][1]["pooling_param"]["pool"] == "AVE"
    old = ours["layers"][0]
    assert old["type"] == "CONVOLUTION" and old["bottom"] == ["a", "b"] and old["blobs_lr"] == [1.0, 2.0]
    assert (old["blobs"][0]["height"], old["blobs"][0]["data"].tolist()) == (2, [0.25, -8.0])

    # Google's text format, read by decaf's text parser
    text = text_format.MessageToString(g)
    again = parse_text(NET_PARAMETER, text, "google.prototxt")
    assert again["layer"][0]["convolution_param"] == conv["convolution_param"]
    assert np.array_equal(again["layer"][0]["blobs"][0]["data"], weights)
    assert again["layers"][0]["type"] == "CONVOLUTION" and again["input_shape"][0]["dim"] == [1, -1, 7]


def test_google_reads_our_encoding(caffenet, tmp_path):
    NetParameter = _google_classes()
    from google.protobuf import text_format

    small = decaf.models.get_spec("lenet")
    arrays = decaf.Net(small, seed=1).param_arrays()
    for v1 in (False, True):
        path = tmp_path / "lenet.caffemodel"
        write_caffemodel(path, small, arrays, v1=v1)
        g = NetParameter()
        g.ParseFromString(path.read_bytes())
        layers = g.layers if v1 else g.layer
        conv1 = next(layer for layer in layers if layer.name == "conv1")
        w = np.array(conv1.blobs[0].data, np.float32)
        assert np.array_equal(w, arrays["conv1.weight"].ravel())
        if v1:
            assert conv1.type == 4 and conv1.blobs[0].num == arrays["conv1.weight"].shape[0]
        else:
            assert conv1.type == "Convolution" and list(conv1.blobs[0].shape.dim) == list(arrays["conv1.weight"].shape)
            assert list(conv1.convolution_param.kernel_size) == [5]
        # and Google's text parser reads our prototxt (fields it does not know are the only problem)
        proto = tmp_path / "lenet.prototxt"
        write_prototxt(proto, small, v1=v1)
        g2 = NetParameter()
        text_format.Parse(proto.read_text(), g2, allow_unknown_field=True)
        assert [layer.name for layer in (g2.layers if v1 else g2.layer)][-2:] == \
            [small["layers"][-2]["name"], small["layers"][-1]["name"]]


# ---- the text parser ------------------------------------------------------------------------------
TEXT_SCHEMA = Message("T", [Field(1, "name", "string"), Field(2, "n", "int32"), Field(3, "x", "float"),
                            Field(4, "flag", "bool"), Field(5, "mode", "enum", enum={"A": 0, "B": 1}),
                            Field(6, "vals", "int64", repeated=True)], strict=True)
TEXT_SCHEMA.add(Field(7, "child", "message", message=TEXT_SCHEMA))
TEXT_SCHEMA.add(Field(8, "kids", "message", repeated=True, message=TEXT_SCHEMA))


def test_text_format_syntax():
    text = r"""
    name: 'it''s' "\"quoted\"\n\x41\101"   # adjacent strings concatenate; escapes
    n: -0x10 x: -1.5e-3, flag: true; mode: B
    vals: [1, -2, 3] vals: 4
    child { n: 1 child < x: inf > }
    child { name: "merged" }
    kids: { n: 1 } kids { n: 2 }
    kids: [{n: 3}, {n: 4}]
    """
    out = parse_text(TEXT_SCHEMA, text, "t.txt")
    assert out["name"] == 'its"quoted"\nAA'
    assert out["n"] == -16 and out["x"] == -1.5e-3 and out["flag"] is True and out["mode"] == "B"
    assert out["vals"] == [1, -2, 3, 4]
    assert out["child"]["n"] == 1 and out["child"]["child"]["x"] == math.inf and out["child"]["name"] == "merged"
    assert [k["n"] for k in out["kids"]] == [1, 2, 3, 4]
    # format_text output parses back to the same thing
    assert parse_text(TEXT_SCHEMA, format_text(TEXT_SCHEMA, out)) == out


@pytest.mark.parametrize("text, needle", [
    ('name: "open', "line 1, column 7: unterminated string"),
    ("child { n: 1", "missing '}'"),
    ("nmae: 1", "no field 'nmae'"),
    ("mode: C", "'C' is not a value"),
    ("n: 1.5", "needs an integer"),
    ("n: 99999999999", "out of range"),
    ("name: 3", "needs a quoted string"),
    ("flag: maybe", "true or false"),
    ("x: {", "is a float, not a message"),
    ("child: 3", "is a message"),
    ("n 3", "expected ':'"),
    ("n: 1 }", "expected a field name"),
    ("// comment\n", "'//' comments"),
    ("[ext.field]: 1", "extension"),
    ("n: @", "unexpected character"),
])
def test_text_format_errors(text, needle):
    with pytest.raises(DecafFormatError) as info:
        parse_text(TEXT_SCHEMA, "\n" * 0 + text, "bad.prototxt")
    assert str(info.value).startswith("bad.prototxt: ") and needle in str(info.value)


# ---- corrupt files -------------------------------------------------------------------------------
@pytest.mark.parametrize("data, needle", [
    (b"", "empty file"),
    (b"\x0a", "truncated varint"),
    (b"\x0a\x05abc", "claims 5 bytes but only 3 remain"),
    (b"\x0b\x00", "group wire type"),
    (b"\x0f", "invalid wire type 7"),
    (b"\x08" + b"\xff" * 10 + b"\x01", "overflows 64 bits"),
    (b"\xa2\x06\x02\x08\x01", "wire type varint"),      # layer (field 100) with a bad inner name
    (b"\x0a\x02\xff\xfe", "not valid UTF-8"),
    (b"\x0a\x03abc", "no layers"),
])
def test_corrupt_caffemodel_messages(tmp_path, data, needle):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(data)
    with pytest.raises(DecafFormatError) as info:
        read_caffemodel(path)
    assert str(path) in str(info.value) and needle in str(info.value)


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("caffe_fuzz")
    spec = {"name": "small", "inputs": {"data": [3, 6, 6]}, "layers": [
        {"name": "conv", "type": "Convolution", "bottom": "data", "top": "conv", "num_output": 4, "kernel_size": 3,
         "pad": 1},
        {"name": "bn", "type": "BatchNorm", "bottom": "conv", "top": "bn", "affine": True},
        {"name": "relu", "type": "ReLU", "bottom": "bn", "top": "bn"},
        {"name": "pool", "type": "Pooling", "bottom": "bn", "top": "pool", "pool": "max", "kernel_size": 2,
         "stride": 2},
        {"name": "fc", "type": "InnerProduct", "bottom": "pool", "top": "fc", "num_output": 3},
        {"name": "prob", "type": "Softmax", "bottom": "fc", "top": "prob"}]}
    arrays = decaf.Net(spec, seed=2).param_arrays()
    write_prototxt(folder / "small.prototxt", spec)
    write_caffemodel(folder / "small.caffemodel", spec, arrays)
    caffe_to_net(folder / "small.prototxt", folder / "small.caffemodel")    # valid as written
    return folder, (folder / "small.caffemodel").read_bytes(), (folder / "small.prototxt").read_text()


def _only_format_errors(fn, path, other=None):
    """fn(path) succeeds or raises DecafFormatError naming a file (the fuzzed one, or its partner)."""
    try:
        fn(path)
    except DecafFormatError as exc:
        assert str(path) in str(exc) or (other is not None and str(other) in str(exc)), str(exc)


@FUZZ
@given(data=st.binary(max_size=300))
def test_fuzz_random_bytes(small_files, data):
    folder = small_files[0]
    path = folder / "random.caffemodel"
    path.write_bytes(data)
    _only_format_errors(read_caffemodel, path)
    _only_format_errors(lambda p: caffe_to_net(None, p), path)


@FUZZ
@given(st.data())
def test_fuzz_mutated_caffemodel(small_files, data):
    folder, valid, _ = small_files
    blob = bytearray(valid)
    kind = data.draw(st.sampled_from(["flip", "truncate", "overwrite", "header"]))
    if kind == "truncate":
        blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "header":      # mutate the structural bytes, not the float data
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, min(len(blob), 120) - 1))
            blob[i] = data.draw(st.integers(0, 255))
    else:
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] = (blob[i] ^ (1 << data.draw(st.integers(0, 7)))) if kind == "flip" else data.draw(
                st.integers(0, 255))
    path = folder / "mutated.caffemodel"
    path.write_bytes(bytes(blob))
    _only_format_errors(lambda p: caffe_to_net(folder / "small.prototxt", p), path, folder / "small.prototxt")
    _only_format_errors(lambda p: caffe_to_net(None, p), path)


@FUZZ
@given(st.data())
def test_fuzz_mutated_prototxt(small_files, data):
    folder, _, text = small_files
    chars = list(text)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(chars) - 1))
        chars[i] = data.draw(st.sampled_from(list('{}:"\' #\n0123456789-.abcxyz_[],<>\\')))
    path = folder / "mutated.prototxt"
    path.write_text("".join(chars))
    _only_format_errors(lambda p: caffe_to_net(p, folder / "small.caffemodel"), path, folder / "small.caffemodel")
