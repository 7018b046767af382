"""The layers ONNX graphs need besides convolutions: Transpose, Reduce, Slice, Pad, Resize and
Arithmetic. Each forward against PyTorch (or NumPy index loops) as the independent reference,
each backward against finite differences (decaf.gradcheck, float64), each ONNX export against
ONNX Runtime."""
import numpy as np
import pytest

import decaf
from decaf.gradcheck import check_layer

torch = pytest.importorskip("torch")
F = torch.nn.functional

RNG = np.random.default_rng(0)


def run_layer(spec, *inputs, params=None):
    """The top of one layer (spec without name/bottom/top) on ``inputs`` (float32)."""
    names = [f"x{i}" for i in range(len(inputs))]
    net_spec = {"name": "one", "inputs": {n: list(x.shape[1:]) for n, x in zip(names, inputs)},
                "layers": [dict(spec, name="l", bottom=names, top="y")]}
    net = decaf.Net(net_spec, seed=1)
    if params:
        net.load_params({f"l.{k}": v for k, v in params.items()})
    return net, net.forward(dict(zip(names, inputs)))["y"]


def t(x):
    return torch.from_numpy(np.asarray(x, np.float64))


def x32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# ---- forward against the reference -------------------------------------------------------------
def test_transpose_forward():
    x = x32(2, 3, 4, 5)
    _, y = run_layer({"type": "Transpose", "perm": [0, 2, 3, 1]}, x)
    np.testing.assert_array_equal(y, t(x).permute(0, 2, 3, 1).numpy())


@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [0, 3, 1, 2], [0, 2, 1], [0, 3, 4, 1, 2], [0, 2, 1, 3, 4],
                                  [0, 1, 3, 2]])
def test_transpose_by_the_compiled_kernel_or_numpy_equals_torch(perm):
    """Rotations of the non-batch axes (ConvNeXt's channels-last and back) run as one matrix
    transpose per image (kernels.transpose, 32 x 32 tiles: sizes across tile edges here); other
    perms as NumPy's copy; both give torch's permute exactly."""
    shapes = {3: (3, 37, 70), 4: (2, 33, 5, 7), 5: (2, 3, 4, 5, 6)}
    x = x32(*shapes[len(perm)])
    _, y = run_layer({"type": "Transpose", "perm": perm}, x)
    np.testing.assert_array_equal(y, t(x).permute(*perm).numpy())


