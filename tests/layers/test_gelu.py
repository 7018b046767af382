"""GELU (exact and tanh forms) and Erf: references written with math.erf, finite differences,
profile, ONNX (Gelu opset 20, Erf) both ways against ONNX Runtime, Caffe refusal."""
import math

import numpy as np
import pytest

import decaf
from decaf.gradcheck import check_net, layer_net_spec
from layer_checks import (assert_caffe_refuses, assert_never_in_place, check_export, check_import,
                          one_layer_net, one_node_model, profile_entry)

SHAPE = (2, 3, 4, 5)
ERF = np.vectorize(math.erf)


def gelu_reference(x, approximate="none"):
    x = np.asarray(x, np.float64)
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + ERF(x / math.sqrt(2)))


def inputs(seed=0, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(SHAPE) * scale).astype(np.float32)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_forward_equals_reference(approximate):
    x = inputs()
    x.flat[:3] = [-50.0, 50.0, 0.0]
    y = one_layer_net({"type": "GELU", "approximate": approximate}, SHAPE).forward(x=x)["y"]
    np.testing.assert_allclose(y, gelu_reference(x, approximate), rtol=1e-6, atol=1e-6)


def test_the_two_forms_differ_a_little():
    x = np.linspace(-4, 4, 81)
    assert 1e-4 < np.max(np.abs(gelu_reference(x) - gelu_reference(x, "tanh"))) < 1e-2


def test_erf_forward_equals_reference():
    x = inputs(1)
    np.testing.assert_allclose(one_layer_net({"type": "Erf"}, SHAPE).forward(x=x)["y"], ERF(x),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("layer", [{"type": "GELU"}, {"type": "GELU", "approximate": "tanh"}, {"type": "Erf"}],
                         ids=["gelu", "gelu_tanh", "erf"])
def test_backward_equals_finite_differences(layer):
    net = decaf.Net(layer_net_spec(dict(layer, name="a"), [SHAPE]), force_backward=True)
    report = check_net(net, {"in0": inputs(2, 2.0)}, max_elements=120)
    assert report.passed, str(report)


def test_bad_approximate_is_refused():
    with pytest.raises(decaf.SpecError, match="approximate must be 'none' or 'tanh'"):
        one_layer_net({"type": "GELU", "approximate": "fast"}, SHAPE)


def test_never_in_place_and_profile():
    for layer in ({"type": "GELU"}, {"type": "Erf"}):
        assert_never_in_place(layer, SHAPE)
    per = 3 * 4 * 5
    for layer, ops in (({"type": "GELU"}, 5), ({"type": "GELU", "approximate": "tanh"}, 8), ({"type": "Erf"}, 4)):
        entry = profile_entry(one_layer_net(layer, SHAPE))
        assert entry.group == "neuron" and entry.flops == ops * per and entry.macs == 0


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_onnx_gelu_imports_and_exports(tmp_path, approximate):
    path = one_node_model(tmp_path / "g.onnx", "Gelu", ["N", 3, 4, 5], {"approximate": approximate}, opset=20)
    spec = check_import(path, inputs(3))
    assert [(layer["type"], layer["approximate"]) for layer in spec["layers"]] == [("GELU", approximate)]
    # written back as Gelu at opset 20, as the chain of arithmetic before
    onnx = pytest.importorskip("onnx")
    net = one_layer_net({"type": "GELU", "approximate": approximate}, SHAPE)
    for opset in (13, 20):
        check_export(net, tmp_path / "out.onnx", {"x": inputs(4)}, opset=opset)
        ops = [n.op_type for n in onnx.load(str(tmp_path / "out.onnx")).graph.node]
        assert (ops == ["Gelu"]) == (opset == 20) and ("Erf" in ops) == (opset == 13 and approximate == "none")


def test_onnx_erf_imports_and_exports(tmp_path):
    path = one_node_model(tmp_path / "e.onnx", "Erf", ["N", 3, 4, 5], opset=13)
    assert [layer["type"] for layer in check_import(path, inputs(5))["layers"]] == ["Erf"]
    check_export(one_layer_net({"type": "Erf"}, SHAPE), tmp_path / "out.onnx", {"x": inputs(6)})


def test_caffe_refuses_them(tmp_path):
    assert_caffe_refuses(tmp_path, {"type": "GELU"}, SHAPE)
    assert_caffe_refuses(tmp_path, {"type": "Erf"}, SHAPE)


def test_compiled_erf_against_scipy_in_float64():
    """kernels.erf's compiled kernel (csrc/elementwise.c: a series below 0.5, Numerical Recipes'
    erfc fit above) against SciPy's erf evaluated in float64: within 2.5e-7 absolute everywhere and
    2.5e-7 relative below 0.5 (the series), on a dense grid, random values, the 0.5 seam, the tails,
    signed zeros, infinities and NaN; y may be x; the NumPy backend gives SciPy's values."""
    from scipy.special import erf as scipy_erf

    from decaf import kernels
    compiled = pytest.importorskip("decaf.kernels._compiled")
    x = np.concatenate([np.linspace(-7, 7, 140001), np.random.default_rng(3).standard_normal(20000) * 3,
                        np.float32(0.5) + np.arange(-50, 50) * np.float32(6e-8), [0.0, -0.0, 1e-30, -1e-20, 40, -40],
                        [np.inf, -np.inf, np.nan]]).astype(np.float32)
    y = np.full_like(x, 7.0)
    compiled.erf(x, y)
    ref = scipy_erf(x.astype(np.float64))
    finite = np.isfinite(x)
    np.testing.assert_allclose(y[finite], ref[finite], rtol=0, atol=2.5e-7)
    small = finite & (np.abs(x) < 0.5) & (x != 0)
    np.testing.assert_allclose(y[small], ref[small], rtol=2.5e-7, atol=0)
    assert list(y[-3:-1]) == [1.0, -1.0] and np.isnan(y[-1])
    negative_zero = np.flatnonzero((x == 0) & np.signbit(x))
    assert len(negative_zero) and np.signbit(y[negative_zero]).all() and (y[negative_zero] == 0).all()
    z = x.copy()
    compiled.erf(z, z)                                    # in place
    np.testing.assert_array_equal(z, y)
    with pytest.raises(ValueError, match="values into"):
        compiled.erf(x, y[:-1])
    with kernels.using_backend("numpy"):
        w = np.empty_like(x)
        kernels.erf(x, w)
    np.testing.assert_array_equal(w[finite], scipy_erf(x[finite]))
