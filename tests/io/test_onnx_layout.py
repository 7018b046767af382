"""The importer's rewrites of channels-last stretches (decaf/io/transposes.py) and of the exported
GELU arithmetic (decaf/layers/gelu.py's gelu_chain_from_onnx): the rewritten net against ONNX Runtime on the original
graph (rtol 1e-5 of the largest value), and which layers are left."""
import math

import numpy as np
import pytest

import decaf

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper  # noqa: E402

from decaf.io.onnx_convert import onnx_to_net  # noqa: E402
from onnx_graph import model_of  # noqa: E402

RNG = np.random.default_rng(11)
NHWC, NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


def f32(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def check(tmp_path, model, outputs=("y",), batches=(1, 3)):
    """Import; every output equal to ONNX Runtime's at each batch size; returns the spec."""
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    spec, arrays = onnx_to_net(path)
    net = decaf.Net.from_arrays(spec, arrays)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    for b in batches:
        x = RNG.standard_normal((b,) + tuple(dims[1:])).astype(np.float32)
        theirs = session.run(list(outputs), {"x": x})
        ours = net.forward(x=x, outputs=list(outputs))
        for name, want in zip(outputs, theirs):
            assert ours[name].shape == want.shape
            np.testing.assert_allclose(ours[name], want, rtol=1e-5, atol=1e-5 * max(np.abs(want).max(), 1))
    return spec


def types(spec):
    return [layer["type"] for layer in spec["layers"]]


def gelu_nodes(src, out, tag=""):
    """PyTorch's export of the exact GELU before opset 20."""
    return [helper.make_node("Div", [src, "sqrt2"], [f"{tag}d"]),
            helper.make_node("Erf", [f"{tag}d"], [f"{tag}e"]),
            helper.make_node("Add", [f"{tag}e", "one"], [f"{tag}a"]),
            helper.make_node("Mul", [src, f"{tag}a"], [f"{tag}m"]),
            helper.make_node("Mul", [f"{tag}m", "half"], [out])]


GELU_CONSTS = {"sqrt2": np.array(math.sqrt(2), np.float32), "one": np.array(1.0, np.float32),
               "half": np.array(0.5, np.float32)}


def layernorm_nodes(src, out, square="Pow", affine=True):
    """F.layer_norm over the last axis as PyTorch exports it before opset 17 (decaf's own export
    squares by Mul)."""
    nodes = [helper.make_node("ReduceMean", [src], ["ln_m"], axes=[-1]),
             helper.make_node("Sub", [src, "ln_m"], ["ln_c"]),
             helper.make_node("Pow", ["ln_c", "two"], ["ln_s"]) if square == "Pow"
             else helper.make_node("Mul", ["ln_c", "ln_c"], ["ln_s"]),
             helper.make_node("ReduceMean", ["ln_s"], ["ln_v"], axes=[-1]),
             helper.make_node("Add", ["ln_v", "eps"], ["ln_ve"]),
             helper.make_node("Sqrt", ["ln_ve"], ["ln_sd"]),
             helper.make_node("Div", ["ln_c", "ln_sd"], ["ln_n" if affine else out])]
    if affine:
        nodes += [helper.make_node("Mul", ["ln_n", "ln_w"], ["ln_y"]), helper.make_node("Add", ["ln_y", "ln_b"], [out])]
    return nodes


LN_CONSTS = {"two": np.array(2.0, np.float32), "eps": np.array(1e-6, np.float32)}


def convnext_block(c=8, opset=17):
    """A ConvNeXt block as PyTorch exports it: depthwise 7x7, Permute, LayerNorm, Linear, GELU,
    Linear, Permute back, layer scale, residual; then a ReLU so the add is no output."""
    inits = {"dw": f32(c, 1, 7, 7, scale=0.2), "dwb": f32(c), "ln_w": f32(c), "ln_b": f32(c),
             "w1": f32(c, 4 * c, scale=0.3), "b1": f32(4 * c), "w2": f32(4 * c, c, scale=0.3), "b2": f32(c),
             "gamma": f32(c, 1, 1), **GELU_CONSTS, **LN_CONSTS}
    nodes = [helper.make_node("Conv", ["x", "dw", "dwb"], ["d"], group=c, kernel_shape=[7, 7], pads=[3, 3, 3, 3]),
             helper.make_node("Transpose", ["d"], ["cl"], perm=NHWC),
             *([helper.make_node("LayerNormalization", ["cl", "ln_w", "ln_b"], ["ln"], axis=-1, epsilon=1e-6)]
               if opset >= 17 else layernorm_nodes("cl", "ln")),
             helper.make_node("MatMul", ["ln", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["h"]),
             *gelu_nodes("h", "g", tag="gelu_"),
             helper.make_node("MatMul", ["g", "w2"], ["m2"]), helper.make_node("Add", ["m2", "b2"], ["o"]),
             helper.make_node("Transpose", ["o"], ["cf"], perm=NCHW),
             helper.make_node("Mul", ["gamma", "cf"], ["s"]), helper.make_node("Add", ["x", "s"], ["r"]),
             helper.make_node("Relu", ["r"], ["y"])]
    return model_of(nodes, ["N", c, 6, 5], inits, opset)


@pytest.mark.parametrize("opset", [13, 17])
def test_convnext_block_runs_in_nchw_without_transposes(tmp_path, opset):
    """At opset 17 the LayerNorm is one node; before it, arithmetic read back as one LayerNorm."""
    spec = check(tmp_path, convnext_block(opset=opset))
    assert "Transpose" not in types(spec)
    assert types(spec).count("GELU") == 1 and "Erf" not in types(spec)
    (norm,) = [layer for layer in spec["layers"] if layer["type"] == "LayerNorm"]
    assert (norm["axis"], norm["end_axis"]) == (1, 1)          # NHWC's last axis is NCHW's channels


def test_convnext_block_optimized_is_four_layers_and_equals_the_net_as_written(tmp_path):
    """After the import, the graph optimizer folds the layer scale into the second 1x1 convolution,
    fuses the residual add into it, and the first writes only the GELU's output (the net fuses the
    GELU as written): depthwise conv, LayerNorm, two 1x1
    convolutions (and the ReLU, fused too); the values equal the net run as written (rtol 1e-4)."""
    path = tmp_path / "m.onnx"
    onnx.save(convnext_block(), str(path))
    spec, arrays = onnx_to_net(path)
    fast = decaf.Net.from_arrays(spec, arrays, optimize=True)
    plain = decaf.Net.from_arrays(spec, arrays, optimize=False)
    x = f32(2, 8, 6, 5)
    a, b = fast.forward(x=x)["y"], plain.forward(x=x)["y"]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
    graph = fast.optimized_graph()
    done = {(kind, fast.layers[names[0]].type_name) for kind, names, _ in graph.actions}
    assert {("direct", "GELU"), ("folded", "Scale"), ("residual", "Eltwise")} <= done, done
    running = sorted(s.layer.type_name for s in graph.steps if not s.fused and "split" not in s.layer.roles)
    assert running == ["Convolution", "Convolution", "Convolution", "LayerNorm"]     # (a Split shares x)


def test_convnext_block_gradient_matches_finite_differences(tmp_path):
    """Backward through the rewritten block (LayerNorm over channels, GELU): the input gradient of
    sum(w * y) against central differences of the forward (float32, step 1e-2: within 3 %)."""
    path = tmp_path / "m.onnx"
    onnx.save(convnext_block(c=4), str(path))
    net = decaf.Net.from_arrays(*onnx_to_net(path))
    x, w = f32(2, 4, 6, 5), f32(2, 4, 6, 5)
    net.force_backward = True
    net.forward(x=x)
    grad = net.backward({"y": w})["x"].copy()
    eps = 1e-2
    for i in [(0, 1, 2, 3), (1, 3, 0, 0), (0, 0, 5, 4), (1, 2, 3, 1)]:
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        f = [float((net.forward(x=v)["y"].astype(np.float64) * w).sum()) for v in (up, down)]
        np.testing.assert_allclose(grad[i], (f[0] - f[1]) / (2 * eps), rtol=3e-2, atol=3e-3)


def test_transpose_then_its_inverse_cancel(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Transpose", ["r"], ["t"], perm=NHWC),
             helper.make_node("Transpose", ["t"], ["u"], perm=NCHW), helper.make_node("Sigmoid", ["u"], ["y"])]
    assert types(check(tmp_path, model_of(nodes, ["N", 3, 4, 5], {}, 17))) == ["ReLU", "Sigmoid"]


def test_channels_last_constants_move_back_to_the_channel_axis(tmp_path):
    """Mul and Add by a (C,) constant on NHWC (Arithmetic) and Div by a scalar (a Scale broadcast
    along NHWC's axis 1, the rows) run on NCHW with the constants re-laid."""
    inits = {"g": f32(3), "h": f32(3), "two": np.array(2.0, np.float32)}
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=NHWC),
             helper.make_node("Mul", ["t", "g"], ["a"]), helper.make_node("Add", ["a", "h"], ["b"]),
             helper.make_node("Div", ["b", "two"], ["c"]),
             helper.make_node("Transpose", ["c"], ["u"], perm=NCHW), helper.make_node("Relu", ["u"], ["y"])]
    spec = check(tmp_path, model_of(nodes, ["N", 3, 4, 5], inits, 17))
    assert "Transpose" not in types(spec) and types(spec)[-1] == "ReLU"


