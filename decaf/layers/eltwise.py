"""Eltwise: combine bottoms of equal shape elementwise.

operation "sum" (default): y = sum_i c_i x_i (coeff c, default all 1);  dx_i = c_i dy
operation "prod":          y = prod_i x_i;   dx_i = dy * prod_{j != i} x_j
operation "max":           y = max_i x_i;    dx_i = dy where x_i was the (first) max, else 0
"""
import numpy as np

from ..errors import SpecError
from ..interop import caffe_importer, onnx_importer
from ..layer import Layer, per_image, register
from .arith import add_arithmetic
from .gelu import gelu_chain_from_onnx


@register
class Eltwise(Layer):
    type_name = "Eltwise"
    PARAMS = {"operation": "sum", "coeff": None}
    n_bottom = (2, None)
    any_layout = True         # (elementwise over bottoms of one shape)

    def summary(self):
        return str(self.p["operation"])

    def ops(self, bottom_shapes, top_shapes):
        return per_image(top_shapes[0]) * max(len(bottom_shapes) - 1, 1)

    @classmethod
    def to_caffe(cls, p, w):
        ep = {"operation": p["operation"].upper()}
        if p["coeff"] is not None:
            ep["coeff"] = [float(x) for x in p["coeff"]]
        w.add("Eltwise", eltwise_param=ep)

    def validate(self):
        if self.p["operation"] not in ("sum", "prod", "max"):
            raise SpecError(f"layer {self.name!r}: operation must be sum, prod or max, got {self.p['operation']!r}")
        coeff = self.p["coeff"]
        if coeff is not None and len(coeff) != len(self.bottom_names):
            raise SpecError(f"layer {self.name!r}: {len(coeff)} coefficients for {len(self.bottom_names)} bottoms")

    def reshape(self, bottom_shapes):
        for name, shape in zip(self.bottom_names, bottom_shapes):
            if tuple(shape) != tuple(bottom_shapes[0]):
                raise self.shape_error(f"bottom {name!r} differs from {self.bottom_names[0]!r}",
                                       bottom_shapes[0], shape)
        return [bottom_shapes[0]]

    def sums_bottoms(self):
        return (self.p["operation"] == "sum" and len(self.bottom_names) == 2
                and all(c == 1 for c in self._coeff()))

    def multiplies_bottoms(self):
        return self.p["operation"] == "prod" and len(self.bottom_names) == 2

    def _coeff(self):
        return self.p["coeff"] or [1.0] * len(self.bottom_names)

    def forward(self, bottom, top):
        y, op = top[0].data, self.p["operation"]
        if op == "sum":
            c = self._coeff()
            np.multiply(bottom[0].data, c[0], out=y) if c[0] != 1 else np.copyto(y, bottom[0].data)
            for blob, ci in zip(bottom[1:], c[1:]):
                y += blob.data if ci == 1 else ci * blob.data
        elif op == "prod":
            np.copyto(y, bottom[0].data)
            for blob in bottom[1:]:
                y *= blob.data
        else:
            stacked = np.stack([b.data for b in bottom])
            self.argmax = stacked.argmax(axis=0)
            np.copyto(y, np.take_along_axis(stacked, self.argmax[None], 0)[0])

    def backward(self, top, propagate_down, bottom):
        dy, op = top[0].diff, self.p["operation"]
        for i, (blob, down) in enumerate(zip(bottom, propagate_down)):
            if not down:
                continue
            if op == "sum":
                c = self._coeff()[i]
                np.multiply(dy, c, out=blob.diff)
            elif op == "prod":
                others = np.ones_like(dy)
                for j, other in enumerate(bottom):
                    if j != i:
                        others *= other.data
                np.multiply(dy, others, out=blob.diff)
            else:
                np.multiply(dy, self.argmax == i, out=blob.diff)

    def to_onnx(self, g):
        """sum: Sum, each term with c != 1 through a Mul first; max: Max; prod: a chain of Muls."""
        name, ins, op = self.name, g.inputs, self.p["operation"]
        if op == "sum":
            terms = []
            for k, (x, c) in enumerate(zip(ins, self._coeff())):
                if c == 1:
                    terms.append(x)
                else:
                    scaled = f"{name}:term{k}"
                    g.node("Mul", [x, g.const(f"{name}.coeff{k}", np.float32(c))], [scaled], f"{name}_coeff{k}")
                    terms.append(scaled)
            g.node("Sum", terms, g.outputs, name)
        elif op == "max":
            g.node("Max", ins, g.outputs, name)
        else:
            acc = ins[0]
            for k, x in enumerate(ins[1:], start=1):
                last = k == len(ins) - 1
                res = g.outputs[0] if last else f"{name}:prod{k}"
                g.node("Mul", [acc, x], [res], name if last else f"{name}_{k}")
                acc = res


