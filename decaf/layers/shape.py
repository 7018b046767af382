"""Layers that move data without arithmetic: Flatten, Reshape, Concat, Split.

Flatten(axis=1):  (N, C, H, W) -> (N, C*H*W); backward reshapes the diff back.
Reshape(shape):   ``shape`` excludes the batch axis; 0 copies that axis from
                  the bottom, -1 is inferred. Backward reshapes back.
Concat(axis=1):   y = [x_1, x_2, ...] along ``axis``; dx_i = the matching slice of dy.
Split:            one bottom, several tops sharing its data; dx = sum of the
                  tops' diffs. The net inserts it wherever a blob has several readers.

From ONNX, Reshape, Flatten, Squeeze and Unsqueeze of a computed tensor all become a Reshape
with the exact per-example shape, worked out at two batch sizes (``imp.probe_batches``): the
target may be a constant, or a shape computation that follows the batch (``x.view(x.size(0),
-1)``); the node is refused when its output's first axis is not the batch.
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

    def view_of_bottom(self, array, top_shape):
        """The same values in the top's shape: a view when the bottom is contiguous."""
        return array.reshape(top_shape) if array.flags.c_contiguous else None

    def to_onnx(self, g):
        """ONNX Flatten folds everything before the axis into one: only axis 1 is the same; decaf's
        axis k keeps the first k axes, a Reshape to [0] * k + [-1]."""
        a = int(self.p["axis"])
        if a == 1:
            g.node("Flatten", g.inputs, g.outputs, self.name, axis=1)
        else:
            shape = g.const(f"{self.name}.shape", [0] * a + [-1], np.int64)
            g.node("Reshape", [g.inputs[0], shape], g.outputs, self.name)


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
        zeros = [i for i, d in enumerate(self.p["shape"]) if d == 0]
        if zeros and zeros[-1] + 1 >= len(shape):
            raise self.shape_error(f"shape {self.p['shape']}: a 0 (copy the bottom's size) at position "
                                   f"{zeros[-1]}, past the bottom's {len(shape) - 1} non-batch axes", "fewer axes",
                                   shape)
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

    def validate(self):
        if not isinstance(self.p["axis"], (int, np.integer)) or isinstance(self.p["axis"], bool):
            raise SpecError(f"layer {self.name!r} (Concat): axis must be an integer, got {self.p['axis']!r}")

    def reshape(self, bottom_shapes):
        first = bottom_shapes[0]
        a = int(self.p["axis"])
        a = a + len(first) if a < 0 else a                 # a negative axis counts from the end
        if not 1 <= a < len(first):
            raise SpecError(f"layer {self.name!r} (Concat): axis {self.p['axis']} is not a non-batch axis "
                            f"of its {len(first)}-D bottoms (1..{len(first) - 1}, or -{len(first) - 1}..-1)")
        self.axis = a
        for name, shape in zip(self.bottom_names, bottom_shapes):
            if len(shape) != len(first) or any(s != f for i, (s, f) in enumerate(zip(shape, first)) if i != a):
                raise self.shape_error(f"bottom {name!r} does not match {self.bottom_names[0]!r} "
                                       f"outside axis {a}", first, shape)
        self.sizes = [s[a] for s in bottom_shapes]
        return [first[:a] + (sum(self.sizes),) + first[a + 1:]]

    def _slices(self):
        start = 0
        for size in self.sizes:
            index = [slice(None)] * self.axis + [slice(start, start + size)]
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


# ---- ONNX -> decaf (Split has no ONNX op: the net inserts it; ONNX's Split is slice.py's) -------
def onnx_reshape(shape, target, allowzero=False):
    """The output shape of ONNX Reshape of a tensor of ``shape`` to ``target`` (0 copies, -1 infers)."""
    target = [int(d) for d in np.reshape(target, -1)]
    out = [shape[i] if d == 0 and not allowzero and i < len(shape) else d for i, d in enumerate(target)]
    total = int(np.prod(shape))
    if out.count(-1) > 1 or any(d < -1 for d in out):
        raise ValueError(f"Reshape target {target} is not valid")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        if known == 0 or total % known:
            raise ValueError(f"Reshape of {tuple(shape)} to {target}: -1 cannot be inferred")
        out[out.index(-1)] = total // known
    if int(np.prod(out)) != total:
        raise ValueError(f"Reshape of {tuple(shape)} to {target} changes the element count")
    return tuple(out)


