"""fold_batchnorm: BatchNorm (+ Scale) folded into the conv/inner product before it, outputs unchanged."""
import copy

import numpy as np
import pytest

import decaf
import decaf.models
from decaf.io.fold import fold_batchnorm


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def randomise_bn(arrays, rng):
    """Random BatchNorm statistics and affine parameters (the fillers give the identity)."""
    out = dict(arrays)
    for k, v in arrays.items():
        if k.endswith(".mean"):
            out[k] = rng.normal(0, 0.2, v.shape).astype(np.float32)
        elif k.endswith(".var"):
            out[k] = rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
    return out


def small_spec():
    conv = lambda name, bottom, k, kernel, **kw: {  # noqa: E731
        "name": name, "type": "Convolution", "bottom": bottom, "top": name, "num_output": k, "kernel_size": kernel,
        **kw}
    return {"name": "small", "inputs": {"data": [3, 12, 12]}, "layers": [
        conv("c1", "data", 8, 3, pad=1),
        {"name": "bn1", "type": "BatchNorm", "bottom": "c1", "top": "bn1", "affine": True, "eps": 1e-3},
        {"name": "relu1", "type": "ReLU6", "bottom": "bn1", "top": "bn1"},
        # depthwise conv without bias, then BatchNorm without affine + Scale with bias (Caffe's style)
        conv("dw", "bn1", 8, 3, group=8, pad_mode="same_upper", bias_term=False),
        {"name": "dw_bn", "type": "BatchNorm", "bottom": "dw", "top": "dw_bn"},
        {"name": "dw_scale", "type": "Scale", "bottom": "dw_bn", "top": "dw_scale", "bias_term": True},
        {"name": "dw_relu", "type": "ReLU6", "bottom": "dw_scale", "top": "dw_scale"},
        conv("pw", "dw_scale", 8, 1, bias_term=False),
        {"name": "pw_bn", "type": "BatchNorm", "bottom": "pw", "top": "pw_bn", "affine": True},
        {"name": "add", "type": "Eltwise", "bottom": ["pw_bn", "bn1"], "top": "add"},
        {"name": "pool", "type": "Pooling", "bottom": "add", "top": "pool", "pool": "ave", "global_pooling": True},
        {"name": "fc", "type": "InnerProduct", "bottom": "pool", "top": "fc", "num_output": 6},
        {"name": "fc_bn", "type": "BatchNorm", "bottom": "fc", "top": "fc_bn", "affine": True},
        {"name": "prob", "type": "Softmax", "bottom": "fc_bn", "top": "prob"},
    ]}


def random_params(net, rng):
    arrays = randomise_bn(net.param_arrays(), rng)
    for k, v in arrays.items():
        if k.endswith((".weight", ".bias")) and ("bn" in k or "scale" in k):
            arrays[k] = (1 + rng.normal(0, 0.2, v.shape) if k.endswith(".weight") else
                         rng.normal(0, 0.2, v.shape)).astype(np.float32)
    return arrays


def test_fold_small_net():
    rng = np.random.default_rng(0)
    spec = small_spec()
    net = decaf.Net(spec, seed=1)
    arrays = random_params(net, rng)
    net.load_params(arrays)
    spec_before, arrays_before = copy.deepcopy(spec), {k: v.copy() for k, v in arrays.items()}

    folded_spec, folded = fold_batchnorm(spec, arrays)
    # inputs untouched
    assert spec == spec_before
    assert sorted(arrays) == sorted(arrays_before) and all(np.array_equal(arrays[k], arrays_before[k]) for k in arrays)
    types = [layer["type"] for layer in folded_spec["layers"]]
    assert "BatchNorm" not in types and "Scale" not in types
    by_name = {layer["name"]: layer for layer in folded_spec["layers"]}
    # the conv writes the BatchNorm's (or Scale's) top: downstream names are unchanged
    assert by_name["c1"]["top"] == "bn1" and by_name["dw"]["top"] == "dw_scale" and by_name["fc"]["top"] == "fc_bn"
    assert by_name["dw"]["bias_term"] is True and "dw.bias" in folded and "dw_bn.mean" not in folded
    assert by_name["relu1"]["bottom"] == by_name["relu1"]["top"] == "bn1"

    net2 = decaf.Net(folded_spec, init=False)
    net2.load_params(folded)
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    blobs = ["bn1", "dw_scale", "add", "fc_bn", "prob"]
    before, after = net.forward(data=x, outputs=blobs), net2.forward(data=x, outputs=blobs)
    for b in blobs:
        assert rel_err(after[b], before[b]) <= 1e-4, b


def test_not_folded_when_unsafe():
    spec = {"name": "n", "inputs": {"data": [2, 5, 5]}, "layers": [
        {"name": "c", "type": "Convolution", "bottom": "data", "top": "c", "num_output": 3, "kernel_size": 1},
        {"name": "bn", "type": "BatchNorm", "bottom": "c", "top": "bn"},
        {"name": "other", "type": "ReLU", "bottom": "c", "top": "other"},           # c has a second reader
        {"name": "c2", "type": "Convolution", "bottom": "data", "top": "c2", "num_output": 3, "kernel_size": 1},
        {"name": "bn2", "type": "BatchNorm", "bottom": "c2", "top": "bn2", "use_global_stats": False},
        {"name": "p", "type": "Pooling", "bottom": "data", "top": "p", "kernel_size": 2},
        {"name": "bn3", "type": "BatchNorm", "bottom": "p", "top": "bn3"},          # not after a conv
        {"name": "c4", "type": "Convolution", "bottom": "data", "top": "c4", "num_output": 3, "kernel_size": 1},
        {"name": "relu4", "type": "ReLU", "bottom": "c4", "top": "c4"},             # in place before the BN
        {"name": "bn4", "type": "BatchNorm", "bottom": "c4", "top": "bn4"},
    ]}
    arrays = decaf.Net(spec, seed=0).param_arrays()
    folded_spec, folded = fold_batchnorm(spec, arrays)
    assert folded_spec == spec
    assert sorted(folded) == sorted(arrays)


def test_missing_array_is_a_clear_error():
    spec = small_spec()
    arrays = decaf.Net(spec, seed=0).param_arrays()
    del arrays["bn1.var"]
    with pytest.raises(KeyError, match="bn1.var"):
        fold_batchnorm(spec, arrays)


def test_fold_efficientnet_lite0():
    rng = np.random.default_rng(1)
    spec = decaf.models.get_spec("efficientnet_lite0")
    net = decaf.Net(spec, seed=2)
    arrays = random_params(net, rng)
    net.load_params(arrays)
    folded_spec, folded = fold_batchnorm(spec, arrays)
    n_bn = sum(layer["type"] == "BatchNorm" for layer in spec["layers"])
    assert n_bn == 49
    assert sum(layer["type"] == "BatchNorm" for layer in folded_spec["layers"]) == 0
    assert len(folded_spec["layers"]) == len(spec["layers"]) - n_bn
    net2 = decaf.Net(folded_spec, init=False)
    net2.load_params(folded)
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    before, after = net.forward(data=x, outputs=["pool", "fc", "prob"]), net2.forward(data=x, outputs=["pool", "fc",
                                                                                                      "prob"])
    for b in ("pool", "fc", "prob"):
        assert rel_err(after[b], before[b]) <= 1e-4, b
