"""GoogLeNet (Szegedy et al. 2015) and Inception-v3 (Szegedy et al. 2016), torchvision's layouts.

Every convolution is a BasicConv2d ``X``: ``X.conv`` (no bias) + ``X.bn`` (eps 1e-3) + ReLU.
GoogLeNet: conv1 7x7/2, maxpool 3/2, conv2 1x1, conv3 3x3, maxpool, inception3a-b, maxpool,
inception4a-e, maxpool 2/2, inception5a-b (pools round up), global average pool, dropout, ``fc``.
Its Inception module concatenates ``branch1`` (1x1), ``branch2`` (1x1, 3x3), ``branch3`` (1x1, 3x3:
torchvision's 3x3 where the paper has 5x5) and ``branch4`` (3x3/1 max pool, 1x1).
Inception-v3: Conv2d_1a..4a and two 3/2 max pools, Mixed_5b-d (A), 6a (B), 6b-e (C, 7x1 and 1x7
factorised), 7a (D), 7b-c (E), global average pool, dropout, ``fc``; 299x299 input.
The auxiliary classifiers (``aux1``, ``aux2``, ``AuxLogits``) only train: their keys are skipped.
torchvision's pretrained weights expect ``transform_input``: that is ImageNet's normalisation
undone and (x - 0.5) / 0.5 applied, so decaf stores the recipe mean 0.5, std 0.5 instead
(``transform_input=False``: ImageNet's mean and std).
"""
from .torchlayout import Builder, zoo_spec

GOOGLENET = {"inception3a": (64, 96, 128, 16, 32, 32), "inception3b": (128, 128, 192, 32, 96, 64),
             "inception4a": (192, 96, 208, 16, 48, 64), "inception4b": (160, 112, 224, 24, 64, 64),
             "inception4c": (128, 128, 256, 24, 64, 64), "inception4d": (112, 144, 288, 32, 64, 64),
             "inception4e": (256, 160, 320, 32, 128, 128), "inception5a": (256, 160, 320, 32, 128, 128),
             "inception5b": (384, 192, 384, 48, 128, 128)}
POOLS_AFTER = {"inception3b": ("maxpool3", 3), "inception4e": ("maxpool4", 2)}


class _Net(Builder):
    def __init__(self, name, input_size, width):
        super().__init__(name, input_size)
        self.width = width
        self.ignored_prefixes = ("aux1.", "aux2.", "AuxLogits.")

    def ch(self, c):
        return max(1, int(c * self.width))

    def basic(self, x, key, cout, k, stride=1, pad=0):
        """BasicConv2d: conv (kernel k or (kh, kw), pad p or (ph, pw)) + BN (eps 1e-3) + ReLU."""
        kernel = list(k) if isinstance(k, tuple) else k
        x = self.conv(x, f"{key}.conv", self.ch(cout), kernel, stride, list(pad) if isinstance(pad, tuple) else pad)
        return self.act(self.bn(x, f"{key}.bn", eps=1e-3), "relu")


def googlenet_builder(num_classes=1000, input_size=224, width=1.0, dropout=0.2, transform_input=True):
    b = _Net("googlenet", input_size, width)
    x = b.basic("data", "conv1", 64, 7, 2, 3)
    x = b.pool(x, "maxpool1", "max", 3, 2, ceil=True)
    x = b.basic(x, "conv2", 64, 1)
    x = b.basic(x, "conv3", 192, 3, pad=1)
    x = b.pool(x, "maxpool2", "max", 3, 2, ceil=True)
    for key, (c1, r3, c3, r5, c5, pp) in GOOGLENET.items():
        x1 = b.basic(x, f"{key}.branch1", c1, 1)
        x2 = b.basic(b.basic(x, f"{key}.branch2.0", r3, 1), f"{key}.branch2.1", c3, 3, pad=1)
        x3 = b.basic(b.basic(x, f"{key}.branch3.0", r5, 1), f"{key}.branch3.1", c5, 3, pad=1)
        x4 = b.pool(x, f"{key}_branch4_0", "max", 3, 1, pad=1, ceil=True)
        x4 = b.basic(x4, f"{key}.branch4.1", pp, 1)
        x = b.concat([x1, x2, x3, x4], key)
        if key in POOLS_AFTER:
            name, k = POOLS_AFTER[key]
            x = b.pool(x, name, "max", k, 2, ceil=True)
    x = b.dropout(b.global_pool(x), "dropout", dropout)
    b.logits = b.fc(x, "fc", num_classes)
    return b


def _a(b, x, key, pool_features):
    x1 = b.basic(x, f"{key}.branch1x1", 64, 1)
    x5 = b.basic(b.basic(x, f"{key}.branch5x5_1", 48, 1), f"{key}.branch5x5_2", 64, 5, pad=2)
    x3 = b.basic(x, f"{key}.branch3x3dbl_1", 64, 1)
    x3 = b.basic(b.basic(x3, f"{key}.branch3x3dbl_2", 96, 3, pad=1), f"{key}.branch3x3dbl_3", 96, 3, pad=1)
    xp = b.basic(b.pool(x, f"{key}_pool", "ave", 3, 1, pad=1), f"{key}.branch_pool", pool_features, 1)
    return b.concat([x1, x5, x3, xp], key)


