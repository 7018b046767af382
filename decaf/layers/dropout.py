"""Dropout (inverted, as in Caffe): scaling happens at training time.

Parameter: dropout_ratio p, the probability of dropping a unit (default 0.5).

    train: m ~ Bernoulli(1 - p) per unit (the layer's seeded generator);
           y = x * m / (1 - p);   dx = dy * m / (1 - p)
    test:  y = x;                 dx = dy

Because the kept units are scaled up during training, the test-time net is
the identity and needs no rescaling (the paper's "multiply by 0.5 at test"
is the same model written the other way round).
"""
import numpy as np

from ..errors import SpecError
from ..interop import caffe_importer, onnx_importer
from ..layer import Layer, per_image, register


@register
class Dropout(Layer):
    type_name = "Dropout"
    group = "neuron"
    roles = frozenset({"train_only"})

    def summary(self):
        return f"p={self.p['dropout_ratio']}"

    def ops(self, bottom_shapes, top_shapes):
        return per_image(top_shapes[0]) if self.phase == "train" else 0
    PARAMS = {"dropout_ratio": 0.5}
    inplace_ok = True

    @classmethod
    def to_caffe(cls, p, w):
        w.add("Dropout", dropout_param={"dropout_ratio": float(p["dropout_ratio"])})

    def validate(self):
        if not 0 <= self.p["dropout_ratio"] < 1:
            raise SpecError(f"layer {self.name!r}: dropout_ratio must be in [0, 1), got {self.p['dropout_ratio']}")

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]]

    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        if self.phase != "train" or self.p["dropout_ratio"] == 0:
            if y is not x:
                y[...] = x
            self.mask = None
            return
        keep = 1.0 - self.p["dropout_ratio"]
        self.mask = (self.rng.random(x.shape, dtype=np.float32) < keep).astype(x.dtype) / keep
        np.multiply(x, self.mask, out=y)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            if self.mask is None:
                if bottom[0].diff is not top[0].diff:
                    bottom[0].diff[...] = top[0].diff
            else:
                np.multiply(top[0].diff, self.mask, out=bottom[0].diff)

    def to_onnx(self, g):
        ratio = g.const(f"{self.name}.ratio", np.float32(self.p["dropout_ratio"]))
        g.node("Dropout", [g.inputs[0], ratio], g.outputs, self.name)


@onnx_importer("Dropout")
def _dropout_from_onnx(imp, node):
    """The ratio from the attribute (opset < 12) or the constant input; training mode refused."""
    imp.only_first_output(node)
    ratio = float(imp.attrs(node).get("ratio", 0.5))
    if imp.has_input(node, 1):
        ratio = float(imp.need_const(node, 1, "ratio").reshape(-1)[0])
    if imp.has_input(node, 2):
        mode = imp.const(node.input[2])
        if mode is None or bool(mode.reshape(-1)[0]):
            raise imp.fail(f"node {imp.label(node)}: Dropout in training mode is not supported")
    imp.add(node, "Dropout", [node.input[0]], node.output[0], dropout_ratio=ratio)


# ---- Caffe -> decaf -----------------------------------------------------------------------------
@caffe_importer("Dropout")
def _dropout_from_caffe(ctx, layer):
    return {"type": "Dropout", "dropout_ratio": layer.param("dropout_param").get("dropout_ratio", 0.5)}
