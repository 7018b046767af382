"""EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant: ReLU6, no squeeze-excitation).

Geometry from ../shared/facts/models.md: a 3x3/s2 stem (3 -> 32), 16 MBConv
blocks, a 1x1 head conv (320 -> 1280), global average pooling (the blob
``pool``, the 1280-d feature), dropout 0.2 and a 1280 -> 1000 classifier.
Every convolution has no bias and is followed by BatchNorm (eps 1e-3); all
spatial convolutions use TensorFlow SAME padding (``pad_mode: same_upper``).

MBConv block: [expand 1x1 (ratio e) + BN + ReLU6] -> depthwise kxk/s + BN +
ReLU6 -> project 1x1 + BN, plus the block input when stride 1 and in == out.
"""

# (repeats, kernel, stride, expand ratio, in channels, out channels)
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
BN_EPS = 1e-3


def _conv_bn(layers, name, bottom, k, kernel, stride=1, group=1, relu6=True):
    """conv (no bias) -> BatchNorm -> optional ReLU6 in place; returns the output blob name."""
    conv = {"name": name, "type": "Convolution", "bottom": bottom, "top": name, "num_output": k,
            "kernel_size": kernel, "stride": stride, "group": group, "bias_term": False,
            "weight_filler": {"type": "msra", "variance_norm": "fan_out"}}
    if kernel > 1:
        conv["pad_mode"] = "same_upper"
    layers.append(conv)
    layers.append({"name": f"{name}_bn", "type": "BatchNorm", "bottom": name, "top": f"{name}_bn",
                   "eps": BN_EPS, "momentum": 0.99, "affine": True})
    if relu6:
        layers.append({"name": f"{name}_relu", "type": "ReLU6", "bottom": f"{name}_bn", "top": f"{name}_bn"})
    return f"{name}_bn"


def block_names():
    """(block index, expand ratio, kernel, stride, in, out) for the 16 blocks."""
    blocks = []
    for repeats, kernel, stride, expand, cin, cout in STAGES:
        for r in range(repeats):
            blocks.append((len(blocks), expand, kernel, stride if r == 0 else 1, cin if r == 0 else cout, cout))
    return blocks


def efficientnet_lite0(num_classes=1000, input_size=224, dropout=0.2, with_loss=False):
    layers = []
    x = _conv_bn(layers, "stem", "data", 32, 3, stride=2)
    for i, expand, kernel, stride, cin, cout in block_names():
        h = x
        hidden = cin * expand
        if expand != 1:
            h = _conv_bn(layers, f"b{i}_expand", h, hidden, 1)
        h = _conv_bn(layers, f"b{i}_dw", h, hidden, kernel, stride=stride, group=hidden)
        h = _conv_bn(layers, f"b{i}_project", h, cout, 1, relu6=False)
        if stride == 1 and cin == cout:
            layers.append({"name": f"b{i}_add", "type": "Eltwise", "bottom": [h, x], "top": f"b{i}_add"})
            h = f"b{i}_add"
        x = h
    x = _conv_bn(layers, "head", x, 1280, 1)
    layers += [
        {"name": "pool", "type": "Pooling", "bottom": x, "top": "pool", "pool": "ave", "global_pooling": True},
        {"name": "drop", "type": "Dropout", "bottom": "pool", "top": "drop", "dropout_ratio": dropout},
        {"name": "fc", "type": "InnerProduct", "bottom": "drop", "top": "fc", "num_output": num_classes,
         "weight_filler": {"type": "uniform", "min": -0.03, "max": 0.03}},
    ]
    inputs = {"data": [3, input_size, input_size]}
    if with_loss:
        inputs["label"] = []
        layers.append({"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["fc", "label"], "top": "loss"})
    else:
        layers.append({"name": "prob", "type": "Softmax", "bottom": "fc", "top": "prob"})
    return {"name": "efficientnet_lite0", "inputs": inputs, "layers": layers}
