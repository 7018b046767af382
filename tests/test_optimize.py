"""The graph optimizer (decaf/optimize.py): the optimized forward against a NumPy reference and
against the same net run as written (optimize=False), every blob name, training and backward,
stale folded weights, the switches, and what profile shows."""
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import decaf
from decaf import Net
from decaf.models import get_spec
from decaf.optimize import enabled_by_default

TOL = dict(rtol=1e-5, atol=1e-5)     # float32: the folded weights are rounded once more


def block_spec():
    """conv (no bias) -> BatchNorm -> Scale -> ReLU in place -> Dropout -> InnerProduct -> BatchNorm."""
    return {"name": "block", "inputs": {"data": [3, 7, 7]}, "layers": [
        {"name": "c1", "type": "Convolution", "bottom": "data", "top": "c1", "num_output": 4,
         "kernel_size": 3, "pad": 1, "bias_term": False},
        {"name": "bn1", "type": "BatchNorm", "bottom": "c1", "top": "bn1", "affine": True},
        {"name": "sc1", "type": "Scale", "bottom": "bn1", "top": "sc1", "bias_term": True},
        {"name": "r1", "type": "ReLU", "bottom": "sc1", "top": "sc1"},
        {"name": "d1", "type": "Dropout", "bottom": "sc1", "top": "d1"},
        {"name": "ip", "type": "InnerProduct", "bottom": "d1", "top": "ip", "num_output": 5},
        {"name": "bn2", "type": "BatchNorm", "bottom": "ip", "top": "bn2"},
    ]}


def randomize(net, rng):
    """Weights, biases and statistics far from their neutral values, so that a fold that forgot one shows."""
    for name, p in net.params.items():
        if name.endswith(".var"):
            p.data[...] = rng.uniform(0.5, 2.0, p.shape)
        else:
            p.data[...] = rng.standard_normal(p.shape)


def pair(spec, rng, **kw):
    """(optimized net, the same net with optimize=False, same parameters)."""
    fast = Net(spec, optimize=True, **kw)
    randomize(fast, rng)
    plain = Net.from_arrays(spec, fast.param_arrays(), optimize=False, **kw)
    return fast, plain


def same_blobs(fast, plain, x):
    """Every blob the optimized graph computes equals the net as written's, for the input x."""
    names = [n for n in plain.blobs if n not in fast.optimized_graph().missing]
    a, b = fast.forward(data=x, outputs=names), plain.forward(data=x, outputs=names)
    for name in b:
        np.testing.assert_allclose(a[name], b[name], **TOL, err_msg=name)


def same_gradients(fast, plain, x, diffs, rtol, atol):
    """A forward of x and a backward of ``diffs`` in both nets: the learnable parameters' gradients
    are equal within rtol / atol."""
    for net in (fast, plain):
        net.forward(data=x)
        net.backward(diffs)
    for name, p in plain.params.items():
        if p.learnable:
            np.testing.assert_allclose(fast.params[name].diff, p.diff, rtol=rtol, atol=atol, err_msg=name)


def numpy_block(params, x):
    """block_spec in NumPy, straight from the formulas of each layer."""
    w = params["c1.weight"]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.einsum("nchwij,kcij->nkhw", sliding_window_view(xp, (3, 3), axis=(2, 3)), w)

    def channel(v):
        return v.reshape(1, -1, 1, 1)
    y = (y - channel(params["bn1.mean"])) / np.sqrt(channel(params["bn1.var"]) + 1e-5)
    y = y * channel(params["bn1.weight"]) + channel(params["bn1.bias"])
    y = y * channel(params["sc1.weight"]) + channel(params["sc1.bias"])
    y = np.maximum(y, 0)
    z = y.reshape(len(x), -1) @ params["ip.weight"].T + params["ip.bias"]
    return y, (z - params["bn2.mean"]) / np.sqrt(params["bn2.var"] + 1e-5)


def test_optimized_block_matches_numpy_and_the_net_as_written(rng):
    fast, plain = pair(block_spec(), rng)
    x = rng.standard_normal((3, 3, 7, 7)).astype(np.float32)
    out = fast.forward(data=x)
    graph = fast.optimized_graph()
    assert graph is not None
    kinds = {(k, tuple(names), into) for k, names, into in graph.actions}
    assert kinds == {("folded", ("bn1", "sc1"), "c1"), ("folded", ("bn2",), "ip"),
                     ("fused", ("r1",), "c1"), ("identity", ("d1",), None)}
    assert [s.layer.name for s in graph.steps if not s.fused] == ["c1", "ip"]    # 7 layers, 2 run
    params = {k: v.astype(np.float64) for k, v in fast.param_arrays().items()}
    act, ref = numpy_block(params, x.astype(np.float64))
    np.testing.assert_allclose(out["bn2"], ref, **TOL)
    np.testing.assert_allclose(fast.forward(data=x, outputs=["d1"])["d1"], act, **TOL)
    np.testing.assert_allclose(out["bn2"], plain.forward(data=x)["bn2"], **TOL)