def test_compiled_transpose_kernel_checks_its_arguments():
    _compiled = pytest.importorskip("decaf.kernels._compiled")
    x = x32(2, 3, 4)
    with pytest.raises(ValueError, match="shape"):
        _compiled.transpose(x, np.empty((2, 3, 4), np.float32))
    flat = np.zeros(48, np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        _compiled.transpose(flat[:24].reshape(2, 3, 4), flat[10:34].reshape(2, 4, 3))


def test_channel_shuffle_as_reshape_transpose_reshape():
    """ShuffleNet's shuffle: channel c of group g goes to position c * groups + g."""
    x = x32(2, 6, 2, 2)
    spec = {"name": "shuffle", "inputs": {"x": [6, 2, 2]}, "layers": [
        {"name": "a", "type": "Reshape", "bottom": "x", "top": "a", "shape": [2, 3, 2, 2]},
        {"name": "b", "type": "Transpose", "bottom": "a", "top": "b", "perm": [0, 2, 1, 3, 4]},
        {"name": "c", "type": "Reshape", "bottom": "b", "top": "c", "shape": [6, 2, 2]}]}
    y = decaf.Net(spec).forward(x=x)["c"]
    order = [g * 3 + c for c in range(3) for g in range(2)]   # output k = 2c + g reads input 3g + c
    np.testing.assert_array_equal(y, x[:, order])


@pytest.mark.parametrize("op", ["mean", "max", "sum"])
@pytest.mark.parametrize("keep", [True, False])
def test_reduce_forward(op, keep):
    x = x32(2, 3, 4, 5)
    _, y = run_layer({"type": "Reduce", "operation": op, "axes": [1, 3], "keepdims": keep}, x)
    ref = {"mean": lambda v: v.mean((1, 3), keepdim=keep), "sum": lambda v: v.sum((1, 3), keepdim=keep),
           "max": lambda v: v.amax((1, 3), keepdim=keep)}[op](t(x)).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("hw", [(7, 7), (1, 1), (13, 11), (8, 8)])
@pytest.mark.parametrize("keep", [True, False])
def test_reduce_mean_over_the_planes(hw, keep):
    """mean over axes 2 and 3 of a 4-D float32 input (a head's x.mean((2, 3))) runs the compiled
    global average pooling: within float32 rounding of the float64 mean (torch), and the same top on
    a second pass."""
    x = x32(2, 5, *hw)
    net, y = run_layer({"type": "Reduce", "operation": "mean", "axes": [2, 3], "keepdims": keep}, x)
    ref = t(x).mean((2, 3), keepdim=keep).numpy()
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
    again = net.forward({"x0": x})["y"]
    np.testing.assert_array_equal(again, y)


def test_slice_forward_against_index_loops():
    x = x32(2, 4, 3, 7)
    spec = {"type": "Slice", "axes": [1, 3], "starts": [1, 6], "ends": [4, None], "steps": [2, -3]}
    _, y = run_layer(spec, x)
    rows, cols = [1, 3], [6, 3, 0]
    ref = np.array([[[[x[n, r, h, c] for c in cols] for h in range(3)] for r in rows] for n in range(2)])
    np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("mode, torch_mode", [("constant", "constant"), ("reflect", "reflect"),
                                              ("edge", "replicate")])
def test_pad_forward(mode, torch_mode):
    x = x32(2, 3, 4, 5)
    pads = [0, 1, 2, 0, 2, 1]                 # begin C, H, W; end C, H, W
    _, y = run_layer({"type": "Pad", "pads": pads, "mode": mode, "value": 0.5}, x)
    kw = {"value": 0.5} if mode == "constant" else {}
    ref = F.pad(t(x), (2, 1, 1, 2), mode=torch_mode, **kw).numpy()     # torch: last axis first
    np.testing.assert_allclose(y, ref, rtol=1e-6)


@pytest.mark.parametrize("spec, torch_kw", [
    ({"mode": "nearest", "scales": [1, 2, 3], "coordinate_mode": "asymmetric", "nearest_mode": "floor"},
     {"scale_factor": (2, 3), "mode": "nearest"}),
    ({"mode": "nearest", "sizes": [3, 5, 3], "coordinate_mode": "asymmetric", "nearest_mode": "floor"},
     {"size": (5, 3), "mode": "nearest"}),
    ({"mode": "linear", "scales": [1, 2, 2], "coordinate_mode": "pytorch_half_pixel"},
     {"scale_factor": 2, "mode": "bilinear", "align_corners": False}),
    ({"mode": "linear", "sizes": [3, 7, 3], "coordinate_mode": "align_corners"},
     {"size": (7, 3), "mode": "bilinear", "align_corners": True}),
    ({"mode": "linear", "sizes": [3, 2, 3], "coordinate_mode": "pytorch_half_pixel"},
     {"size": (2, 3), "mode": "bilinear", "align_corners": False}),
])
def test_resize_forward_against_torch_interpolate(spec, torch_kw):
    x = x32(2, 3, 4, 5)
    _, y = run_layer(dict(spec, type="Resize"), x)
    np.testing.assert_allclose(y, F.interpolate(t(x), **torch_kw).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "max", "min"])
def test_arithmetic_two_tensors_broadcast(op):
    a, b = x32(2, 3, 4, 5), x32(2, 3, 1, 1) + 3.0
    _, y = run_layer({"type": "Arithmetic", "operation": op}, a, b)
    ref = {"add": t(a) + t(b), "sub": t(a) - t(b), "mul": t(a) * t(b), "div": t(a) / t(b),
           "max": torch.maximum(t(a), t(b)), "min": torch.minimum(t(a), t(b))}[op].numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("gate_first", [False, True])
