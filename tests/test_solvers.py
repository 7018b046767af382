"""Solvers and learning-rate schedules: hand-computed updates, loss decrease on a convex problem,
state round trips, frozen and non-learnable parameters, clipping, bad arguments.

Expected numbers are worked out by hand from the update formulas in each module's docstring."""
import numpy as np
import pytest

import decaf
from decaf.blob import Param
from decaf.solvers import LBFGS, SGD, Adagrad, Adam, Schedule, make_solver


def param(values, name="w", diff=None, **kw):
    p = Param((len(values),), name, **kw)
    p.data[...] = values
    if diff is not None:
        p.diff[...] = diff
    return p


def close(p, expected):
    np.testing.assert_allclose(p.data, np.asarray(expected, np.float32), rtol=1e-6, atol=1e-7)


# ---- schedules -----------------------------------------------------------------------------

@pytest.mark.parametrize("schedule, it, expected", [
    (Schedule("fixed", 0.1), 1000, 0.1),
    (Schedule("step", 0.1, gamma=0.5, step=10), 9, 0.1),
    (Schedule("step", 0.1, gamma=0.5, step=10), 10, 0.05),
    (Schedule("step", 0.1, gamma=0.5, step=10), 25, 0.025),
    (Schedule("multistep", 0.1, gamma=0.5, steps=[5, 8]), 4, 0.1),
    (Schedule("multistep", 0.1, gamma=0.5, steps=[5, 8]), 5, 0.05),
    (Schedule("multistep", 0.1, gamma=0.5, steps=[5, 8]), 8, 0.025),
    (Schedule("exp", 0.1, gamma=0.9), 2, 0.081),
    (Schedule("inv", 0.1, gamma=0.1, power=0.5), 30, 0.05),          # 0.1 * 4^-0.5
    (Schedule("poly", 0.1, power=2, max_iter=10), 5, 0.025),         # 0.1 * 0.5^2
    (Schedule("poly", 0.1, power=2, max_iter=10), 12, 0.0),
    (Schedule("cosine", 0.1, max_iter=10, min_lr=0.01), 0, 0.1),
    (Schedule("cosine", 0.1, max_iter=10, min_lr=0.01), 5, 0.055),   # 0.01 + 0.09 * (1 + 0) / 2
    (Schedule("cosine", 0.1, max_iter=10, min_lr=0.01), 10, 0.01),
])
def test_schedule_values(schedule, it, expected):
    assert schedule(it) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_schedule_round_trip_and_errors():
    s = Schedule("multistep", 0.1, gamma=0.5, steps=[5, 8])
    assert Schedule(**s.to_dict())(7) == s(7)
    with pytest.raises(ValueError, match="needs step"):
        Schedule("step", 0.1, gamma=0.1)
    with pytest.raises(ValueError, match="unknown learning-rate policy 'linear'"):
        Schedule("linear", 0.1)
    with pytest.raises(ValueError, match="positive"):
        Schedule("fixed", -1)
    with pytest.raises(ValueError, match="increasing"):
        Schedule("multistep", 0.1, gamma=0.1, steps=[8, 5])


# ---- hand-computed updates -----------------------------------------------------------------

def test_sgd_momentum_decay_and_multipliers_by_hand():
    w = param([1.0, -2.0], "w", diff=[0.5, 0.25])
    b = param([0.5], "b", diff=[1.0], lr_mult=2, decay_mult=0)
    solver = SGD([w, b], lr=0.1, momentum=0.9, weight_decay=0.1)
    assert solver.step() == 0.1
    # g = diff + 0.1 * w = [0.6, 0.05]; v = 0.1 g; w - v
    close(w, [0.94, -2.005])
    # b: g = 1 (no decay), local rate 0.2: v = 0.2, b = 0.3
    close(b, [0.3])
    w.diff[...] = [0.5, 0.25]
    b.diff[...] = [1.0]
    solver.step()
    # g = [0.5 + 0.094, 0.25 - 0.2005]; v = 0.9 [0.06, 0.005] + 0.1 g = [0.1134, 0.00945]
    close(w, [0.8266, -2.01445])
    # v = 0.9 * 0.2 + 0.2 * 1 = 0.38; b = 0.3 - 0.38
    close(b, [-0.08])
    assert solver.iter == 2