def test_every_blob_name_still_answers(rng):
    """Blobs the graph no longer computes (c1 before its BatchNorm, bn1 before the Scale) are computed
    by running the net as written for that call; the removed Dropout's top is its bottom."""
    fast, plain = pair(block_spec(), rng)
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    graph = fast.optimized_graph()
    assert graph.missing == {"c1", "bn1", "ip"}
    for name in list(plain.blobs):
        got = fast.forward(data=x, outputs=[name])[name]
        np.testing.assert_allclose(got, plain.forward(data=x, outputs=[name])[name], **TOL, err_msg=name)
    both = fast.forward(data=x, outputs=["c1", "bn2"])
    np.testing.assert_allclose(both["c1"], plain.forward(data=x, outputs=["c1"])["c1"], **TOL)
    assert fast.optimized_graph().plan(["c1"]) is None and fast.optimized_graph().plan(["d1"]) is not None


def test_lite0_optimized_equals_as_written(rng):
    """The zoo's EfficientNet-Lite0 (conv + BatchNorm + ReLU6 everywhere, residual adds, Dropout)."""
    spec = get_spec("efficientnet_lite0", input_size=32, num_classes=10)
    fast, plain = pair(spec, np.random.default_rng(0))
    for name, p in fast.params.items():       # keep the activations O(1) through 50 layers
        if name.endswith(".weight") and p.data.ndim == 4:
            p.data[...] *= np.sqrt(2.0 / p.data[0].size)
            plain.params[name].data[...] = p.data
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    a, b = fast.forward(data=x), plain.forward(data=x)
    graph = fast.optimized_graph()
    summary = {k: sum(1 for a in graph.actions if a[0] == k) for k in ("folded", "fused", "identity")}
    bns = sum(1 for layer in plain.order if layer.type_name == "BatchNorm")
    assert summary == {"folded": bns, "fused": 33, "identity": 1}
    for name in a:
        scale = np.abs(b[name]).max()
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-4 * scale, err_msg=name)


def test_train_phase_runs_as_written_and_gradients_match(rng):
    fast, plain = pair(block_spec(), rng, phase="train")
    assert fast.optimized_graph() is None
    x = rng.standard_normal((4, 3, 7, 7)).astype(np.float32)
    dy = rng.standard_normal((4, 5)).astype(np.float32)
    for net in (fast, plain):
        net.forward(data=x)
        net.backward({"bn2": dy})
    for name in plain.params:
        np.testing.assert_array_equal(fast.params[name].diff, plain.params[name].diff, err_msg=name)
        np.testing.assert_array_equal(fast.params[name].data, plain.params[name].data, err_msg=name)


def test_backward_after_an_optimized_forward_equals_the_net_as_written(rng):
    """Test phase: backward reruns the forward as written first (layers keep state for backward)."""
    fast, plain = pair(block_spec(), rng)
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    dy = rng.standard_normal((2, 5)).astype(np.float32)
    same_gradients(fast, plain, x, {"bn2": dy}, rtol=1e-6, atol=1e-6)
    assert fast.optimized_graph() is not None


def test_finite_differences_through_the_optimized_forward(rng):
    """Central differences of the optimized forward (refolding after each step of a weight) against
    the analytic gradient, in float64: checks the folds, the refolds and backward together."""
    fast, _ = pair(block_spec(), rng)
    fast.astype(np.float64)
    x = rng.standard_normal((2, 3, 7, 7))
    g = rng.standard_normal((2, 5))

    def objective():
        return float(np.sum(g * fast.forward(data=x)["bn2"]))

    objective()
    fast.backward({"bn2": g})
    assert fast.optimized_graph() is not None
    for name in ("c1.weight", "bn1.weight", "sc1.bias", "ip.weight"):
        p = fast.params[name]
        analytic = p.diff.copy().reshape(-1)
        for i in rng.choice(p.data.size, 4, replace=False):
            old = p.data.reshape(-1)[i]
            p.data.reshape(-1)[i] = old + 1e-6
            plus = objective()
            p.data.reshape(-1)[i] = old - 1e-6
            minus = objective()
            p.data.reshape(-1)[i] = old
            numeric = (plus - minus) / 2e-6
            assert abs(numeric - analytic[i]) <= 1e-6 + 1e-5 * abs(numeric), (name, i, numeric, analytic[i])


