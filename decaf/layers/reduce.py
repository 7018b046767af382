"""Reduce: the mean, max or sum over some non-batch axes (``x.mean((2, 3))`` heads, SE blocks).

    mean: y = sum_A x / |A|          dx = dy / |A| broadcast over A
    sum:  y = sum_A x                dx = dy broadcast over A
    max:  y = max_A x                dx = dy / t where x is the max (t: how many tie for it), else 0

A is ``axes`` (each >= 1); ``keepdims`` keeps them as size-1 axes.
"""
import numpy as np

from .. import kernels
from ..errors import SpecError
from ..interop import onnx_importer
from ..layer import REQUIRED, Layer, per_image, register
from .layernorm import layernorm_chain_from_onnx

_ONNX = {"mean": "ReduceMean", "max": "ReduceMax", "sum": "ReduceSum"}


@register
class Reduce(Layer):
    type_name = "Reduce"
    PARAMS = {"operation": "mean", "axes": REQUIRED, "keepdims": True}
    gradcheck_case = ({"operation": "mean", "axes": [2, 3]}, [(2, 3, 4, 5)])
    group = "pool"

    def summary(self):
        return f"{self.p['operation']} {list(self.p['axes'])}"

    def ops(self, bottom_shapes, top_shapes):
        return per_image(bottom_shapes[0])

    def validate(self):
        if self.p["operation"] not in _ONNX:
            raise SpecError(f"layer {self.name!r} (Reduce): operation must be mean, max or sum, got "
                            f"{self.p['operation']!r}")
        axes = [int(a) for a in self.p["axes"]]
        if not axes or min(axes) < 1 or len(set(axes)) != len(axes):
            raise SpecError(f"layer {self.name!r} (Reduce): axes {self.p['axes']} must be distinct non-batch "
                            f"axes (>= 1)")
        self.axes = tuple(sorted(axes))

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        if self.axes[-1] >= len(shape):
            raise self.shape_error(f"axes {list(self.axes)} of a {len(shape)}-D bottom")
        self.kept = tuple(1 if i in self.axes else d for i, d in enumerate(shape))
        if self.p["keepdims"]:
            return [self.kept]
        return [tuple(d for i, d in enumerate(shape) if i not in self.axes)]

    def forward(self, bottom, top):
        x = bottom[0].data
        if (self.p["operation"] == "mean" and self.axes == (2, 3) and x.ndim == 4 and x.dtype == np.float32
                and x.flags.c_contiguous and top[0].data.flags.c_contiguous):
            # the mean of each plane (a head's x.mean((2, 3))): the compiled global average pooling
            # (MNASNet's head at batch 1: 0.13 ms with NumPy's mean, 0.09 ms so), nothing allocated
            kernels.avg_pool_forward(x, top[0].data.reshape(self.kept), x.shape[2:], (1, 1), (0, 0, 0, 0), True)
            return
        fn = {"mean": np.mean, "max": np.max, "sum": np.sum}[self.p["operation"]]
        top[0].data[...] = fn(x, axis=self.axes).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, dx = bottom[0].data, bottom[0].diff
        dy = top[0].diff.reshape(self.kept)
        op = self.p["operation"]
        if op == "sum":
            dx[...] = dy
        elif op == "mean":
            np.multiply(dy, 1.0 / (x.size // int(np.prod(self.kept))), out=dx)
        else:
            at_max = x == top[0].data.reshape(self.kept)
            np.multiply(at_max, dy / at_max.sum(axis=self.axes, keepdims=True), out=dx)

    def to_onnx(self, g):
        """ReduceSum takes its axes as an input from opset 13, the others from opset 18."""
        op, axes = _ONNX[self.p["operation"]], [int(a) for a in self.axes]
        keep = int(bool(self.p["keepdims"]))
        if g.opset >= (13 if op == "ReduceSum" else 18):
            g.node(op, [g.inputs[0], g.const(f"{self.name}.axes", axes, np.int64)], g.outputs, self.name,
                   keepdims=keep)
        else:
            g.node(op, g.inputs, g.outputs, self.name, axes=axes, keepdims=keep)


@onnx_importer("ReduceMean", "ReduceMax", "ReduceSum")
def _reduce_from_onnx(imp, node):
    """axes: an attribute (an input from opset 13 for ReduceSum, 18 for the others); a reduction over
    every axis (no axes) or over the batch axis is refused."""
    if node.op_type == "ReduceMean" and layernorm_chain_from_onnx(imp, node):
        return
    op = {v: k for k, v in _ONNX.items()}[node.op_type]
    a = imp.attrs(node)
    r = imp.rank(node.input[0], node, node.op_type)
    axes = imp.axes(node, 13 if node.op_type == "ReduceSum" else 18)
    if axes is None or not axes:
        if a.get("noop_with_empty_axes", 0):
            imp.same_as(node.output[0], node.input[0])
            return
        axes = list(range(r))
    axes = sorted(x + r if x < 0 else x for x in axes)
    if any(not 0 <= x < r for x in axes):
        raise imp.fail(f"node {imp.label(node)}: axes {axes} out of range for a {r}-D input")
    if 0 in axes:
        raise imp.fail(f"node {imp.label(node)}: {node.op_type} over the batch axis (axes {axes}) is not "
                       f"supported")
    imp.add(node, "Reduce", [node.input[0]], node.output[0], operation=op, axes=axes,
            keepdims=bool(a.get("keepdims", 1)))
