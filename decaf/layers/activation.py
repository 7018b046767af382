"""Elementwise activations. All may run in place (top == bottom).

ReLU:      y = max(x, 0) + negative_slope * min(x, 0)     dy/dx = 1 if x > 0 else slope
LeakyReLU: ReLU with negative_slope defaulting to 0.01
Clip:      y = min(max(x, min), max)                       dy/dx = 1 inside (min, max), else 0
ReLU6:     Clip with min 0 and max 6
Sigmoid:   y = 1 / (1 + exp(-x))                           dy/dx = y (1 - y)
Tanh:      y = tanh(x)                                      dy/dx = 1 - y^2

Backward uses only the top data (never the bottom), which is what makes
running in place correct: for ReLU y > 0 exactly when x > 0.
"""
import numpy as np

from ..interop import caffe_importer, onnx_importer
from ..layer import Epilogue, Layer, per_image, register


class _Elementwise(Layer):
    inplace_ok = True
    group = "neuron"
    any_layout = True
    ops_per_output = 1       # arithmetic per element, an estimate for decaf profile

    def ops(self, bottom_shapes, top_shapes):
        return self.ops_per_output * per_image(top_shapes[0])

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]]


@register
class ReLU(_Elementwise):
    """``fused``: set by Net when the convolution before this in-place ReLU applies it already."""
    type_name = "ReLU"
    PARAMS = {"negative_slope": 0.0}
    roles = frozenset({"rectifier"})

    def epilogue(self):
        a = self.p["negative_slope"]
        return Epilogue("clamp", 0.0) if a == 0 else Epilogue("leaky", alpha=a)

    @classmethod
    def to_caffe(cls, p, w):
        """Caffe's ReLU, leaky by relu_param's negative_slope (LeakyReLU too)."""
        slope = float(p["negative_slope"])
        w.add("ReLU", **({"relu_param": {"negative_slope": slope}} if slope else {}))

    def forward(self, bottom, top):
        if self.fused:
            return
        x, y, a = bottom[0].data, top[0].data, self.p["negative_slope"]
        if a == 0:
            np.maximum(x, 0, out=y)
        else:
            np.multiply(x, np.where(x > 0, 1.0, a).astype(x.dtype), out=y)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y, a = top[0].data, self.p["negative_slope"]
            # y > 0 iff x > 0 (for a >= 0), so the top suffices even in place
            slope = (y > 0) if a == 0 else np.where(y > 0, 1.0, a).astype(y.dtype)   # (a bool mask: no float copy)
            np.multiply(top[0].diff, slope, out=bottom[0].diff)

    def to_onnx(self, g):
        if self.p["negative_slope"]:
            g.node("LeakyRelu", g.inputs, g.outputs, self.name, alpha=float(self.p["negative_slope"]))
        else:
            g.node("Relu", g.inputs, g.outputs, self.name)


@register
class LeakyReLU(ReLU):
    type_name = "LeakyReLU"
    PARAMS = {"negative_slope": 0.01}
    roles = frozenset()
    ops_per_output = 2


