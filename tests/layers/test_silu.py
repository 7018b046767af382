"""SiLU / Swish: NumPy reference, finite differences, profile, ONNX (Swish op and the Sigmoid + Mul
export) against ONNX Runtime, Caffe refusal."""
import numpy as np
import pytest

import decaf
from decaf.gradcheck import check_net, layer_net_spec
from layer_checks import (assert_caffe_refuses, assert_never_in_place, check_export, check_import,
                          one_layer_net, one_node_model, profile_entry)

SHAPE = (2, 3, 4, 5)


def reference(x, alpha=1.0):
    x = np.asarray(x, np.float64)
    return x / (1 + np.exp(-alpha * x))


def inputs(seed=0, scale=4.0):
    return (np.random.default_rng(seed).standard_normal(SHAPE) * scale).astype(np.float32)


@pytest.mark.parametrize("alpha", [1.0, 1.702, 0.5])
def test_forward_equals_reference(alpha):
    x = inputs()
    x.flat[:3] = [-100.0, 100.0, 0.0]             # no overflow at the ends
    y = one_layer_net({"type": "SiLU", "alpha": alpha}, SHAPE).forward(x=x)["y"]
    np.testing.assert_allclose(y, reference(x, alpha), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 1.702])
def test_backward_equals_finite_differences(alpha):
    net = decaf.Net(layer_net_spec({"name": "s", "type": "SiLU", "alpha": alpha}, [SHAPE]), force_backward=True)
    report = check_net(net, {"in0": inputs(1, 3.0)}, max_elements=120)
    assert report.passed, str(report)


def test_never_in_place_and_profile():
    assert_never_in_place({"type": "SiLU"}, SHAPE)
    entry = profile_entry(one_layer_net({"type": "SiLU"}, SHAPE))
    assert entry.group == "neuron" and entry.flops == 6 * 3 * 4 * 5 and entry.macs == 0


@pytest.mark.parametrize("alpha", [1.0, 1.702])
def test_onnx_export_matches_onnx_runtime(tmp_path, alpha):
    onnx = pytest.importorskip("onnx")
    check_export(one_layer_net({"type": "SiLU", "alpha": alpha}, SHAPE), tmp_path / "s.onnx", {"x": inputs(2)})
    ops = [n.op_type for n in onnx.load(str(tmp_path / "s.onnx")).graph.node]
    assert ops == (["Sigmoid", "Mul"] if alpha == 1 else ["Mul", "Sigmoid", "Mul"])


def test_onnx_swish_node_imports(tmp_path):
    onnx = pytest.importorskip("onnx")
    if onnx.defs.onnx_opset_version() < 24:
        pytest.skip("this onnx has no Swish op (opset 24)")
    path = one_node_model(tmp_path / "s.onnx", "Swish", ["N", 3, 4, 5], {"alpha": 1.5}, opset=24)
    spec = check_import(path, inputs(3))
    assert [(layer["type"], layer["alpha"]) for layer in spec["layers"]] == [("SiLU", 1.5)]


def test_caffe_refuses_it(tmp_path):
    assert_caffe_refuses(tmp_path, {"type": "SiLU"}, SHAPE)