def test_folded_weights_follow_writes_to_the_parameters(rng):
    fast, plain = pair(block_spec(), rng)
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    fast.forward(data=x)
    for net in (fast, plain):
        net.params["bn1.mean"].data[...] += 0.5          # in place
        net.params["c1.weight"].data *= 2
    np.testing.assert_allclose(fast.forward(data=x)["bn2"], plain.forward(data=x)["bn2"], **TOL)
    new = {k: v * 0.5 for k, v in fast.param_arrays().items()}
    for net in (fast, plain):
        net.load_params(new)
    np.testing.assert_allclose(fast.forward(data=x)["bn2"], plain.forward(data=x)["bn2"], **TOL)


def test_new_batch_sizes_and_float64(rng):
    fast, plain = pair(block_spec(), rng)
    for n in (1, 5, 2):
        x = rng.standard_normal((n, 3, 7, 7)).astype(np.float32)
        np.testing.assert_allclose(fast.forward(data=x)["bn2"], plain.forward(data=x)["bn2"], **TOL)
    fast.astype(np.float64)
    plain.astype(np.float64)
    x = rng.standard_normal((3, 3, 7, 7))
    a, b = fast.forward(data=x)["bn2"], plain.forward(data=x)["bn2"]
    assert a.dtype == np.float64 and fast.optimized_graph() is not None
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_what_is_not_folded(rng):
    """A conv output read by two layers, batch statistics forced at test time, an affine on an input."""
    spec = {"name": "n", "inputs": {"data": [2, 5, 5]}, "layers": [
        {"name": "c", "type": "Convolution", "bottom": "data", "top": "c", "num_output": 3, "kernel_size": 1},
        {"name": "bn", "type": "BatchNorm", "bottom": "c", "top": "bn"},
        {"name": "c2", "type": "Convolution", "bottom": "c", "top": "c2", "num_output": 3, "kernel_size": 1},
        {"name": "k", "type": "Convolution", "bottom": "data", "top": "k", "num_output": 3, "kernel_size": 1},
        {"name": "bs", "type": "BatchNorm", "bottom": "k", "top": "bs", "use_global_stats": False},
        {"name": "in_bn", "type": "BatchNorm", "bottom": "data", "top": "in_bn"},
    ]}
    fast, plain = pair(spec, rng)
    x = rng.standard_normal((4, 2, 5, 5)).astype(np.float32)
    a, b = fast.forward(data=x), plain.forward(data=x)
    assert not fast.optimized_graph().actions
    for name in b:
        np.testing.assert_allclose(a[name], b[name], **TOL)


def test_switches(monkeypatch, rng):
    spec = block_spec()
    assert Net(spec).optimize and Net(spec).optimized_graph() is not None
    assert Net(spec, optimize=False).optimized_graph() is None
    assert Net(spec, force_backward=True).optimized_graph() is None
    monkeypatch.setenv("DECAF_OPTIMIZE", "0")
    assert not enabled_by_default() and not Net(spec).optimize
    assert Net(spec, optimize=True).optimized_graph() is not None
    net = Net(spec)
    net.optimize = True
    assert net.optimized_graph() is not None


def test_in_place_dropout_of_caffenet_is_removed():
    net = Net(get_spec("caffenet"), init=False)      # (no fillers: the graph is what matters)
    graph = net.optimized_graph()
    assert ("identity", ["drop6"], None) in graph.actions and ("identity", ["drop7"], None) in graph.actions
    assert not any(a[0] == "folded" for a in graph.actions)
    assert {s.layer.name for s in graph.steps} == {layer.name for layer in net.order} - {"drop6", "drop7"}


def test_profile_shows_the_optimized_graph(rng):
    net = Net(block_spec())
    randomize(net, rng)
    result = decaf.profile(net, batch=2, iters=1, warmup=0, progress=False)
    assert [x.name for x in result.layers] == ["c1", "r1", "ip"]
    assert [x.name for x in result.layers if x.gflops == 0.0 and x.macs == 0] == ["r1"]
    notes = [n for n in result.notes if n.startswith("graph optimizer:")]
    assert notes == ["graph optimizer: 2 folded into the layer before: bn1+sc1 -> c1, bn2 -> ip",
                     "graph optimizer: 1 fused into the layer before: r1 -> c1",
                     "graph optimizer: 1 removed (identity at inference): d1"]
    result = decaf.profile(net, batch=2, iters=1, warmup=0, progress=False, backward=True)
    assert len(result.layers) == 7 and not any(n.startswith("graph optimizer") for n in result.notes)
    assert net.optimize and net.phase == "test"


