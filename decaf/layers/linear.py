"""InnerProduct (fully connected).

Parameters: num_output; bias_term (default True); weight_filler, bias_filler.
The bottom (N, ...) is flattened to x of shape (N, D).

    forward:  y = x W^T + b              W: (num_output, D), b: (num_output,)
    backward: dx = dy W;  dW = dy^T x;  db = sum over the batch of dy
"""
import numpy as np

from .. import fillers
from ..blas import gemm
from ..layer import REQUIRED, Layer, per_image, register


@register
class InnerProduct(Layer):
    type_name = "InnerProduct"
    group = "fc"
    roles = frozenset({"classifier"})
    gradcheck_case = ({"num_output": 4}, [(3, 2, 2, 2)])

    def summary(self):
        return str(self.p["num_output"])

    def macs(self, bottom_shapes, top_shapes):
        return per_image(bottom_shapes[0]) * self.p["num_output"]

    def ops(self, bottom_shapes, top_shapes):
        return per_image(top_shapes[0]) if self.p["bias_term"] else 0
    PARAMS = {"num_output": REQUIRED, "bias_term": True,
              "weight_filler": {"type": "xavier"}, "bias_filler": {"type": "constant", "value": 0.0}}

    def setup(self, bottom_shapes, fill_rng):
        d = int(np.prod(bottom_shapes[0][1:]))
        self.weight = self.add_param("weight", (self.p["num_output"], d), 0)
        fillers.fill(self.weight.data, self.p["weight_filler"], fill_rng)
        self.bias = None
        if self.p["bias_term"]:
            self.bias = self.add_param("bias", (self.p["num_output"],), 1)
            fillers.fill(self.bias.data, self.p["bias_filler"], fill_rng)

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        d = int(np.prod(shape[1:]))
        if d != self.weight.shape[1]:
            raise self.shape_error(f"bottom {self.bottom_names[0]!r} has {d} features per example "
                                   f"(shape {shape}) but the weights take", self.weight.shape[1], d)
        return [(shape[0], self.p["num_output"])]

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(bottom[0].shape[0], -1)
        gemm(x, self.weight.data.T, top[0].data)
        if self.bias is not None:
            top[0].data += self.bias.data

    def backward(self, top, propagate_down, bottom):
        x = bottom[0].data.reshape(bottom[0].shape[0], -1)
        dy = top[0].diff
        gemm(dy.T, x, self.weight.diff)
        if self.bias is not None:
            np.sum(dy, axis=0, out=self.bias.diff)
        if propagate_down[0]:
            gemm(dy, self.weight.data, bottom[0].diff.reshape(x.shape))
