"""Net building, validation errors, topological order, fan-out, phases, copies."""
import numpy as np
import pytest

from decaf import Net, ShapeError, SpecError
from decaf.gradcheck import check_net


def ip(name, bottom, n, top=None):
    return {"name": name, "type": "InnerProduct", "bottom": bottom, "top": top or name, "num_output": n}


def spec(*layers, inputs=None):
    return {"name": "t", "inputs": inputs or {"data": [4]}, "layers": list(layers)}


def test_unknown_type_names_layer_and_type():
    with pytest.raises(SpecError, match=r"layer 'x': unknown type 'Convolutoin'"):
        Net(spec({"name": "x", "type": "Convolutoin", "bottom": "data", "top": "x"}))


def test_unknown_parameter_is_an_error():
    with pytest.raises(SpecError, match=r"unknown parameter\(s\) \['num_ouput'\]"):
        Net(spec({"name": "fc", "type": "InnerProduct", "bottom": "data", "top": "fc", "num_ouput": 3}))


def test_missing_required_parameter():
    with pytest.raises(SpecError, match="missing required parameter 'num_output'"):
        Net(spec({"name": "fc", "type": "InnerProduct", "bottom": "data", "top": "fc"}))


def test_missing_bottom():
    with pytest.raises(SpecError, match="bottom blob 'nope' is not produced"):
        Net(spec(ip("fc", "nope", 3)))


def test_duplicate_top():
    with pytest.raises(SpecError, match="blob 'h' is written by both layer 'a' and layer 'b'"):
        Net(spec(ip("a", "data", 3, "h"), ip("b", "data", 3, "h")))


def test_duplicate_layer_name():
    with pytest.raises(SpecError, match="duplicate layer name"):
        Net(spec(ip("a", "data", 3, "h1"), ip("a", "h1", 3, "h2")))


def test_cycle():
    with pytest.raises(SpecError, match="cycle through layers \\['a', 'b'\\]"):
        Net(spec(ip("a", "hb", 3, "ha"), ip("b", "ha", 3, "hb"), ip("c", "data", 3)))


def test_shape_mismatch_names_layer_and_shapes():
    s = spec(ip("a", "data", 3), ip("b", "data", 5),
             {"name": "sum", "type": "Eltwise", "bottom": ["a", "b"], "top": "sum"})
    with pytest.raises(ShapeError, match=r"layer 'sum' \(Eltwise\): bottom 'b' differs.*expected \(1, 3\), got \(1, 5\)"):
        Net(s)


def test_conv_channel_mismatch_at_build():
    s = spec({"name": "c", "type": "Convolution", "bottom": "data", "top": "c", "num_output": 2,
              "kernel_size": 3, "group": 2}, inputs={"data": [3, 8, 8]})
    with pytest.raises(ShapeError, match="layer 'c'"):
        Net(s)


@pytest.mark.parametrize("ltype", ["Convolution", "Deconvolution"])
@pytest.mark.parametrize("shape", [[], [4], [3, 8]])
def test_conv_on_a_bottom_that_is_not_4d_is_a_shape_error_at_build(ltype, shape):
    # the weights are made (setup) from the bottom's channel axis: a bottom without one is named,
    # not an IndexError (a .decaf file whose input shape was corrupted reached this)
    s = spec({"name": "c", "type": ltype, "bottom": "data", "top": "c", "num_output": 2, "kernel_size": 1},
             inputs={"data": shape})
    with pytest.raises(ShapeError, match=rf"layer 'c' \({ltype}\): bottom 'data' must be 4-D"):
        Net(s)


def test_input_shape_checked():
    net = Net(spec(ip("a", "data", 3)))
    with pytest.raises(ShapeError, match=r"input 'data': expected shape \(N, 4\), got \(2, 5\)"):
        net.forward(data=np.zeros((2, 5)))
    with pytest.raises(ValueError, match="NaN"):
        net.forward(data=np.full((2, 4), np.nan))
    with pytest.raises(KeyError, match="no input"):
        net.forward(image=np.zeros((2, 4)))


