"""Layers that move data without arithmetic: Flatten, Reshape, Concat, Split.

Flatten(axis=1):  (N, C, H, W) -> (N, C*H*W); backward reshapes the diff back.
Reshape(shape):   ``shape`` excludes the batch axis; 0 copies that axis from
                  the bottom, -1 is inferred. Backward reshapes back.
Concat(axis=1):   y = [x_1, x_2, ...] along ``axis``; dx_i = the matching slice of dy.
Split:            one bottom, several tops sharing its data; dx = sum of the
                  tops' diffs. The net inserts it wherever a blob has several readers.
"""
import numpy as np

from ..errors import SpecError
from ..interop import caffe_importer, onnx_importer
from ..layer import REQUIRED, Layer, register


@register
class Flatten(Layer):
    type_name = "Flatten"
    PARAMS = {"axis": 1}

    @classmethod
    def to_caffe(cls, p, w):
        if p["axis"] != 1:
            raise w.refuse("only Flatten(axis=1) can be written")
        w.add("Flatten")

    def reshape(self, bottom_shapes):
        shape, a = bottom_shapes[0], self.p["axis"]
        return [tuple(shape[:a]) + (int(np.prod(shape[a:])),)]

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.reshape(bottom[0].shape)

    def to_onnx(self, g):
        g.node("Flatten", g.inputs, g.outputs, self.name, axis=int(self.p["axis"]))


@register
class Reshape(Flatten):
    type_name = "Reshape"
    gradcheck_case = ({"shape": [-1]}, [(2, 3, 2, 2)])
    PARAMS = {"shape": REQUIRED}

    @classmethod
    def to_caffe(cls, p, w):
        """decaf's shape leaves out the batch axis; Caffe's 0 copies it."""
        w.add("Reshape", reshape_param={"shape": {"dim": [0] + [int(d) for d in p["shape"]]}})

    def validate(self):
        shape = list(self.p["shape"])
        if shape.count(-1) > 1:
            raise SpecError(f"layer {self.name!r}: at most one -1 in shape {shape}")

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        want = [shape[i + 1] if d == 0 else int(d) for i, d in enumerate(self.p["shape"])]
        total = int(np.prod(shape[1:]))
        known = int(np.prod([d for d in want if d != -1]))
        if -1 in want:
            if known == 0 or total % known:
                raise self.shape_error(f"cannot infer -1 in {self.p['shape']} from bottom", "a divisor", shape)
            want[want.index(-1)] = total // known
        if int(np.prod(want)) != total:
            raise self.shape_error(f"reshape to {self.p['shape']} changes the element count", total,
                                   int(np.prod(want)))
        return [(shape[0],) + tuple(want)]

    def to_onnx(self, g):
        shape = g.const(f"{self.name}.shape", [0] + [int(d) for d in self.p["shape"]], np.int64)  # 0: keep N
        g.node("Reshape", [g.inputs[0], shape], g.outputs, self.name)


@register
class Concat(Layer):
    type_name = "Concat"
    PARAMS = {"axis": 1}

    @classmethod
    def to_caffe(cls, p, w):
        w.add("Concat", concat_param={"axis": int(p["axis"])})
    n_bottom = (1, None)

    def reshape(self, bottom_shapes):
        a = self.p["axis"]
        first = bottom_shapes[0]
        for name, shape in zip(self.bottom_names, bottom_shapes):
            if len(shape) != len(first) or any(s != f for i, (s, f) in enumerate(zip(shape, first)) if i != a):
                raise self.shape_error(f"bottom {name!r} does not match {self.bottom_names[0]!r} "
                                       f"outside axis {a}", first, shape)
        self.sizes = [s[a] for s in bottom_shapes]
        return [first[:a] + (sum(self.sizes),) + first[a + 1:]]

    def _slices(self):
        start = 0
        for size in self.sizes:
            index = [slice(None)] * self.p["axis"] + [slice(start, start + size)]
            yield tuple(index)
            start += size

    def bottom_slices(self):
        return list(self._slices())

    def forward(self, bottom, top):
        for blob, index in zip(bottom, self._slices()):
            top[0].data[index] = blob.data

    def backward(self, top, propagate_down, bottom):
        for blob, index, down in zip(bottom, self._slices(), propagate_down):
            if down:
                blob.diff[...] = top[0].diff[index]

    def to_onnx(self, g):
        g.node("Concat", g.inputs, g.outputs, self.name, axis=int(self.p["axis"]))


