"""LayerNorm: normalise each example over the axes axis..end_axis (inclusive), then a learned
affine of the normalised shape.

Parameters: axis (1), end_axis (-1: the last axis; negative values count from the end of the full
shape, batch included), eps (1e-5), weight_filler (1), bias_filler (0). ONNX's LayerNormalization
is (axis, -1): (N, L, C) with axis -1 is a transformer's LayerNorm over C. ConvNeXt's LayerNorm2d
on (N, C, H, W) is (1, 1): over the channels at each position.

    m = mean of x over the normalised axes,  v = mean of (x - m)^2 over them (biased)
    xhat = (x - m) / sqrt(v + eps);  y = gamma * xhat + beta     (gamma, beta: the normalised shape)
    backward (means over the normalised axes):
        dxhat = dy * gamma
        dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / sqrt(v + eps)
        dgamma = sum of dy * xhat, dbeta = sum of dy   (over the batch and the other axes)
Forward keeps m and 1 / sqrt(v + eps), backward recomputes xhat from them. Over one axis (float32):
the compiled kernels.layernorm, one pass over the data per (outer, C, inner) chunk; else NumPy.
"""
import math

import numpy as np

from .. import fillers, kernels
from ..errors import SpecError
from ..interop import onnx_importer
from ..layer import Layer, per_image, register


