"""InnerProduct applies the activation that reads its top (decaf/layers/linear.py, fuse_epilogue):
bias and activation in one compiled pass, in place or into the activation's own top (the
classifier heads: MobileNetV3's Linear -> HardSwish, AlexNet's and VGG's Linear -> ReLU).

Checked against the same net with a Dropout between the two layers (nothing fused, the
activation layer's own forward) and against the formulas in float64; backward through the fused
pair against finite differences."""
import numpy as np
import pytest

from decaf import Net
from decaf.gradcheck import check_net

from test_channel_affine import act_f64, close, with_activation

ACTIVATIONS = [{"type": "ReLU"}, {"type": "ReLU", "top": "ip"}, {"type": "ReLU6"},
               {"type": "LeakyReLU", "negative_slope": 0.2, "top": "ip"}, {"type": "Clip", "min": -0.5, "max": 0.5},
               {"type": "Sigmoid"}, {"type": "SiLU"}, {"type": "HardSwish"}, {"type": "HardSigmoid"}]


def ip_net(activation, bias=True, unfused=False):
    """data (N, 4, 3, 2) -> InnerProduct (7) -> activation (-> Dropout between them if unfused)."""
    layers = [{"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip", "num_output": 7,
               "bias_term": bias}]
    layers = with_activation(layers, "ip", activation, unfused)
    return {"name": "ip", "inputs": {"data": [4, 3, 2]}, "layers": layers}


def ids(a):
    return f"{a['type']}{'-in-place' if 'top' in a else ''}"


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=ids)
def test_fused_equals_unfused_and_the_formula(activation, bias, rng):
    fused = Net(ip_net(activation, bias))
    for p in fused.params.values():
        p.data[...] = rng.standard_normal(p.shape) * 2    # values on both sides of every activation's bends
    arrays = fused.param_arrays()
    unfused = Net.from_arrays(ip_net(activation, bias, unfused=True), arrays, optimize=False)
    written = Net.from_arrays(ip_net(activation, bias), arrays, optimize=False)
    assert fused.layers["act"].fused and written.layers["act"].fused and not unfused.layers["act"].fused
    top, other = ("ip", "ip_d") if activation.get("top") == "ip" else ("act", "act")
    for n in (1, 3):
        x = rng.standard_normal((n, 4, 3, 2)).astype(np.float32)
        a = fused.forward(data=x, outputs=[top])[top]
        b = unfused.forward(data=x, outputs=[other])[other]
        c = written.forward(data=x, outputs=[top])[top]
        close(a, b)
        close(c, b)
        pre = x.reshape(n, -1).astype(np.float64) @ arrays["ip.weight"].astype(np.float64).T
        if bias:
            pre = pre + arrays["ip.bias"]
        close(a, act_f64(pre, fused.layers["act"].epilogue().act))
        if top == "act":      # the layer's own top keeps the values before the activation
            close(written.forward(data=x, outputs=["ip"])["ip"], pre)


@pytest.mark.parametrize("activation", [{"type": "HardSwish"}, {"type": "ReLU", "top": "ip"}, {"type": "SiLU"}],
                         ids=ids)
def test_float64_net_takes_the_reference(activation, rng):
    net = Net(ip_net(activation))
    net.astype(np.float64)
    arrays = {k: v.astype(np.float64) for k, v in net.param_arrays().items()}
    x = rng.standard_normal((2, 4, 3, 2))
    top = "ip" if activation.get("top") == "ip" else "act"
    got = net.forward(data=x, outputs=[top])[top]
    assert got.dtype == np.float64
    pre = x.reshape(2, -1) @ arrays["ip.weight"].T + arrays["ip.bias"]
    np.testing.assert_allclose(got, act_f64(pre, net.layers["act"].epilogue().act), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", [{"type": "HardSwish"}, {"type": "ReLU", "top": "ip"}, {"type": "Sigmoid"}],
                         ids=ids)
def test_backward_through_the_fused_pair_against_finite_differences(activation):
    spec = ip_net(activation)
    spec["layers"].append({"name": "ip2", "type": "InnerProduct", "bottom": spec["layers"][-1]["top"],
                           "top": "out", "num_output": 3})
    net = Net(spec, force_backward=True)
    assert net.layers["act"].fused
    report = check_net(net, {"data": np.random.default_rng(3).standard_normal((3, 4, 3, 2))})
    assert report.passed, str(report)