@register
class Clip(_Elementwise):
    type_name = "Clip"
    PARAMS = {"min": 0.0, "max": 6.0}
    ops_per_output = 2

    def epilogue(self):
        lo, hi = self.p["min"], self.p["max"]
        return Epilogue("clamp", lo, hi) if lo <= hi else None

    def forward(self, bottom, top):
        if self.fused:
            return
        np.clip(bottom[0].data, self.p["min"], self.p["max"], out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            inside = (y > self.p["min"]) & (y < self.p["max"])
            np.multiply(top[0].diff, inside, out=bottom[0].diff)

    def to_onnx(self, g):
        lo, hi = g.const(f"{self.name}.min", self.p["min"]), g.const(f"{self.name}.max", self.p["max"])
        g.node("Clip", [g.inputs[0], lo, hi], g.outputs, self.name)


@register
class ReLU6(Clip):
    type_name = "ReLU6"
    PARAMS = {}
    roles = frozenset({"rectifier"})

    def validate(self):
        self.p = {"min": 0.0, "max": 6.0}


@register
class Sigmoid(_Elementwise):
    type_name = "Sigmoid"
    ops_per_output = 4

    @classmethod
    def to_caffe(cls, p, w):
        w.add("Sigmoid")

    def epilogue(self):
        return Epilogue("sigmoid")

    def forward(self, bottom, top):
        if self.fused:
            return
        x, y = bottom[0].data, top[0].data
        # 1 / (1 + exp(-x)) written via tanh to avoid overflow for large |x|
        np.multiply(x, 0.5, out=y)
        np.tanh(y, out=y)
        y += 1
        y *= 0.5

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            np.multiply(top[0].diff, y * (1 - y), out=bottom[0].diff)

    def to_onnx(self, g):
        g.node("Sigmoid", g.inputs, g.outputs, self.name)


@register
class Tanh(_Elementwise):
    type_name = "Tanh"
    ops_per_output = 4

    @classmethod
    def to_caffe(cls, p, w):
        w.add("TanH")

    def forward(self, bottom, top):
        np.tanh(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            np.multiply(top[0].diff, 1 - y * y, out=bottom[0].diff)

    def to_onnx(self, g):
        g.node("Tanh", g.inputs, g.outputs, self.name)


# ---- ONNX -> decaf ------------------------------------------------------------------------------
F32_MAX = float(np.finfo(np.float32).max)     # ONNX's Clip without a bound means +-FLT_MAX


@onnx_importer("Relu", "LeakyRelu")
def _relu_from_onnx(imp, node):
    if node.op_type == "Relu":
        imp.add(node, "ReLU", [node.input[0]], node.output[0])
    else:
        imp.add(node, "ReLU", [node.input[0]], node.output[0],
                negative_slope=float(imp.attrs(node).get("alpha", 0.01)))


@onnx_importer("Clip")
def _clip_from_onnx(imp, node):
    """ReLU6 for [0, 6], ReLU for [0, inf), else Clip; bounds from attributes before opset 11."""
    a = imp.attrs(node)
    if imp.opset < 11:
        lo, hi = float(a.get("min", -F32_MAX)), float(a.get("max", F32_MAX))
    else:
        lo, hi = -F32_MAX, F32_MAX
        if imp.has_input(node, 1):
            lo = float(imp.need_const(node, 1, "min").reshape(-1)[0])
        if imp.has_input(node, 2):
            hi = float(imp.need_const(node, 2, "max").reshape(-1)[0])
    lo, hi = max(lo, -F32_MAX), min(hi, F32_MAX)
    if lo == 0 and hi == 6:
        imp.add(node, "ReLU6", [node.input[0]], node.output[0])
    elif lo == 0 and hi >= F32_MAX:
        imp.add(node, "ReLU", [node.input[0]], node.output[0])
    else:
        imp.add(node, "Clip", [node.input[0]], node.output[0], min=lo, max=hi)


@onnx_importer("Sigmoid", "Tanh")
def _sigmoid_tanh_from_onnx(imp, node):
    imp.add(node, node.op_type, [node.input[0]], node.output[0])     # the same names in both


# ---- Caffe -> decaf (Clip and ReLU6 have no Caffe layer) ----------------------------------------
@caffe_importer("ReLU")
def _relu_from_caffe(ctx, layer):
    slope = layer.param("relu_param").get("negative_slope", 0.0)
    return {"type": "ReLU", "negative_slope": slope} if slope else {"type": "ReLU"}


@caffe_importer("Sigmoid")
def _sigmoid_from_caffe(ctx, layer):
    return {"type": "Sigmoid"}


@caffe_importer("TanH")
def _tanh_from_caffe(ctx, layer):
    return {"type": "Tanh"}