def test_arithmetic_channel_gate_runs_the_per_channel_kernel_exactly(gate_first, monkeypatch):
    # x times a per-image, per-channel gate (squeeze-excitation) goes through kernels.channel_affine, one
    # image at a time: the same products as NumPy's broadcast, bit for bit (x s + 0 rounds once)
    import decaf.kernels as kernels
    calls = []
    real = kernels.channel_affine
    monkeypatch.setattr(kernels, "channel_affine", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, g = x32(2, 3, 4, 5), x32(2, 3, 1, 1)
    bottoms = (g, x) if gate_first else (x, g)
    _, y = run_layer({"type": "Arithmetic", "operation": "mul"}, *bottoms)
    np.testing.assert_array_equal(y, x * g)
    assert len(calls) == 2                                 # one per image
    _, y = run_layer({"type": "Arithmetic", "operation": "mul"}, x, x32(2, 3, 4, 1))   # not a gate: NumPy
    assert len(calls) == 2


def test_arithmetic_constant_operand_channels_last_and_first():
    x = x32(2, 4, 5, 3)
    c = x32(3) + 2.0
    _, y = run_layer({"type": "Arithmetic", "operation": "div", "operand_shape": [3], "operand_first": True},
                     x, params={"operand": c})
    np.testing.assert_allclose(y, (t(c) / t(x)).numpy(), rtol=1e-5)
    _, y = run_layer({"type": "Arithmetic", "operation": "pow", "operand_shape": [], "learnable": False},
                     np.abs(x) + 0.1, params={"operand": np.array(0.5, np.float32)})
    np.testing.assert_allclose(y, np.sqrt(np.abs(x) + 0.1), rtol=1e-6)


# ---- refusals -----------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, shapes, needle", [
    ({"type": "Transpose", "perm": [1, 0, 2]}, [(2, 3, 4)], "keeps the batch axis"),
    ({"type": "Reduce", "axes": [0, 1]}, [(2, 3)], "non-batch axes"),
    ({"type": "Slice", "axes": [1], "starts": [0], "ends": [2], "steps": [0]}, [(2, 3)], "step of 0"),
    ({"type": "Pad", "pads": [1, -1]}, [(2, 3)], ">= 0"),
    ({"type": "Resize", "mode": "cubic", "scales": [1, 2]}, [(2, 3, 4)], "nearest or linear"),
    ({"type": "Arithmetic", "operation": "pow"}, [(2, 3), (2, 3)], "constant exponent"),
    ({"type": "Concat", "axis": 0}, [(2, 3), (2, 3)], "not a non-batch axis"),
    ({"type": "Concat", "axis": 3}, [(2, 3, 4), (2, 1, 4)], "not a non-batch axis"),
])
def test_bad_specs_are_spec_errors(spec, shapes, needle):
    with pytest.raises(decaf.SpecError, match=needle):
        run_layer(spec, *[x32(*s) for s in shapes])


def test_reshape_copying_an_axis_the_bottom_lacks_is_a_shape_error():
    """A 0 in ``shape`` copies the bottom's size at that position: past its last axis, a clear error."""
    with pytest.raises(decaf.ShapeError, match="past the bottom's 2 non-batch axes"):
        run_layer({"type": "Reshape", "shape": [0, 0, 0]}, x32(2, 3, 4))
    _, y = run_layer({"type": "Reshape", "shape": [0, 2, 2]}, x32(2, 3, 4))
    assert y.shape == (2, 3, 2, 2)


def test_concat_negative_axis_counts_from_the_end():
    a, b = x32(2, 3, 4), x32(2, 3, 2)
    _, y = run_layer({"type": "Concat", "axis": -1}, a, b)
    np.testing.assert_array_equal(y, np.concatenate([a, b], axis=-1))


# ---- backward against finite differences --------------------------------------------------------
GRAD_CASES = [
    ("transpose", {"type": "Transpose", "perm": [0, 3, 1, 2]}, [(2, 3, 2, 4)]),
    ("reduce_mean", {"type": "Reduce", "operation": "mean", "axes": [2, 3]}, [(2, 3, 3, 2)]),
    ("reduce_sum_drop", {"type": "Reduce", "operation": "sum", "axes": [1], "keepdims": False}, [(2, 3, 4)]),
    ("reduce_max", {"type": "Reduce", "operation": "max", "axes": [1, 2]}, [(2, 3, 4)]),
    ("slice", {"type": "Slice", "axes": [1, 3], "starts": [1, 4], "ends": [3, None], "steps": [1, -2]},
     [(2, 4, 3, 5)]),
    ("pad_constant", {"type": "Pad", "pads": [0, 1, 2, 0, 2, 1], "value": 0.3}, [(2, 2, 3, 3)]),
    ("pad_reflect", {"type": "Pad", "pads": [0, 2, 1, 0, 1, 2], "mode": "reflect"}, [(2, 2, 4, 5)]),
    ("pad_edge", {"type": "Pad", "pads": [1, 2, 0, 3], "mode": "edge"}, [(2, 3, 3)]),
    ("resize_linear", {"type": "Resize", "mode": "linear", "scales": [1, 2, 1.5]}, [(2, 2, 3, 4)]),
    ("resize_nearest", {"type": "Resize", "mode": "nearest", "sizes": [2, 5, 2]}, [(2, 2, 3, 4)]),
    ("arith_mul", {"type": "Arithmetic", "operation": "mul"}, [(2, 3, 4, 5), (2, 3, 1, 1)]),
    ("arith_sub", {"type": "Arithmetic", "operation": "sub"}, [(2, 1, 4, 5), (2, 3, 1, 5)]),
    ("arith_div", {"type": "Arithmetic", "operation": "div"}, [(2, 3, 4), (2, 3, 1)]),
    ("arith_const_first", {"type": "Arithmetic", "operation": "sub", "operand_shape": [4, 1],
                           "operand_first": True}, [(2, 3, 4, 2)]),
    ("arith_const_mul", {"type": "Arithmetic", "operation": "mul", "operand_shape": [5]}, [(2, 3, 5)]),
    ("arith_max", {"type": "Arithmetic", "operation": "max"}, [(2, 3, 4), (2, 1, 4)]),
    ("arith_min_const", {"type": "Arithmetic", "operation": "min", "operand_shape": [3, 1], "operand_first": True},
     [(2, 3, 4)]),
]