def test_plain_sgd_and_nesterov_by_hand():
    w = param([1.0], diff=[0.5])
    SGD([w], lr=0.1).step()
    close(w, [0.95])

    w = param([1.0], diff=[0.5])
    solver = SGD([w], lr=0.1, momentum=0.9, nesterov=True)
    solver.step()
    # v = 0.05; w -= 1.9 * 0.05 - 0.9 * 0
    close(w, [0.905])
    w.diff[...] = 0.5
    solver.step()
    # v = 0.9 * 0.05 + 0.05 = 0.095; w -= 1.9 * 0.095 - 0.9 * 0.05 = 0.1355
    close(w, [0.7695])


def test_adagrad_by_hand():
    w = param([1.0, 1.0], diff=[0.5, -2.0])
    solver = Adagrad([w], lr=0.1)
    solver.step()
    # h = [0.25, 4]; w -= 0.1 * g / sqrt(h) = 0.1 * [1, -1]
    close(w, [0.9, 1.1])
    w.diff[...] = [0.5, -2.0]
    solver.step()
    # h = [0.5, 8]; steps 0.1 * 0.5 / sqrt(0.5) = 0.0707106781 and 0.1 * -2 / sqrt(8) = -0.0707106781
    close(w, [0.8292893219, 1.1707106781])


def test_adam_by_hand():
    w = param([1.0], diff=[0.5])
    solver = Adam([w], lr=0.01)
    solver.step()
    # m = 0.05, v = 0.00025; m_hat = 0.5, v_hat = 0.25; w -= 0.01 * 0.5 / 0.5
    close(w, [0.99])
    w.diff[...] = -1.0
    solver.step()
    # m = 0.045 - 0.1 = -0.055, v = 0.00024975 + 0.001 = 0.00124975
    # m_hat = -0.055 / 0.19 = -0.2894736842, v_hat = 0.00124975 / 0.001999 = 0.6251875938 (sqrt 0.7906880509)
    # w -= 0.01 * -0.2894736842 / 0.7906880509 = -0.0036610354
    close(w, [0.9936610354])


def test_clipping_by_global_norm_by_hand():
    a = param([0.0, 0.0], "a", diff=[3.0, 0.0])
    b = param([0.0], "b", diff=[4.0])
    frozen = param([7.0], "f", diff=[1e6], lr_mult=0)       # not trained: not in the norm either
    solver = SGD([a, b, frozen], lr=1.0, clip_norm=1.0)
    solver.step()
    assert solver.last_grad_norm == pytest.approx(5.0)
    close(a, [-0.6, 0.0])                                   # diffs scaled by 1 / 5
    close(b, [-0.8])
    close(frozen, [7.0])
    a.diff[...] = [0.3, 0.0]                                # norm 0.3 < 1: left alone
    b.diff[...] = [0.0]
    solver.step()
    close(a, [-0.9, 0.0])


@pytest.mark.parametrize("kind", ["sgd", "nesterov", "adagrad", "adam"])
def test_frozen_and_statistics_untouched(kind):
    w = param([1.0, 2.0], "w", diff=[0.5, 0.5])
    frozen = param([3.0], "frozen", diff=[1.0], lr_mult=0)
    stats = param([4.0], "bn.mean", diff=[1.0], learnable=False)
    solver = make_solver(kind, [w, frozen, stats], lr=0.1, weight_decay=0.1,
                         **({"momentum": 0.9} if kind in ("sgd", "nesterov") else {}))
    for _ in range(3):
        solver.step()
    assert frozen.data[0] == 3.0 and stats.data[0] == 4.0
    assert not np.array_equal(w.data, [1.0, 2.0])
    assert set(solver.state_arrays) == ({"w"} if solver.slots() else set())


# ---- convex problem: every solver lowers the loss --------------------------------------------

def softmax_regression(seed=0):
    """A 10-class softmax regression on 64 features (scikit-learn's digits): convex."""
    from sklearn.datasets import load_digits
    d = load_digits()
    spec = {"name": "softreg", "inputs": {"data": [64], "label": []},
            "layers": [{"name": "fc", "type": "InnerProduct", "bottom": "data", "top": "fc", "num_output": 10},
                       {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["fc", "label"], "top": "loss"}]}
    net = decaf.Net(spec, phase="train", seed=seed)
    return net, {"data": (d.data[:400] / 16).astype(np.float32), "label": d.target[:400]}


def loss_of(net, batch):
    net.forward(batch)
    return net.loss()


