"""Kernel calls checked once and made many times (kernels.prepare_conv_forward and
prepare_depthwise_conv_forward; the layers of decaf/layers/conv.py keep one between passes).

A prepared call's run() must compute what a fresh call computes from what the arrays hold at that
moment; a layer must prepare again whenever anything its call depends on changed (the blobs'
arrays, the parameters through Param.data, the thread count, the backend). The reference for the
values is the NumPy backend (kernels/reference.py), an independent implementation; float32
tolerances as in tests/test_optimize.py.
"""
import numpy as np
import pytest

import decaf
import decaf.blas as blas
from decaf import Net, kernels
from decaf.threads import using_threads

TOL = dict(rtol=1e-5, atol=1e-5)
compiled = pytest.mark.skipif(kernels._compiled is None or not blas.have_own_blas(),
                              reason="compiled kernels or decaf's OpenBLAS not available")


@compiled
@pytest.mark.parametrize("threads", [1, 2])
def test_prepared_convolution_reads_the_arrays_at_each_run(threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 8, 9, 9)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    res = rng.standard_normal((3, 16, 9, 9)).astype(np.float32)
    y, want = np.empty_like(res), np.empty_like(res)
    geometry = ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    with using_threads(threads):
        work = np.empty(max(kernels.conv_work_size(x, w, 1, *geometry, (9, 9)), 1), np.float32)
        call = kernels.prepare_conv_forward(x, w, bias, y, work, *geometry, 1, act=("clamp", 0.0, 6.0, 0.0),
                                            residual=res)
        for _ in range(3):
            call.run()
            with kernels.using_backend("numpy"):
                kernels.conv_forward(x, w, bias, want, None, *geometry, 1, act=("clamp", 0.0, 6.0, 0.0),
                                     residual=res)
            np.testing.assert_allclose(y, want, **TOL)
            x[...] = rng.standard_normal(x.shape)          # new values in the same arrays
            w *= -0.5
            bias += 1.0
            res[...] = rng.standard_normal(res.shape)


@compiled
def test_prepared_depthwise_reads_the_arrays_at_each_run():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 10, 10)).astype(np.float32)
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)
    y, want = np.empty((2, 6, 5, 5), np.float32), np.empty((2, 6, 5, 5), np.float32)
    args = ((2, 2), (1, 1, 1, 1), (1, 1))
    call = kernels.prepare_depthwise_conv_forward(x, w, y, *args, bias, act=("leaky", 0.0, 0.0, 0.1))
    for _ in range(3):
        call.run()
        with kernels.using_backend("numpy"):
            kernels.depthwise_conv_forward(x, w, want, *args, bias, act=("leaky", 0.0, 0.0, 0.1))
        np.testing.assert_allclose(y, want, **TOL)
        x[...] = rng.standard_normal(x.shape)
        w += 0.25


@compiled
def test_preparing_checks_what_the_call_would():
    x = np.zeros((1, 4, 5, 5), np.float32)
    w = np.zeros((8, 4, 3, 3), np.float32)
    geometry = ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    work = np.empty(max(kernels.conv_work_size(x, w, 1, *geometry, (5, 5)), 1), np.float32)
    with pytest.raises(ValueError, match="y has shape"):
        kernels.prepare_conv_forward(x, w, None, np.zeros((1, 7, 5, 5), np.float32), work, *geometry, 1)
    with pytest.raises(ValueError, match="bias has shape"):
        kernels.prepare_conv_forward(x, w, np.zeros(3, np.float32), np.zeros((1, 8, 5, 5), np.float32), work,
                                     *geometry, 1)
    with pytest.raises(ValueError, match="unknown activation"):
        kernels.prepare_conv_forward(x, w, None, np.zeros((1, 8, 5, 5), np.float32), work, *geometry, 1,
                                     act=("swishy", 0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="y has shape"):
        kernels.prepare_depthwise_conv_forward(x, np.zeros((4, 1, 3, 3), np.float32),
                                               np.zeros((1, 5, 5, 5), np.float32), (1, 1), (1, 1, 1, 1), (1, 1))


def mobile_spec():
    """A MobileNet block: a 1x1 expansion with ReLU6, a depthwise 3x3 with ReLU6, a 1x1 projection
    whose output is added to the block's input."""
    return {"name": "block", "inputs": {"data": [8, 6, 6]}, "layers": [
        {"name": "expand", "type": "Convolution", "bottom": "data", "top": "e", "num_output": 24, "kernel_size": 1},
        {"name": "r1", "type": "ReLU6", "bottom": "e", "top": "e"},
        {"name": "dw", "type": "Convolution", "bottom": "e", "top": "d", "num_output": 24, "kernel_size": 3,
         "pad": 1, "group": 24},
        {"name": "r2", "type": "ReLU6", "bottom": "d", "top": "d"},
        {"name": "project", "type": "Convolution", "bottom": "d", "top": "p", "num_output": 8, "kernel_size": 1},
        {"name": "add", "type": "Eltwise", "bottom": ["p", "data"], "top": "out"},
    ]}


@compiled
@pytest.mark.parametrize("optimize", [True, False])
def test_layers_keep_their_calls_and_prepare_again_when_anything_changes(optimize, monkeypatch):
    # net runs the compiled kernels; ref, the same net as written with the same parameters and the
    # same writes into them, the NumPy backend
    rng = np.random.default_rng(2)
    net = Net(mobile_spec(), optimize=optimize)
    for p in net.params.values():
        p.data[...] = rng.standard_normal(p.shape) * 0.5
    ref = Net.from_arrays(mobile_spec(), net.param_arrays(), optimize=False)
    prepared = []
    for name in ("prepare_conv_forward", "prepare_depthwise_conv_forward"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, real=real, **k: prepared.append(1) or real(*a, **k))

    def check(batch=2):
        x = rng.standard_normal((batch, 8, 6, 6)).astype(np.float32)
        got = net.forward(data=x)["out"]
        seen = len(prepared)
        with kernels.using_backend("numpy"):
            want = ref.forward(data=x)["out"]
        del prepared[seen:]                        # (ref's own calls)
        np.testing.assert_allclose(got, want, **TOL)

    check()
    assert len(prepared) == 3                      # one call per convolution
    check()
    check()
    assert len(prepared) == 3                      # kept: same arrays, parameters and threads
    for n in (net, ref):
        n.params["dw.bias"].data[:] += 1.0         # in place, through Param.data
    check()
    assert len(prepared) == 4
    for n in (net, ref):
        n.params["project.weight"].data = -n.params["project.weight"].data     # a new array
    check()
    assert len(prepared) == 5
    check(batch=3)                                 # new blobs
    assert len(prepared) == 8
    with using_threads(1 if decaf.get_num_threads() != 1 else 2):
        check(batch=3)
    assert len(prepared) == 11
    with kernels.using_backend("numpy"):           # another backend
        net.forward(data=np.zeros((3, 8, 6, 6), np.float32))
    assert len(prepared) == 14