def inception_spec(relu_on_concat=False, branch_read_twice=False):
    """Branches into one Concat (a nested Concat inside): conv + BatchNorm + ReLU (a new blob), conv +
    ReLU in place, max pool + conv, and two convs concatenated first."""
    def conv(name, bottom, k, kernel=1, pad=0, bias=True):
        return {"name": name, "type": "Convolution", "bottom": bottom, "top": name, "num_output": k,
                "kernel_size": kernel, "pad": pad, "bias_term": bias}
    layers = [conv("c0", "data", 4, 3, 1), {"name": "r0", "type": "ReLU", "bottom": "c0", "top": "c0"},
              conv("b1", "c0", 3, bias=False),
              {"name": "b1_bn", "type": "BatchNorm", "bottom": "b1", "top": "b1_bn", "affine": True},
              {"name": "b1_relu", "type": "ReLU", "bottom": "b1_bn", "top": "b1_relu"},
              conv("b2", "c0", 2, 3, 1), {"name": "b2_relu", "type": "ReLU", "bottom": "b2", "top": "b2"},
              {"name": "b3_pool", "type": "Pooling", "bottom": "c0", "top": "b3_pool", "kernel_size": 3,
               "stride": 1, "pad": 1},
              conv("b3", "b3_pool", 2), conv("b4a", "c0", 1), conv("b4b", "c0", 2),
              {"name": "cat_in", "type": "Concat", "bottom": ["b4a", "b4b"], "top": "cat_in"},
              conv("b5", "c0", 2), {"name": "b5_relu", "type": "ReLU", "bottom": "b5", "top": "b5_relu"},
              {"name": "cat", "type": "Concat", "bottom": ["b1_relu", "b2", "b3", "cat_in", "b5_relu"],
               "top": "cat"},
              conv("out", "cat", 5)]
    if relu_on_concat:
        layers.insert(-1, {"name": "cat_relu", "type": "Sigmoid", "bottom": "cat", "top": "cat"})
    if branch_read_twice:
        layers.append(conv("extra", "b2", 1))
    return {"name": "inception", "inputs": {"data": [3, 6, 6]}, "layers": layers}


def test_concat_in_place_at_batch_1(rng):
    fast, plain = pair(inception_spec(), rng)
    graph = fast.optimized_graph()
    assert {(k, names[0]) for k, names, _ in graph.actions if k == "concat"} == {("concat", "cat"), ("concat", "cat_in")}

    def check(n):
        x = rng.standard_normal((n, 3, 6, 6)).astype(np.float32)
        for name in ("out", "cat", "cat_in", "b1_relu", "b2", "b3", "b4b", "b1", "b5", "b5_relu"):
            want = plain.forward(data=x, outputs=[name])[name]
            np.testing.assert_allclose(fast.forward(data=x, outputs=[name])[name], want, **TOL, err_msg=name)
        np.testing.assert_allclose(fast.forward(data=x)["out"], plain.forward(data=x)["out"], **TOL)
        return all(np.shares_memory(fast.blobs[b].data, fast.blobs["cat"].data)
                   for b in ("b1_relu", "b2", "b3", "cat_in", "b4a", "b4b", "b5_relu"))

    assert check(1)          # the producers write into the concatenation
    assert not check(3)      # channel slices of 3 images are not contiguous: copies
    assert check(1)
    fast.set_phase("train")
    plain.set_phase("train")
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    dy = rng.standard_normal((1, 5, 6, 6)).astype(np.float32)
    same_gradients(fast, plain, x, {"out": dy}, rtol=1e-5, atol=1e-5)
    assert np.shares_memory(fast.blobs["b2"].data, fast.blobs["cat"].data)


@pytest.mark.parametrize("kw", [{"relu_on_concat": True}, {"branch_read_twice": True}])
def test_concat_copies_when_a_view_would_be_unsafe(rng, kw):
    """A layer working in place on the concatenation would change its bottoms too; a bottom read by
    another layer as well (through a Split, which shares its data) cannot live in the concatenation."""
    fast, plain = pair(inception_spec(**kw), rng)
    same_blobs(fast, plain, rng.standard_normal((1, 3, 6, 6)).astype(np.float32))
    concat = {names[0] for k, names, _ in fast.optimized_graph().actions if k == "concat"}
    assert concat == {"cat_in"}          # the inner one is still safe