@pytest.mark.parametrize("kind, kw", [("sgd", {"lr": 0.5}), ("sgd", {"lr": 0.1, "momentum": 0.9}),
                                      ("nesterov", {"lr": 0.1, "momentum": 0.9}),
                                      ("adagrad", {"lr": 0.1}), ("adam", {"lr": 0.02})])
def test_each_solver_lowers_a_convex_loss(kind, kw):
    net, batch = softmax_regression()
    solver = make_solver(kind, net, weight_decay=1e-4, **kw)
    start = loss_of(net, batch)
    for _ in range(40):
        net.forward(batch)
        net.backward()
        solver.step()
    end = loss_of(net, batch)
    assert end < 0.3 * start, (kind, start, end)


def test_lbfgs_lowers_a_convex_loss():
    net, batch = softmax_regression()
    start = loss_of(net, batch)
    seen = []
    result = LBFGS(net, weight_decay=1e-4, max_iter=30).minimize(batch, lambda it, f: seen.append(f))
    end = loss_of(net, batch)
    assert end < 0.1 * start and seen == sorted(seen, reverse=True) and result.nit <= 30


def test_lbfgs_least_squares_by_hand():
    """x = I, targets [3, -2], EuclideanLoss 1/(2N) sum (w.x - y)^2 with N = 2, L2 decay 0.5:
    f(w) = ((w1 - 3)^2 + (w2 + 2)^2) / 4 + (w1^2 + w2^2) / 4, minimised at w = [1.5, -1]."""
    spec = {"name": "ls", "inputs": {"x": [2], "y": [1]},
            "layers": [{"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "p", "num_output": 1,
                        "bias_term": False},
                       {"name": "loss", "type": "EuclideanLoss", "bottom": ["p", "y"], "top": "loss"}]}
    net = decaf.Net(spec).astype(np.float64)
    LBFGS(net, weight_decay=0.5).minimize({"x": np.eye(2), "y": np.array([[3.0], [-2.0]])})
    np.testing.assert_allclose(net.params["ip.weight"].data, [[1.5, -1.0]], atol=1e-6)
    # the same data split into two chunks gives the same minimum (chunks are weighted by size)
    net.params["ip.weight"].data[...] = 0
    LBFGS(net, weight_decay=0.5).minimize([{"x": np.eye(2)[:1], "y": np.array([[3.0]])},
                                           {"x": np.eye(2)[1:], "y": np.array([[-2.0]])}])
    np.testing.assert_allclose(net.params["ip.weight"].data, [[1.5, -1.0]], atol=1e-6)


def test_lbfgs_skips_frozen_and_refuses_all_frozen():
    net, batch = softmax_regression()
    net.params["fc.bias"].lr_mult = 0
    bias = net.params["fc.bias"].data.copy()
    LBFGS(net, max_iter=5).minimize(batch)
    assert np.array_equal(net.params["fc.bias"].data, bias)
    net.params["fc.weight"].lr_mult = 0
    with pytest.raises(ValueError, match="no trained parameters"):
        LBFGS(net)


# ---- state -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sgd", "nesterov", "adagrad", "adam"])
def test_state_round_trip_is_exact(kind):
    grads = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    kw = {"momentum": 0.9} if kind in ("sgd", "nesterov") else {}

    def run(split):
        w = param([1.0, -1.0, 0.5], diff=grads[0])
        solver = make_solver(kind, [w], lr=Schedule("step", 0.1, gamma=0.5, step=2), weight_decay=0.01, **kw)
        for i, g in enumerate(grads):
            if i == split:     # a fresh solver and parameter from the saved state
                info, arrays = solver.state()
                data = w.data.copy()
                cfg = solver.config()
                w = param(data)
                solver = make_solver(cfg.pop("type"), [w], **cfg)
                solver.load_state(info, {k: v.copy() for k, v in arrays.items()})
            w.diff[...] = g
            solver.step()
        return w.data

    assert np.array_equal(run(None), run(3))