def _batch_kept(imp, node, out_shape_at):
    """The per-example output shape of ``node``, whose whole output shape at batch size b is
    ``out_shape_at(b)``; refused when the first axis is not the batch or the rest follows it."""
    shapes = []
    for b in imp.probe_batches:
        try:
            shape = tuple(out_shape_at(b))
        except ValueError as exc:
            raise imp.fail(f"node {imp.label(node)}: {exc}") from exc
        if not shape or shape[0] != b:
            raise imp.fail(f"node {imp.label(node)}: the output's first axis is not the batch (an input of "
                           f"batch {b} gives shape {shape}): the node changes the batch axis, which decaf "
                           f"keeps first")
        shapes.append(shape[1:])
    if shapes[0] != shapes[1]:
        raise imp.fail(f"node {imp.label(node)}: the per-example output shape follows the batch size "
                       f"({shapes[0]} and {shapes[1]} at batches {imp.probe_batches})")
    return list(shapes[0])


def _input_shape_at(imp, node, b):
    shape = imp.shape_at(node.input[0], b)
    if shape is None:
        raise imp.fail(f"node {imp.label(node)}: the shape of {node.input[0]!r} is not known")
    return shape


@onnx_importer("Reshape")
def _reshape_from_onnx(imp, node):
    """A constant target (whose first entry may be the graph's static batch size) or a folded shape
    computation; the output must keep the batch first."""
    allowzero = imp.attrs(node).get("allowzero", 0)
    fixed = imp.const(node.input[1]) is not None if imp.has_input(node, 1) else False

    def out_shape_at(b):
        target = imp.value_at(node.input[1], b) if imp.has_input(node, 1) else None
        if target is None:
            imp.need_const(node, 1, "the shape")             # refuses, saying why
        target = [int(d) for d in np.reshape(target, -1)]
        if fixed and target and imp.static_batch is not None and target[0] == imp.static_batch:
            target[0] = b                                    # a static-batch export: its batch size
        if not target:
            raise ValueError("Reshape to a scalar")
        return onnx_reshape(_input_shape_at(imp, node, b), target, allowzero)

    imp.add(node, "Reshape", [node.input[0]], node.output[0], shape=_batch_kept(imp, node, out_shape_at))


@onnx_importer("Flatten")
def _flatten_from_onnx(imp, node):
    """Axis 1 (or its negative): decaf's Flatten; other axes move the batch axis and are refused."""
    a = int(imp.attrs(node).get("axis", 1))

    def out_shape_at(b):
        shape = _input_shape_at(imp, node, b)
        k = a + len(shape) if a < 0 else a
        return (int(np.prod(shape[:k])), int(np.prod(shape[k:])))

    _batch_kept(imp, node, out_shape_at)
    imp.add(node, "Flatten", [node.input[0]], node.output[0])


@onnx_importer("Squeeze", "Unsqueeze")
def _squeeze_from_onnx(imp, node):
    """Squeeze / Unsqueeze of a computed tensor (axes an attribute before opset 13, an input from
    it): a Reshape to the resulting per-example shape."""
    axes = imp.axes(node, 13)
    squeeze = node.op_type == "Squeeze"
    if axes is None and not squeeze:
        raise imp.fail(f"node {imp.label(node)}: Unsqueeze without axes")

    def out_shape_at(b):
        shape = list(_input_shape_at(imp, node, b))
        rank = len(shape) if squeeze else len(shape) + len(axes)
        norm = None if axes is None else sorted(x + rank if x < 0 else x for x in axes)
        if norm is not None and any(not 0 <= x < rank for x in norm):
            raise ValueError(f"axes {axes} out of range for rank {rank}")
        if norm is not None and 0 in norm:
            raise ValueError(f"{node.op_type} of the batch axis (axes {axes}) is not supported")
        if squeeze:
            keep = [d for i, d in enumerate(shape) if not (d == 1 and (norm is None or i in norm))]
            if norm is not None and any(shape[i] != 1 for i in norm):
                raise ValueError(f"Squeeze of axes {axes} whose size is not 1 (shape {tuple(shape)})")
            return keep
        for x in norm:
            shape.insert(x, 1)
        return shape

    imp.add(node, "Reshape", [node.input[0]], node.output[0], shape=_batch_kept(imp, node, out_shape_at))


@onnx_importer("Concat")
def _concat_from_onnx(imp, node):
    axis = int(imp.attrs(node).get("axis", 1))
    r = imp.rank(node.input[0], node, "Concat")
    if not -r <= axis < r:
        raise imp.fail(f"node {imp.label(node)}: Concat axis {axis} is out of range for {r}-D inputs")
    if axis < 0:
        axis += r
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
