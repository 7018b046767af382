"""Net.share_memory (decaf/memory.py): the optimized forward with the blobs of values not asked
for sharing a few arrays gives the same outputs as the net as written (optimize=False), for the
default outputs and for any requested blobs, across batch sizes, with backward and training after
it, with the switch off again; and it takes less memory. Nets: the graph optimizer's test shapes
(folds, residual-free branches into Concats in place, DenseNet's chains, ShuffleNet's views and
Slices through a Split) and EfficientNet-Lite0 (residual adds fused into convolutions, depthwise).

Tolerance: rtol = atol = 1e-5 against the net as written (float32; folded weights are rounded once
more); the same net with and without sharing: identical (the same kernels on the same values)."""
import numpy as np
import pytest

from decaf import Net
from decaf.models import get_spec

from test_optimize import block_spec, dense_spec, inception_spec, pair, randomize, shuffle_spec

TOL = dict(rtol=1e-5, atol=1e-5)
SPECS = {"block": (block_spec, (3, 7, 7)), "inception": (inception_spec, (3, 6, 6)),
         "dense": (dense_spec, (3, 6, 6)), "shuffle": (shuffle_spec, (3, 5, 6))}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_outputs_and_requested_blobs_equal_the_net_as_written(rng, name):
    make, shape = SPECS[name]
    fast, plain = pair(make(), rng)
    fast.share_memory()
    computed = [n for n in plain.blobs if n not in fast.optimized_graph().missing]
    for batch in (1, 3, 1):        # batch 1 (concatenations in place), another size, back again
        x = rng.standard_normal((batch,) + shape).astype(np.float32)
        want = plain.forward(data=x)
        got = fast.forward(data=x)
        for out in want:
            np.testing.assert_allclose(got[out], want[out], **TOL, err_msg=f"{name} b{batch} {out}")
        every = fast.forward(data=x, outputs=computed)        # all asked for: none may be reused
        ref = plain.forward(data=x, outputs=computed)
        for blob in computed:
            np.testing.assert_allclose(every[blob], ref[blob], **TOL, err_msg=f"{name} b{batch} {blob}")
        for blob in computed[::3]:                             # one at a time: other plans
            np.testing.assert_allclose(fast.forward(data=x, outputs=[blob])[blob], ref[blob], **TOL,
                                       err_msg=f"{name} b{batch} {blob} alone")


def lite0_pair(rng):
    spec = get_spec("efficientnet_lite0")
    fast = Net(spec)
    randomize(fast, rng)
    for name, p in fast.params.items():       # keep the activations O(1) through 16 blocks
        if not name.endswith((".var", ".mean")):
            p.data[...] *= 0.3
    shared = Net.from_arrays(spec, fast.param_arrays()).share_memory()
    return fast, shared


def test_lite0_shares_memory_and_gives_identical_outputs(rng):
    own, shared = lite0_pair(rng)
    x = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
    a, b = own.forward(data=x), shared.forward(data=x)
    for out in a:
        np.testing.assert_array_equal(b[out], a[out])
    plan = shared.optimized_graph()._shared
    assert plan is not None and plan.blob_count > 50
    assert plan.shared_bytes < plan.own_bytes / 2, (plan.shared_bytes, plan.own_bytes)
    def memory_of(net):      # the distinct arrays the blobs' values live in
        roots = set()
        for blob in net.blobs.values():
            array = blob.data
            while isinstance(array.base, np.ndarray):
                array = array.base
            roots.add(id(array))
        return len(roots)
    assert memory_of(shared) < memory_of(own) - 30, (memory_of(shared), memory_of(own))   # (65 against 112)
    # a feature blob asked for (DeCAF-style) keeps its values while later layers run
    computed = [n for n in own.blobs if n not in own.optimized_graph().missing]
    feature = computed[len(computed) // 2]
    np.testing.assert_array_equal(shared.forward(data=x, outputs=[feature])[feature],
                                  own.forward(data=x, outputs=[feature])[feature])
    # off again: every blob its own array, and its values after a forward
    shared.share_memory(False)
    b = shared.forward(data=x)
    for out in a:
        np.testing.assert_array_equal(b[out], a[out])
    for name in own.blobs:
        if name not in own.optimized_graph().missing:
            np.testing.assert_array_equal(shared.output_blob(name).data, own.output_blob(name).data,
                                          err_msg=name)


def test_backward_and_training_after_a_shared_forward(rng):
    fast, plain = pair(inception_spec(), rng)
    fast.share_memory()
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    dy = rng.standard_normal((2, 5, 6, 6)).astype(np.float32)
    for net in (fast, plain):
        net.forward(data=x)
        net.backward({"out": dy})     # (test phase: reruns the forward as written, own arrays)
    for name, p in plain.params.items():
        if p.learnable:
            np.testing.assert_allclose(fast.params[name].diff, p.diff, rtol=1e-5, atol=1e-6, err_msg=name)
    fast.set_phase("train")
    plain.set_phase("train")
    ta, tb = fast.forward(data=x), plain.forward(data=x)
    np.testing.assert_allclose(ta["out"], tb["out"], **TOL)
    fast.set_phase("test")
    plain.set_phase("test")
    np.testing.assert_allclose(fast.forward(data=x)["out"], plain.forward(data=x)["out"], **TOL)


def test_profile_runs_on_shared_memory(rng):
    from decaf.profile import profile
    fast, plain = pair(dense_spec(), rng)
    fast.share_memory()
    result = profile(fast, batch=2, iters=2, warmup=1, threads=1, progress=False)
    assert result.layers and result.net_forward_ms > 0
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(fast.forward(data=x)["out"], plain.forward(data=x)["out"], **TOL)
