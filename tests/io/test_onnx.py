"""ONNX import/export against ONNX Runtime: CaffeNet, EfficientNet-Lite0, hand-built graphs, refusals."""
import numpy as np
import pytest

import decaf
import decaf.models
from decaf.io.errors import DecafFormatError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from decaf.io.onnx_convert import net_to_onnx, onnx_to_net  # noqa: E402

RTOL = 1e-4


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def run_ort(model_or_path, feeds, outputs=None):
    src = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
    names = outputs or [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def run_decaf(path, feeds, outputs):
    spec, arrays = onnx_to_net(path)
    net = decaf.Net(spec, init=False)
    net.load_params(arrays)
    return net.forward(feeds, outputs=outputs), spec, arrays


# ---- CaffeNet: decaf -> ONNX -> ORT, and back into decaf ------------------------------------------
@pytest.fixture(scope="module")
def caffenet_onnx(tmp_path_factory):
    net = decaf.Net(decaf.models.get_spec("caffenet"), seed=11)
    path = tmp_path_factory.mktemp("onnx") / "caffenet.onnx"
    model = net_to_onnx(net, path, extra_outputs=["fc7", "fc8"])
    return net, path, model


def test_caffenet_export_matches_ort_and_imports_back(caffenet_onnx):
    net, path, model = caffenet_onnx
    assert [o.name for o in model.graph.output] == ["prob", "fc7", "fc8"]
    assert model.opset_import[0].version == 13
    x = np.random.default_rng(1).standard_normal((2, 3, 227, 227)).astype(np.float32)
    ours = net.forward(data=x, outputs=["fc7", "fc8", "prob"])
    theirs = run_ort(path, {"data": x}, ["fc7", "fc8", "prob"])

    back, spec, arrays = run_decaf(path, {"data": x}, ["fc7", "fc8", "prob"])
    # the weights come back bit for bit, under the same names
    originals = net.param_arrays()
    assert sorted(arrays) == sorted(originals)
    assert all(np.array_equal(arrays[k], originals[k]) for k in originals)
    assert [layer["type"] for layer in spec["layers"] if layer["type"] != "Flatten"] == \
        [layer.type_name for layer in net.order]
    for key in ("fc7", "fc8", "prob"):
        assert rel_err(ours[key], theirs[key]) <= RTOL, key      # decaf's own net vs ORT
        assert rel_err(back[key], theirs[key]) <= RTOL, key      # the imported net vs ORT


def test_lite0_same_padding_depthwise_export(tmp_path):
    """EfficientNet-Lite0 (TF SAME pads, depthwise convs, BatchNorm, ReLU6, skips) through ORT and back."""
    rng = np.random.default_rng(2)
    net = decaf.Net(decaf.models.get_spec("efficientnet_lite0"), seed=3)
    arrays = net.param_arrays()
    for k, v in arrays.items():
        if k.endswith(".mean"):
            arrays[k] = rng.normal(0, 0.1, v.shape).astype(np.float32)
        elif k.endswith(".var"):
            arrays[k] = rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
    net.load_params(arrays)
    path = tmp_path / "lite0.onnx"
    model = net_to_onnx(net, path, extra_outputs=["fc"])
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "BatchNormalization", "Clip", "Sum", "GlobalAveragePool", "Gemm"} <= ops
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    theirs = run_ort(path, {"data": x}, ["fc", "prob"])
    ours = net.forward(data=x, outputs=["fc", "prob"])
    back, _, _ = run_decaf(path, {"data": x}, ["fc", "prob"])
    for key in ("fc", "prob"):
        assert rel_err(ours[key], theirs[key]) <= RTOL, key
        assert rel_err(back[key], theirs[key]) <= RTOL, key