@pytest.mark.parametrize("case", ["softmax", "rows_scale", "two_axes_norm", "output_inside", "unread_exit"])
def test_stretches_that_cannot_run_in_nchw_are_kept(tmp_path, case):
    """A layer that depends on the axis order (a mean over the last axis, a Scale by a row-varying
    constant, a LayerNorm over (W, C) which is no run of NCHW's axes), a value inside that is an
    output of the net, an inverse transpose whose top nobody reads: the transposes stay and the
    values are right."""
    inits, outputs = {}, ("y",)
    if case == "reduce":
        mid = [helper.make_node("ReduceMean", ["t"], ["c"], axes=[3], keepdims=1)]
    elif case == "rows_scale":
        inits = {"rows": f32(4, 1, 1)}          # along NHWC's H: a Scale of varying weights
        mid = [helper.make_node("Mul", ["t", "rows"], ["c"])]
    elif case == "two_axes_norm":
        inits = {"w": f32(5, 3), "b": f32(5, 3)}
        mid = [helper.make_node("LayerNormalization", ["t", "w", "b"], ["c"], axis=2)]
    else:
        mid = [helper.make_node("Sigmoid", ["t"], ["c"])]
        outputs = ("y", "c") if case == "output_inside" else ("u",)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=NHWC), *mid,
             helper.make_node("Transpose", ["c"], ["u"], perm=NCHW)]
    if case != "unread_exit":
        nodes.append(helper.make_node("Relu", ["u"], ["y"]))
    spec = check(tmp_path, model_of(nodes, ["N", 3, 4, 5], inits, 17, outputs), outputs)
    assert types(spec).count("Transpose") == 2


