"""Slice: a strided window of the non-batch axes (ONNX Slice, and each output of ONNX Split).

    forward:  y = x[..., start_a:end_a:step_a, ...]  along each sliced axis a >= 1
    backward: dx = 0 except dx[the same window] = dy

``axes``, ``starts``, ``ends`` and ``steps`` are lists of one entry per sliced axis with
Python's slicing meaning; an ``end`` of null runs through the first element (a negative step).
The ONNX importer turns ONNX's clamping rules into these values for the known input shape.
"""
import numpy as np

from ..errors import SpecError
from ..interop import onnx_importer
from ..layer import REQUIRED, Layer, register

_INT64_MAX = np.iinfo(np.int64).max


@register
class Slice(Layer):
    type_name = "Slice"
    PARAMS = {"axes": REQUIRED, "starts": REQUIRED, "ends": REQUIRED, "steps": None}
    gradcheck_case = ({"axes": [1, 3], "starts": [1, 4], "ends": [3, None], "steps": [1, -2]}, [(2, 4, 3, 5)])

    def summary(self):
        return ", ".join(f"axis {a}: {s}:{'' if e is None else e}:{st}" for a, s, e, st in self._windows())

    def validate(self):
        p = self.p
        n = len(p["axes"])
        steps = p["steps"] if p["steps"] is not None else [1] * n
        if not len(p["starts"]) == len(p["ends"]) == len(steps) == n:
            raise SpecError(f"layer {self.name!r} (Slice): axes, starts, ends and steps differ in length")
        if any(int(a) < 1 for a in p["axes"]) or len(set(p["axes"])) != n:
            raise SpecError(f"layer {self.name!r} (Slice): axes {p['axes']} must be distinct non-batch axes (>= 1)")
        if any(int(s) == 0 for s in steps):
            raise SpecError(f"layer {self.name!r} (Slice): a step of 0")

    def _windows(self):
        steps = self.p["steps"] or [1] * len(self.p["axes"])
        return list(zip(self.p["axes"], self.p["starts"], self.p["ends"], steps))

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        index = [slice(None)] * len(shape)
        for a, s, e, st in self._windows():
            if a >= len(shape):
                raise self.shape_error(f"axis {a} of a {len(shape)}-D bottom")
            index[a] = slice(int(s), None if e is None else int(e), int(st))
        self.index = tuple(index)
        out = tuple(len(range(*sl.indices(d))) for sl, d in zip(index, shape))
        if 0 in out:
            raise self.shape_error("the window is empty", "a non-empty window", out)
        return [out]

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data[self.index]

    def view_of_bottom(self, array, top_shape):
        """The window itself when it is contiguous (a range of channels of one image)."""
        view = array[self.index]
        return view if view.flags.c_contiguous and view.shape == tuple(top_shape) else None

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 0
            bottom[0].diff[self.index] = top[0].diff

    def to_onnx(self, g):
        """Slice with starts/ends/axes/steps inputs; a null end is INT64_MIN (through the first element)."""
        name, w = self.name, self._windows()
        ends = [(-_INT64_MAX - 1) if e is None else int(e) for _, _, e, _ in w]
        args = [g.const(f"{name}.{k}", v, np.int64) for k, v in
                (("starts", [int(s) for _, s, _, _ in w]), ("ends", ends), ("axes", [int(a) for a, _, _, _ in w]),
                 ("steps", [int(st) for _, _, _, st in w]))]
        g.node("Slice", [g.inputs[0]] + args, g.outputs, name)


# ---- ONNX -> decaf ------------------------------------------------------------------------------
def onnx_slice_bounds(dim, start, end, step):
    """ONNX Slice semantics for one axis of size ``dim`` as a Python slice (start, stop, step);
    stop None means "through the first element" for a negative step."""
    if step == 0:
        raise ValueError("Slice with step 0")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        return int(start), int(end), int(step)
    start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return int(start), (None if end < 0 else int(end)), int(step)


