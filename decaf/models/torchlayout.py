"""A small spec builder for nets whose weights come from PyTorch state dicts.

Each layer that holds parameters is named after its PyTorch module path (dots and dashes
become underscores: ``layer1.0.conv1`` -> ``layer1_0_conv1``), and the builder records, for
every decaf parameter, the state-dict key it is read from (``names``). The zoo builders of
the torchvision families (resnet.py, vgg.py, mobilenet.py, ...) describe their net once with
it; ``spec()`` gives the plain-data net spec, ``names`` the mapping decaf.io.torch_convert
uses. A value of ``names`` is a key, or (key, shape) when the array is reshaped on the way
(a Linear read as a 1x1 convolution).
"""
from ..errors import SpecError

BN_FIELDS = {"weight": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
ACTIVATIONS = {"relu": "ReLU", "relu6": "ReLU6", "hardswish": "HardSwish", "silu": "SiLU", "gelu": "GELU",
               "sigmoid": "Sigmoid", "hardsigmoid": "HardSigmoid"}
IN_PLACE = ("relu", "relu6", "sigmoid")


def layer_name(key):
    return key.replace(".", "_").replace("-", "_")


def make_divisible(channels, step=8, floor=None):
    """Channel counts as the MobileNet-family checkpoints have them: ``channels`` rounded half up to a
    multiple of ``step`` (at least ``floor``, default ``step``); when rounding down loses more than
    10 % of the channels, one more step is added."""
    floor = step if floor is None else floor
    rounded = max(floor, (int(channels + step / 2) // step) * step)
    if rounded < 0.9 * channels:
        rounded += step
    return rounded


def zoo_spec(name, build, input_size=224):
    """The zoo entry ``name``: (num_classes, input_size, with_loss, **builder options) -> a spec from ``build``."""
    def make(num_classes=1000, input_size=input_size, with_loss=False, **kw):
        return build(num_classes=num_classes, input_size=input_size, **kw).spec(with_loss)
    make.__name__ = name
    make.__doc__ = f"torchvision's {name} (see {build.__module__})."
    return make


def adaptive_size(size, out, what):
    """kernel (= stride) of the average pooling equal to AdaptiveAvgPool2d(out) on a size x size map."""
    if size % out:
        raise SpecError(f"{what}: the input size gives a {size}x{size} feature map, which AdaptiveAvgPool2d({out}) "
                        f"does not split evenly; choose input_size so that it is a multiple of {out}")
    return size // out


class Builder:
    def __init__(self, name, input_size=224, channels=3):
        self.name, self.input_size, self.channels = name, int(input_size), channels
        self.layers, self.names = [], {}
        self.count = {}
        self.logits = None      # the blob of the class scores, set by the family's builder

    def _unique(self, base):
        n = self.count.get(base, 0)
        self.count[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def add(self, layer):
        self.layers.append(layer)
        return layer["top"]

    # ---- layers with parameters (named after their torch key) -------------------------------
    def conv(self, x, key, cout, k, stride=1, pad=None, group=1, bias=False, dilation=1):
        name = layer_name(key)
        pad = (k - 1) // 2 * dilation if pad is None else pad
        layer = {"name": name, "type": "Convolution", "bottom": x, "top": name, "num_output": int(cout),
                 "kernel_size": k, "stride": stride, "pad": pad, "group": int(group), "bias_term": bias,
                 "weight_filler": {"type": "msra", "variance_norm": "fan_out"}}
        if dilation != 1:
            layer["dilation"] = dilation
        self.names[f"{name}.weight"] = f"{key}.weight"
        if bias:
            self.names[f"{name}.bias"] = f"{key}.bias"
        return self.add(layer)

    def linear_as_conv(self, x, key, cout, cin):
        """A torch Linear applied at every position of a channels-last map, as a 1x1 convolution."""
        top = self.conv(x, key, cout, 1, pad=0, bias=True)
        self.names[f"{top}.weight"] = (f"{key}.weight", (int(cout), int(cin), 1, 1))
        return top

    def bn(self, x, key, eps=1e-5):
        name = layer_name(key)
        for ours, theirs in BN_FIELDS.items():
            self.names[f"{name}.{ours}"] = f"{key}.{theirs}"
        return self.add({"name": name, "type": "BatchNorm", "bottom": x, "top": name, "eps": eps, "affine": True})

    def layernorm(self, x, key, eps=1e-6):
        """LayerNorm over the channels at each position (ConvNeXt's LayerNorm2d)."""
        name = layer_name(key)
        self.names[f"{name}.weight"], self.names[f"{name}.bias"] = f"{key}.weight", f"{key}.bias"
        return self.add({"name": name, "type": "LayerNorm", "bottom": x, "top": name, "axis": 1, "end_axis": 1,
                         "eps": eps})

    def fc(self, x, key, cout):
        name = layer_name(key)
        self.names[f"{name}.weight"], self.names[f"{name}.bias"] = f"{key}.weight", f"{key}.bias"
        return self.add({"name": name, "type": "InnerProduct", "bottom": x, "top": name, "num_output": int(cout),
                         "weight_filler": {"type": "gaussian", "std": 0.01}})

    def scale(self, x, key, shape):
        """x times a learned tensor of ``shape`` (ConvNeXt's layer_scale)."""
        name = layer_name(key)
        self.names[f"{name}.operand"] = key
        return self.add({"name": name, "type": "Arithmetic", "bottom": x, "top": name, "operation": "mul",
                         "operand_shape": list(shape)})

    # ---- composites --------------------------------------------------------------------------
    def conv_bn(self, x, conv_key, bn_key, cout, k, stride=1, group=1, act="relu", eps=1e-5, pad=None):
        return self.act(self.bn(self.conv(x, conv_key, cout, k, stride, pad, group), bn_key, eps), act)

    def seq_conv_bn(self, x, key, cout, k, stride=1, group=1, act="relu", eps=1e-5):
        """torchvision's Conv2dNormActivation at ``key``: keys key.0 (conv) and key.1 (BatchNorm)."""
        return self.conv_bn(x, f"{key}.0", f"{key}.1", cout, k, stride, group, act, eps)

    # ---- layers without parameters -----------------------------------------------------------
    def act(self, x, kind, **params):
        if kind is None:
            return x
        name = self._unique(f"{x}_{kind}")
        top = x if kind in IN_PLACE else name
        return self.add({"name": name, "type": ACTIVATIONS[kind], "bottom": x, "top": top, **params})

    def hardsigmoid(self, x):
        return self.act(x, "hardsigmoid", alpha=1 / 6, beta=0.5)

    def pool(self, x, name, kind, k, stride, pad=0, ceil=False):
        return self.add({"name": name, "type": "Pooling", "bottom": x, "top": name, "pool": kind, "kernel_size": k,
                         "stride": stride, "pad": pad, "round_mode": "ceil" if ceil else "floor",
                         "count_include_pad": True})

    def global_pool(self, x, name="avgpool"):
        return self.add({"name": name, "type": "Pooling", "bottom": x, "top": name, "pool": "ave",
                         "global_pooling": True})

    def sum(self, a, b, name):
        return self.add({"name": name, "type": "Eltwise", "bottom": [a, b], "top": name})

    def mul(self, a, b, name):
        """a * b, broadcasting (a squeeze-excitation gate (N, C, 1, 1) times (N, C, H, W))."""
        return self.add({"name": name, "type": "Arithmetic", "bottom": [a, b], "top": name, "operation": "mul"})

    def concat(self, xs, name):
        return self.add({"name": name, "type": "Concat", "bottom": list(xs), "top": name, "axis": 1})

    def dropout(self, x, name, ratio):
        return self.add({"name": name, "type": "Dropout", "bottom": x, "top": x, "dropout_ratio": ratio})

    def flatten(self, x, name="flatten"):
        return self.add({"name": name, "type": "Flatten", "bottom": x, "top": name})

    def squeeze_excitation(self, x, key, channels, squeeze, act="relu", gate="sigmoid"):
        """torchvision's SqueezeExcitation: x * gate(fc2(act(fc1(avgpool(x))))), fc1/fc2 1x1 convs with bias."""
        s = self.global_pool(x, f"{layer_name(key)}_avgpool")
        s = self.act(self.conv(s, f"{key}.fc1", squeeze, 1, bias=True), act)
        s = self.conv(s, f"{key}.fc2", channels, 1, bias=True)
        s = self.hardsigmoid(s) if gate == "hardsigmoid" else self.act(s, gate)
        return self.mul(s, x, f"{layer_name(key)}_scale")

    def spec(self, with_loss=False):
        """The net spec, ending in Softmax ``prob`` (or SoftmaxWithLoss ``loss``) on ``self.logits``."""
        logits = self.logits
        inputs = {"data": [self.channels, self.input_size, self.input_size]}
        layers = list(self.layers)
        if with_loss:
            inputs["label"] = []
            layers.append({"name": "loss", "type": "SoftmaxWithLoss", "bottom": [logits, "label"], "top": "loss"})
        else:
            layers.append({"name": "prob", "type": "Softmax", "bottom": logits, "top": "prob"})
        return {"name": self.name, "inputs": inputs, "layers": layers}