# ---- hand-built graphs ----------------------------------------------------------------------------
def f32(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def build(nodes, inputs, outputs, inits, opset=13, name="g"):
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def compare(tmp_path, model, feeds, outputs):
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    theirs = run_ort(path, feeds, outputs)
    ours, spec, _ = run_decaf(path, feeds, outputs)
    errors = {k: rel_err(ours[k], theirs[k]) for k in outputs}
    assert all(e <= RTOL for e in errors.values()), errors
    return spec


def test_graph_pads_clip_globalpool_batchnorm_add(tmp_path):
    rng = np.random.default_rng(3)
    inits = {"w1": f32(rng, 8, 3, 3, 3, scale=0.3), "b1": f32(rng, 8), "gamma": rng.uniform(0.5, 1.5, 8),
             "beta": f32(rng, 8), "mean": f32(rng, 8, scale=0.1), "var": rng.uniform(0.5, 2, 8),
             "w2": f32(rng, 8, 1, 3, 3, scale=0.3), "wg": f32(rng, 5, 8), "bg": f32(rng, 5),
             "lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}
    inits = {k: np.asarray(v, np.float32) for k, v in inits.items()}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv_asym", pads=[0, 1, 1, 2]),
        helper.make_node("BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["bn"], name="bn",
                         epsilon=1e-3),
        helper.make_node("Clip", ["bn", "lo", "hi"], ["r6"], name="relu6"),
        helper.make_node("Conv", ["r6", "w2"], ["dw"], name="dw", group=8, auto_pad="SAME_UPPER", strides=[1, 1]),
        helper.make_node("Add", ["dw", "r6"], ["add"], name="add"),
        helper.make_node("MaxPool", ["add"], ["mp"], name="mp", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], ceil_mode=1),
        helper.make_node("AveragePool", ["mp"], ["ap"], name="ap", kernel_shape=[2, 2], strides=[2, 2],
                         pads=[0, 0, 1, 1], ceil_mode=1, count_include_pad=0),
        helper.make_node("GlobalAveragePool", ["ap"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "wg", "bg"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], name="prob"),
    ]
    model = build(nodes, [("x", ["N", 3, 16, 16])], ["add", "logits", "prob"], inits)
    x = f32(rng, 2, 3, 16, 16)
    spec = compare(tmp_path, model, {"x": x}, ["add", "logits", "prob"])
    by_name = {layer["name"]: layer for layer in spec["layers"]}
    assert by_name["conv_asym"]["pad"] == [0, 1, 1, 2]
    assert by_name["dw"]["pad_mode"] == "same_upper"
    assert by_name["relu6"]["type"] == "ReLU6"
    assert by_name["bn"]["type"] == "BatchNorm" and by_name["bn"]["affine"] is True
    assert by_name["add"]["type"] == "Eltwise"


