"""Mish: NumPy reference, finite differences, profile, ONNX (Mish opset 18) both ways against ONNX
Runtime, Caffe refusal."""
import numpy as np
import pytest

import decaf
from decaf.gradcheck import check_net, layer_net_spec
from layer_checks import (assert_caffe_refuses, assert_never_in_place, check_export, check_import,
                          one_layer_net, one_node_model, profile_entry)

SHAPE = (2, 3, 4, 5)


def reference(x):
    x = np.asarray(x, np.float64)
    softplus = np.where(x > 30, x, np.log1p(np.exp(np.minimum(x, 30))))
    return x * np.tanh(softplus)


def inputs(seed=0, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(SHAPE) * scale).astype(np.float32)


def test_forward_equals_reference():
    x = inputs()
    x.flat[:3] = [-100.0, 100.0, 0.0]
    np.testing.assert_allclose(one_layer_net({"type": "Mish"}, SHAPE).forward(x=x)["y"], reference(x),
                               rtol=1e-6, atol=1e-6)


def test_backward_equals_finite_differences():
    net = decaf.Net(layer_net_spec({"name": "m", "type": "Mish"}, [SHAPE]), force_backward=True)
    report = check_net(net, {"in0": inputs(1, 2.0)}, max_elements=120)
    assert report.passed, str(report)


def test_never_in_place_and_profile():
    assert_never_in_place({"type": "Mish"}, SHAPE)
    entry = profile_entry(one_layer_net({"type": "Mish"}, SHAPE))
    assert entry.group == "neuron" and entry.flops == 8 * 3 * 4 * 5 and entry.macs == 0


def test_onnx_mish_imports_and_exports(tmp_path):
    path = one_node_model(tmp_path / "m.onnx", "Mish", ["N", 3, 4, 5], opset=18)
    assert [layer["type"] for layer in check_import(path, inputs(2))["layers"]] == ["Mish"]
    onnx = pytest.importorskip("onnx")
    for opset, ops in ((13, ["Softplus", "Tanh", "Mul"]), (18, ["Mish"])):
        check_export(one_layer_net({"type": "Mish"}, SHAPE), tmp_path / "out.onnx", {"x": inputs(3)}, opset=opset)
        assert [n.op_type for n in onnx.load(str(tmp_path / "out.onnx")).graph.node] == ops


def test_caffe_refuses_it(tmp_path):
    assert_caffe_refuses(tmp_path, {"type": "Mish"}, SHAPE)