def test_spec_order_need_not_be_topological():
    net = Net(spec(ip("b", "ha", 2), ip("a", "data", 3, "ha")))
    assert [layer.name for layer in net.order] == ["a", "b"]


def test_forward_returns_copies_and_any_blob():
    net = Net(spec(ip("a", "data", 3), {"name": "r", "type": "ReLU", "bottom": "a", "top": "r"}))
    x = np.random.default_rng(0).standard_normal((2, 4))
    out = net.forward(data=x, outputs=["a", "r"])
    np.testing.assert_allclose(out["r"], np.maximum(out["a"], 0))
    out["a"][...] = 123
    again = net.forward(data=x, outputs=["a"])
    assert not np.any(again["a"] == 123)


def test_forward_runs_only_needed_layers():
    net = Net(spec(ip("a", "data", 3), ip("b", "a", 2)))
    assert [layer.name for layer in net.plan(["a"])] == ["a"]


def test_fanout_gets_split_and_accumulates_gradient():
    # y = a(x) used twice: gradient must be the sum of both paths
    s = spec(ip("a", "data", 3), ip("b", "a", 2), ip("c", "a", 2),
             {"name": "sum", "type": "Eltwise", "bottom": ["b", "c"], "top": "sum"})
    net = Net(s, force_backward=True)
    assert any(layer.type_name == "Split" for layer in net.order)
    report = check_net(net, {"data": np.random.default_rng(0).standard_normal((3, 4))})
    assert report.passed, str(report)


def test_same_blob_read_twice_by_one_layer():
    s = spec(ip("a", "data", 3), {"name": "sq", "type": "Eltwise", "operation": "prod", "bottom": ["a", "a"], "top": "sq"})
    net = Net(s, force_backward=True)
    report = check_net(net, {"data": np.random.default_rng(0).standard_normal((2, 4))})
    assert report.passed, str(report)


def test_inplace_relu_shares_blob_and_gradchecks():
    s = spec(ip("a", "data", 5), {"name": "r", "type": "ReLU", "bottom": "a", "top": "a"}, ip("b", "a", 2))
    net = Net(s, force_backward=True)
    assert net.bottoms["r"][0] is net.tops["r"][0]
    report = check_net(net, {"data": np.random.default_rng(1).standard_normal((3, 4))})
    assert report.passed, str(report)


def test_inplace_on_blob_still_read_is_refused():
    s = spec(ip("a", "data", 5), ip("b", "a", 2), {"name": "r", "type": "ReLU", "bottom": "a", "top": "a"})
    with pytest.raises(SpecError, match="works in place on blob 'a'"):
        Net(s)


def test_inplace_not_allowed_for_some_layers():
    with pytest.raises(SpecError, match="cannot run in place"):
        Net(spec({"name": "s", "type": "Softmax", "bottom": "data", "top": "data"}))


def test_phase_switches_dropout():
    s = spec({"name": "d", "type": "Dropout", "bottom": "data", "top": "d", "dropout_ratio": 0.5},
             inputs={"data": [1000]})
    net = Net(s)
    x = np.ones((1, 1000), np.float32)
    np.testing.assert_array_equal(net.forward(data=x)["d"], x)
    net.set_phase("train")
    y = net.forward(data=x)["d"]
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert 400 < np.count_nonzero(y) < 600


def test_dropout_is_seeded():
    s = spec({"name": "d", "type": "Dropout", "bottom": "data", "top": "d"}, inputs={"data": [50]})
    a = Net(s, phase="train", seed=3).forward(data=np.ones((2, 50)))["d"]
    b = Net(s, phase="train", seed=3).forward(data=np.ones((2, 50)))["d"]
    c = Net(s, phase="train", seed=4).forward(data=np.ones((2, 50)))["d"]
    np.testing.assert_array_equal(a, b)
    # it does drop: about half the units are 0, the rest scaled by 1 / (1 - 0.5)
    assert set(np.unique(a)) == {0.0, 2.0} and 30 <= int(np.sum(a == 0)) <= 70
    assert not np.array_equal(a, c)              # another seed, another mask


