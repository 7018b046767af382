"""Evaluate ONNX shape computations at import time (``fold(op, inputs, attrs, opset)``).

Exporters write ``x.view(x.size(0), -1)`` as Shape -> Gather -> Unsqueeze -> Concat -> Reshape,
``torch.chunk`` as Shape -> Gather -> Add -> Div -> Slice and ``F.pad`` as a ConstantOfShape ->
Concat -> Reshape -> Slice -> Transpose chain. None of these is a layer: the importer evaluates
them with NumPy once it knows the shapes they read (io/onnx_convert.py runs them at two probe batch
sizes, so a value that follows the batch size is told apart from a constant).

Each function takes the node's input arrays (None for an input left out) and its attributes
and returns the list of its outputs; ``NotFoldable`` says the node cannot be evaluated here (its
inputs are computed tensors, or an attribute is of a kind this module does not know).
"""
import numpy as np

from ..layers.shape import onnx_reshape
from ..layers.slice import onnx_slice_bounds, slice_args

MAX_FOLDED_ELEMENTS = 1 << 24      # a folded value is a shape, an index list or a small constant


class NotFoldable(Exception):
    """The node is not evaluated here; the message says why."""


def axes_arg(inputs, attrs, opset, since, index=1):
    """An ``axes`` list that is an attribute before opset ``since`` and input ``index`` from it on."""
    if opset < since:
        axes = attrs.get("axes")
    else:
        axes = inputs[index] if len(inputs) > index else None
    return None if axes is None else [int(a) for a in np.reshape(axes, -1)]


def _binary(fn):
    def run(inputs, attrs, opset):
        return [fn(inputs[0], inputs[1])]
    return run


def _divide(a, b):
    if np.issubdtype(np.result_type(a, b), np.integer):
        if np.any(np.asarray(b) == 0):
            raise NotFoldable("integer division by zero")
        return (np.trunc(np.asarray(a, np.float64) / b)).astype(np.result_type(a, b))
    return np.asarray(np.divide(a, b), np.result_type(a, b))


def _unary(fn):
    def run(inputs, attrs, opset):
        return [np.asarray(fn(inputs[0]), inputs[0].dtype)]
    return run


def _shape(inputs, attrs, opset):
    shape = np.array(inputs[0].shape, np.int64)
    start, end = attrs.get("start", 0), attrs.get("end")
    return [shape[start:end]]


def _gather(inputs, attrs, opset):
    data, idx = inputs[0], np.asarray(inputs[1], np.int64)
    axis = attrs.get("axis", 0)
    return [np.take(data, np.where(idx < 0, idx + data.shape[axis], idx), axis=axis)]


def _unsqueeze(inputs, attrs, opset):
    axes = axes_arg(inputs, attrs, opset, 13)
    x = inputs[0]
    rank = x.ndim + len(axes)
    for a in sorted(a + rank if a < 0 else a for a in axes):
        x = np.expand_dims(x, a)
    return [x]


def _squeeze(inputs, attrs, opset):
    axes = axes_arg(inputs, attrs, opset, 13)
    x = inputs[0]
    if axes is None:
        return [np.squeeze(x)]
    return [np.squeeze(x, axis=tuple(a + x.ndim if a < 0 else a for a in axes))]


def _concat(inputs, attrs, opset):
    return [np.concatenate([np.reshape(x, x.shape) for x in inputs], axis=attrs["axis"])]


def _slice(inputs, attrs, opset):
    x = inputs[0]
    starts, ends, axes, steps = slice_args(inputs, attrs, opset, x.ndim)
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[a] = slice(*onnx_slice_bounds(x.shape[a], s, e, st))
    return [x[tuple(index)]]


def _constant_of_shape(inputs, attrs, opset):
    shape = [int(d) for d in np.reshape(inputs[0], -1)]
    if any(d < 0 for d in shape):
        raise ValueError(f"ConstantOfShape of a negative shape {shape}")
    if int(np.prod(shape)) > MAX_FOLDED_ELEMENTS:
        raise ValueError(f"ConstantOfShape of {shape} is too large to evaluate")
    value = attrs.get("value")
    value = np.zeros(1, np.float32) if value is None else value
    return [np.full(shape, value.reshape(-1)[0], value.dtype)]


def _cast(inputs, attrs, opset):
    from onnx import helper
    return [inputs[0].astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))]