@register
class LayerNorm(Layer):
    type_name = "LayerNorm"
    group = "norm"
    unit_params = ("weight",)
    PARAMS = {"axis": 1, "end_axis": -1, "eps": 1e-5, "weight_filler": {"type": "constant", "value": 1.0},
              "bias_filler": {"type": "constant", "value": 0.0}}
    gradcheck_case = ({"axis": 1, "end_axis": 1, "weight_filler": {"type": "gaussian", "std": 1.0},
                       "bias_filler": {"type": "gaussian", "std": 1.0}}, [(2, 3, 2, 2)])

    def validate(self):
        if not self.p["eps"] >= 0:
            raise SpecError(f"layer {self.name!r}: eps must be >= 0, got {self.p['eps']}")

    def _axes(self, ndim):
        a, e = (v + ndim if v < 0 else v for v in (self.p["axis"], self.p["end_axis"]))
        if not 1 <= a <= e < ndim:
            raise self.shape_error(f"axis {self.p['axis']} .. end_axis {self.p['end_axis']} must be axes "
                                   f"1 .. {ndim - 1} of the {ndim}-D bottom (axis 0 is the batch), in order")
        return a, e

    def summary(self):
        return f"axes {self.p['axis']}..{self.p['end_axis']}"

    def setup(self, bottom_shapes, fill_rng):
        a, e = self._axes(len(bottom_shapes[0]))
        shape = tuple(bottom_shapes[0][a:e + 1])
        self.gamma = self.add_param("weight", shape, 0)
        self.beta = self.add_param("bias", shape, 1)
        fillers.fill(self.gamma.data, self.p["weight_filler"], fill_rng)
        fillers.fill(self.beta.data, self.p["bias_filler"], fill_rng)

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        a, e = self._axes(len(shape))
        if shape[a:e + 1] != self.gamma.shape:
            raise self.shape_error("normalised shape", self.gamma.shape, shape[a:e + 1])
        self.norm_axes = tuple(range(a, e + 1))
        self.other_axes = tuple(i for i in range(len(shape)) if i not in self.norm_axes)
        self.param_view = self.gamma.shape + (1,) * (len(shape) - 1 - e)    # broadcasts over the rest
        return [bottom_shapes[0]]

    def ops(self, bottom_shapes, top_shapes):
        return 8 * per_image(top_shapes[0])       # mean, centre, square, mean, scale, affine (2)

    def forward(self, bottom, top):
        """Keeps mean and inv_std (shaped like x with the normalised axes 1) for backward. Over one
        axis, float32 and contiguous: kernels.layernorm (csrc/layernorm.c), x as (outer, C, inner)."""
        x, y, axes = bottom[0].data, top[0].data, self.norm_axes
        a, e = axes[0], axes[-1]
        stats_shape = x.shape[:a] + (1,) * len(axes) + x.shape[e + 1:]
        params = (self.gamma.data, self.beta.data)
        if a == e and all(v.dtype == np.float32 and v.flags.c_contiguous for v in (x, y) + params):
            if getattr(self, "mean", None) is None or self.mean.shape != stats_shape or self.mean.dtype != x.dtype:
                self.mean, self.inv_std = np.empty(stats_shape, x.dtype), np.empty(stats_shape, x.dtype)
            view = (math.prod(x.shape[:a]), x.shape[a], math.prod(x.shape[a + 1:]))   # (np.prod: 5 us each)
            kernels.layernorm(x.reshape(view), *params, self.p["eps"], y.reshape(view),
                              self.mean.reshape(view[0], view[2]), self.inv_std.reshape(view[0], view[2]))
            return
        self.mean = x.mean(axis=axes, keepdims=True)
        centred = x - self.mean
        var = np.mean(centred * centred, axis=axes, keepdims=True)
        self.inv_std = 1 / np.sqrt(var + np.asarray(self.p["eps"], x.dtype))
        np.multiply(centred * self.inv_std, self.gamma.data.reshape(self.param_view), out=y)
        y += self.beta.data.reshape(self.param_view)

    def backward(self, top, propagate_down, bottom):
        dy, axes = top[0].diff, self.norm_axes
        xhat = (bottom[0].data - self.mean) * self.inv_std
        self.gamma.diff[...] = np.sum(dy * xhat, axis=self.other_axes).reshape(self.gamma.shape)
        self.beta.diff[...] = np.sum(dy, axis=self.other_axes).reshape(self.beta.shape)
        if propagate_down[0]:
            dxhat = dy * self.gamma.data.reshape(self.param_view)
            dx = dxhat - dxhat.mean(axis=axes, keepdims=True) - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True)
            np.multiply(dx, self.inv_std, out=bottom[0].diff)

    def to_onnx(self, g):
        """LayerNormalization from opset 17 when the axes run to the last; else the arithmetic
        (ReduceMean takes its axes as an attribute before opset 18, as an input from it)."""
        name, x = self.name, g.inputs[0]
        ndim = len(g.input_shapes[0])
        a, e = self._axes(ndim)
        if g.opset >= 17 and e == ndim - 1:
            g.node("LayerNormalization", [x, g.const(f"{name}.weight", g.params["weight"]),
                                          g.const(f"{name}.bias", g.params["bias"])], g.outputs, name,
                   axis=a, epsilon=float(self.p["eps"]))
            return
        axes = list(range(a, e + 1))
        view = tuple(g.params["weight"].shape) + (1,) * (ndim - 1 - e)

        def step(op, inputs, tag, **attrs):
            g.node(op, inputs, [f"{name}:{tag}"], f"{name}_{tag}", **attrs)
            return f"{name}:{tag}"

        axes_input = g.const(f"{name}.axes", axes, np.int64) if g.opset >= 18 else None

        def mean(t, tag):
            if axes_input:
                return step("ReduceMean", [t, axes_input], tag, keepdims=1)
            return step("ReduceMean", [t], tag, axes=axes, keepdims=1)

        centred = step("Sub", [x, mean(x, "mean")], "centred")
        var = mean(step("Mul", [centred, centred], "squared"), "var")
        std = step("Sqrt", [step("Add", [var, g.const(f"{name}.eps", self.p["eps"])], "var_eps")], "std")
        scaled = step("Mul", [step("Div", [centred, std], "xhat"),
                              g.const(f"{name}.weight", g.params["weight"].reshape(view))], "scaled")
        g.node("Add", [scaled, g.const(f"{name}.bias", g.params["bias"].reshape(view))], g.outputs, name)

    @classmethod
    def permuted(cls, p, params, perm, shapes):
        """Axes a..e of the permuted tensor are perm[a..e] of x: the same normalisation when those
        run in order (ConvNeXt's LayerNorm over the last axis of NHWC is one over NCHW's channels)."""
        ndim = len(perm)
        a, e = (v + ndim if v < 0 else v for v in (p["axis"], p["end_axis"]))
        axes = [perm[i] for i in range(a, e + 1)]
        if not 1 <= a <= e < ndim or axes != list(range(axes[0], axes[0] + len(axes))):
            return None
        return dict(p, axis=axes[0], end_axis=axes[-1]), params