def test_graph_misc_ops(tmp_path):
    rng = np.random.default_rng(4)
    inits = {"cmul": f32(rng, 1, 4, 1, 1), "csub": f32(rng, 4, 1, 1), "cdiv": np.array(2.0, np.float32),
             "lo": np.array(-0.5, np.float32), "ratio": np.array(0.3, np.float32),
             "wm": f32(rng, 288, 10, scale=0.1), "bm": f32(rng, 10), "wg": f32(rng, 10, 6), "cg": f32(rng, 6)}
    nodes = [
        helper.make_node("LRN", ["x"], ["lrn"], name="lrn", size=3, alpha=1e-2, beta=0.75, bias=2.0),
        helper.make_node("LeakyRelu", ["lrn"], ["lrelu"], name="lrelu", alpha=0.2),
        helper.make_node("Sigmoid", ["lrelu"], ["sig"], name="sig"),
        helper.make_node("Tanh", ["lrelu"], ["tanh"], name="tanh"),
        helper.make_node("Mul", ["sig", "tanh"], ["prod"], name="prod"),
        helper.make_node("Mul", ["prod", "cmul"], ["scaled"], name="scaled"),
        helper.make_node("Sub", ["scaled", "csub"], ["shifted"], name="shifted"),
        helper.make_node("Div", ["shifted", "cdiv"], ["halved"], name="halved"),
        helper.make_node("Concat", ["halved", "x"], ["cat"], name="cat", axis=-3),
        helper.make_node("Clip", ["cat", "lo"], ["clipped"], name="clip"),
        helper.make_node("Identity", ["clipped"], ["same"], name="same"),
        helper.make_node("Dropout", ["same", "ratio"], ["dropped"], name="drop"),
        helper.make_node("Constant", [], ["shape"], name="shape",
                         value=numpy_helper.from_array(np.array([0, -1], np.int64))),
        helper.make_node("Reshape", ["dropped", "shape"], ["rows"], name="rows"),
        helper.make_node("MatMul", ["rows", "wm"], ["mm"], name="mm"),
        helper.make_node("Add", ["mm", "bm"], ["mm_bias"], name="mm_bias"),
        helper.make_node("Relu", ["mm_bias"], ["relu"], name="relu"),
        helper.make_node("Gemm", ["relu", "wg", "cg"], ["g"], name="gemm", alpha=0.5, beta=2.0),
        helper.make_node("Sigmoid", ["g"], ["g2"], name="g2"),
        helper.make_node("Tanh", ["g"], ["g3"], name="g3"),
        helper.make_node("Sum", ["g", "g2", "g3"], ["total"], name="total"),
        helper.make_node("Sub", ["total", "g"], ["out"], name="out"),
    ]
    model = build(nodes, [("x", ["N", 4, 6, 6])], ["cat", "out"], inits)
    spec = compare(tmp_path, model, {"x": f32(rng, 3, 4, 6, 6)}, ["cat", "out"])
    types = {layer["name"]: layer["type"] for layer in spec["layers"]}
    assert types["scaled"] == types["shifted"] == types["halved"] == "Scale"
    assert types["mm"] == "InnerProduct" and "mm_bias" not in types       # MatMul + Add fused
    assert "same" not in types and types["prod"] == "Eltwise"


def test_graph_old_opset_attributes(tmp_path):
    """Opset 10: Clip min/max and Dropout ratio as attributes, Softmax's old axis default."""
    rng = np.random.default_rng(5)
    inits = {"w": f32(rng, 6, 2, 3, 3), "wf": f32(rng, 4, 6 * 3 * 3), "bf": f32(rng, 1, 4)}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="c", strides=[2, 2], dilations=[1, 1]),
        helper.make_node("Clip", ["c"], ["r6"], name="r6", min=0.0, max=6.0),
        helper.make_node("Clip", ["r6"], ["r"], name="r", min=0.0),
        helper.make_node("Dropout", ["r"], ["d"], name="d", ratio=0.25),
        helper.make_node("MaxPool", ["d"], ["p"], name="p", kernel_shape=[2, 2], auto_pad="SAME_LOWER",
                         strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="f", axis=1),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="y", transB=1),
        helper.make_node("Softmax", ["y"], ["s"], name="s"),
    ]
    model = build(nodes, [("x", ["N", 2, 11, 11])], ["s"], inits, opset=10)
    spec = compare(tmp_path, model, {"x": f32(rng, 2, 2, 11, 11)}, ["s"])
    types = {layer["name"]: layer["type"] for layer in spec["layers"]}
    assert types["r6"] == "ReLU6" and types["r"] == "ReLU"
    assert next(layer for layer in spec["layers"] if layer["name"] == "d")["dropout_ratio"] == 0.25


# ---- refusals ---------------------------------------------------------------------------------------
def _save(tmp_path, model):
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    return path


def test_unsupported_op_is_refused_by_name(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="r"),
             helper.make_node("Hardmax", ["r"], ["up"], name="up1")]
    model = build(nodes, [("x", ["N", 3, 4, 4])], ["up"], {})
    with pytest.raises(DecafFormatError) as info:
        onnx_to_net(_save(tmp_path, model))
    assert "ONNX op 'Hardmax' (node 'up1') is not supported by decaf" in str(info.value)
    assert "bad.onnx" in str(info.value)


W = np.ones((2, 3, 1, 1), np.float32)


