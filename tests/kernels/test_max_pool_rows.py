"""Inference max pooling on rows wider than a vector (csrc/pool.c: the AVX2 variant's separable rows,
column maxima down the window's rows then row maxima at the stride; the other variants' per-tap
rows), in every instruction set variant this CPU runs, equal bit for bit to the NumPy reference
(a maximum is exact): strides 1 and 2 (and 3, the scalar loop), asymmetric pads, ceil mode with
windows hanging off the edge, planes narrower than a vector, and NaN, inf and -inf inside the
vector part, in the row's last vector (which overlaps the one before it when the width is no
multiple of 8) and in the columns both cover."""
import itertools

import numpy as np
import pytest

from decaf.kernels import reference

_compiled = pytest.importorskip("decaf.kernels._compiled")
F32 = np.float32

SIZES = [(9, 37), (20, 64), (13, 111), (6, 8), (5, 7), (11, 55)]
WINDOWS = [((3, 3), (2, 2)), ((2, 2), (2, 2)), ((3, 3), (1, 1)), ((5, 3), (2, 1)), ((1, 4), (1, 2)),
           ((3, 2), (3, 3))]


def out_size(size, k, s, before, after, ceil):
    span = size + before + after - k
    return (-(-span // s) if ceil else span // s) + 1


def pool_both(x, kernel, stride, pads, ceil):
    ho = out_size(x.shape[2], kernel[0], stride[0], pads[0], pads[2], ceil)
    wo = out_size(x.shape[3], kernel[1], stride[1], pads[1], pads[3], ceil)
    ours, want = (np.full(x.shape[:2] + (ho, wo), 7.0, F32) for _ in range(2))
    _compiled.max_pool_values(x, ours, kernel, stride, pads)
    reference.max_pool_values(x, want, kernel, stride, pads)
    return ours, want


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: f"k{w[0][0]}x{w[0][1]}s{w[1][0]}x{w[1][1]}")
def test_wide_rows_equal_the_reference(isa, size, window):
    kernel, stride = window
    rng = np.random.default_rng(size[1] * 7 + kernel[0])
    x = rng.standard_normal((2, 3) + size).astype(F32)
    for pads, ceil in itertools.product([(0, 0, 0, 0), (1, 1, 1, 1), (0, 2, 1, 0)], [False, True]):
        pads = tuple(min(p, k - 1) for p, k in zip(pads, kernel * 2))
        ours, want = pool_both(x, kernel, stride, pads, ceil)
        np.testing.assert_array_equal(ours, want, err_msg=f"pads {pads} ceil {ceil}")


# width 37: vectors at columns 0, 8, 16, 24, then the last one at 29 (29 .. 36 overlap 24 .. 31)
@pytest.mark.parametrize("column", [3, 17, 30, 35], ids=["vector", "second_vector", "overlap", "tail"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_special_values_reach_every_window_that_holds_them(isa, column, value):
    """A NaN anywhere in a window makes its maximum NaN (the separable rows hand such a row back to
    the per-tap loop); inf wins every window it is in; -inf loses to every number."""
    rng = np.random.default_rng(column)
    x = rng.standard_normal((1, 2, 9, 37)).astype(F32)
    x[0, 1, 4, column] = value
    for (kernel, stride), ceil in itertools.product(WINDOWS[:3], [False, True]):
        ours, want = pool_both(x, kernel, stride, (1, 1, 1, 1), ceil)
        np.testing.assert_array_equal(ours, want)
        if value != -np.inf:
            assert np.sum(ours[0, 1] == value if value == value else np.isnan(ours[0, 1])) >= 1
        assert not np.any(np.isnan(ours[0, 0]))          # the other plane is untouched by it


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_special_values_in_planes_narrower_than_a_vector(isa, value):
    """7x7 planes (GoogLeNet's last pools) load each row as one vector with the lanes past the row
    masked, the last row of the last plane included (nothing read past the array): a NaN or inf in
    the array's very last value reaches the windows that hold it."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 3, 7, 7)).astype(F32)
    x[0, 2, 6, 6] = value
    for (kernel, stride), ceil in itertools.product(WINDOWS[:3], [False, True]):
        ours, want = pool_both(x, kernel, stride, (1, 1, 1, 1), ceil)
        np.testing.assert_array_equal(ours, want)
        assert np.sum(np.isnan(ours[0, 2]) if value != value else ours[0, 2] == value) >= 1
        assert not np.any(np.isnan(ours[0, :2]))          # the other planes are untouched by it
