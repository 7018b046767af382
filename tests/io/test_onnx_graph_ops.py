"""ONNX graph-level and shape operators against ONNX Runtime, at the opsets where their attributes
became inputs (11, 13, 18): shape subgraphs folded for any batch size, Reshape/Squeeze/Unsqueeze,
Transpose, Reduce*, Slice/Split, Pad (and its folding into a Conv), Resize; and refusals that name
the node, the op and the reason."""
import numpy as np
import pytest

import decaf
from decaf.io.errors import DecafFormatError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from decaf.io.onnx_convert import onnx_to_net  # noqa: E402
from onnx_graph import model_of  # noqa: E402

RNG = np.random.default_rng(7)
I64 = np.int64


def check(tmp_path, model, batches=(2, 3), out="y"):
    """Import once; compare with ONNX Runtime at each batch size (the dynamic axis). Returns the spec."""
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    spec, arrays = onnx_to_net(path)
    net = decaf.Net.from_arrays(spec, arrays)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    for b in batches if not dims[0] else (dims[0],):
        x = RNG.standard_normal((b,) + tuple(dims[1:])).astype(np.float32)
        (theirs,) = session.run([out], {"x": x})
        ours = net.forward(x=x)[out]
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * max(np.abs(theirs).max(), 1))
    return spec


def types(spec):
    return [layer["type"] for layer in spec["layers"]]


def shape_chain(src, out, consts):
    """x.view(x.size(0), -1)-style: Shape -> Gather(0) -> Unsqueeze -> Concat with a constant tail."""
    return [helper.make_node("Shape", [src], [f"{out}_s"]),
            helper.make_node("Gather", [f"{out}_s", "zero"], [f"{out}_n"], axis=0),
            helper.make_node("Unsqueeze", [f"{out}_n", "axes0"], [f"{out}_n1"]),
            helper.make_node("Concat", [f"{out}_n1", consts], [out], axis=0)]


@pytest.mark.parametrize("batch", ["N", 1, 2])
def test_dynamic_batch_view_and_channel_shuffle(tmp_path, batch):
    """view(n, g, c/g, h, w) -> transpose(1, 2) -> view(n, -1): the shape computed from Shape nodes
    at run time, so the net works for every batch size."""
    inits = {"zero": np.array(0, I64), "axes0": np.array([0], I64), "grp": np.array([2, 3, 4, 5], I64),
             "flat": np.array([-1], I64)}
    nodes = (shape_chain("x", "s1", "grp")
             + [helper.make_node("Reshape", ["x", "s1"], ["r"]),
                helper.make_node("Transpose", ["r"], ["tr"], perm=[0, 2, 1, 3, 4])]
             + shape_chain("tr", "s2", "flat")
             + [helper.make_node("Reshape", ["tr", "s2"], ["y"])])
    spec = check(tmp_path, model_of(nodes, [batch, 6, 4, 5], inits, 13))
    assert types(spec) == ["Reshape", "Transpose", "Reshape"]
    assert spec["layers"][-1]["shape"] == [120]


def test_static_batch_constant_reshape_target(tmp_path):
    """A static export writes the batch size itself into the target: [2, 3, 2, 20] at batch 2."""
    nodes = [helper.make_node("Reshape", ["x", "t"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]
    spec = check(tmp_path, model_of(nodes, [2, 6, 4, 5], {"t": np.array([2, 3, 2, 20], I64)}, 13))
    assert spec["layers"][0]["shape"] == [3, 2, 20]


@pytest.mark.parametrize("opset", [11, 13, 21])
def test_squeeze_unsqueeze_axes_attribute_then_input(tmp_path, opset):
    inits = {"w": RNG.standard_normal((4, 3, 1, 1)).astype(np.float32)}
    if opset >= 13:
        inits.update(a23=np.array([2, 3], I64), a1=np.array([-1], I64))
        sq = helper.make_node("Squeeze", ["c", "a23"], ["s"])
        un = helper.make_node("Unsqueeze", ["s", "a1"], ["y"])
    else:
        sq = helper.make_node("Squeeze", ["c"], ["s"], axes=[2, 3])
        un = helper.make_node("Unsqueeze", ["s"], ["y"], axes=[-1])
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]), helper.make_node("Conv", ["g", "w"], ["c"]), sq, un]
    spec = check(tmp_path, model_of(nodes, ["N", 3, 5, 5], inits, opset))
    assert spec["layers"][-1]["shape"] == [4, 1]