@pytest.mark.parametrize("nodes, inputs, inits, needle", [
    ([helper.make_node("Conv", ["x", "w"], ["y"], name="c")], [("x", ["N", 3, "H", 4])], {"w": W},
     "symbolic dimension 'H' at axis 2"),
    ([helper.make_node("Conv", ["x", "x2"], ["y"], name="c")], [("x", ["N", 3, 4, 4]), ("x2", [2, 3, 1, 1])], {},
     "must be a constant"),
    ([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")], [("x", ["N", 3, 4, 4])],
     {"s": np.array([2, -1], np.int64)}, "changes the batch axis"),
    ([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")], [("x", ["N", 3, 4, 4])],
     {"s": np.array([-1, 4], np.int64)}, "changes the batch axis"),
    ([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")], [("x", ["N", 3, 4, 4])],
     {"s": np.array([0, 5, -1], np.int64)}, "-1 cannot be inferred"),
    ([helper.make_node("Add", ["x", "x2"], ["y"], name="a")], [("x", ["N", 3, 4, 4]), ("x2", ["N", 4])], {},
     "broadcasting between tensors of different ranks"),
    ([helper.make_node("Softmax", ["x"], ["y"], name="sm")], [("x", ["N", 3, 4, 4])], {},
     "Softmax over axis 3 of a 4-D input"),
    ([helper.make_node("Mul", ["x", "c"], ["y"], name="m")], [("x", ["N", 3, 4, 4])],
     {"c": np.ones((2, 1, 4, 4), np.float32)}, "does not broadcast into (3, 4, 4) per example"),
    ([helper.make_node("Gemm", ["x", "w"], ["y"], name="g", transA=1)], [("x", ["N", 3])],
     {"w": np.ones((3, 2), np.float32)}, "transA"),
    ([helper.make_node("Flatten", ["x"], ["y"], name="f", axis=2)], [("x", ["N", 3, 4, 4])], {},
     "(Flatten): the output's first axis is not the batch"),
])
def test_refused_graphs(tmp_path, nodes, inputs, inits, needle):
    model = build(nodes, inputs, ["y"], inits)
    with pytest.raises(DecafFormatError) as info:
        onnx_to_net(_save(tmp_path, model))
    assert needle in str(info.value) and "bad.onnx" in str(info.value)


def test_corrupt_onnx_files(tmp_path, caffenet_onnx):
    _, path, _ = caffenet_onnx
    data = path.read_bytes()
    for i, blob in enumerate([b"", b"\x00\x01garbage" * 7, data[:1000], data[: len(data) // 2]]):
        bad = tmp_path / f"bad{i}.onnx"
        bad.write_bytes(blob)
        with pytest.raises(DecafFormatError) as info:
            onnx_to_net(bad)
        assert str(bad) in str(info.value)


def test_export_refuses_loss_layers(tmp_path):
    net = decaf.Net(decaf.models.get_spec("lenet"), seed=0)
    assert any(layer.type_name == "SoftmaxWithLoss" for layer in net.order)
    with pytest.raises(ValueError, match="cannot be exported"):
        net_to_onnx(net, tmp_path / "lenet.onnx")


def test_export_refuses_an_opset_it_cannot_write_by_name(tmp_path):
    layer = {"name": "relu6", "type": "ReLU6", "bottom": ["data"], "top": ["out"]}
    net = decaf.Net({"name": "clip", "inputs": {"data": [3, 4, 4]}, "layers": [layer]}, seed=0)
    with pytest.raises(ValueError, match=r"net 'clip' cannot be written at opset 9: .*Clip"):
        net_to_onnx(net, tmp_path / "old.onnx", opset=9)
    newest = onnx.defs.onnx_opset_version()
    with pytest.raises(ValueError, match=f"opset {newest + 1} is not one this onnx package knows"):
        net_to_onnx(net, tmp_path / "new.onnx", opset=newest + 1)
    assert not (tmp_path / "old.onnx").exists() and not (tmp_path / "new.onnx").exists()