@pytest.mark.parametrize("name, spec, shapes", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_backward_equals_finite_differences(name, spec, shapes):
    report = check_layer(dict(spec, name=name), shapes, max_elements=40)
    assert report.passed, str(report)


def test_reduce_max_ties_share_the_gradient():
    x = np.array([[[1.0, 3.0, 3.0]]], np.float32)
    net, _ = run_layer({"type": "Reduce", "operation": "max", "axes": [2]}, x)
    net.force_backward = True
    grads = net.backward({"y": np.ones((1, 1, 1), np.float32)})
    np.testing.assert_allclose(grads["x0"], [[[0.0, 0.5, 0.5]]])


def test_pow_backward_against_finite_differences_on_positive_inputs():
    spec = {"name": "p", "type": "Arithmetic", "operation": "pow", "operand_shape": [], "learnable": False}
    net = decaf.Net(decaf.gradcheck.layer_net_spec(spec, [(2, 3, 4)]), force_backward=True)
    net.load_params({"p.operand": np.array(1.7, np.float32)})
    report = decaf.gradcheck.check_net(net, {"in0": RNG.uniform(0.5, 2.0, (2, 3, 4))})
    assert report.passed, str(report)


# ---- export back out, checked with ONNX Runtime ------------------------------------------------
EXPORT_CASES = [c for c in GRAD_CASES] + [
    ("resize_nearest_half", {"type": "Resize", "mode": "nearest", "scales": [1, 0.5, 0.5]}, [(2, 2, 6, 6)]),
    ("resize_align", {"type": "Resize", "mode": "linear", "sizes": [2, 7, 9], "coordinate_mode": "align_corners"},
     [(2, 2, 4, 5)]),
    ("flatten_axis2", {"type": "Flatten", "axis": 2}, [(2, 3, 4, 5)]),
    ("resize_simple", {"type": "Resize", "mode": "nearest", "scales": [1, 0.5, 0.7], "coordinate_mode": "asymmetric",
                       "nearest_mode": "simple"}, [(2, 2, 6, 7)]),
]


def test_resize_simple_both_ways_is_not_exported(tmp_path):
    from decaf.io.onnx_convert import net_to_onnx
    net, _ = run_layer({"type": "Resize", "mode": "nearest", "scales": [1, 0.5, 2], "nearest_mode": "simple"},
                       x32(2, 2, 6, 6))
    with pytest.raises(ValueError, match="shrinks one axis and enlarges another"):
        net_to_onnx(net, tmp_path / "r.onnx")


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("name, spec, shapes", EXPORT_CASES, ids=[c[0] for c in EXPORT_CASES])
def test_export_matches_onnx_runtime(tmp_path, name, spec, shapes, opset):
    ort = pytest.importorskip("onnxruntime")
    from decaf.io.onnx_convert import net_to_onnx, onnx_to_net
    inputs = [x32(*s) + (3.0 if spec.get("operation") == "div" and i else 0.0) for i, s in enumerate(shapes)]
    net, ours = run_layer({k: v for k, v in spec.items()}, *inputs)
    net.load_params({k: RNG.uniform(1, 2, v.shape).astype(np.float32) for k, v in net.param_arrays().items()})
    feeds = {f"x{i}": x for i, x in enumerate(inputs)}
    ours = net.forward(feeds)["y"]
    path = tmp_path / f"{name}.onnx"
    net_to_onnx(net, path, opset=opset)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (theirs,) = session.run(["y"], feeds)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())
    spec2, arrays = onnx_to_net(path)                     # and back in: the same numbers
    back = decaf.Net.from_arrays(spec2, arrays).forward(feeds)["y"]
    np.testing.assert_allclose(back, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())