@pytest.mark.parametrize("opset", [13, 18, 21])
@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceSum"])
def test_reduce_axes_attribute_or_input(tmp_path, opset, op):
    since = 13 if op == "ReduceSum" else 18
    if opset >= since:
        node = helper.make_node(op, ["x", "ax"], ["y"], keepdims=0)
        inits = {"ax": np.array([-1, 2], I64)}
    else:
        node, inits = helper.make_node(op, ["x"], ["y"], axes=[-1, 2], keepdims=0), {}
    spec = check(tmp_path, model_of([node], ["N", 3, 4, 5], inits, opset))
    assert types(spec) == ["Reduce"] and spec["layers"][0]["axes"] == [2, 3]


@pytest.mark.parametrize("opset", [11, 13, 18, 21])
def test_split_and_slice(tmp_path, opset):
    """Split with sizes (attribute before 13, input from it) and a Slice with negative steps, then
    the parts put back together in another order."""
    inits = {"st": np.array([-1, 0], I64), "en": np.array([-100, 9], I64), "ax": np.array([3, 1], I64),
             "sp": np.array([-1, 2], I64)}
    if opset >= 13:
        inits["sizes"] = np.array([2, 4], I64)
        split = helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1)
    else:
        split = helper.make_node("Split", ["x"], ["a", "b"], axis=1, split=[2, 4])
    nodes = [split, helper.make_node("Slice", ["b", "st", "en", "ax", "sp"], ["bs"]),
             helper.make_node("Concat", ["bs", "a"], ["y"], axis=-3)]
    spec = check(tmp_path, model_of(nodes, ["N", 6, 3, 5], inits, opset))
    assert types(spec) == ["Slice", "Slice", "Slice", "Concat"]


def test_split_equal_parts_opset18_num_outputs(tmp_path):
    nodes = [helper.make_node("Split", ["x"], ["a", "b", "c"], axis=2, num_outputs=3),
             helper.make_node("Sub", ["a", "c"], ["d"]), helper.make_node("Mul", ["d", "b"], ["y"])]
    check(tmp_path, model_of(nodes, ["N", 2, 6, 3], {}, 18))