def dense_spec(extra_reader=False, relu_in_place_on_member=False):
    """A DenseNet block: each layer concatenates the block's input and every map before it (one
    Concat per layer, so each map is read by several, through Splits), BatchNorm + ReLU + conv."""
    layers = [{"name": "c0", "type": "Convolution", "bottom": "data", "top": "f0", "num_output": 4,
               "kernel_size": 3, "pad": 1}]
    maps = ["f0"]
    for k in range(1, 4):
        layers += [{"name": f"cat{k}", "type": "Concat", "bottom": list(maps), "top": f"cat{k}"},
                   {"name": f"bn{k}", "type": "BatchNorm", "bottom": f"cat{k}", "top": f"bn{k}", "affine": True},
                   {"name": f"relu{k}", "type": "ReLU", "bottom": f"bn{k}", "top": f"relu{k}"},
                   {"name": f"conv{k}", "type": "Convolution", "bottom": f"relu{k}", "top": f"f{k}",
                    "num_output": 3, "kernel_size": 3, "pad": 1}]
        maps.append(f"f{k}")
    layers += [{"name": "block", "type": "Concat", "bottom": list(maps), "top": "block"},
               {"name": "out", "type": "Convolution", "bottom": "block", "top": "out", "num_output": 5,
                "kernel_size": 1}]
    if extra_reader:
        layers.append({"name": "side", "type": "Convolution", "bottom": "f2", "top": "side", "num_output": 2,
                       "kernel_size": 1})
    if relu_in_place_on_member:
        layers.insert(2, {"name": "cat1_relu", "type": "ReLU", "bottom": "cat1", "top": "cat1"})
    return {"name": "dense", "inputs": {"data": [3, 6, 6]}, "layers": layers}


def test_dense_concatenation_chain_copies_nothing_at_batch_1(rng, monkeypatch):
    """Each Concat's inputs are a prefix of the block Concat's: every map lives in the block's top and
    each Concat's top is a prefix view of it, so no Concat copies at batch 1. At batch 2 a prefix of
    channels is not contiguous: the maps keep their arrays and each is copied into the block's top
    once (by the first Concat that has it), the members' tops prefix views with the images apart,
    read so by the BatchNorms. The values always equal the net as written, backward included."""
    from decaf.layers.shape import Concat
    calls = []
    real = Concat.forward
    monkeypatch.setattr(Concat, "forward", lambda self, b, t: calls.append(self.name) or real(self, b, t))
    copies = []
    real_copyto = np.copyto
    monkeypatch.setattr(np, "copyto", lambda dst, src, **k: copies.append(src.shape[1]) or real_copyto(dst, src, **k))
    fast, plain = pair(dense_spec(), rng)
    chains = [names for k, names, _ in fast.optimized_graph().actions if k == "concat"]
    assert chains == [["cat1", "cat2", "cat3", "block"]]

    def check(n):
        x = rng.standard_normal((n, 3, 6, 6)).astype(np.float32)
        want = plain.forward(data=x, outputs=["out", "cat2", "block"])
        calls.clear()
        copies.clear()
        got = fast.forward(data=x, outputs=["out", "cat2", "block"])
        for name in want:
            np.testing.assert_allclose(got[name], want[name], **TOL, err_msg=name)
        return len(calls)

    assert check(1) == 0 and copies == []
    assert np.shares_memory(fast.blobs["f1"].data, fast.blobs["block"].data)
    assert np.shares_memory(fast.blobs["cat3"].data, fast.blobs["block"].data)
    assert check(2) == 0
    assert copies == [4, 3, 3, 3]                      # f0 (4 channels), then f1, f2, f3 once each
    assert not np.shares_memory(fast.blobs["f1"].data, fast.blobs["block"].data)
    cat3 = fast.blobs["cat3"].data
    assert np.shares_memory(cat3, fast.blobs["block"].data) and not cat3.flags.c_contiguous
    assert check(1) == 0
    # only the maps a subset of the net needs: cat2's own input, and what cat1 (before it) copied
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    fast.forward(data=x)
    np.testing.assert_allclose(fast.forward(data=x * 2, outputs=["bn2"])["bn2"],
                               plain.forward(data=x * 2, outputs=["bn2"])["bn2"], **TOL)
    fast.set_phase("train")
    plain.set_phase("train")
    for n in (1, 2):
        x = rng.standard_normal((n, 3, 6, 6)).astype(np.float32)
        dy = rng.standard_normal((n, 5, 6, 6)).astype(np.float32)
        same_gradients(fast, plain, x, {"out": dy}, rtol=1e-4, atol=1e-5)


