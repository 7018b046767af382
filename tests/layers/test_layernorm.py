"""LayerNorm: channels-first (ConvNeXt's LayerNorm2d) and last-axes (ONNX LayerNormalization) forms
against a NumPy reference, finite differences for input and parameters, profile, ONNX both ways
against ONNX Runtime, bad axes, Caffe refusal."""
import numpy as np
import pytest

import decaf
from decaf.gradcheck import check_net, layer_net_spec
from layer_checks import (assert_caffe_refuses, check_export, check_import, one_layer_net, one_node_model,
                          profile_entry)

RANDOM_AFFINE = {"weight_filler": {"type": "gaussian", "std": 1.0}, "bias_filler": {"type": "gaussian", "std": 1.0}}
# (params, full input shape, the normalised axes)
CASES = [({"axis": 1, "end_axis": 1}, (2, 3, 4, 5), (1,)),          # LayerNorm2d: over C at each pixel
         ({"axis": -1}, (2, 5, 6), (2,)),                            # a token's features
         ({"axis": 2, "end_axis": -1}, (2, 3, 4, 5), (2, 3)),
         ({}, (2, 3, 2, 2), (1, 2, 3))]                              # the whole example


def reference(x, gamma, beta, axes, eps=1e-5):
    """Each example's values over ``axes`` as rows of a matrix, normalised with explicit sums."""
    x = np.asarray(x, np.float64)
    rest = [i for i in range(x.ndim) if i not in axes]
    moved = np.transpose(x, rest + list(axes))
    rows = moved.reshape(-1, int(np.prod([x.shape[i] for i in axes])))
    mean = rows.sum(axis=1, keepdims=True) / rows.shape[1]
    var = ((rows - mean) ** 2).sum(axis=1, keepdims=True) / rows.shape[1]
    out = ((rows - mean) / np.sqrt(var + eps)) * gamma.reshape(1, -1) + beta.reshape(1, -1)
    return np.transpose(out.reshape(moved.shape), np.argsort(rest + list(axes)))


def net_and_input(params, shape, seed=0):
    net = one_layer_net(dict({"type": "LayerNorm"}, **params, **RANDOM_AFFINE), shape, seed=seed)
    x = (np.random.default_rng(seed).standard_normal(shape) * 2 + 0.5).astype(np.float32)
    return net, x


@pytest.mark.parametrize("params,shape,axes", CASES, ids=["channels", "last", "last_two", "all"])
def test_forward_equals_reference(params, shape, axes):
    net, x = net_and_input(params, shape)
    gamma, beta = net.params["the_layer.weight"].data, net.params["the_layer.bias"].data
    assert gamma.shape == tuple(shape[i] for i in axes)
    np.testing.assert_allclose(net.forward(x=x)["y"], reference(x, gamma, beta, axes), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("params,shape,axes", CASES, ids=["channels", "last", "last_two", "all"])
def test_backward_equals_finite_differences(params, shape, axes):
    layer = dict({"name": "ln", "type": "LayerNorm"}, **params, **RANDOM_AFFINE)
    net = decaf.Net(layer_net_spec(layer, [shape]), force_backward=True, seed=3)
    x = np.random.default_rng(1).standard_normal(shape)
    report = check_net(net, {"in0": x}, max_elements=60)
    assert report.passed, str(report)
    assert {r.name for r in report.results} == {"input in0", "param ln.weight", "param ln.bias"}


@pytest.mark.parametrize("params", [{"axis": 0}, {"axis": 2, "end_axis": 1}, {"axis": 4}])
def test_bad_axes_are_refused(params):
    with pytest.raises(decaf.ShapeError, match="must be axes 1 .. 3"):
        one_layer_net(dict({"type": "LayerNorm"}, **params), (2, 3, 4, 5))


def test_profile_counts_it_as_a_norm():
    entry = profile_entry(one_layer_net({"type": "LayerNorm", "axis": 1, "end_axis": 1}, (2, 3, 4, 5)))
    assert entry.group == "norm" and entry.flops == 8 * 3 * 4 * 5 and entry.macs == 0


@pytest.mark.parametrize("opset", [13, 17, 18])
@pytest.mark.parametrize("params,shape,axes", CASES[:3], ids=["channels", "last", "last_two"])
def test_onnx_export_matches_onnx_runtime(tmp_path, params, shape, axes, opset):
    onnx = pytest.importorskip("onnx")
    net, x = net_and_input(params, shape, seed=4)
    check_export(net, tmp_path / "ln.onnx", {"x": x}, rtol=1e-5, atol=1e-5, opset=opset)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "ln.onnx")).graph.node}
    # LayerNormalization (opset 17) normalises from an axis to the last; over C alone: the arithmetic
    assert ops == ({"LayerNormalization"} if opset >= 17 and axes[-1] == len(shape) - 1 else
                   {"ReduceMean", "Sub", "Mul", "Add", "Sqrt", "Div"})


@pytest.mark.parametrize("axis,shape,with_bias", [(-1, (2, 5, 6), True), (1, (2, 3, 4, 5), False),
                                                  (-2, (2, 3, 4, 5), True)])
def test_onnx_layernormalization_imports(tmp_path, axis, shape, with_bias):
    rng = np.random.default_rng(5)
    norm_shape = shape[axis:]
    consts = {"scale": rng.standard_normal(norm_shape).astype(np.float32),
              "bias": rng.standard_normal(norm_shape).astype(np.float32) if with_bias else None}
    path = one_node_model(tmp_path / "ln.onnx", "LayerNormalization", ["N", *shape[1:]],
                          {"axis": axis, "epsilon": 1e-3}, consts, opset=17)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    spec = check_import(path, x, rtol=1e-5, atol=1e-5)
    (layer,) = spec["layers"]
    assert (layer["type"], layer["axis"], layer["end_axis"]) == ("LayerNorm", axis, -1)
    assert layer["eps"] == pytest.approx(1e-3)


def test_onnx_layernormalization_over_the_batch_is_refused(tmp_path):
    from decaf.io.errors import DecafFormatError
    from decaf.io.onnx_convert import onnx_to_net
    path = one_node_model(tmp_path / "ln.onnx", "LayerNormalization", ["N", 3], {"axis": 0},
                          {"scale": np.ones((2, 3), np.float32)}, opset=17)
    with pytest.raises(DecafFormatError, match="axis 0 of a 2-D input"):
        onnx_to_net(path)


def test_caffe_refuses_it(tmp_path):
    assert_caffe_refuses(tmp_path, {"type": "LayerNorm"}, (2, 3, 4, 5))
