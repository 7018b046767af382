"""LogSoftmax: NumPy reference (also far from 0, where a naive log(softmax) underflows), finite
differences (also in place), profile, ONNX both ways against ONNX Runtime, axis refusals, Caffe
refusal."""
import numpy as np
import pytest

import decaf
from decaf.gradcheck import check_net, layer_net_spec
from layer_checks import (assert_caffe_refuses, check_export, check_import, one_layer_net, one_node_model,
                          profile_entry)


def reference(x):
    """log(exp(x_i) / sum_j exp(x_j)) over axis 1, in float64 with an explicit max shift."""
    x = np.asarray(x, np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=1, keepdims=True))


@pytest.mark.parametrize("shape", [(4, 10), (2, 5, 3, 3)])
def test_forward_equals_reference(shape):
    x = (np.random.default_rng(0).standard_normal(shape) * 5).astype(np.float32)
    x[0, 0] = 200.0                 # exp(-200) underflows in float32: the log must come out near -200
    y = one_layer_net({"type": "LogSoftmax"}, shape).forward(x=x)["y"]
    np.testing.assert_allclose(y, reference(x), rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(y)) and y[0, 1].max() < -150


@pytest.mark.parametrize("in_place", [False, True])
def test_backward_equals_finite_differences(in_place):
    spec = layer_net_spec({"name": "ls", "type": "LogSoftmax"}, [(3, 5, 2)])
    if in_place:
        spec["layers"].insert(0, {"name": "pre", "type": "Scale", "bottom": "in0", "top": "mid",
                                  "filler": {"type": "constant", "value": 2.0}})
        spec["layers"][1].update(bottom="mid", top="mid")
    net = decaf.Net(spec, force_backward=True)
    report = check_net(net, {"in0": np.random.default_rng(1).standard_normal((3, 5, 2))})
    assert report.passed, str(report)


def test_profile():
    entry = profile_entry(one_layer_net({"type": "LogSoftmax"}, (2, 10)))
    assert entry.group == "neuron" and entry.flops == 5 * 10 and entry.macs == 0


@pytest.mark.parametrize("axis,opset", [(1, 13), (-1, 13), (1, 11)])
def test_onnx_import_and_export(tmp_path, axis, opset):
    x = (np.random.default_rng(2).standard_normal((3, 10)) * 4).astype(np.float32)
    path = one_node_model(tmp_path / "l.onnx", "LogSoftmax", ["N", 10], {"axis": axis}, opset=opset)
    assert [layer["type"] for layer in check_import(path, x)["layers"]] == ["LogSoftmax"]
    check_export(one_layer_net({"type": "LogSoftmax"}, (3, 10)), tmp_path / "out.onnx", {"x": x})


def test_onnx_export_4d(tmp_path):
    x = np.random.default_rng(3).standard_normal((2, 5, 3, 3)).astype(np.float32)
    check_export(one_layer_net({"type": "LogSoftmax"}, x.shape), tmp_path / "out.onnx", {"x": x})


@pytest.mark.parametrize("axis,opset", [(-1, 13), (1, 11)])
def test_onnx_other_axes_are_refused(tmp_path, axis, opset):
    from decaf.io.errors import DecafFormatError
    from decaf.io.onnx_convert import onnx_to_net
    path = one_node_model(tmp_path / "l.onnx", "LogSoftmax", ["N", 5, 3, 3], {"axis": axis}, opset=opset)
    with pytest.raises(DecafFormatError, match=r"'the_node' \(LogSoftmax\): LogSoftmax over axis (3|1) of a 4-D"):
        onnx_to_net(path)


def test_caffe_refuses_it(tmp_path):
    assert_caffe_refuses(tmp_path, {"type": "LogSoftmax"}, (2, 10))
