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
from ..layer import REQUIRED, Layer, register


@register
class Flatten(Layer):
    type_name = "Flatten"
    PARAMS = {"axis": 1}

    def reshape(self, bottom_shapes):
        shape, a = bottom_shapes[0], self.p["axis"]
        return [tuple(shape[:a]) + (int(np.prod(shape[a:])),)]

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.reshape(bottom[0].shape)


@register
class Reshape(Flatten):
    type_name = "Reshape"
    gradcheck_case = ({"shape": [-1]}, [(2, 3, 2, 2)])
    PARAMS = {"shape": REQUIRED}

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


@register
class Concat(Layer):
    type_name = "Concat"
    PARAMS = {"axis": 1}
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

    def forward(self, bottom, top):
        for blob, index in zip(bottom, self._slices()):
            top[0].data[index] = blob.data

    def backward(self, top, propagate_down, bottom):
        for blob, index, down in zip(bottom, self._slices(), propagate_down):
            if down:
                blob.diff[...] = top[0].diff[index]


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