def _b(b, x, key):
    x3 = b.basic(x, f"{key}.branch3x3", 384, 3, 2)
    xd = b.basic(x, f"{key}.branch3x3dbl_1", 64, 1)
    xd = b.basic(b.basic(xd, f"{key}.branch3x3dbl_2", 96, 3, pad=1), f"{key}.branch3x3dbl_3", 96, 3, 2)
    return b.concat([x3, xd, b.pool(x, f"{key}_pool", "max", 3, 2)], key)


def _c(b, x, key, c7):
    row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))
    x1 = b.basic(x, f"{key}.branch1x1", 192, 1)
    x7 = b.basic(x, f"{key}.branch7x7_1", c7, 1)
    x7 = b.basic(x7, f"{key}.branch7x7_2", c7, row[0], pad=row[1])
    x7 = b.basic(x7, f"{key}.branch7x7_3", 192, col[0], pad=col[1])
    xd = b.basic(x, f"{key}.branch7x7dbl_1", c7, 1)
    for i, (k, p) in enumerate([col, row, col, row], start=2):
        xd = b.basic(xd, f"{key}.branch7x7dbl_{i}", 192 if i == 5 else c7, k, pad=p)
    xp = b.basic(b.pool(x, f"{key}_pool", "ave", 3, 1, pad=1), f"{key}.branch_pool", 192, 1)
    return b.concat([x1, x7, xd, xp], key)


def _d(b, x, key):
    x3 = b.basic(b.basic(x, f"{key}.branch3x3_1", 192, 1), f"{key}.branch3x3_2", 320, 3, 2)
    x7 = b.basic(x, f"{key}.branch7x7x3_1", 192, 1)
    x7 = b.basic(x7, f"{key}.branch7x7x3_2", 192, (1, 7), pad=(0, 3))
    x7 = b.basic(x7, f"{key}.branch7x7x3_3", 192, (7, 1), pad=(3, 0))
    x7 = b.basic(x7, f"{key}.branch7x7x3_4", 192, 3, 2)
    return b.concat([x3, x7, b.pool(x, f"{key}_pool", "max", 3, 2)], key)


def _e(b, x, key):
    x1 = b.basic(x, f"{key}.branch1x1", 320, 1)
    x3 = b.basic(x, f"{key}.branch3x3_1", 384, 1)
    x3 = b.concat([b.basic(x3, f"{key}.branch3x3_2a", 384, (1, 3), pad=(0, 1)),
                   b.basic(x3, f"{key}.branch3x3_2b", 384, (3, 1), pad=(1, 0))], f"{key}_branch3x3")
    xd = b.basic(x, f"{key}.branch3x3dbl_1", 448, 1)
    xd = b.basic(xd, f"{key}.branch3x3dbl_2", 384, 3, pad=1)
    xd = b.concat([b.basic(xd, f"{key}.branch3x3dbl_3a", 384, (1, 3), pad=(0, 1)),
                   b.basic(xd, f"{key}.branch3x3dbl_3b", 384, (3, 1), pad=(1, 0))], f"{key}_branch3x3dbl")
    xp = b.basic(b.pool(x, f"{key}_pool", "ave", 3, 1, pad=1), f"{key}.branch_pool", 192, 1)
    return b.concat([x1, x3, xd, xp], key)


def inception_v3_builder(num_classes=1000, input_size=299, width=1.0, dropout=0.5, transform_input=True):
    b = _Net("inception_v3", input_size, width)
    x = b.basic("data", "Conv2d_1a_3x3", 32, 3, 2)
    x = b.basic(x, "Conv2d_2a_3x3", 32, 3)
    x = b.basic(x, "Conv2d_2b_3x3", 64, 3, pad=1)
    x = b.pool(x, "maxpool1", "max", 3, 2)
    x = b.basic(x, "Conv2d_3b_1x1", 80, 1)
    x = b.basic(x, "Conv2d_4a_3x3", 192, 3)
    x = b.pool(x, "maxpool2", "max", 3, 2)
    for key, pf in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
        x = _a(b, x, key, pf)
    x = _b(b, x, "Mixed_6a")
    for key, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        x = _c(b, x, key, c7)
    x = _d(b, x, "Mixed_7a")
    x = _e(b, _e(b, x, "Mixed_7b"), "Mixed_7c")
    x = b.dropout(b.global_pool(x), "dropout", dropout)
    b.logits = b.fc(x, "fc", num_classes)
    return b


BUILDERS = {"googlenet": googlenet_builder, "inception_v3": inception_v3_builder}
ZOO = {"googlenet": zoo_spec("googlenet", googlenet_builder, 224),
       "inception_v3": zoo_spec("inception_v3", inception_v3_builder, 299)}
CLASSIFIERS = {"googlenet": "fc", "inception_v3": "fc"}