@onnx_importer("LayerNormalization")
def _layernorm_from_onnx(imp, node):
    """axis (default -1) to the last axis; Scale a constant, B a constant or absent (zeros)."""
    a = imp.attrs(node)
    imp.only_first_output(node)
    axis = int(a.get("axis", -1))
    scale = imp.need_const(node, 1, "the scale")
    bias = imp.need_const(node, 2, "the bias") if imp.has_input(node, 2) else np.zeros_like(scale)
    shape = imp.shape(node.input[0])
    if shape is not None:                         # Scale and B may be given broadcastable: widen them
        if not 1 <= (axis + len(shape) if axis < 0 else axis) < len(shape):
            raise imp.fail(f"node {imp.label(node)}: axis {axis} of a {len(shape)}-D input: decaf normalises "
                           f"within an example (axes 1 ..)")
        target = shape[axis:]
        if None not in target:
            try:
                scale, bias = (np.broadcast_to(v, target) for v in (scale, bias))
            except ValueError:
                raise imp.fail(f"node {imp.label(node)}: scale {scale.shape} / bias {bias.shape} do not fit "
                               f"the normalised shape {tuple(target)}") from None
    imp.add(node, "LayerNorm", [node.input[0]], node.output[0], {"weight": scale, "bias": bias},
            axis=axis, end_axis=-1, eps=float(a.get("epsilon", 1e-5)))


def layernorm_chain_from_onnx(imp, mean):
    """A LayerNorm written out in arithmetic, as PyTorch exports F.layer_norm before opset 17 (and
    decaf its own): ReduceMean(x) -> Sub(x, .) -> Pow 2 (or Mul by itself) -> ReduceMean -> Add eps
    -> Sqrt -> Div (the centred x by it) [-> Mul by a constant weight] [-> Add a constant bias], both
    means over the same trailing axes and every inner value read only by the next node (the
    centred x by the square and the Div) and no graph output: one LayerNorm layer writing the last
    node's output. True when taken (``mean`` is the first ReduceMean)."""
    x, shape = mean.input[0], imp.shape(mean.input[0])
    axes = imp.axes(mean, 18)
    if shape is None or not axes or None in shape[1:] or not imp.attrs(mean).get("keepdims", 1):
        return False
    r = len(shape)
    axes = sorted(a + r if a < 0 else a for a in axes)
    if axes != list(range(axes[0], r)) or axes[0] < 1:
        return False
    sub = imp.sole_consumer(mean.output[0], "Sub")
    if sub is None or list(sub.input) != [x, mean.output[0]]:
        return False
    centred = sub.output[0]
    users = list({id(u): u for u in imp.consumers(centred)}.values())     # (Mul by itself reads it twice)
    square = next((u for u in users if u.op_type in ("Pow", "Mul")), None)
    div = next((u for u in users if u.op_type == "Div"), None)
    if (len(users) != 2 or square is None or div is None or imp.is_graph_output(centred)
            or list(div.input) != [centred, div.input[1]]):
        return False
    if not (square.op_type == "Pow" and square.input[0] == centred and imp.has_input(square, 1)
            and imp.scalar(square.input[1]) == 2.0
            or square.op_type == "Mul" and list(square.input) == [centred, centred]):
        return False
    var = imp.sole_consumer(square.output[0], "ReduceMean")
    if (var is None or not imp.attrs(var).get("keepdims", 1)
            or sorted(a + r if a < 0 else a for a in (imp.axes(var, 18) or [])) != axes):
        return False
    add, eps = imp.sole_consumer(var.output[0], "Add"), None
    if add is not None and len(add.input) == 2:
        eps = imp.scalar(add.input[1 if add.input[0] == var.output[0] else 0])
    sqrt = imp.sole_consumer(add.output[0], "Sqrt") if eps is not None and eps >= 0 else None
    if sqrt is None or imp.sole_consumer(sqrt.output[0]) is not div or div.input[1] != sqrt.output[0]:
        return False
    target = tuple(shape[axes[0]:])
    params = {"weight": np.ones(target, np.float32), "bias": np.zeros(target, np.float32)}
    last, affine = div, []
    for op, pname in (("Mul", "weight"), ("Add", "bias")):   # the affine, when there is one
        nxt = imp.sole_consumer(last.output[0], op)
        if nxt is None or len(nxt.input) != 2:
            break
        const = imp.const(nxt.input[1] if nxt.input[0] == last.output[0] else nxt.input[0])
        if const is None or const.ndim > len(target):
            break
        try:
            params[pname] = np.broadcast_to(const, target).astype(np.float32)
        except ValueError:
            break
        last = nxt
        affine.append(nxt)
    imp.add(mean, "LayerNorm", [x], last.output[0], params, axis=axes[0], end_axis=-1, eps=eps)
    for node in [sub, square, var, add, sqrt, div] + affine:
        imp.absorb(node)
    return True
