"""Deconvolution (ConvTranspose): a scatter-loop NumPy reference, finite differences for input,
weight and bias, the compiled and NumPy kernels alike, profile MACs, ONNX ConvTranspose both ways
against ONNX Runtime (pads, output_padding, groups, dilation, output_shape, SAME), Caffe both ways."""
import numpy as np
import pytest

import decaf
from decaf import kernels
from decaf.gradcheck import check_net, layer_net_spec
from layer_checks import check_export, check_import, one_layer_net, one_node_model, profile_entry

# (params, input shape)
CASES = [
    ({"num_output": 4, "kernel_size": 3, "stride": 2, "pad": 1, "group": 2}, (2, 2, 3, 3)),
    ({"num_output": 3, "kernel_size": [3, 2], "stride": [2, 3], "pad": [1, 0, 0, 1], "output_padding": [1, 2],
      "dilation": [1, 2]}, (2, 2, 3, 4)),
    ({"num_output": 2, "kernel_size": 3, "stride": 2, "dilation": 2, "output_padding": 1, "bias_term": False},
     (1, 3, 4, 4)),
    ({"num_output": 5, "kernel_size": 4, "stride": 4}, (2, 3, 2, 3)),
]
IDS = ["groups", "asym", "dilated_output_padding", "no_overlap"]
RANDOM = {"weight_filler": {"type": "gaussian", "std": 1.0}, "bias_filler": {"type": "gaussian", "std": 1.0}}