def test_torch_chunk_chain_and_range_cast(tmp_path):
    """chunk: Shape -> Gather(1) -> Add 1 -> Div 2 -> Slice; Range/Cast/ConstantOfShape on shapes."""
    inits = {"one": np.array(1, I64), "two": np.array(2, I64), "z1": np.array([0], I64),
             "ax1": np.array([1], I64), "big": np.array([1 << 40], I64), "a0": np.array([0], I64)}
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "one"], ["c"], axis=0),
             helper.make_node("Add", ["c", "one"], ["c1"]), helper.make_node("Div", ["c1", "two"], ["h"]),
             helper.make_node("Unsqueeze", ["h", "a0"], ["h1"]),
             helper.make_node("Slice", ["x", "z1", "h1", "ax1"], ["lo"]),
             helper.make_node("Slice", ["x", "h1", "big", "ax1"], ["hi"]),
             helper.make_node("Range", ["one", "c1", "one"], ["rng"]),          # [1, ..., C]
             helper.make_node("Cast", ["rng"], ["rngf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["rngf"], ["tot"], keepdims=0),      # C(C+1)/2 = 10
             helper.make_node("Mul", ["hi", "tot"], ["hi10"]),
             helper.make_node("Add", ["lo", "hi10"], ["y"])]
    spec = check(tmp_path, model_of(nodes, ["N", 4, 2, 3], inits, 13))
    assert types(spec) == ["Slice", "Slice", "Scale", "Eltwise"]


@pytest.mark.parametrize("opset", [10, 11, 18, 21])
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_opsets_and_modes(tmp_path, opset, mode):
    pads = [0, 0, 1, 2, 0, 0, 2, 1]
    if opset < 11:
        node, inits = helper.make_node("Pad", ["x"], ["p"], mode=mode, pads=pads, value=0.5), {}
    elif opset < 18:
        inits = {"pads": np.array(pads, I64), "v": np.array(0.5, np.float32)}
        node = helper.make_node("Pad", ["x", "pads", "v"], ["p"], mode=mode)
    else:
        inits = {"pads": np.array([1, 2, 2, 1], I64), "v": np.array(0.5, np.float32), "ax": np.array([-2, 3], I64)}
        node = helper.make_node("Pad", ["x", "pads", "v", "ax"], ["p"], mode=mode)
    spec = check(tmp_path, model_of([node, helper.make_node("Relu", ["p"], ["y"])], ["N", 2, 4, 5], inits, opset))
    assert types(spec) == ["Pad", "ReLU"] and spec["layers"][0]["pads"] == [0, 1, 2, 0, 2, 1]


def test_f_pad_chain_folds_into_the_conv(tmp_path):
    """F.pad's export: the pads built by ConstantOfShape/Concat/Reshape/Slice/Transpose/Cast; a zero
    Pad whose only reader is a Conv becomes the Conv's pads (no Pad layer)."""
    w = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
    inits = {"w": w, "torch_pads": np.array([1, 2, 0, 1], I64), "four": np.array([4], I64),
             "shp": np.array([-1, 2], I64), "st": np.array([-1], I64), "en": np.array([-(1 << 62)], I64),
             "ax": np.array([0], I64), "sp": np.array([-1], I64), "flat": np.array([-1], I64)}
    nodes = [helper.make_node("ConstantOfShape", ["four"], ["zeros"],
                              value=numpy_helper.from_array(np.array([0], I64))),
             helper.make_node("Concat", ["torch_pads", "zeros"], ["p8"], axis=0),
             helper.make_node("Reshape", ["p8", "shp"], ["p42"]),
             helper.make_node("Slice", ["p42", "st", "en", "ax", "sp"], ["rev"]),
             helper.make_node("Transpose", ["rev"], ["tr"], perm=[1, 0]),
             helper.make_node("Reshape", ["tr", "flat"], ["pads64"]),
             helper.make_node("Cast", ["pads64"], ["pads"], to=TensorProto.INT64),
             helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),
             helper.make_node("Conv", ["p", "w"], ["y"], pads=[1, 1, 1, 1])]
    spec = check(tmp_path, model_of(nodes, ["N", 2, 5, 6], inits, 13))
    assert types(spec) == ["Convolution"] and spec["layers"][0]["pad"] == [1, 2, 2, 3]


@pytest.mark.parametrize("opset", [11, 13, 18, 21])
@pytest.mark.parametrize("attrs", [
    {"mode": "nearest"}, {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
    {"mode": "linear"}, {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
    {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}])
def test_resize_scales(tmp_path, opset, attrs):
    inits = {"roi": np.array([], np.float32), "sc": np.array([1, 1, 2, 1.5], np.float32)}
    node = helper.make_node("Resize", ["x", "roi", "sc"], ["y"], **attrs)
    check(tmp_path, model_of([node], ["N", 2, 3, 4], inits, opset))


@pytest.mark.parametrize("op, opset", [("Resize", 10), ("Upsample", 9)])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [[1, 1, 2, 3], [1, 1, 1.5, 2.5], [1, 1, 0.5, 0.7]])
def test_resize10_and_upsample(tmp_path, op, opset, mode, scales):
    """Before opset 11: asymmetric coordinates; nearest rounds down when enlarging and up when
    shrinking (what ONNX Runtime does; Upsample only enlarges)."""
    if op == "Upsample" and min(scales) < 1:
        pytest.skip("Upsample only enlarges")
    node = helper.make_node(op, ["x", "sc"], ["y"], mode=mode)
    check(tmp_path, model_of([node], ["N", 2, 5, 6], {"sc": np.array(scales, np.float32)}, opset))


def test_resize_sizes_from_another_tensors_shape(tmp_path):
    """F.interpolate(x, size=skip.shape[-2:]): the sizes come from Shape nodes and the batch size."""
    inits = {"w": RNG.standard_normal((2, 2, 3, 3)).astype(np.float32), "s0": np.array([0], I64),
             "s2": np.array([2], I64), "s4": np.array([4], I64)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["small"], strides=[2, 2]),
             helper.make_node("Shape", ["small"], ["ss"]),
             helper.make_node("Slice", ["ss", "s0", "s2"], ["nc"]),
             helper.make_node("Shape", ["x"], ["xs"]),
             helper.make_node("Slice", ["xs", "s2", "s4"], ["hw"]),
             helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             helper.make_node("Resize", ["small", "", "", "sizes"], ["up"], mode="linear"),
             helper.make_node("Add", ["up", "x"], ["y"])]
    spec = check(tmp_path, model_of(nodes, ["N", 2, 9, 7], inits, 13))
    assert spec["layers"][1]["sizes"] == [2, 9, 7]