def test_dense_chain_copies_as_before_when_a_member_is_read_by_a_contiguous_reader(rng, monkeypatch):
    """A Concat of the chain whose top a Convolution also reads (it needs contiguous images): at
    batch 2 the chain's Concats copy as they did before, with the same values as the net as written."""
    from decaf.layers.shape import Concat
    calls = []
    real = Concat.forward
    monkeypatch.setattr(Concat, "forward", lambda self, b, t: calls.append(self.name) or real(self, b, t))
    spec = dense_spec()
    spec["layers"].append({"name": "side", "type": "Convolution", "bottom": "cat2", "top": "side",
                           "num_output": 2, "kernel_size": 1})
    fast, plain = pair(spec, rng)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    want = plain.forward(data=x)
    got = fast.forward(data=x)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], **TOL, err_msg=name)
    assert sorted(set(calls)) == ["block", "cat1", "cat2", "cat3"]
    assert fast.blobs["cat3"].data.flags.c_contiguous


@pytest.mark.parametrize("kw", [{"extra_reader": True}, {"relu_in_place_on_member": True}])
def test_dense_chain_left_alone_when_a_view_would_be_unsafe(rng, kw):
    """A map read by a layer outside the chain, or a layer working in place on a member's top: no
    chain; the values still equal the net as written."""
    fast, plain = pair(dense_spec(**kw), rng)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(fast.forward(data=x)["out"], plain.forward(data=x)["out"], **TOL)
    chains = [names for k, names, _ in fast.optimized_graph().actions if k == "concat" and len(names) > 1]
    assert chains == []