@register
class Split(Layer):
    type_name = "Split"
    n_top = (1, None)
    roles = frozenset({"split"})

    def bytes_moved(self, bottoms, tops):
        return 0                          # the tops share the bottom's data

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]] * len(self.top_names)

    def forward(self, bottom, top):
        for blob in top:
            blob.data = bottom[0].data   # share, no copy

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            diff = bottom[0].diff
            np.copyto(diff, top[0].diff)
            for blob in top[1:]:
                diff += blob.diff


# ---- ONNX -> decaf (Split has no ONNX op: the net inserts it) ----------------------------------
@onnx_importer("Flatten")
def _flatten_from_onnx(imp, node):
    axis = int(imp.attrs(node).get("axis", 1))
    if axis < 0:
        axis += imp.rank(node.input[0], node, "a negative axis")
    if axis != 1:
        raise imp.fail(f"node {imp.label(node)}: Flatten with axis {axis} is not supported (axis 1)")
    imp.add(node, "Flatten", [node.input[0]], node.output[0])


@onnx_importer("Reshape")
def _reshape_from_onnx(imp, node):
    """A constant target whose first entry keeps the batch axis; decaf's shape is the rest."""
    target = [int(d) for d in imp.need_const(node, 1, "the shape").reshape(-1)]
    if imp.attrs(node).get("allowzero", 0) and 0 in target:
        raise imp.fail(f"node {imp.label(node)}: Reshape with allowzero and a 0 in {target}")
    if not target:
        raise imp.fail(f"node {imp.label(node)}: Reshape to a scalar")
    first, rest = target[0], target[1:]
    in_shape = imp.shape(node.input[0])
    batch = in_shape[0] if in_shape else None
    keeps_batch = first == 0 or (first == -1 and -1 not in rest) or (batch is not None and first == batch)
    if not keeps_batch:
        raise imp.fail(f"node {imp.label(node)}: Reshape to {target} changes the batch axis; decaf needs "
                       f"the first entry to be 0 (or -1 with the rest fixed)")
    imp.add(node, "Reshape", [node.input[0]], node.output[0], shape=rest)


@onnx_importer("Concat")
def _concat_from_onnx(imp, node):
    axis = int(imp.attrs(node).get("axis", 1))
    if axis < 0:
        axis += imp.rank(node.input[0], node, "a negative axis")
    if axis < 1:
        raise imp.fail(f"node {imp.label(node)}: Concat along the batch axis is not supported")
    for t in node.input:
        if imp.const(t) is not None:
            raise imp.fail(f"node {imp.label(node)}: Concat with a constant input is not supported")
    imp.add(node, "Concat", list(node.input), node.output[0], axis=axis)


# ---- Caffe -> decaf (Caffe's Split layers are dropped by the converter: the net inserts its own) --
@caffe_importer("Flatten")
def _flatten_from_caffe(ctx, layer):
    p = layer.param("flatten_param")
    if p.get("axis", 1) != 1 or p.get("end_axis", -1) != -1:
        raise ctx.fail("only Flatten with axis 1 and end_axis -1 is supported")
    return {"type": "Flatten"}


@caffe_importer("Reshape")
def _reshape_from_caffe(ctx, layer):
    """Whole-blob reshapes that keep the batch axis (first dim 0 or -1)."""
    p = layer.param("reshape_param")
    if p.get("axis", 0) != 0 or p.get("num_axes", -1) != -1:
        raise ctx.fail("only Reshape with axis 0 and num_axes -1 is supported")
    dims = list(p.get("shape", {}).get("dim", []))
    if not dims or dims[0] not in (0, -1) or (dims[0] == -1 and -1 in dims[1:]):
        raise ctx.fail(f"reshape to {dims}: the first (batch) dimension must be 0 or -1")
    return {"type": "Reshape", "shape": [int(d) for d in dims[1:]]}


@caffe_importer("Concat")
def _concat_from_caffe(ctx, layer):
    """axis, or the 2014 files' concat_dim."""
    p = layer.param("concat_param")
    axis = p["axis"] if "axis" in p else p.get("concat_dim", 1)
    if axis < 1:
        raise ctx.fail(f"concatenation along axis {axis} is not supported (axis >= 1)")
    return {"type": "Concat", "axis": axis}