def test_batch_size_change_reshapes():
    net = Net(spec(ip("a", "data", 3)))
    assert net.forward(data=np.zeros((5, 4)))["a"].shape == (5, 3)
    assert net.forward(data=np.zeros((2, 4)))["a"].shape == (2, 3)


def test_load_params_checks_names_and_shapes():
    net = Net(spec(ip("a", "data", 3)))
    with pytest.raises(KeyError, match="missing"):
        net.load_params({"a.weight": np.zeros((3, 4))})
    with pytest.raises(ValueError, match=r"expected shape \(3, 4\)"):
        net.load_params({"a.weight": np.zeros((4, 3)), "a.bias": np.zeros(3)})


def test_small_whole_net_gradient():
    s = {"name": "small", "inputs": {"data": [2, 8, 8], "label": []}, "layers": [
        {"name": "c1", "type": "Convolution", "bottom": "data", "top": "c1", "num_output": 3, "kernel_size": 3, "pad": 1},
        {"name": "r1", "type": "ReLU", "bottom": "c1", "top": "c1"},
        {"name": "p1", "type": "Pooling", "bottom": "c1", "top": "p1", "kernel_size": 2, "stride": 2},
        {"name": "n1", "type": "LRN", "bottom": "p1", "top": "n1", "local_size": 3, "alpha": 0.1},
        {"name": "c2", "type": "Convolution", "bottom": "n1", "top": "c2", "num_output": 4, "kernel_size": 3, "group": 1},
        {"name": "bn", "type": "BatchNorm", "bottom": "c2", "top": "bn", "affine": True},
        {"name": "t", "type": "Tanh", "bottom": "bn", "top": "bn"},
        {"name": "fc", "type": "InnerProduct", "bottom": "bn", "top": "fc", "num_output": 3},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["fc", "label"], "top": "loss"}]}
    net = Net(s, phase="train", force_backward=True)
    rng = np.random.default_rng(0)
    inputs = {"data": rng.standard_normal((3, 2, 8, 8)), "label": np.array([0, 2, 1])}
    report = check_net(net, inputs, max_elements=20)
    assert report.passed, str(report)


def conv_relu_spec(in_place):
    def conv(name, bottom, n):
        return {"name": name, "type": "Convolution", "bottom": bottom, "top": name, "num_output": n,
                "kernel_size": 3, "pad": 1, "weight_filler": {"type": "gaussian", "std": 0.3},
                "bias_filler": {"type": "gaussian", "std": 0.3}}

    def relu(name, bottom):
        return {"name": name, "type": "ReLU", "bottom": bottom, "top": bottom if in_place else name}
    return spec(conv("c1", "data", 6), relu("r1", "c1"), conv("c2", "c1" if in_place else "r1", 4),
                relu("r2", "c2"), ip("fc", "c2" if in_place else "r2", 3),
                {"name": "loss", "type": "EuclideanLoss", "bottom": ["fc", "target"], "top": "loss"},
                inputs={"data": [3, 7, 7], "target": [3]})


def unfuse(net):
    for layer in net.order:
        if layer.type_name == "Convolution":
            layer.fused_relu, layer.fused_relu_blob = False, None
        if layer.type_name == "ReLU":
            layer.fused = False