def _range(inputs, attrs, opset):
    start, limit, delta = (np.asarray(v).reshape(()) for v in inputs[:3])
    if delta == 0:
        raise ValueError("Range with delta 0")
    n = max(int(np.ceil((limit - start) / delta)), 0)
    if n > MAX_FOLDED_ELEMENTS:
        raise ValueError(f"Range of {n} elements is too large to evaluate")
    return [(start + delta * np.arange(n)).astype(start.dtype)]


def _reshape(inputs, attrs, opset):
    return [inputs[0].reshape(onnx_reshape(inputs[0].shape, inputs[1], attrs.get("allowzero", 0)))]


def _expand(inputs, attrs, opset):
    shape = np.broadcast_shapes(inputs[0].shape, tuple(int(d) for d in np.reshape(inputs[1], -1)))
    if int(np.prod(shape)) > MAX_FOLDED_ELEMENTS:
        raise ValueError(f"Expand to {shape} is too large to evaluate")
    return [np.broadcast_to(inputs[0], shape).copy()]


def _transpose(inputs, attrs, opset):
    return [np.transpose(inputs[0], attrs.get("perm"))]


def _where(inputs, attrs, opset):
    return [np.where(inputs[0], inputs[1], inputs[2])]


def _reduce(fn):
    def run(inputs, attrs, opset):
        axes = axes_arg(inputs, attrs, opset, 18 if fn is not np.sum else 13)
        keep = bool(attrs.get("keepdims", 1))
        x = inputs[0]
        if axes is None and attrs.get("noop_with_empty_axes", 0):
            return [x]
        return [np.asarray(fn(x, axis=None if axes is None else tuple(axes), keepdims=keep), x.dtype)]
    return run


def _variadic(fn):
    def run(inputs, attrs, opset):
        out = inputs[0]
        for x in inputs[1:]:
            out = fn(out, x)
        return [out]
    return run


def _flatten(inputs, attrs, opset):
    x, a = inputs[0], attrs.get("axis", 1)
    a = a + x.ndim if a < 0 else a
    return [x.reshape(int(np.prod(x.shape[:a])), -1)]


def _tile(inputs, attrs, opset):
    return [np.tile(inputs[0], [int(r) for r in np.reshape(inputs[1], -1)])]


FOLDERS = {
    "Shape": _shape, "Size": lambda i, a, o: [np.array(i[0].size, np.int64)],
    "Identity": lambda i, a, o: [i[0]], "Gather": _gather, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze,
    "Concat": _concat, "Slice": _slice, "ConstantOfShape": _constant_of_shape, "Cast": _cast,
    "Range": _range, "Reshape": _reshape, "Expand": _expand, "Transpose": _transpose, "Where": _where,
    "Flatten": _flatten, "Tile": _tile,
    "Add": _binary(np.add), "Sub": _binary(np.subtract), "Mul": _binary(np.multiply), "Div": _binary(_divide),
    "Pow": _binary(lambda a, b: np.power(a, b).astype(a.dtype)), "Mod": _binary(np.fmod),
    "Equal": _binary(np.equal), "Less": _binary(np.less), "Greater": _binary(np.greater),
    "LessOrEqual": _binary(np.less_equal), "GreaterOrEqual": _binary(np.greater_equal),
    "And": _binary(np.logical_and), "Or": _binary(np.logical_or), "Not": lambda i, a, o: [np.logical_not(i[0])],
    "Neg": _unary(np.negative), "Abs": _unary(np.abs), "Floor": _unary(np.floor), "Ceil": _unary(np.ceil),
    "Sqrt": _unary(np.sqrt), "Reciprocal": _unary(np.reciprocal),
    "Min": _variadic(np.minimum), "Max": _variadic(np.maximum), "Sum": _variadic(np.add),
    "ReduceProd": _reduce(np.prod), "ReduceSum": _reduce(np.sum), "ReduceMax": _reduce(np.max),
    "ReduceMin": _reduce(np.min), "ReduceMean": _reduce(np.mean),
}


def fold(op, inputs, attrs, opset):
    """The outputs of ``op`` on constant ``inputs``; raises NotFoldable or ValueError."""
    fn = FOLDERS.get(op)
    if fn is None:
        raise NotFoldable(f"{op} is not evaluated at import")
    outs = [np.asarray(o) for o in fn(inputs, attrs, opset)]
    for o in outs:
        if o.size > MAX_FOLDED_ELEMENTS:
            raise ValueError(f"{op} makes a constant of {o.size} elements, too large to evaluate")
    return outs