def slice_args(inputs, attrs, opset, rank):
    """(starts, ends, axes, steps) of a Slice node (attributes before opset 10, inputs from it),
    axes normalised to 0..rank-1."""
    if opset < 10:
        starts, ends = attrs["starts"], attrs["ends"]
        axes, steps = attrs.get("axes"), None
    else:
        starts, ends = inputs[1], inputs[2]
        axes = inputs[3] if len(inputs) > 3 else None
        steps = inputs[4] if len(inputs) > 4 else None
    starts = [int(s) for s in np.reshape(starts, -1)]
    ends = [int(e) for e in np.reshape(ends, -1)]
    axes = list(range(len(starts))) if axes is None else [int(a) for a in np.reshape(axes, -1)]
    steps = [1] * len(starts) if steps is None else [int(s) for s in np.reshape(steps, -1)]
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ValueError(f"Slice starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    axes = [a + rank if a < 0 else a for a in axes]
    if any(not 0 <= a < rank for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"Slice axes {axes} are not distinct axes of a {rank}-D tensor")
    return starts, ends, axes, steps


def _add_slice(imp, node, top, shape, windows):
    """One Slice layer for ``windows`` [(axis, start, end, step)] in ONNX terms on ``shape``; the
    batch axis may only be taken whole."""
    axes, starts, ends, steps = [], [], [], []
    for a, s, e, st in windows:
        if a == 0:                       # whole, for any batch size (or the graph's static one)
            n = imp.static_batch or 1 << 40
            if onnx_slice_bounds(n, s, e, st) != (0, n, 1):
                raise imp.fail(f"node {imp.label(node)}: slicing the batch axis is not supported")
            continue
        s, e, st = onnx_slice_bounds(shape[a], s, e, st)
        if (s, e, st) != (0, shape[a], 1):
            axes.append(a), starts.append(s), ends.append(e), steps.append(st)
    if not axes:
        imp.same_as(top, node.input[0])
        return
    imp.add(node, "Slice", [node.input[0]], top, axes=axes, starts=starts, ends=ends,
            steps=None if all(st == 1 for st in steps) else steps)


def _known_shape(imp, node):
    shape = imp.shape_at(node.input[0], 1)
    if shape is None:
        raise imp.fail(f"node {imp.label(node)}: the shape of {node.input[0]!r} is not known")
    return shape


@onnx_importer("Slice")
def _slice_from_onnx(imp, node):
    """starts/ends/axes/steps: attributes before opset 10, constant inputs from it."""
    shape = _known_shape(imp, node)
    if imp.opset >= 10:
        for i, what in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")):
            if imp.has_input(node, i):
                imp.need_const(node, i, what)
    inputs = [None] + [imp.const(t) if t else None for t in node.input[1:]]
    try:
        starts, ends, axes, steps = slice_args(inputs, imp.attrs(node), imp.opset, len(shape))
    except ValueError as exc:
        raise imp.fail(f"node {imp.label(node)}: {exc}") from exc
    _add_slice(imp, node, node.output[0], shape, list(zip(axes, starts, ends, steps)))


@onnx_importer("Split")
def _split_from_onnx(imp, node):
    """One Slice per output; ``split`` an attribute before opset 13, an input from it; without it,
    equal parts (opset 18's num_outputs: the last part may be smaller)."""
    shape = _known_shape(imp, node)
    a = imp.attrs(node)
    axis = int(a.get("axis", 0))
    axis = axis + len(shape) if axis < 0 else axis
    if not 1 <= axis < len(shape):
        raise imp.fail(f"node {imp.label(node)}: Split along axis {a.get('axis', 0)} of a {len(shape)}-D "
                       f"input (decaf splits non-batch axes)")
    if imp.opset >= 13 and imp.has_input(node, 1):
        sizes = [int(s) for s in imp.need_const(node, 1, "split").reshape(-1)]
    elif imp.opset < 13 and "split" in a:
        sizes = [int(s) for s in a["split"]]
    else:
        n = len(node.output)
        part = -(-shape[axis] // n) if "num_outputs" in a else shape[axis] // n
        sizes = [part] * (n - 1) + [shape[axis] - part * (n - 1)]
    if len(sizes) != len(node.output) or sum(sizes) != shape[axis] or min(sizes) < 0:
        raise imp.fail(f"node {imp.label(node)}: split sizes {sizes} do not cut axis {axis} of size "
                       f"{shape[axis]} into {len(node.output)} parts")
    start = 0
    for top, size in zip(node.output, sizes):
        if top:
            _add_slice(imp, node, top, shape, [(axis, start, start + size, 1)])
        start += size


@onnx_importer("Gather")
def _gather_from_onnx(imp, node):
    """A computed tensor indexed by a constant along a non-batch axis (``x[:, 2]``, ``x[:, 1:3]`` as a
    list): a scalar index is a Slice then a Reshape without that axis; consecutive indices one Slice.
    (Gathers on shapes and constants are evaluated at import, not here.)"""
    shape = _known_shape(imp, node)
    axis = int(imp.attrs(node).get("axis", 0))
    axis = axis + len(shape) if axis < 0 else axis
    if not 1 <= axis < len(shape):
        raise imp.fail(f"node {imp.label(node)}: Gather along axis {imp.attrs(node).get('axis', 0)} of a "
                       f"{len(shape)}-D input (decaf indexes non-batch axes)")
    idx = imp.need_const(node, 1, "the indices").astype(np.int64)
    flat = np.where(idx < 0, idx + shape[axis], idx).reshape(-1)
    if flat.size == 0 or idx.ndim > 1 or flat.min() < 0 or flat.max() >= shape[axis] or \
            np.any(np.diff(flat) != 1):
        raise imp.fail(f"node {imp.label(node)}: Gather of indices {idx.tolist()} along an axis of size "
                       f"{shape[axis]} is not supported (one index, or consecutive ones)")
    window = [(axis, int(flat[0]), int(flat[-1]) + 1, 1)]
    if idx.ndim == 1:
        _add_slice(imp, node, node.output[0], shape, window)
        return
    sliced = f"{node.output[0]}:slice"
    _add_slice(imp, node, sliced, shape, window)
    rest = [d for i, d in enumerate(shape) if i != axis][1:]
    imp.add(node, "Reshape", [sliced], node.output[0], shape=rest)