def test_conv_applies_the_relu_after_it_with_the_same_results():
    in_place, apart = Net(conv_relu_spec(True), seed=3), Net(conv_relu_spec(False), seed=3)
    plain = Net(conv_relu_spec(False), seed=3)
    unfuse(plain)
    assert in_place.layers["c1"].fused_relu and in_place.layers["c1"].fused_relu_blob is None
    assert apart.layers["c1"].fused_relu and apart.layers["c1"].fused_relu_blob is apart.blobs["r1"]
    assert in_place.layers["r1"].fused and apart.layers["r2"].fused
    for name, p in plain.params.items():
        p.data[...] = in_place.params[name].data
        apart.params[name].data[...] = in_place.params[name].data
    rng = np.random.default_rng(0)
    inputs = {"data": rng.standard_normal((5, 3, 7, 7)).astype(np.float32),
              "target": rng.standard_normal((5, 3)).astype(np.float32)}
    a = in_place.forward(inputs, outputs=["c1", "c2", "loss"])
    b = apart.forward(inputs, outputs=["c1", "r1", "c2", "r2", "loss"])
    c = plain.forward(inputs, outputs=["c1", "r1", "c2", "r2", "loss"])
    assert (c["r1"] >= 0).all() and (c["r1"] == 0).any() and (c["c1"] < 0).any()   # the ReLU matters
    for name in ("c1", "r1", "c2", "r2", "loss"):
        np.testing.assert_array_equal(b[name], c[name])       # pre-ReLU tops are kept
    np.testing.assert_array_equal(a["c1"], c["r1"])
    np.testing.assert_array_equal(a["c2"], c["r2"])
    for net in (in_place, apart, plain):
        net.backward()
    for name, p in plain.params.items():
        np.testing.assert_allclose(in_place.params[name].diff, p.diff, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(apart.params[name].diff, p.diff, rtol=1e-6, atol=1e-7)


def test_which_activations_are_fused():
    def conv(name, bottom, n, group=1, k=3):
        return {"name": name, "type": "Convolution", "bottom": bottom, "top": name, "num_output": n, "group": group,
                "kernel_size": k, "pad": k // 2}
    s = spec(conv("c", "data", 3, group=3), {"name": "r", "type": "ReLU", "bottom": "c", "top": "r"},
             conv("d", "r", 3, group=3), {"name": "d6", "type": "ReLU6", "bottom": "d", "top": "d"},
             conv("c2", "d", 3, k=1), {"name": "r2", "type": "ReLU", "bottom": "c2", "top": "c2", "negative_slope": 0.1},
             conv("c3", "c2", 4), {"name": "k3", "type": "Clip", "bottom": "c3", "top": "c3", "min": 1.0, "max": 6.0},
             conv("c4", "c3", 4), {"name": "k4", "type": "Clip", "bottom": "c4", "top": "k4", "min": 0.0, "max": 2.5},
             inputs={"data": [3, 5, 5]})
    net = Net(s)
    assert net.layers["c"].fused_relu and net.layers["r"].fused              # depthwise, not in place
    assert net.layers["c"].fused_relu_blob is net.blobs["r"]
    assert net.layers["d"].fused_relu and net.layers["d6"].fused and net.layers["d"].fused_relu_max == 6.0
    assert net.layers["c2"].fused_act == ("leaky", 0.0, float("inf"), 0.1) and net.layers["r2"].fused
    assert net.layers["c3"].fused_act == ("clamp", 1.0, 6.0, 0.0) and net.layers["k3"].fused   # clip from 1
    assert net.layers["c4"].fused_relu and net.layers["k4"].fused and net.layers["c4"].fused_relu_max == 2.5
    assert net.layers["c4"].fused_relu_blob is net.blobs["k4"]


def test_fused_relu6_and_clip_give_the_same_results():
    def build(fuse):
        s = spec({"name": "c", "type": "Convolution", "bottom": "data", "top": "c", "num_output": 32,
                  "kernel_size": 3, "pad": 1, "weight_filler": {"type": "gaussian", "std": 1.0},
                  "bias_filler": {"type": "gaussian", "std": 1.0}},
                 {"name": "a", "type": "ReLU6", "bottom": "c", "top": "c"},
                 {"name": "d", "type": "Convolution", "bottom": "c", "top": "d", "num_output": 32, "group": 32,
                  "kernel_size": 3, "stride": 2, "pad": 1, "weight_filler": {"type": "gaussian", "std": 1.0},
                  "bias_filler": {"type": "gaussian", "std": 1.0}},
                 {"name": "b", "type": "ReLU6", "bottom": "d", "top": "d"},
                 {"name": "e", "type": "Convolution", "bottom": "d", "top": "e", "num_output": 32, "kernel_size": 1},
                 {"name": "k", "type": "Clip", "bottom": "e", "top": "k", "min": 0.0, "max": 0.5},
                 inputs={"data": [32, 20, 20]})
        net = Net(s, seed=4)
        if not fuse:
            unfuse(net)
            for layer in net.order:
                if layer.type_name in ("ReLU6", "Clip"):
                    layer.fused = False
        return net
    fused, plain = build(True), build(False)
    assert fused.layers["a"].fused and fused.layers["b"].fused and fused.layers["k"].fused
    x = np.random.default_rng(1).standard_normal((2, 32, 20, 20)).astype(np.float32) * 3
    a = fused.forward({"data": x}, outputs=["c", "d", "e", "k"])
    b = plain.forward({"data": x}, outputs=["c", "d", "e", "k"])
    assert (b["c"] == 6).any() and (b["c"] == 0).any() and (b["k"] == 0.5).any()    # both bounds hit
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-6)


def test_max_pool_in_test_phase_skips_argmax_but_backward_still_works():
    s = spec({"name": "p", "type": "Pooling", "bottom": "data", "top": "p", "pool": "max", "kernel_size": 3,
              "stride": 2}, ip("fc", "p", 2), inputs={"data": [2, 9, 9]})
    x = np.random.default_rng(0).standard_normal((3, 2, 9, 9)).astype(np.float32)
    grads = {}
    for phase in ("train", "test"):
        net = Net(s, phase=phase, seed=1, force_backward=True)
        out = net.forward({"data": x}, outputs=["fc"])["fc"]
        assert net.layers["p"].argmax_stale == (phase == "test")
        grads[phase] = (out, net.backward({"fc": np.ones_like(out)})["data"])
    np.testing.assert_array_equal(grads["train"][0], grads["test"][0])
    np.testing.assert_array_equal(grads["train"][1], grads["test"][1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused(dtype, bad):
    net = Net(spec(ip("a", "data", 2)))
    x = np.ones((3, 4), dtype)
    net.forward({"data": x})
    x[1, 2] = bad
    with pytest.raises(ValueError, match="input 'data' contains NaN or inf"):
        net.forward({"data": x})
    assert net.forward({"data": np.arange(12).reshape(3, 4)})["a"].shape == (3, 2)   # integers: no check


def test_non_finite_inputs_off_the_fast_path_are_refused():
    net = Net(spec(ip("a", "data", 2)))
    x = np.ones((4, 3), np.float32)
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match="input 'data' contains NaN or inf"):
        net.forward({"data": x.T})                      # float32, not contiguous
    net64 = Net(spec(ip("a", "data", 2))).astype(np.float64)
    with pytest.raises(ValueError, match="input 'data' contains NaN or inf"):
        net64.forward({"data": np.ascontiguousarray(x.T)})   # float32 into a float64 blob


# ---- building from arrays, trained-only backward, backward steps (issue 11) -----------------

def frozen_stack():
    """data -> a (frozen, lr_mult 0) -> relu -> b (trained) -> loss."""
    a = dict(ip("a", "data", 5), lr_mult=0)
    return {"name": "t", "inputs": {"data": [4], "label": []},
            "layers": [a, {"name": "r", "type": "ReLU", "bottom": "a", "top": "a"}, ip("b", "a", 3),
                       {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["b", "label"], "top": "loss"}]}


def test_from_arrays_copies_every_parameter_and_refuses_missing_or_misshaped_ones():
    source = Net(spec(ip("a", "data", 3)), seed=3)
    arrays = source.param_arrays()
    net = Net.from_arrays(source.spec, arrays, phase="train")
    assert net.phase == "train"
    for name, value in arrays.items():
        np.testing.assert_array_equal(net.params[name].data, value)
    with pytest.raises(KeyError, match=r"missing \['a.bias'\]"):
        Net.from_arrays(source.spec, {"a.weight": arrays["a.weight"]})
    with pytest.raises(ValueError, match=r"a.weight: expected shape \(3, 4\)"):
        Net.from_arrays(source.spec, dict(arrays, **{"a.weight": np.zeros((4, 3), np.float32)}))


def test_param_trained_is_learnable_and_not_frozen():
    net = Net(frozen_stack())
    assert net.params["b.weight"].trained and not net.params["a.weight"].trained
    assert net.params["a.weight"].learnable         # frozen, still learnable
    net.params["b.weight"].learnable = False
    assert not net.params["b.weight"].trained


def test_trained_only_backward_skips_frozen_layers_and_keeps_trained_gradients(rng):
    x, y = rng.standard_normal((6, 4)).astype(np.float32), rng.integers(0, 3, 6)
    full = Net(frozen_stack(), seed=1)
    full.forward(data=x, label=y)
    full.backward()
    assert full.params["a.weight"].has_diff()       # every learnable parameter by default
    net = Net(frozen_stack(), seed=1).set_trained_only()
    assert [layer.name for layer, _ in net.backward_steps()] == ["loss", "b"]
    net.forward(data=x, label=y)
    net.backward()
    assert not net.params["a.weight"].has_diff()
    for name in ("b.weight", "b.bias"):
        np.testing.assert_array_equal(net.params[name].diff, full.params[name].diff)
    net.set_trained_only(False)
    assert [layer.name for layer, _ in net.backward_steps()] == ["loss", "b", "r", "a"]


def test_backward_steps_are_what_backward_runs(rng):
    """Running seed_diffs and then every step by hand gives backward's gradients bit for bit."""
    x = rng.standard_normal((3, 4)).astype(np.float32)
    g = rng.standard_normal((3, 2)).astype(np.float32)
    s = spec(ip("a", "data", 5), {"name": "r", "type": "ReLU", "bottom": "a", "top": "a"}, ip("b", "a", 2))
    whole, by_hand = Net(s, seed=2, force_backward=True), Net(s, seed=2, force_backward=True)
    whole.forward(data=x)
    want = whole.backward({"b": g})
    by_hand.forward(data=x)
    by_hand.seed_diffs({"b": g})
    for _, step in by_hand.backward_steps():
        step()
    np.testing.assert_array_equal(by_hand.blobs["data"].diff, want["data"])
    for name, p in whole.params.items():
        np.testing.assert_array_equal(by_hand.params[name].diff, p.diff)
    with pytest.raises(ShapeError, match=r"diff for blob 'b': expected shape \(3, 2\)"):
        by_hand.seed_diffs({"b": g[:2]})


def test_setting_force_backward_recomputes_the_plan():
    net = Net(spec({"name": "r", "type": "ReLU", "bottom": "data", "top": "r"}))
    assert net.backward_steps() == []               # no parameters, no input gradient wanted
    net.force_backward = True
    assert [layer.name for layer, _ in net.backward_steps()] == ["r"]


def test_float64_inputs_beyond_float32_range_are_refused():
    """Finite float64 values too large for float32 would become inf in the float32 blob."""
    spec = {"name": "t", "inputs": {"data": [3]}, "layers": [
        {"name": "fc", "type": "InnerProduct", "bottom": "data", "top": "fc", "num_output": 2}]}
    net = Net(spec)
    with pytest.raises(ValueError, match=r"input 'data' has values beyond the range of float32 \(largest magnitude 1e\+39\)"):
        net.forward(data=np.array([[1e39, 0.0, 0.0]]))
    out = net.forward(data=np.array([[3e38, 0.0, -1.0]]))     # large but representable: accepted
    assert np.all(np.isfinite(net.blobs["data"].data)) and out["fc"].shape == (1, 2)
