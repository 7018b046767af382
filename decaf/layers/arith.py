"""Arithmetic: a op b with NumPy broadcasting (squeeze-excitation's (N,C,1,1) x (N,C,H,W), a
channels-last layer scale, the pieces of a decomposed LayerNorm).

    add: y = a + b   da = dy          db = dy
    sub: y = a - b   da = dy          db = -dy
    mul: y = a b     da = dy b        db = dy a
    div: y = a / b   da = dy / b      db = -dy y / b
    pow: y = a ^ b   da = dy b a^(b-1)          (b a constant exponent only)
    max: y = max(a, b)   da = dy where a >= b    db = dy where a < b    (a ties win)
    min: y = min(a, b)   da = dy where a <= b    db = dy where a > b
each gradient summed over the axes its operand was broadcast along.

Two bottoms: both have the batch axis first and the same rank. One bottom: the other operand is
the parameter ``operand`` of shape ``operand_shape`` (aligned with the bottom's last axes, as in
NumPy); ``operand_first`` makes it c op x; ``learnable`` says whether training updates it.
"""
import numpy as np

from .. import kernels

from ..errors import SpecError
from ..interop import onnx_importer
from ..layer import Layer, per_image, register

_ONNX = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "max": "Max", "min": "Min"}
_FN = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power,
       "max": np.maximum, "min": np.minimum}


def sum_to(g, shape):
    """Sum ``g`` down to ``shape`` (the shape it was broadcast from)."""
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


@register
class Arithmetic(Layer):
    type_name = "Arithmetic"
    PARAMS = {"operation": "add", "operand_shape": None, "operand_first": False, "learnable": True}
    n_bottom = (1, 2)
    gradcheck_case = ({"operation": "div"}, [(2, 3, 4, 5), (2, 3, 1, 1)])

    def summary(self):
        return str(self.p["operation"])

    @classmethod
    def permuted(cls, p, params, perm, shapes):
        """Broadcasting commutes with one permutation of every operand: two bottoms stay as they
        are; a constant operand (aligned with the last axes) is permuted back with them."""
        if p["operand_shape"] is None:
            return p, params
        operand = params["operand"]
        full = operand.reshape((1,) * (len(perm) - operand.ndim) + operand.shape)
        back = np.ascontiguousarray(full.transpose(np.argsort(perm)))
        return dict(p, operand_shape=list(back.shape)), {"operand": back}

    def ops(self, bottom_shapes, top_shapes):
        return per_image(top_shapes[0])

    def validate(self):
        p = self.p
        if p["operation"] not in _ONNX:
            raise SpecError(f"layer {self.name!r} (Arithmetic): operation must be one of {sorted(_ONNX)}, "
                            f"got {p['operation']!r}")
        two = len(self.bottom_names) == 2
        if two == (p["operand_shape"] is not None):
            raise SpecError(f"layer {self.name!r} (Arithmetic): give two bottoms, or one bottom and operand_shape")
        if p["operation"] == "pow" and (two or p["operand_first"] or p["learnable"]):
            raise SpecError(f"layer {self.name!r} (Arithmetic): pow takes a constant exponent (one bottom, "
                            f"operand_shape, learnable false)")

    def setup(self, bottom_shapes, fill_rng):
        self.operand = None
        if self.p["operand_shape"] is not None:
            shape = tuple(int(d) for d in self.p["operand_shape"])
            self.operand = self.add_param("operand", shape, 0, learnable=bool(self.p["learnable"]))
            if fill_rng is not None:
                self.operand.data[...] = 1.0 if self.p["operation"] in ("mul", "div", "pow") else 0.0

    def reshape(self, bottom_shapes):
        x = tuple(bottom_shapes[0])
        if self.operand is None:
            y = tuple(bottom_shapes[1])
            if len(x) != len(y) or x[0] != y[0]:
                raise self.shape_error("both bottoms need the batch axis first and the same rank", x, y)
        else:
            y = self.operand.shape
            if len(y) > len(x) or len(y) == len(x) and y[0] != 1:
                raise self.shape_error("the operand would broadcast along the batch axis", x, y)
        try:
            out = np.broadcast_shapes(x, y)
        except ValueError:
            raise self.shape_error("the operands do not broadcast", x, y) from None
        if self.operand is not None and out != x:
            raise self.shape_error("the constant operand would enlarge the bottom", x, out)
        return [out]

    def sums_bottoms(self):
        """Two tensor bottoms added (the optimizer also checks that both have the top's shape)."""
        return self.p["operation"] == "add" and self.operand is None

    def multiplies_bottoms(self):
        return self.p["operation"] == "mul" and self.operand is None

    def _operands(self, bottom):
        a = bottom[0].data
        b = bottom[1].data if self.operand is None else self.operand.data.astype(a.dtype, copy=False)
        return (b, a) if self.p["operand_first"] else (a, b)

    def forward(self, bottom, top):
        a, b = self._operands(bottom)
        y = top[0].data
        if self.p["operation"] == "mul" and self._channel_gate(a, b, y):
            return
        _FN[self.p["operation"]](a, b, out=y)      # (no temporary: the ufunc writes the top)

    def _channel_gate(self, a, b, y):
        """x (N, C, H, W) times g (N or 1, C, 1, 1), either way round (a squeeze-excitation gate), as
        one compiled per-channel scale per image (kernels.channel_affine); False for other shapes."""
        x, g = (a, b) if a.ndim == 4 and b.shape[2:] == (1, 1) else (b, a)
        if not (x.ndim == g.ndim == 4 and x.dtype == g.dtype == y.dtype and g.shape[2:] == (1, 1)
                and g.shape[1] == x.shape[1] and g.shape[0] in (1, x.shape[0]) and y.shape == x.shape
                and x.shape[2] * x.shape[3] > 1 and x.flags.c_contiguous and y.flags.c_contiguous):
            return False
        for n in range(x.shape[0]):
            scale = np.ascontiguousarray(g[n if g.shape[0] > 1 else 0, :, 0, 0])
            kernels.channel_affine(x[n:n + 1], scale, None, y[n:n + 1])
        return True

    def backward(self, top, propagate_down, bottom):
        a, b = self._operands(bottom)
        dy, op = top[0].diff, self.p["operation"]
        if op in ("add", "sub"):
            da, db = (lambda: dy), (lambda: dy if op == "add" else -dy)
        elif op == "mul":
            da, db = (lambda: dy * b), (lambda: dy * a)
        elif op == "div":
            da, db = (lambda: dy / b), (lambda: -dy * top[0].data / b)
        elif op in ("max", "min"):
            first = (a >= b) if op == "max" else (a <= b)     # the first operand wins ties
            da, db = (lambda: dy * first), (lambda: dy * ~first)
        else:
            da, db = (lambda: dy * b * np.power(a, b - 1)), None
        grads = [(da, a), (db, b)]
        if self.p["operand_first"]:
            grads.reverse()                       # grads[0]: the bottom's, grads[1]: the operand's
        (gx, x), (gc, c) = grads
        if propagate_down[0]:
            bottom[0].diff[...] = sum_to(gx(), bottom[0].shape)
        if self.operand is None:
            if propagate_down[1]:
                bottom[1].diff[...] = sum_to(gc(), bottom[1].shape)
        elif gc is not None:
            self.operand.diff[...] = sum_to(gc(), self.operand.shape)
        elif self.operand is not None:
            self.operand.diff[...] = 0

    def to_onnx(self, g):
        ins = list(g.inputs)
        if self.operand is not None or "operand" in g.params:
            c = g.const(f"{self.name}.operand", g.params["operand"])
            ins = [c, ins[0]] if self.p["operand_first"] else [ins[0], c]
        g.node(_ONNX[self.p["operation"]], ins, g.outputs, self.name)


