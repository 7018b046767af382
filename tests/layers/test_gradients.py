"""Every layer's backward equals central finite differences (float64).

Tolerances: an element passes when |analytic - numeric| <= 1e-6 + 1e-4 * max(|analytic|, |numeric|),
with eps = 1e-6 (float64 central differences have truncation error ~eps^2 and rounding ~1e-10/eps).
"""
import pytest

from decaf.gradcheck import check_layer

CASES = [
    ("conv", {"type": "Convolution", "num_output": 4, "kernel_size": 3, "bias_filler": {"type": "gaussian"}}, [(2, 3, 6, 7)]),
    ("conv_stride_pad", {"type": "Convolution", "num_output": 3, "kernel_size": [3, 2], "stride": [2, 1], "pad": 1}, [(2, 2, 7, 6)]),
    ("conv_asym_pad", {"type": "Convolution", "num_output": 2, "kernel_size": 3, "stride": 2, "pad": [0, 1, 1, 2]}, [(1, 2, 6, 6)]),
    ("conv_same_upper", {"type": "Convolution", "num_output": 2, "kernel_size": 5, "stride": 2, "pad_mode": "same_upper"}, [(1, 2, 8, 8)]),
    ("conv_groups", {"type": "Convolution", "num_output": 4, "kernel_size": 3, "group": 2, "pad": 1}, [(2, 4, 5, 5)]),
    ("conv_depthwise", {"type": "Convolution", "num_output": 3, "kernel_size": 3, "group": 3, "stride": 2, "pad": [0, 0, 1, 1]}, [(2, 3, 6, 6)]),
    ("conv_dilation", {"type": "Convolution", "num_output": 2, "kernel_size": 3, "dilation": 2, "pad": 1, "bias_term": False}, [(2, 2, 7, 7)]),
    ("conv_pointwise", {"type": "Convolution", "num_output": 3, "kernel_size": 1}, [(2, 4, 3, 3)]),
    ("conv_blocked", {"type": "Convolution", "num_output": 3, "kernel_size": 2}, [(5, 2, 3, 3)]),
    ("max_pool", {"type": "Pooling", "pool": "max", "kernel_size": 3, "stride": 2}, [(2, 2, 7, 7)]),
    ("max_pool_pad_floor", {"type": "Pooling", "pool": "max", "kernel_size": 2, "stride": 2, "pad": 1, "round_mode": "floor"}, [(1, 2, 5, 5)]),
    ("ave_pool", {"type": "Pooling", "pool": "ave", "kernel_size": 3, "stride": 2, "pad": 1}, [(2, 2, 6, 6)]),
    ("ave_pool_exclude", {"type": "Pooling", "pool": "ave", "kernel_size": 3, "stride": 2, "pad": 1, "count_include_pad": False}, [(1, 2, 6, 5)]),
    ("global_pool", {"type": "Pooling", "pool": "ave", "global_pooling": True}, [(2, 3, 4, 5)]),
    ("lrn", {"type": "LRN", "local_size": 5, "alpha": 0.5, "beta": 0.75, "k": 2.0}, [(2, 7, 3, 3)]),
    ("lrn_even", {"type": "LRN", "local_size": 4, "alpha": 0.3, "beta": 0.6, "k": 1.0}, [(1, 6, 2, 2)]),
    ("relu", {"type": "ReLU"}, [(3, 5)]),
    ("leaky_relu", {"type": "LeakyReLU", "negative_slope": 0.1}, [(3, 5)]),
    ("relu6", {"type": "ReLU6"}, [(4, 6)]),
    ("clip", {"type": "Clip", "min": -0.5, "max": 0.5}, [(4, 6)]),
    ("sigmoid", {"type": "Sigmoid"}, [(3, 4)]),
    ("tanh", {"type": "Tanh"}, [(3, 4)]),
    ("inner_product", {"type": "InnerProduct", "num_output": 4, "bias_filler": {"type": "gaussian"}}, [(3, 2, 2, 2)]),
    ("softmax", {"type": "Softmax"}, [(3, 5)]),
    ("softmax_loss", {"type": "SoftmaxWithLoss", "bottom": ["scores", "label"]}, [(4, 5), (4,)]),
    ("euclidean_loss", {"type": "EuclideanLoss"}, [(3, 4), (3, 4)]),
    ("flatten", {"type": "Flatten"}, [(2, 3, 2, 2)]),
    ("reshape", {"type": "Reshape", "shape": [0, -1, 2]}, [(2, 3, 2, 2)]),
    ("concat", {"type": "Concat"}, [(2, 3, 2), (2, 1, 2)]),
    ("eltwise_sum", {"type": "Eltwise", "coeff": [1.0, -2.0]}, [(2, 3), (2, 3)]),
    ("eltwise_prod", {"type": "Eltwise", "operation": "prod"}, [(2, 3), (2, 3)]),
    ("eltwise_max", {"type": "Eltwise", "operation": "max"}, [(2, 3), (2, 3)]),
    ("scale", {"type": "Scale", "bias_term": True, "filler": {"type": "gaussian", "std": 1.0}}, [(2, 3, 2, 2)]),
    ("batchnorm_test", {"type": "BatchNorm", "affine": True}, [(3, 2, 2, 2)]),
]


@pytest.mark.parametrize("name,spec,shapes", CASES, ids=[c[0] for c in CASES])
def test_layer_gradient(name, spec, shapes):
    report = check_layer(dict(spec, name=name), shapes, label_classes=5)
    assert report.passed, str(report)


def test_batchnorm_train_gradient():
    report = check_layer({"name": "bn", "type": "BatchNorm", "affine": True}, [(4, 3, 2, 2)], phase="train")
    assert report.passed, str(report)


def test_dropout_train_gradient():
    report = check_layer({"name": "drop", "type": "Dropout", "dropout_ratio": 0.3}, [(4, 6)], phase="train")
    assert report.passed, str(report)