def test_squeeze_excitation_broadcast_and_layer_scale(tmp_path):
    """(N,C,1,1) x (N,C,H,W) between computed tensors, and a channels-last constant (C,) multiply."""
    inits = {"perm_g": RNG.standard_normal(3).astype(np.float32)}
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3]),
             helper.make_node("Sigmoid", ["m"], ["g"]),
             helper.make_node("Mul", ["x", "g"], ["se"]),
             helper.make_node("Transpose", ["se"], ["cl"], perm=[0, 2, 3, 1]),
             helper.make_node("Mul", ["cl", "perm_g"], ["scaled"]),
             helper.make_node("Transpose", ["scaled"], ["y"], perm=[0, 3, 1, 2])]
    spec = check(tmp_path, model_of(nodes, ["N", 3, 4, 5], inits, 13))
    assert types(spec) == ["Reduce", "Sigmoid", "Arithmetic", "Transpose", "Arithmetic", "Transpose"]


@pytest.mark.parametrize("index, axis", [(np.array(2, I64), 1), (np.array(-1, I64), -1), (np.array([1, 2], I64), 2)])
def test_gather_on_a_computed_tensor(tmp_path, index, axis):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Gather", ["r", "i"], ["g"], axis=axis),
             helper.make_node("Sigmoid", ["g"], ["y"])]
    check(tmp_path, model_of(nodes, ["N", 3, 4, 5], {"i": index}, 13))


@pytest.mark.parametrize("in_shape", [["N", 6, 4], ["N", 3, 5, 4], ["N", 2, 3, 2, 4]])
@pytest.mark.parametrize("bias", [False, True])
def test_nd_matmul_by_a_constant(tmp_path, in_shape, bias):
    """MatMul of an (N, ..., C) tensor by a constant (C, D) (+ a bias Add): Linear on the last axis."""
    inits = {"w": RNG.standard_normal((4, 7)).astype(np.float32), "b": RNG.standard_normal(7).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m" if bias else "y"])]
    if bias:
        nodes.append(helper.make_node("Add", ["m", "b"], ["y"]))
    spec = check(tmp_path, model_of(nodes, in_shape, inits, 13))
    assert "Convolution" in types(spec) and "Arithmetic" not in types(spec)


def test_max_min_mean(tmp_path):
    """Max of one shape: Eltwise max; Mean: Eltwise sum 1/n; Min with a broadcast tensor and Max with a
    constant (a ReLU-like floor): Arithmetic."""
    inits = {"floor": np.array([[[0.1]], [[-0.2]], [[0.0]]], np.float32)}
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Tanh", ["x"], ["t"]),
             helper.make_node("Max", ["x", "s", "t"], ["m"]), helper.make_node("Mean", ["x", "s", "m"], ["a"]),
             helper.make_node("ReduceMean", ["a"], ["r"], axes=[2], keepdims=1),
             helper.make_node("Min", ["a", "r"], ["mn"]), helper.make_node("Max", ["floor", "mn"], ["y"])]
    spec = check(tmp_path, model_of(nodes, ["N", 3, 4, 5], inits, 13))
    assert types(spec)[2:] == ["Eltwise", "Eltwise", "Reduce", "Arithmetic", "Arithmetic"]