def add_arithmetic(imp, node, op, x, other=None, const=None, const_first=False):
    """Add an Arithmetic layer for ``x op other`` (two tensors) or ``x op const`` (const_first:
    ``const op x``); refuses operands that do not broadcast the decaf way."""
    if const is None:
        sx, so = imp.shape(x), imp.shape(other)
        if sx is not None and so is not None and len(sx) != len(so):
            raise imp.fail(f"node {imp.label(node)}: {node.op_type} with broadcasting between tensors of "
                           f"different ranks {sx} and {so} is not supported")
        imp.add(node, "Arithmetic", [x, other], node.output[0], operation=op)
        return
    const = np.asarray(const, np.float64)
    sx = imp.shape_at(x, 1)
    if sx is not None and (const.ndim > len(sx) or const.ndim == len(sx) and const.shape[0] != 1
                           or np.broadcast_shapes(sx, const.shape) != sx):
        raise imp.fail(f"node {imp.label(node)}: {node.op_type} with a constant of shape {const.shape} that "
                       f"does not broadcast into {sx[1:]} per example is not supported")
    learnable = op in ("add", "sub", "mul", "div") and const.size > 1     # (not exponents, bounds, eps)
    imp.add(node, "Arithmetic", [x], node.output[0], {"operand": const}, operation=op,
            operand_shape=list(const.shape), operand_first=bool(const_first), learnable=learnable)


@onnx_importer("Pow")
def _pow_from_onnx(imp, node):
    """x ^ c for a constant exponent c."""
    add_arithmetic(imp, node, "pow", node.input[0], const=imp.need_const(node, 1, "the exponent"))


@onnx_importer("Sqrt", "Reciprocal", "Neg")
def _unary_from_onnx(imp, node):
    """Sqrt: x ^ 0.5; Reciprocal: 1 / x; Neg: -1 * x."""
    if node.op_type == "Sqrt":
        add_arithmetic(imp, node, "pow", node.input[0], const=np.array(0.5))
    elif node.op_type == "Reciprocal":
        add_arithmetic(imp, node, "div", node.input[0], const=np.array(1.0), const_first=True)
    else:
        add_arithmetic(imp, node, "mul", node.input[0], const=np.array(-1.0))