def test_imported_onnx_graph_optimized_matches_onnx_runtime(tmp_path, rng):
    """An imported graph (every tensor a new blob, BatchNormalization after each Conv, a branch
    Concat, a residual Add): the optimized decaf forward against ONNX Runtime."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from decaf.io.onnx_convert import onnx_to_net

    def f32(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    inits = {}

    def conv_bn(name, x, cin, cout, k, relu):
        inits[f"{name}.w"] = f32(cout, cin, k, k, scale=0.5)
        for part, value in (("g", 1 + 0.2 * f32(cout)), ("b", f32(cout)), ("m", f32(cout)),
                            ("v", rng.uniform(0.5, 2, cout).astype(np.float32))):
            inits[f"{name}.{part}"] = value
        nodes = [helper.make_node("Conv", [x, f"{name}.w"], [f"{name}_c"], pads=[k // 2] * 4),
                 helper.make_node("BatchNormalization", [f"{name}_c"] + [f"{name}.{p}" for p in "gbmv"],
                                  [f"{name}_bn"])]
        if relu:
            nodes.append(helper.make_node("Relu", [f"{name}_bn"], [f"{name}_r"]))
        return nodes, nodes[-1].output[0]

    nodes, x = conv_bn("stem", "x", 3, 4, 3, True)
    a, ya = conv_bn("a", x, 4, 2, 1, True)
    b, yb = conv_bn("b", x, 4, 2, 3, False)
    m, ym = conv_bn("m", "cat", 4, 4, 1, False)
    inits["fc.w"], inits["fc.b"] = f32(5, 4), f32(5)
    nodes += a + b + [helper.make_node("Concat", [ya, yb], ["cat"], axis=1)] + m + [
        helper.make_node("Add", [ym, x], ["sum"]), helper.make_node("Relu", ["sum"], ["sum_r"]),
        helper.make_node("GlobalAveragePool", ["sum_r"], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    path = tmp_path / "g.onnx"
    onnx.save(model, str(path))
    x = f32(1, 3, 8, 8)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    spec, arrays = onnx_to_net(path)
    net = Net.from_arrays(spec, arrays)
    ours = net.forward(x=x)["y"]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())
    kinds = [k for k, _, _ in net.optimized_graph().actions]
    assert kinds.count("folded") == 4 and kinds.count("concat") == 1
    assert kinds.count("residual") == 1 and kinds.count("fused") == 3     # m + x, then its ReLU: in m's epilogue


def test_forward_steps_and_output_blob_as_a_server_runs_them(rng):
    """decaf serve runs the steps itself (to time each): the same values as forward, by blob name."""
    fast, plain = pair(block_spec(), rng)
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    for names in (["bn2", "d1"], ["c1", "d1"]):       # the second needs the net as written
        steps = fast.forward_steps(names)
        fast.set_inputs({"data": x})
        for step in steps:
            step()
        want = plain.forward(data=x, outputs=names)
        for name in names:
            np.testing.assert_allclose(fast.output_blob(name).data, want[name], **TOL, err_msg=name)
    assert [s.layer.name for s in fast.forward_steps(["bn2"])] == ["c1", "r1", "ip"]


def test_training_then_testing_refolds(rng):
    """A train-phase step moves BatchNorm's running statistics and the weights (SGD by hand); the next
    test-phase forward folds the new values."""
    fast, plain = pair(block_spec(), rng)
    x = rng.standard_normal((4, 3, 7, 7)).astype(np.float32)
    fast.forward(data=x)                                  # folded once with the first values
    before = fast.params["bn1.mean"].data.copy()
    dy = rng.standard_normal((4, 5)).astype(np.float32)
    for net in (fast, plain):
        net.set_phase("train")
        net.forward(data=x)
        net.backward({"bn2": dy})
        for p in net.params.values():
            if p.learnable:
                p.data -= 0.1 * p.diff
        net.set_phase("test")
    np.testing.assert_array_equal(fast.params["bn1.mean"].data, plain.params["bn1.mean"].data)
    assert not np.allclose(fast.params["bn1.mean"].data, before)      # the statistics moved
    np.testing.assert_allclose(fast.forward(data=x)["bn2"], plain.forward(data=x)["bn2"], **TOL)


def test_packed_convolution_weights_follow_writes_and_thread_counts(rng, monkeypatch):
    """Convolutions keep their weights packed for the direct kernel between forwards (in the
    optimized graph and in the net as written alike); a write through Param.data (in place, a new array, load_params)
    or another thread count makes them repack: the outputs always equal the net as written."""
    spec = {"name": "packed", "inputs": {"data": [16, 9, 9]}, "layers": [
        {"name": "c1", "type": "Convolution", "bottom": "data", "top": "c1", "num_output": 32,
         "kernel_size": 3, "pad": 1},
        {"name": "r1", "type": "ReLU", "bottom": "c1", "top": "c1"},
        {"name": "c2", "type": "Convolution", "bottom": "c1", "top": "c2", "num_output": 32,
         "kernel_size": 3, "stride": 2}]}
    fast, plain = pair(spec, rng)
    x = rng.standard_normal((1, 16, 9, 9)).astype(np.float32)
    packs = []
    real_pack = decaf.kernels.conv_pack
    monkeypatch.setattr(decaf.kernels, "conv_pack", lambda *a: packs.append(1) or real_pack(*a))

    def same():
        np.testing.assert_allclose(fast.forward(data=x)["c2"], plain.forward(data=x)["c2"], **TOL)

    same()
    direct = decaf.kernels.conv_packing(x, np.empty((32, 16, 3, 3), np.float32), 1, (3, 3), (1, 1),
                                        (1, 1, 1, 1), (1, 1), (9, 9))[0] > 0
    assert len(packs) == (4 if direct else 0)            # each convolution of each net packed once (direct only)
    same()
    same()
    assert len(packs) == (4 if direct else 0)            # and kept while their weights are not looked at
    for net in (fast, plain):
        net.params["c1.weight"].data[:, :, 1, 1] += 1.0    # in place, through Param.data
    same()
    for net in (fast, plain):
        net.params["c2.weight"].data = -net.params["c2.weight"].data      # a new array
    same()
    new = {k: v * 0.5 for k, v in fast.param_arrays().items()}
    for net in (fast, plain):
        net.load_params(new)
    same()
    for threads in (1, 2):
        with decaf.threads.using_threads(threads):
            same()
    for batch in (3, 1, 3):                                # the plan (and so the packed form) may change
        x = rng.standard_normal((batch, 16, 9, 9)).astype(np.float32)
        same()


def shuffle_spec(relu_in_place_on_view=False, sigmoid_output_read_twice=False, dropout_in_place_on_view=False):
    """ShuffleNet's unit shape: conv -> Reshape to groups -> Transpose -> Reshape back (the channel
    shuffle) -> two channel Slices (through the Split the net inserts) -> convs -> Concat;
    Flatten -> InnerProduct at the end. Variants: a ReLU in place on a Reshape's top; a Sigmoid whose
    output is also read by another layer (its backward reads its own output); a Sigmoid, then a
    Dropout in place on the Reshape's top (gone from the optimized graph, there when training)."""
    layers = [
        {"name": "c0", "type": "Convolution", "bottom": "data", "top": "c0", "num_output": 8, "kernel_size": 1},
        {"name": "r1", "type": "Reshape", "bottom": "c0", "top": "r1", "shape": [2, 4, 5, 6]},
        {"name": "t", "type": "Transpose", "bottom": "r1", "top": "t", "perm": [0, 2, 1, 3, 4]},
        {"name": "r2", "type": "Reshape", "bottom": "t", "top": "r2", "shape": [8, 5, 6]},
        {"name": "lo", "type": "Slice", "bottom": "r2", "top": "lo", "axes": [1], "starts": [0], "ends": [4]},
        {"name": "hi", "type": "Slice", "bottom": "r2", "top": "hi", "axes": [1], "starts": [4], "ends": [8]},
        {"name": "c1", "type": "Convolution", "bottom": "lo", "top": "c1", "num_output": 4, "kernel_size": 3,
         "pad": 1},
        {"name": "c2", "type": "Convolution", "bottom": "hi", "top": "c2", "num_output": 4, "kernel_size": 1},
        {"name": "cat", "type": "Concat", "bottom": ["c1", "c2"], "top": "cat"},
        {"name": "flat", "type": "Flatten", "bottom": "cat", "top": "flat"},
        {"name": "ip", "type": "InnerProduct", "bottom": "flat", "top": "out", "num_output": 3},
    ]
    if relu_in_place_on_view:
        layers.insert(2, {"name": "relu", "type": "ReLU", "bottom": "r1", "top": "r1"})
    if dropout_in_place_on_view:
        layers.insert(1, {"name": "sig", "type": "Sigmoid", "bottom": "c0", "top": "s0"})
        layers[2] = dict(layers[2], bottom="s0")
        layers.insert(3, {"name": "drop", "type": "Dropout", "bottom": "r1", "top": "r1", "dropout_ratio": 0.5})
    if sigmoid_output_read_twice:
        layers.insert(1, {"name": "sig", "type": "Sigmoid", "bottom": "c0", "top": "s0"})
        layers[2] = dict(layers[2], bottom="s0")
        layers.append({"name": "pool", "type": "Pooling", "bottom": "s0", "top": "pool", "pool": "MAX",
                       "kernel_size": 2, "stride": 2})
    return {"name": "shuffle", "inputs": {"data": [3, 5, 6]}, "layers": layers}