# ---- refusals: DecafFormatError naming the node, the op and the reason -------------------------
REFUSALS = [
    ([helper.make_node("Transpose", ["x"], ["y"], name="t")], {}, "'t' (Transpose): Transpose with perm"),
    ([helper.make_node("Transpose", ["x"], ["y"], name="t", perm=[1, 0, 2, 3])], {}, "moves the batch axis"),
    ([helper.make_node("ReduceMean", ["x"], ["y"], name="r", axes=[0, 1])], {}, "over the batch axis"),
    ([helper.make_node("ReduceMean", ["x"], ["y"], name="r")], {}, "over the batch axis"),
    ([helper.make_node("Split", ["x"], ["y", "z"], name="s", axis=0)], {}, "'s' (Split): Split along axis 0"),
    ([helper.make_node("Slice", ["x", "a", "b", "c"], ["y"], name="sl")],
     {"a": np.array([1], I64), "b": np.array([2], I64), "c": np.array([0], I64)}, "slicing the batch axis"),
    ([helper.make_node("Pad", ["x", "p"], ["y"], name="p", mode="wrap")], {"p": np.zeros(8, I64)},
     "Pad mode 'wrap'"),
    ([helper.make_node("Pad", ["x", "p"], ["y"], name="p")], {"p": np.array([1, 0, 0, 0, 0, 0, 0, 0], I64)},
     "padding the batch axis"),
    ([helper.make_node("Resize", ["x", "", "s"], ["y"], name="rz", mode="cubic")],
     {"s": np.array([1, 1, 2, 2], np.float32)}, "'rz' (Resize): Resize mode 'cubic'"),
    ([helper.make_node("Resize", ["x", "", "s"], ["y"], name="rz")],
     {"s": np.array([1, 2, 2, 2], np.float32)}, "keep the batch and channel axes"),
    ([helper.make_node("Concat", ["x", "x"], ["y"], name="cc", axis=4)], {}, "Concat axis 4 is out of range"),
    ([helper.make_node("Concat", ["x", "x"], ["y"], name="cc", axis=-4)], {}, "along the batch axis"),
    ([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("ConstantOfShape", ["s"], ["z"]),
      helper.make_node("Add", ["x", "z"], ["y"], name="add")], {}, "'add' (Add): its input 'z' is computed from "
     "the batch size"),
    ([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "i"], ["s2"]),
      helper.make_node("Reshape", ["x", "s2"], ["y"], name="rs")], {"i": np.array([1, 0, 2, 3], I64)},
     "'rs' (Reshape): the output's first axis is not the batch"),
    ([helper.make_node("Pow", ["x", "x"], ["y"], name="pw")], {}, "the exponent ('x') must be a constant"),
    ([helper.make_node("Gather", ["x", "i"], ["y"], name="ga", axis=1)], {"i": np.array([0, 2], I64)},
     "'ga' (Gather): Gather of indices [0, 2]"),
    ([helper.make_node("Gather", ["x", "i"], ["y"], name="ga")], {"i": np.array(0, I64)}, "along axis 0"),
    # a few bytes of file must not make the importer allocate gigabytes while folding
    ([helper.make_node("ConstantOfShape", ["big"], ["z"], name="cos"), helper.make_node("Add", ["x", "z"], ["y"])],
     {"big": np.array([1 << 20, 1 << 20], I64)}, "'cos' (ConstantOfShape): ConstantOfShape of shape"),
    ([helper.make_node("Mul", ["col", "row"], ["z"], name="outer"), helper.make_node("Add", ["x", "z"], ["y"])],
     {"col": np.ones((1 << 13, 1), np.float32), "row": np.ones((1, 1 << 13), np.float32)},
     "'outer' (Mul): a broadcast result of shape (8192, 8192) is too large"),
    ([helper.make_node("Tile", ["c", "reps"], ["z"], name="tile"), helper.make_node("Add", ["x", "z"], ["y"])],
     {"c": np.ones(4, np.float32), "reps": np.array([1 << 40], I64)}, "'tile' (Tile): Tile of shape"),
]