def test_gelu_chain_becomes_one_layer(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), *gelu_nodes("r", "y")]
    spec = check(tmp_path, model_of(nodes, ["N", 3, 4, 5], dict(GELU_CONSTS), 17))
    assert types(spec) == ["ReLU", "GELU"]


@pytest.mark.parametrize("case", ["other_constant", "inner_value_read", "x_times_other"])
def test_near_gelu_chains_are_left_as_they_are(tmp_path, case):
    """Div by 2 instead of sqrt 2; the Erf's output read by another node too; the product with
    another tensor than the chain's input: not a GELU, imported node by node and still right."""
    consts = dict(GELU_CONSTS)
    if case == "other_constant":
        consts["sqrt2"] = np.array(2.0, np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Sigmoid", ["x"], ["s"]),
             *gelu_nodes("r", "z")]
    if case == "x_times_other":
        nodes[5] = helper.make_node("Mul", ["s", "a"], ["m"])
    tail = "e" if case == "inner_value_read" else "s"
    nodes.append(helper.make_node("Add", ["z", tail], ["y"]))
    spec = check(tmp_path, model_of(nodes, ["N", 3, 4, 5], consts, 17))
    assert "GELU" not in types(spec) and "Erf" in types(spec)


@pytest.mark.parametrize("square, affine", [("Mul", False), ("Pow", True)])
def test_layernorm_arithmetic_becomes_one_layer(tmp_path, square, affine):
    inits = {"ln_w": f32(5), "ln_b": f32(5), **LN_CONSTS}
    nodes = [helper.make_node("Relu", ["x"], ["r"]), *layernorm_nodes("r", "y", square, affine)]
    spec = check(tmp_path, model_of(nodes, ["N", 3, 4, 5], inits if affine else LN_CONSTS, 17))
    assert types(spec) == ["ReLU", "LayerNorm"]


def test_layernorm_arithmetic_with_an_inner_value_read_elsewhere_is_left_as_it_is(tmp_path):
    inits = {"ln_w": f32(5), "ln_b": f32(5), **LN_CONSTS}
    nodes = [helper.make_node("Relu", ["x"], ["r"]), *layernorm_nodes("r", "z"),
             helper.make_node("Add", ["z", "ln_c"], ["y"])]           # the centred x read a third time
    spec = check(tmp_path, model_of(nodes, ["N", 3, 4, 5], inits, 17))
    assert "LayerNorm" not in types(spec) and "Reduce" in types(spec)
