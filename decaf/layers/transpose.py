"""Transpose: permute the non-batch axes (ShuffleNet's channel shuffle, ConvNeXt's channels-last).

    forward:  y = x.transpose(perm)          perm[0] = 0: the batch stays first
    backward: dx = dy.transpose(argsort(perm))
"""
import numpy as np

from .. import kernels
from ..errors import SpecError
from ..interop import onnx_importer
from ..layer import REQUIRED, Layer, register


@register
class Transpose(Layer):
    type_name = "Transpose"
    PARAMS = {"perm": REQUIRED}
    gradcheck_case = ({"perm": [0, 2, 3, 1]}, [(2, 3, 4, 5)])

    def summary(self):
        return str(list(self.p["perm"]))

    @classmethod
    def axis_permutation(cls, p):
        return [int(a) for a in p["perm"]]

    def validate(self):
        perm = [int(a) for a in self.p["perm"]]
        if sorted(perm) != list(range(len(perm))) or not perm or perm[0] != 0:
            raise SpecError(f"layer {self.name!r} (Transpose): perm {self.p['perm']} must be a permutation of "
                            f"0..{len(perm) - 1} that keeps the batch axis 0 first")
        self.perm = perm
        # k when perm rotates the non-batch axes, [0, k, .., r - 1, 1, .., k - 1] (ConvNeXt's
        # (0, 2, 3, 1) and (0, 3, 1, 2)): each image is then a matrix transposed; else None
        r = len(perm)
        self.rotation = next((k for k in range(2, r) if perm == [0] + list(range(k, r)) + list(range(1, k))), None)

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        if len(shape) != len(self.perm):
            raise self.shape_error(f"perm {self.perm} for a {len(shape)}-D bottom", len(self.perm), len(shape))
        return [tuple(shape[a] for a in self.perm)]

    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        k = self.rotation
        if k is not None and x.flags.c_contiguous and y.flags.c_contiguous and x.dtype == y.dtype:
            # each image an M x N matrix transposed, M the axes that move to the end
            m, n = int(np.prod(x.shape[1:k])), int(np.prod(x.shape[k:]))
            kernels.transpose(x.reshape(x.shape[0], m, n), y.reshape(y.shape[0], n, m))
        else:
            y[...] = x.transpose(self.perm)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.transpose(np.argsort(self.perm))

    def to_onnx(self, g):
        g.node("Transpose", g.inputs, g.outputs, self.name, perm=[int(a) for a in self.perm])


@onnx_importer("Transpose")
def _transpose_from_onnx(imp, node):
    """perm defaults to reversing the axes; one that moves the batch axis is refused."""
    r = imp.rank(node.input[0], node, "Transpose")
    perm = [int(a) for a in imp.attrs(node).get("perm", list(range(r))[::-1])]
    if sorted(perm) != list(range(r)):
        raise imp.fail(f"node {imp.label(node)}: perm {perm} is not a permutation of the {r} axes")
    if perm[0] != 0:
        raise imp.fail(f"node {imp.label(node)}: Transpose with perm {perm} moves the batch axis, which "
                       f"decaf keeps first")
    if perm == list(range(r)):
        imp.same_as(node.output[0], node.input[0])
    else:
        imp.add(node, "Transpose", [node.input[0]], node.output[0], perm=perm)