@pytest.mark.parametrize("nodes, inits, needle", REFUSALS, ids=[str(i) for i in range(len(REFUSALS))])
def test_refusals_name_node_op_and_reason(tmp_path, nodes, inits, needle):
    path = tmp_path / "bad.onnx"
    onnx.save(model_of(nodes, ["N", 3, 4, 5], inits, 13), str(path))
    with pytest.raises(DecafFormatError) as info:
        onnx_to_net(path)
    assert needle in str(info.value) and "bad.onnx" in str(info.value), str(info.value)


@pytest.mark.parametrize("size, dynamic", [(5, True), (3, False)])
def test_pytorch_lrn_chain_becomes_one_lrn(tmp_path, size, dynamic):
    """nn.LocalResponseNorm exports as Mul, Reshape, Pad, 3-D AveragePool, If/Squeeze, Mul, Add, Pow,
    Div: read as one LRN layer (odd sizes; an even one centres its window differently, refused)."""
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.LocalResponseNorm(size, alpha=0.1, beta=0.75,
                                                                                      k=2.0)).eval()
    path = tmp_path / "lrn.onnx"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(2, 3, 8, 8), str(path), opset_version=17, dynamo=False,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}} if dynamic else None)
    spec = check(tmp_path, onnx.load(str(path)), batches=(2, 3))
    assert types(spec) == ["Convolution", "LRN"]
    assert {k: spec["layers"][1][k] for k in ("local_size", "alpha", "beta", "k")} == \
        {"local_size": size, "alpha": pytest.approx(0.1), "beta": 0.75, "k": 2.0}


def test_folding_a_weight_is_not_limited_but_amplification_is(tmp_path, monkeypatch):
    """The fold limit is MAX_FOLDED_ELEMENTS or the size of the node's inputs, whichever is larger:
    a weight times a constant folds however large it is, a small input blown up does not."""
    from decaf.io import onnx_fold
    monkeypatch.setattr(onnx_fold, "MAX_FOLDED_ELEMENTS", 100)
    w = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32)           # 216 elements > 100
    inits = {"w": w, "half": np.array(0.5, np.float32), "n": np.array([101], I64)}
    nodes = [helper.make_node("Mul", ["w", "half"], ["w2"]), helper.make_node("Conv", ["x", "w2"], ["y"])]
    spec = check(tmp_path, model_of(nodes, ["N", 3, 5, 5], inits, 13))
    assert types(spec) == ["Convolution"]
    nodes = [helper.make_node("ConstantOfShape", ["n"], ["z"], name="big"), helper.make_node("Add", ["x", "z"], ["y"])]
    path = tmp_path / "bad.onnx"
    onnx.save(model_of(nodes, ["N", 3, 5, 101], inits, 13), str(path))
    with pytest.raises(DecafFormatError, match="'big' \\(ConstantOfShape\\): ConstantOfShape of shape"):
        onnx_to_net(path)


def test_an_importers_unforeseen_error_is_one_decaf_format_error(tmp_path, monkeypatch):
    """Never a raw traceback: whatever an importer did not foresee becomes a DecafFormatError naming
    the file, the node and its op, and what went wrong."""
    from decaf.interop import ONNX_IMPORTERS

    def broken(imp, node):
        return 1 / 0

    monkeypatch.setitem(ONNX_IMPORTERS, "Hardmax", broken)
    path = tmp_path / "bad.onnx"
    onnx.save(model_of([helper.make_node("Hardmax", ["x"], ["y"], name="hm")], ["N", 3], {}, 13), str(path))
    with pytest.raises(DecafFormatError) as info:
        onnx_to_net(path)
    assert str(info.value) == f"{path}: node 'hm' (Hardmax) cannot be imported: ZeroDivisionError: division by zero"