def test_load_state_rejects_foreign_state():
    w = param([1.0, 2.0])
    solver = SGD([w], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="does not belong"):
        solver.load_state({"iter": 1}, {"velocity/other": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="expected shape"):
        solver.load_state({"iter": 1}, {"velocity/w": np.zeros(3, np.float32)})


def test_bad_arguments():
    w = [param([1.0])]
    with pytest.raises(ValueError, match="momentum"):
        SGD(w, momentum=1.0)
    with pytest.raises(ValueError, match="Nesterov"):
        SGD(w, nesterov=True)
    with pytest.raises(ValueError, match="weight_decay"):
        SGD(w, weight_decay=-1)
    with pytest.raises(ValueError, match="clip_norm"):
        Adam(w, clip_norm=0)
    with pytest.raises(ValueError, match="beta2"):
        Adam(w, beta2=1.0)
    with pytest.raises(ValueError, match="unknown solver 'rmsprop'"):
        make_solver("rmsprop", w)
    with pytest.raises(ValueError, match="full-batch"):
        make_solver("lbfgs", w)


def test_plain_sgd_keeps_no_velocity_without_changing_the_class():
    """slots() is per instance: a plain SGD does not overwrite SGD.SLOTS for the others."""
    plain = SGD([param([1.0], "w", diff=[1.0])], lr=0.1)
    heavy = SGD([param([1.0], "w", diff=[1.0])], lr=0.1, momentum=0.9)
    plain.step()
    heavy.step()
    assert plain.slots() == () and plain.state_arrays == {"w": {}}
    assert heavy.slots() == ("velocity",) and SGD.SLOTS == ("velocity",)
    assert set(heavy.state_arrays["w"]) == {"velocity"}


# ---- the fused SGD step (kernels.sgd_step) ---------------------------------------------------

@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_fused_sgd_matches_the_formulas_in_float64(nesterov, clip, monkeypatch):
    """SGD with momentum on float32 parameters runs the one-pass kernel (it is called); three steps
    against the module docstring's formulas evaluated in float64, within float32 rounding; the
    diffs are left as backward wrote them."""
    import decaf.kernels as kernels
    calls = []
    real = kernels.sgd_step
    monkeypatch.setattr(kernels, "sgd_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    rng = np.random.default_rng(4)
    n = 300_000                                         # big enough for the kernel's two threads
    w = Param((n,), "w", lr_mult=2.0, decay_mult=1.0)
    b = Param((7,), "b", decay_mult=0.0)
    for p in (w, b):
        p.data[...] = rng.standard_normal(p.shape)
    solver = SGD([w, b], lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=0.01, clip_norm=clip)
    ref = {p.name: (p.data.astype(np.float64), np.zeros(p.shape)) for p in (w, b)}
    for _ in range(3):
        grads = {p.name: rng.standard_normal(p.shape).astype(np.float32) for p in (w, b)}
        for p in (w, b):
            p.diff[...] = grads[p.name]
        solver.step()
        norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
        scale = clip / norm if clip is not None and norm > clip else 1.0
        for p in (w, b):
            x, v = ref[p.name]
            lr = 0.05 * p.lr_mult
            g = scale * grads[p.name].astype(np.float64) + 0.01 * p.decay_mult * x
            v_new = 0.9 * v + lr * g
            x = x - ((1.9 * v_new - 0.9 * v) if nesterov else v_new)
            ref[p.name] = (x, v_new)
            np.testing.assert_allclose(p.data, x, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(p.diff, grads[p.name])     # diff untouched
    assert len(calls) == 6                                           # 2 params x 3 steps


def test_fused_sgd_kernel_agrees_with_numpy_reference():
    """The compiled kernel and its NumPy twin (decaf/kernels/reference.py), same float32 inputs."""
    import decaf.kernels as kernels
    from decaf.kernels import reference
    rng = np.random.default_rng(5)
    for nesterov in (False, True):
        w, v, g = (rng.standard_normal(100_003).astype(np.float32) for _ in range(3))
        w2, v2 = w.copy(), v.copy()
        kernels.sgd_step(w, v, g, 0.1, 0.9, 5e-4, 0.5, nesterov)
        reference.sgd_step(w2, v2, g, 0.1, 0.9, 5e-4, 0.5, nesterov)
        np.testing.assert_allclose(v, v2, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(w, w2, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="values"):
        kernels.sgd_step(w, v[:10], g, 0.1, 0.9, 0.0, 1.0, False)


def test_sgd_float64_params_take_the_numpy_path(monkeypatch):
    """float64 parameters (gradient checks) never reach the float32 kernel."""
    import decaf.kernels as kernels
    monkeypatch.setattr(kernels, "sgd_step", lambda *a, **k: pytest.fail("the kernel ran on float64"))
    p = param([1.0, -2.0], diff=[0.5, 0.25])
    p._data = p._data.astype(np.float64)
    p.diff = p.diff.astype(np.float64)
    SGD([p], lr=0.1, momentum=0.9).step()
    np.testing.assert_allclose(p.data, [1.0 - 0.05, -2.0 - 0.025])