def reference(x, w, b, stride=(1, 1), pads=(0, 0, 0, 0), output_padding=(0, 0), dilation=(1, 1), group=1):
    """Every input pixel adds x * W[c] into the window it reaches, on the full (uncropped) canvas."""
    n, c, h, wd = x.shape
    cin_g, kout_g, kh, kw = w.shape[0] // group, w.shape[1], w.shape[2], w.shape[3]
    (sh, sw), (dh, dw), (ah, aw) = stride, dilation, output_padding
    full = np.zeros((n, kout_g * group, sh * (h - 1) + dh * (kh - 1) + 1 + ah,
                     sw * (wd - 1) + dw * (kw - 1) + 1 + aw))
    for ci in range(c):
        out = slice(ci // cin_g * kout_g, (ci // cin_g + 1) * kout_g)
        for i in range(h):
            for j in range(wd):
                for p in range(kh):
                    for q in range(kw):
                        full[:, out, i * sh + p * dh, j * sw + q * dw] += np.outer(x[:, ci, i, j], w[ci, :, p, q])
    pt, pl, pb, pr = pads
    y = full[:, :, pt:full.shape[2] - pb, pl:full.shape[3] - pr]
    return y if b is None else y + np.asarray(b).reshape(1, -1, 1, 1)


def pads_of(params):
    from decaf.layer import as_pads, as_pair
    return dict(stride=as_pair(params.get("stride", 1), ""), pads=as_pads(params.get("pad", 0)),
                output_padding=as_pair(params.get("output_padding", 0), ""),
                dilation=as_pair(params.get("dilation", 1), ""), group=params.get("group", 1))


@pytest.mark.parametrize("backend", ["compiled", "numpy"])
@pytest.mark.parametrize("params,shape", CASES, ids=IDS)
def test_forward_equals_reference(params, shape, backend):
    if backend == "compiled" and kernels._compiled is None:
        pytest.skip("compiled kernels not built")
    net = one_layer_net(dict({"type": "Deconvolution"}, **params, **RANDOM), shape, seed=1)
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    w = net.params["the_layer.weight"].data
    b = net.params["the_layer.bias"].data if "the_layer.bias" in net.params else None
    with kernels.using_backend(backend):
        y = net.forward(x=x)["y"]
    np.testing.assert_allclose(y, reference(x.astype(np.float64), w, b, **pads_of(params)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("params,shape", CASES, ids=IDS)
def test_backward_equals_finite_differences(params, shape):
    layer = dict({"name": "d", "type": "Deconvolution"}, **params, **RANDOM)
    net = decaf.Net(layer_net_spec(layer, [shape]), force_backward=True, seed=3)
    report = check_net(net, {"in0": np.random.default_rng(4).standard_normal(shape)}, max_elements=40)
    assert report.passed, str(report)
    assert len(report.results) == 3 if params.get("bias_term", True) else 2


def test_float32_backward_matches_float64():
    """The compiled im2col in backward gives what the float64 (NumPy kernels) backward gives."""
    params, shape = CASES[1]
    grads = {}
    for dtype in (np.float32, np.float64):
        net = one_layer_net(dict({"type": "Deconvolution"}, **params, **RANDOM), shape, seed=5)
        net.force_backward = True
        net.astype(dtype)
        x = np.random.default_rng(6).standard_normal(shape)
        out = net.forward(x=x.astype(dtype))["y"]
        dy = np.random.default_rng(7).standard_normal(out.shape).astype(dtype)
        grads[dtype] = (net.backward(diffs={"y": dy})["x"].copy(), net.params["the_layer.weight"].diff.copy())
    for a, b in zip(grads[np.float32], grads[np.float64]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("params,message", [
    ({"output_padding": 2}, r"output_padding \[2, 2\] must be smaller than the stride \[2, 2\]"),
    ({"output_padding": [1, 2, 3], "stride": 4}, "output_padding must be"),
    ({"num_output": 3, "group": 2}, "not divisible by group"),
])
def test_bad_parameters_are_refused(params, message):
    with pytest.raises(decaf.SpecError, match=message):
        one_layer_net(dict({"type": "Deconvolution", "num_output": 4, "kernel_size": 3, "stride": 2}, **params),
                      (1, 2, 3, 3))


def test_pads_that_crop_everything_are_refused():
    with pytest.raises(decaf.ShapeError, match="crop the whole"):
        one_layer_net({"type": "Deconvolution", "num_output": 2, "kernel_size": 1, "pad": 1}, (1, 2, 2, 2))


def test_profile_counts_macs():
    params, shape = CASES[0]
    net = one_layer_net(dict({"type": "Deconvolution"}, **params), shape)
    entry = profile_entry(net)
    # every input pixel of every input channel meets K/group output channels times the kernel
    macs = 3 * 3 * 2 * (4 // 2) * 3 * 3
    assert entry.group == "conv" and entry.macs == macs and entry.flops == 2 * macs + 4 * 5 * 5


@pytest.mark.parametrize("params,shape", CASES, ids=IDS)
def test_onnx_export_matches_onnx_runtime(tmp_path, params, shape):
    net = one_layer_net(dict({"type": "Deconvolution"}, **params, **RANDOM), shape, seed=8)
    x = np.random.default_rng(9).standard_normal(shape).astype(np.float32)
    check_export(net, tmp_path / "d.onnx", {"x": x}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attrs,out_hw", [
    ({"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1], "group": 2}, (10, 12)),
    ({"strides": [2, 1], "dilations": [1, 2], "pads": [0, 1, 2, 0]}, (9, 9)),
    ({"strides": [2, 2], "output_shape": [11, 12]}, (11, 12)),
    ({"strides": [2, 2], "auto_pad": "SAME_UPPER"}, (10, 12)),
    ({"strides": [2, 2], "auto_pad": "SAME_LOWER"}, (10, 12)),   # the odd pixel cropped at the start
])
def test_onnx_convtranspose_imports(tmp_path, attrs, out_hw):
    rng = np.random.default_rng(10)
    group = attrs.get("group", 1)
    consts = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
              "b": rng.standard_normal(3 * group).astype(np.float32)}
    path = one_node_model(tmp_path / "d.onnx", "ConvTranspose", ["N", 4, 5, 6], attrs, consts, opset=17,
                          y_shape=["N", 3 * group, *out_hw])
    x = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    spec = check_import(path, x, rtol=1e-5, atol=1e-5)
    assert [layer["type"] for layer in spec["layers"]] == ["Deconvolution"]
    net, _ = __import__("layer_checks").import_net(path)
    assert net.blobs["y"].shape[2:] == out_hw


def test_onnx_convtranspose_3d_is_refused(tmp_path):
    from decaf.io.errors import DecafFormatError
    from decaf.io.onnx_convert import onnx_to_net
    path = one_node_model(tmp_path / "d.onnx", "ConvTranspose", ["N", 2, 3, 3, 3], {},
                          {"w": np.ones((2, 1, 2, 2, 2), np.float32)}, y_shape=["N", 1, 4, 4, 4])
    with pytest.raises(DecafFormatError, match=r"'the_node' \(ConvTranspose\): only 2-D ConvTranspose"):
        onnx_to_net(path)


@pytest.mark.parametrize("v1", [False, True], ids=["V2", "V1"])
def test_caffe_round_trip(tmp_path, v1):
    from decaf.io.caffe import caffe_to_net, write_caffemodel, write_prototxt
    layer = {"name": "up", "type": "Deconvolution", "bottom": "x", "top": "y", "num_output": 4,
             "kernel_size": [4, 3], "stride": 2, "pad": [1, 1], "group": 2, "lr_mult": [1.0, 2.0]}
    spec = {"name": "n", "inputs": {"x": [2, 3, 3]}, "layers": [layer]}
    net = decaf.Net(dict(spec, layers=[dict(layer, **RANDOM)]), seed=11)
    arrays = net.param_arrays()
    write_prototxt(tmp_path / "n.prototxt", spec, v1=v1)
    write_caffemodel(tmp_path / "n.caffemodel", spec, arrays, v1=v1)
    spec2, arrays2, _ = caffe_to_net(tmp_path / "n.prototxt", tmp_path / "n.caffemodel")
    net2 = decaf.Net(spec2, init=False)
    net2.load_params(arrays2)
    x = np.random.default_rng(12).standard_normal((2, 2, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(net2.forward(x=x)["y"], net.forward(x=x)["y"])
    assert spec2["layers"][0]["lr_mult"] == [1.0, 2.0]


def test_caffe_refuses_output_padding(tmp_path):
    from decaf.io.caffe import write_prototxt
    spec = {"name": "n", "inputs": {"x": [2, 3, 3]},
            "layers": [{"name": "up", "type": "Deconvolution", "bottom": "x", "top": "y", "num_output": 2,
                        "kernel_size": 3, "stride": 2, "output_padding": 1}]}
    with pytest.raises(ValueError, match="'up': Caffe's Deconvolution has no output_padding"):
        write_prototxt(tmp_path / "n.prototxt", spec)


def test_summary_names_kernel_outputs_stride_and_groups():
    import decaf.layers  # noqa: F401  (registers the types)
    from decaf.layer import create_layer

    def make(**kw):
        return create_layer(dict({"name": "d", "type": "Deconvolution", "bottom": "x", "top": "y", "num_output": 4,
                                  "kernel_size": 3}, **kw))

    assert make().summary() == "3×3, 4"
    assert make(stride=[2, 3], group=2).summary() == "3×3, 4, stride 2×3, group 2"