# ---- ONNX -> decaf: the arithmetic ops, to Eltwise (two tensors of one shape), Scale (a tensor and a
# per-channel constant) or Arithmetic (arith.py: any other broadcast) ----
def _per_channel_from_onnx(imp, x, c):
    """A (C,) vector for constant ``c`` broadcast along axis 1 of tensor ``x``, or None."""
    shape = imp.shape(x)
    if shape is None or len(shape) < 2 or shape[1] is None:
        return None
    r, channels = len(shape), shape[1]
    if c.ndim > r:
        return None
    cs = (1,) * (r - c.ndim) + c.shape
    if cs[0] != 1 or any(d != 1 for d in cs[2:]) or cs[1] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1).astype(np.float64), (channels,))


@onnx_importer("Add", "Sum", "Sub", "Mul", "Div")
def _arithmetic_from_onnx(imp, node):
    op = node.op_type
    if len(node.input) == 1 and op in ("Add", "Sum"):
        imp.same_as(node.output[0], node.input[0])
        return
    if op == "Mul" and node.input[0] == node.input[1] and _torch_lrn_from_onnx(imp, node):
        return
    if op == "Div" and gelu_chain_from_onnx(imp, node):
        return
    consts = [imp.const(t) for t in node.input]
    if all(c is None for c in consts):
        _tensors_from_onnx(imp, node)
    else:
        _tensor_and_constant_from_onnx(imp, node, consts)


_ARITH = {"Add": "add", "Sum": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}


def _tensors_from_onnx(imp, node):
    """Tensors of one shape: Eltwise (Div: Arithmetic); shapes that broadcast: arith.py's
    Arithmetic, two at a time."""
    op = node.op_type
    shapes = [imp.shape(t) for t in node.input]
    same = all(s is not None for s in shapes) and len({tuple(s) for s in shapes}) == 1
    if (not same and all(s is not None for s in shapes)) or op == "Div":
        if len(node.input) != 2:
            raise imp.fail(f"node {imp.label(node)}: {op} with broadcasting between shapes {shapes} "
                           f"of more than two inputs is not supported")
        add_arithmetic(imp, node, _ARITH[op], node.input[0], other=node.input[1])
        return
    if op in ("Add", "Sum"):
        imp.add(node, "Eltwise", list(node.input), node.output[0], operation="sum")
    elif op == "Sub":
        imp.add(node, "Eltwise", list(node.input), node.output[0], operation="sum", coeff=[1.0, -1.0])
    elif op == "Mul":
        imp.add(node, "Eltwise", list(node.input), node.output[0], operation="prod")
    else:
        raise imp.fail(f"node {imp.label(node)}: {op} of two tensors is not supported")


def _tensor_and_constant_from_onnx(imp, node, consts):
    """x op c for a per-channel constant c: a Scale y = weight * x + bias."""
    op = node.op_type
    if len(node.input) != 2 or consts[0] is not None and consts[1] is not None:
        raise imp.fail(f"node {imp.label(node)}: {op} of constants only is not supported")
    xi = 0 if consts[0] is None else 1
    x, c = node.input[xi], consts[1 - xi]
    v = _per_channel_from_onnx(imp, x, np.asarray(c))
    if v is None or (op == "Div" and xi == 1):
        add_arithmetic(imp, node, _ARITH[op], x, const=c, const_first=xi == 1)   # any other broadcast
        return
    ones = np.ones_like(v)
    if op in ("Add", "Sum"):
        weight, bias = ones, v
    elif op == "Sub":
        weight, bias = (ones, -v) if xi == 0 else (-ones, v)
    elif op == "Mul":
        weight, bias = v, None
    elif op == "Div" and xi == 0:
        if np.any(v == 0):
            raise imp.fail(f"node {imp.label(node)}: division by a constant containing 0")
        weight, bias = 1.0 / v, None
    else:
        raise imp.fail(f"node {imp.label(node)}: {op} of a constant by a tensor is not supported")
    params = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    imp.add(node, "Scale", [x], node.output[0], params, bias_term=bias is not None)


_LRN_CHAIN_OPS = {"Reshape", "Unsqueeze", "Pad", "AveragePool", "Shape", "Gather", "Equal", "If", "Squeeze",
                  "Mul", "Add", "Pow", "Div", "Cast", "Concat", "Constant"}