def test_reshapes_and_slices_are_views_of_their_bottoms(rng):
    """Reshape, Flatten and a channel Slice at batch 1 write nothing: their tops share the bottoms'
    memory; a Slice of several images (not contiguous) copies; the values equal the net as written
    at every batch size, for every blob, and backward after an optimized forward too."""
    fast, plain = pair(shuffle_spec(), rng)
    graph = fast.optimized_graph()
    views = {names[0] for kind, names, _ in graph.actions if kind == "view"}
    assert views == {"r1", "r2", "lo", "hi", "flat"}

    def check(n):
        x = rng.standard_normal((n, 3, 5, 6)).astype(np.float32)
        same_blobs(fast, plain, x)
        np.testing.assert_allclose(fast.forward(data=x)["out"], plain.forward(data=x)["out"], **TOL)
        shared = {name: np.shares_memory(fast.blobs[name].data, fast.blobs[src].data)
                  for name, src in (("r1", "c0"), ("r2", "t"), ("lo", "t"), ("hi", "t"), ("flat", "cat"))}
        return shared

    assert all(check(1).values())
    at_3 = check(3)
    assert at_3["r1"] and at_3["r2"] and at_3["flat"] and not at_3["lo"] and not at_3["hi"]
    assert all(check(1).values())
    x = rng.standard_normal((1, 3, 5, 6)).astype(np.float32)
    same_gradients(fast, plain, x, {"out": rng.standard_normal((1, 3)).astype(np.float32)}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw", [{"relu_in_place_on_view": True}, {"sigmoid_output_read_twice": True},
                                {"dropout_in_place_on_view": True}])
def test_views_only_where_sharing_memory_changes_nothing_read(rng, kw):
    """A layer working in place on a Reshape's top, in the optimized graph or only in the net as
    written (a Dropout, which training runs), would change its bottom too: that Reshape copies. A
    bottom another layer also reads (through the Split the net inserts) may be shared, since nothing
    writes it after its producer: here a Sigmoid's output, which its backward reads again. Values
    and gradients equal the net as written."""
    fast, plain = pair(shuffle_spec(**kw), rng)
    views = {names[0] for kind, names, _ in fast.optimized_graph().actions if kind == "view"}
    assert {"r2", "lo", "hi", "flat"} <= views
    x = rng.standard_normal((1, 3, 5, 6)).astype(np.float32)
    same_blobs(fast, plain, x)
    if "relu_in_place_on_view" in kw or "dropout_in_place_on_view" in kw:
        source = "c0" if "relu_in_place_on_view" in kw else "s0"
        assert "r1" not in views and not np.shares_memory(fast.blobs["r1"].data, fast.blobs[source].data)
    else:
        assert "r1" in views and np.shares_memory(fast.blobs["r1"].data, fast.blobs["s0"].data)
    fast.set_phase("train")
    plain.set_phase("train")
    same_gradients(fast, plain, x, {"out": rng.standard_normal((1, 3)).astype(np.float32)}, rtol=1e-5, atol=1e-5)