def _torch_lrn_from_onnx(imp, node):
    """PyTorch's nn.LocalResponseNorm, exported as x*x -> Unsqueeze/Reshape to 5-D -> Pad of the
    channel axis -> AveragePool (size, 1, 1) -> (If) Squeeze/Reshape -> Mul alpha -> Add k -> Pow beta
    -> Div x by it: one LRN layer (odd sizes, where both windows are centred). True when taken."""
    x, nodes, seen, div = node.input[0], [], set(), None
    frontier = [node.output[0]]
    while frontier:
        t = frontier.pop()
        for user in imp.consumers(t):
            key = id(user)
            if key in seen:
                continue
            if user.op_type not in _LRN_CHAIN_OPS or len(nodes) > 40:
                return False
            seen.add(key)
            nodes.append(user)
            if user.op_type == "Div" and user.input[0] == x:
                if div is not None:
                    return False
                div = user
                continue
            for out in user.output:
                if imp.is_graph_output(out):
                    return False
                frontier.append(out)
    if div is None:
        return False
    by_op = {}
    for n in nodes:
        by_op.setdefault(n.op_type, []).append(n)
    pool, pad = by_op.get("AveragePool", []), by_op.get("Pad", [])
    if len(pool) != 1 or len(pad) != 1 or imp.rank(x, node, "LRN") != 4:
        return False
    a = imp.attrs(pool[0])
    kernel = list(a.get("kernel_shape", []))
    if len(kernel) != 3 or kernel[1:] != [1, 1] or any(s != 1 for s in a.get("strides", [1, 1, 1])) \
            or any(a.get("pads", [0] * 6)):
        return False
    size = int(kernel[0])
    pads = imp.const(pad[0].input[1]) if imp.has_input(pad[0], 1) else None
    want = [0, 0, size // 2, 0, 0, 0, 0, (size - 1) // 2, 0, 0]
    if size % 2 == 0 or pads is None or [int(p) for p in pads.reshape(-1)] != want:
        return False
    scalars = {}
    for op in ("Mul", "Add", "Pow"):
        found = [n for n in by_op.get(op, []) if imp.scalar(n.input[1]) is not None]
        if len(found) != 1:
            return False
        scalars[op] = imp.scalar(found[0].input[1])
    imp.add(node, "LRN", [x], div.output[0], local_size=size, alpha=scalars["Mul"], beta=scalars["Pow"],
            k=scalars["Add"])
    for n in nodes:
        imp.absorb(n)
    return True


@onnx_importer("Max", "Min", "Mean")
def _extremes_from_onnx(imp, node):
    """Max of tensors of one shape: Eltwise max; Mean: Eltwise sum with coefficients 1/n; two
    operands otherwise (broadcasting, a constant, Min): Arithmetic max / min / (a + b) / 2."""
    op, ins = node.op_type, list(node.input)
    if len(ins) == 1:
        imp.same_as(node.output[0], ins[0])
        return
    consts = [imp.const(t) for t in ins]
    shapes = [imp.shape(t) for t in ins]
    same = all(c is None for c in consts) and all(s is not None for s in shapes) and len(set(shapes)) == 1
    if same and op == "Max":
        imp.add(node, "Eltwise", ins, node.output[0], operation="max")
    elif same and op == "Mean":
        imp.add(node, "Eltwise", ins, node.output[0], operation="sum", coeff=[1.0 / len(ins)] * len(ins))
    elif len(ins) != 2 or op == "Mean":
        raise imp.fail(f"node {imp.label(node)}: {op} of {len(ins)} inputs of shapes {shapes} is not supported "
                       f"(tensors of one shape, or two operands for Max and Min)")
    elif all(c is None for c in consts):
        add_arithmetic(imp, node, op.lower(), ins[0], other=ins[1])
    elif consts[0] is None or consts[1] is None:
        xi = 0 if consts[0] is None else 1
        add_arithmetic(imp, node, op.lower(), ins[xi], const=consts[1 - xi], const_first=xi == 1)
    else:
        raise imp.fail(f"node {imp.label(node)}: {op} of constants only")


# ---- Caffe -> decaf -----------------------------------------------------------------------------
@caffe_importer("Eltwise")
def _eltwise_from_caffe(ctx, layer):
    """SUM (with coeff), PROD or MAX."""
    p = layer.param("eltwise_param")
    d = {"type": "Eltwise", "operation": p.get("operation", "SUM").lower()}
    if p.get("coeff"):
        if d["operation"] != "sum":
            raise ctx.fail("coeff is only allowed with operation SUM")
        d["coeff"] = [float(c) for c in p["coeff"]]
    return d
